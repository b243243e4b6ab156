"""The training recipes by --recipe name, and how a recipe's flags are checked when the command line is resolved.

Adding a training method is one Recipe subclass (utils/train/recipes/base.py) in a module of its own, registered in
RECIPES below; utils/config/presets.py may give it presets of its own (otherwise it takes the seed recipe's).
"""
from utils.runtime.errors import UsageError
from utils.train.recipes.paper import PaperRecipe
from utils.train.recipes.seed import SeedRecipe

RECIPES = {recipe.name: recipe for recipe in (SeedRecipe, PaperRecipe)}


def recipe_for(cfg):
    """The recipe object of a configuration (cfg.recipe)."""
    return RECIPES[cfg.recipe](cfg)


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
