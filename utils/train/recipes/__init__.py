"""The training recipes by --recipe name, the deep baselines' by --method name, and how a recipe's flags are checked
when the command line is resolved.

A training protocol is one Recipe subclass (utils/train/recipes/base.py) in a module of its own, registered in
RECIPES below; utils/config/presets.py may give it presets of its own (otherwise it takes the seed recipe's). A deep
baseline (docs/methods.md#deep-baselines) is a recipe of the seed protocol with its own loss, registered in
BASELINES; HashNet's ablation variants are settings of RECIPES' own (recipes/variants.py).
"""
from utils.runtime.errors import UsageError
from utils.train.recipes.cnnh import CNNHRecipe
from utils.train.recipes.dhn import DHNRecipe
from utils.train.recipes.dnnh import DNNHRecipe
from utils.train.recipes.paper import PaperRecipe
from utils.train.recipes.seed import SeedRecipe

RECIPES = {recipe.name: recipe for recipe in (SeedRecipe, PaperRecipe)}
BASELINES = {recipe.method: recipe for recipe in (DHNRecipe, DNNHRecipe, CNNHRecipe)}


def recipe_for(cfg):
    """The recipe object of a configuration: a deep baseline's (cfg.method), else cfg.recipe's."""
    baseline = BASELINES.get(getattr(cfg, "method", None))
    return baseline(cfg) if baseline else RECIPES[cfg.recipe](cfg)


def resolve_recipe(args, given, spelled):
    """Check and derive the flags of args.recipe (Recipe.resolve): a flag only another recipe takes is a
    UsageError naming it; such flags are None in the configuration (config.json shows none). Sets args.unit."""
    recipe = recipe_for(args)
    for other in RECIPES.values():
        wrong = [spelled.get(key, "--" + key) for key in other.flags if key in given and key not in recipe.flags]
        if wrong:
            raise UsageError(f"{', '.join(wrong)} belongs to --recipe {other.name}, not --recipe {recipe.name} "
                             f"(docs/protocol.md#paper-recipe compares the two)")
    recipe.resolve(given, spelled)
    for other in RECIPES.values():
        for key in set(other.flags) - set(recipe.flags):
            setattr(args, key, None)
    args.unit = recipe.unit
    return recipe
