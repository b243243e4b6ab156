"""The repository stands alone and reads in layers: no citation of a file it does not hold, every
docs page section it cites exists, and the project's modules import each other without a cycle."""
import ast
import re
import subprocess

from conftest import REPO

PACKAGES = ("utils", "models")
ENTRY_MODULES = ("main_single_gpu", "main_multi_gpu", "predict", "export_model", "serve")


def tracked_files(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / line for line in out.stdout.splitlines() if (REPO / line).is_file()]


def module_name(path):
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def project_imports(path, known):
    """Project modules `path` imports anywhere in it (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph():
    paths = [p for p in tracked_files("*.py") if p.parts[len(REPO.parts)] in PACKAGES
             or p.relative_to(REPO).with_suffix("").as_posix() in ENTRY_MODULES]
    known = {module_name(p): p for p in paths}
    graph = {name: project_imports(path, known) - {name} for name, path in known.items()}
    for name in known:  # importing utils.x runs utils/__init__.py first: no edge needed, it imports no module here
        graph[name].discard(name.split(".")[0])
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


def test_project_imports_have_no_cycle():
    graph = import_graph()
    # the graph is read
    assert {"utils.train.engine", "utils.hashing.codes", "utils.hashing.metrics", *ENTRY_MODULES} <= set(graph)
    assert "utils.train.engine" in graph["predict"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_leaves_import_no_engine_or_entry_point():
    graph = import_graph()
    for leaf in ("utils.hashing.codes", "utils.hashing.metrics", "utils.losses.hashnet_loss", "utils.runtime.errors",
    "utils.config.flags", "utils.config.run_folder",              "utils.runtime.fileio"):
        assert not graph[leaf] & {"utils.train.engine", "utils.retrieval.search", *ENTRY_MODULES}, (leaf, graph[leaf])


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# the name of the facts file outside the repository, spelled in two halves so this line does not cite it itself
OUTSIDE_FILE = re.compile(r"\b" + "SP" + r"EC\b")


def test_no_citation_of_a_file_outside_the_repository():
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in tracked_files("*.py", "*.md", "*.sh")
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
    for path in tracked_files("*.py", "*.md", "*.sh"):
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
