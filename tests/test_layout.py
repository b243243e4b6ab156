"""The repository stands alone and reads in layers: no citation of a file it does not hold, every docs page section it
cites exists, and the project's modules import each other without a cycle and only downwards through the concerns of
LAYERS (models/ beside them), with hashing free of Paddle.

The repository's files are the tree walked with .gitignore's rules, what git would list (tracked, or untracked and
not ignored): a release archive or a downloaded zip has no .git, and the tests run there too. Where there is a .git,
the walk is checked against git."""
import ast
import re
import shutil
import subprocess

from conftest import REPO

HAS_GIT = (REPO / ".git").exists() and shutil.which("git") is not None


def git_files(*options):
    out = subprocess.run(["git", "ls-files", "-z", *options], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / name for name in out.stdout.split("\0") if name]


def glob_regex(glob):
    """A .gitignore glob as a regex: `*` and `?` stay within a folder, `**` crosses folders."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", glob)
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "".join(wildcards.get(part, re.escape(part)) for part in parts)


def gitignore_rules(folder):
    """[(regex over paths relative to REPO, negated, folders only)] of folder/.gitignore: a pattern with a slash is
    relative to the folder, one without matches a name at any depth below it."""
    path, base = folder / ".gitignore", folder.relative_to(REPO).as_posix()
    rules = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else ():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        negated, line = line.startswith("!"), line.lstrip("!")
        folders_only, line = line.endswith("/"), line.rstrip("/")
        below = "" if base == "." else re.escape(base + "/")
        regex = below + ("" if "/" in line else "(?:.*/)?") + glob_regex(line.lstrip("/"))
        rules.append((re.compile(regex + r"\Z"), negated, folders_only))
    return rules


def is_ignored(rel, is_folder, rules):
    ignored = False
    for regex, negated, folders_only in rules:  # the last matching rule decides
        if (is_folder or not folders_only) and regex.match(rel):
            ignored = not negated
    return ignored


def walked_files(folder=REPO, rules=()):
    """The files under `folder` that git would list: .git and what a .gitignore excludes left out (an excluded
    folder is not entered, so nothing under it comes back, as in git)."""
    rules = [*rules, *gitignore_rules(folder)]
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name == ".git" or is_ignored(entry.relative_to(REPO).as_posix(), entry.is_dir(), rules):
            continue
        files.extend(walked_files(entry, rules) if entry.is_dir() else [entry])
    return files


def repository_files(*suffixes):
    return [p for p in walked_files() if p.suffix in suffixes and p.is_file()]


def test_the_walk_keeps_and_skips_what_git_does():
    rules = gitignore_rules(REPO)
    for rel, is_folder in (("output/run", True), ("output/run.py", False), ("tmp", True), ("data/toy", True),
                           ("utils/__pycache__", True), ("utils/x.pyc", False), ("hashnet.egg-info", True)):
        assert is_ignored(rel, is_folder, rules), rel
    for rel, is_folder in (("output/.gitkeep", False), ("data/check_data.py", False), ("utils/tools.py", False),
                           ("tests/data", True), ("docs", True), ("data", True)):
        assert not is_ignored(rel, is_folder, rules), rel
    if HAS_GIT:  # the tracked files (but those deleted in the tree) and the untracked ones .gitignore keeps
        listed = git_files("--cached", "--others", "--exclude-per-directory=.gitignore")
        assert sorted(p for p in walked_files() if p.is_file()) == sorted(set(p for p in listed if p.is_file()))


# ------------------------------------------------------------------------------------------------- the imports
def module_name(path):
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def import_nodes(tree, at_import_only):
    """The import statements of a module: all of them, or only those run when it is imported (not in a function)."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if not (at_import_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            todo.extend(ast.iter_child_nodes(node))


def imported_names(path, at_import_only=False):
    """The names `path` imports, inside functions too unless `at_import_only`: for `from a.b import c`, a.b and
    a.b.c (c may be a module); relative imports resolved."""
    name, names = module_name(path), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8")), at_import_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.level:
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])])
            names.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
        else:
            names.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return names


def imports_paddle(path, at_import_only=False):
    return any(name == "paddle" or name.startswith("paddle.") for name in imported_names(path, at_import_only))


def project_modules():
    """{module name: path} of every project module but the tests'."""
    return {module_name(p): p for p in repository_files(".py") if p.relative_to(REPO).parts[0] != "tests"}


