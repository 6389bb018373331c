"""No import circles among the project's modules (``pipeline``, ``transforms``).

Function-local ("lazy") imports count: a lazy import that closes a circle only hides it. An import of a
module's own parent package (``from transforms.formats import x`` inside ``transforms/formats/y.py``) is
not counted as a dependency on the package itself (the package's ``__init__`` runs first anyway); the
imported submodule ``x`` is.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "transforms")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(module: str, path: Path, node: ast.AST) -> list[str]:
    """Dotted names an import statement may load (the module and, for ``from m import a``, ``m.a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")
        if path.name != "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target, *(f"{target}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in imported(module, path, node):
                if name in modules and name != module and not module.startswith(name + "."):
                    deps.add(name)
        graph[module] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_circle_finder_finds_a_lazy_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_project():
    graph = import_graph()
    assert {"pipeline.launch.main", "transforms.runtime.dataset"} <= set(graph)
    assert "transforms.runtime.partition" in graph["transforms.runtime.dataset"]
    assert circles(graph) == []


# Where pipeline/ may import apache_beam outside pipeline.engines.beam: inside these functions only, each for
# a reason the default command never meets (a remote path, Beam flags to check).
LAZY_BEAM_IMPORTS = {
    ("pipeline.io.files", "_beam_filesystems"): "Beam's FileSystems for gs:// and other remote paths",
    ("pipeline.io.files", "_uncompressed"): "CompressionTypes for remote reads",
    ("pipeline.io.files", "list_tree"): "BeamIOError of a remote listing",
    ("pipeline.io.globs", "match_patterns"): "FileSystems.match for remote patterns",
    ("pipeline.launch.output_folder", "_pattern_regex"): "the remote filesystem's own pattern translation",
    ("pipeline.launch.cli", "check_beam_args"): "Beam's option parser, only when Beam flags are given",
}


def beam_imports() -> list[tuple[str, str | None]]:
    """``(module, enclosing function or None)`` for every import of ``apache_beam`` in ``pipeline``."""
    found = []
    for module, path in project_modules().items():
        if not module.startswith("pipeline"):
            continue
        _visit_beam_imports(module, path, ast.parse(path.read_text(encoding="utf-8")), None, found)
    return found


def _visit_beam_imports(module: str, path: Path, node: ast.AST, function: str | None, found: list) -> None:
    for child in ast.iter_child_nodes(node):
        name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        names = imported(module, path, child) if isinstance(child, (ast.Import, ast.ImportFrom)) else []
        if any(n == "apache_beam" or n.startswith("apache_beam.") for n in names):
            found.append((module, function))
        _visit_beam_imports(module, path, child, name, found)


def test_only_the_beam_engine_imports_apache_beam():
    """``pipeline.engines.beam`` is the Beam engine; everything else in ``pipeline`` (launch, steps, io, the
    local engine, the dataset tools) imports Beam only lazily, in the functions listed in LAZY_BEAM_IMPORTS."""
    imports = beam_imports()
    beam_engine = {module for module, _ in imports if module.startswith("pipeline.engines.beam")}
    assert {"pipeline.engines.beam.graph", "pipeline.engines.beam.run"} <= beam_engine
    elsewhere = {(module, function) for module, function in imports if not module.startswith("pipeline.engines.beam")}
    assert all(function is not None for _, function in elsewhere), f"module-level Beam imports: {sorted(elsewhere)}"
    unexpected = elsewhere - set(LAZY_BEAM_IMPORTS)
    assert not unexpected, f"Beam imported outside pipeline.engines.beam: {sorted(unexpected)}"


def test_the_local_engine_and_the_steps_do_not_depend_on_the_beam_engine():
    graph = import_graph()
    reach: dict[str, set[str]] = {}

    def reachable(module: str) -> set[str]:
        if module not in reach:
            reach[module] = set()
            for dep in graph[module]:
                reach[module] |= {dep} | reachable(dep)
        return reach[module]

    for module in graph:
        if module.startswith(("pipeline.engines.local", "pipeline.steps", "pipeline.io", "pipeline.launch")):
            beam_side = {m for m in reachable(module) if m.startswith("pipeline.engines.beam")}
            if module == "pipeline.launch.main":  # runs the Beam engine (a lazy import) for Beam jobs
                assert beam_side <= {"pipeline.engines.beam.run"} | reachable("pipeline.engines.beam.run")
                continue
            assert not beam_side, f"{module} reaches the Beam engine: {sorted(beam_side)}"