def import_graph(known=None, at_import_only=False):
    """{module: project modules it imports (anywhere, or when imported)}. Importing a.b.c also runs the packages a
    and a.b first: they are edges too, but for the importer's own packages, already being imported when it runs."""
    known = project_modules() if known is None else known
    graph = {}
    for name, path in known.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        found = {m for m in imported_names(path, at_import_only) if m in known}
        found |= {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
        graph[name] = {m for m in found if m in known} - own_packages - {name}
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


# The concerns, lower first (README's code map): a module imports from its own layer or lower ones only. A layer is
# named by its packages; "utils" alone is utils/__init__.py (PROJECT_ROOT), utils.tools the seed's names for hashing.
LAYERS = (
    ("utils", "utils.runtime"),  # how a process runs: imports nothing else of utils/
    ("utils.hashing", "utils.tools", "utils.shallow"),  # codes, metrics, plots, shallow methods: no Paddle (HASHING)
    ("utils.config",),
    ("utils.datasets", "utils.losses", "utils.optim"),
    ("utils.retrieval",),
    ("utils.train",),
    ("deploy", "scripts", "benchmarks", "data"),  # the entry points, with every top-level script (main_*.py, ...)
)
ENTRY_POINTS = len(LAYERS) - 1
TRAIN = LAYERS.index(("utils.train",))
HASHING = ("utils.hashing", "utils.tools", "utils.shallow")
# models/ stands beside the layers: it imports only models/, utils.runtime and the input normalisation's constants (a
# module that imports nothing, the contract between the images and the network); the training side and the entry
# points import it, and utils.config the backbone registry (models.backbones, no Paddle) for --backbone's names
MODELS_MAY_IMPORT = ("models", "utils.runtime", "utils.datasets.normalization")
CONSTANTS = ("utils.datasets.normalization",)
MODELS_IMPORTED_BELOW_TRAIN = {"utils.config": ("models.backbones",)}


def within(module, packages):
    return any(module == p or module.startswith(p + ".") for p in packages if p != "utils") or module in packages


def layer_of(module):
    """The index in LAYERS of a module's concern; "models" for models/; None for a module of no concern."""
    if within(module, ("models",)):
        return "models"
    if "." not in module and module != "utils":
        return ENTRY_POINTS  # a top-level script
    matches = [(len(p), i) for i, layer in enumerate(LAYERS) for p in layer if within(module, (p,))]
    return max(matches)[1] if matches else None


def layer_title(index):
    return "the entry points" if index == ENTRY_POINTS else " / ".join(p for p in LAYERS[index] if p != "utils")


def layer_violations(graph):
    """`importer -> imported: why` of every import that breaks the layering."""
    found = []
    for importer, imported in sorted(graph.items()):
        mine = layer_of(importer)
        for module in sorted(imported):
            theirs = layer_of(module)
            if mine is None or theirs is None or any(other.startswith(module + ".") for other in imported):
                continue  # of no concern (test_every_module_has_a_concern), or a package a module of it implies
            if mine == "models":
                allowed = within(module, MODELS_MAY_IMPORT)
                why = None if allowed else f"models/ imports only {', '.join(MODELS_MAY_IMPORT)}"
            elif theirs == "models":
                allowed = mine >= TRAIN or any(within(importer, (layer,)) and within(module, modules)
                                               for layer, modules in MODELS_IMPORTED_BELOW_TRAIN.items())
                why = None if allowed else "below utils.train only utils.config reads models/ (the registry)"
            else:
                why = f"{layer_title(mine)} imports {layer_title(theirs)}, a higher concern" if theirs > mine else None
            if why:
                found.append(f"{importer} -> {module}: {why}")
    return found


def paddle_chains(start, graph, graph_at_import, paddle_anywhere, paddle_at_import):
    """Import chains by which `start` can import Paddle: its own imports, in its functions too (they run when it is
    used), then whatever the modules they reach import when imported."""
    chains, seen, todo = [], {start}, [[start]]
    while todo:
        chain = todo.pop()
        if chain[-1] in (paddle_anywhere if len(chain) == 1 else paddle_at_import):
            chains.append(" -> ".join([*chain, "paddle"]))
        for nxt in sorted((graph if len(chain) == 1 else graph_at_import).get(chain[-1], ())):
            if nxt not in seen:
                seen.add(nxt)
                todo.append([*chain, nxt])
    return chains


def test_project_imports_have_no_cycle():
    graph = import_graph()
    # the graph is read
    assert {"utils.train.engine", "utils.hashing.codes", "utils.hashing.metrics", "predict", "serve"} <= set(graph)
    assert "utils.hashing.codes" in graph["utils.hashing.metrics"] and "models.backbones" in graph["models.pretrained"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_has_a_concern():
    assert [module for module in import_graph() if layer_of(module) is None] == []  # add its package to LAYERS


def test_no_concern_imports_a_higher_one():
    """Whence: nothing below utils.train imports the engine, utils.train no entry point, the data side no network."""
    modules = project_modules()
    violations = layer_violations(import_graph(modules))
    assert not violations, "\n".join(violations)
    assert {name: imported_names(modules[name]) for name in CONSTANTS} == {name: set() for name in CONSTANTS}


def test_hashing_imports_no_paddle():
    modules = project_modules()
    graph, graph_at_import = import_graph(modules), import_graph(modules, at_import_only=True)
    paddle_anywhere = {name for name, path in modules.items() if imports_paddle(path)}
    paddle_at_import = {name for name, path in modules.items() if imports_paddle(path, at_import_only=True)}
    assert "utils.runtime.dist" in paddle_at_import and "models.backbones" in paddle_anywhere - paddle_at_import
    hashing = [name for name in graph if within(name, HASHING)]
    assert {"utils.hashing.codes", "utils.hashing.plots", "utils.tools"} <= set(hashing)
    chains = [chain for name in hashing
              for chain in paddle_chains(name, graph, graph_at_import, paddle_anywhere, paddle_at_import)]
    assert not chains, "\n".join(chains)


def test_the_rules_catch_a_wrong_import():
    graph = import_graph()
    for importer, module in (("utils.hashing.codes", "utils.train.engine"), ("utils.datasets.sampling",
                             "utils.train.engine"), ("utils.train.engine", "predict"), ("utils.runtime.errors",
                             "utils.config.flags"), ("utils.datasets.image_list", "models.hashnet"),
                             ("models.hashnet", "utils.datasets.image_list"), ("utils.config.flags", "models.hashnet")):
        wrong = {**graph, importer: graph[importer] | {module}}
        assert [v for v in layer_violations(wrong) if v.startswith(f"{importer} -> {module}:")], (importer, module)
    # h imports f in a function, f imports x, x imports Paddle; g imports Paddle in a function; k imports m, whose
    # function imports Paddle: h and g can import Paddle, k cannot
    graph, graph_at_import = {"h": {"f"}, "f": {"x"}, "k": {"m"}}, {"h": set(), "f": {"x"}, "k": {"m"}}
    found = {start: paddle_chains(start, graph, graph_at_import, {"x", "g", "m"}, {"x"}) for start in "hgk"}
    assert found == {"h": ["h -> f -> x -> paddle"], "g": ["g -> paddle"], "k": []}
    assert layer_of("utils.newconcern.x") is None and layer_of("main_single_gpu") == ENTRY_POINTS
    assert (layer_of("utils"), layer_of("utils.tools"), layer_of("deploy.inference_python.infer")) == (0, 1, 6)


# ------------------------------------------------------------------------------------------------ the citations
# the name of the facts file outside the repository, spelled in two halves so this line does not cite it itself
OUTSIDE_FILE = re.compile(r"\b" + "SP" + r"EC\b")


def test_no_citation_of_a_file_outside_the_repository():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in repository_files(".py", ".md", ".sh")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if OUTSIDE_FILE.search(line) and p.relative_to(REPO).as_posix() != "docs/protocol.md"]
    assert offenders == []


def anchors_of(markdown):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def cited_doc_anchors():
    """{(page, anchor)} of every `docs/<page>.md#<anchor>` the repository cites (`#a, #b` lists included; inside
    docs/, also the relative `<page>.md#<anchor>`)."""
    cited = set()
    for path in repository_files(".py", ".md", ".sh"):
        text = path.read_text(encoding="utf-8")
        inside_docs = path.parent == REPO / "docs"
        pattern = r"(?:docs/|(?<=\()(?=\w+\.md#))" if inside_docs else r"docs/"
        for match in re.finditer(pattern + r"(\w+)\.md((?:#[\w-]+)(?:, #[\w-]+)*)", text):
            for anchor in match.group(2).split(","):
                cited.add((match.group(1), anchor.strip().lstrip("#")))
    return cited


def test_every_cited_docs_anchor_exists():
    cited = cited_doc_anchors()
    assert ("protocol", "metric") in cited and ("data", "data-caches") in cited
    missing = sorted(f"docs/{page}.md#{anchor}" for page, anchor in cited
                     if not (REPO / "docs" / f"{page}.md").is_file()
                     or anchor not in anchors_of((REPO / "docs" / f"{page}.md").read_text(encoding="utf-8")))
    assert missing == []


def test_anchor_rule_matches_github():
    assert anchors_of("## NUS-WIDE and ImageNet\n## Seed recipe\n# The paper's recipe") == {
        "nus-wide-and-imagenet", "seed-recipe", "the-papers-recipe"}


def code_map_paths():
    """The paths the README's code map names: each backquoted path of its table's first column, with the
    `a/{b,c}_d.py` and `a/b.py`, `c.py` (same folder) shorthands expanded."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Code map"):].split("\n## ", 1)[0]
    named = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        folder = ""
        for path in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            if "/" in path:
                folder = path.rsplit("/", 1)[0] + "/"
            else:
                path = folder + path
            braces = re.fullmatch(r"(.*)\{(.*)\}_\{(.*)\}(.*)", path)
            named |= ({f"{braces[1]}{a}_{b}{braces[4]}" for a in braces[2].split(",") for b in braces[3].split(",")}
                      if braces else {path})
    return named


def test_the_code_map_names_every_module():
    """Every module of the product (not the tests, not an empty package marker) has its row in the README's code map,
    and every row names a file that exists."""
    named = code_map_paths()
    modules = {p.relative_to(REPO).as_posix() for p in project_modules().values()
               if not (p.name == "__init__.py" and len(p.read_text(encoding="utf-8").splitlines()) <= 2)}
    assert sorted(modules - named) == []
    stale = sorted(path for path in named if not any(part in path for part in "*{")
                   and not (REPO / path.rstrip("/")).exists())
    assert stale == []
