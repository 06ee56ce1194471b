"""The project's structure, checked from its source: no import cycle, the library imports no entry point,
entry points and scripts share code only through the library, no file edits sys.path (the library is
installed), and the design card's top level exists.

Imports are read with ``ast`` from every .py file under the project root (hidden folders such as .venv
excluded), function-local ones included, so a cycle cannot hide behind a deferred import.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = frozenset({"app", "inference_invsr", "sampler_invsr", "evaluate", "benchmark",
                          "train_noise_predictor"})
LIBRARY_PACKAGES = ("utils", "datapipe")
DESIGN_CARD_FILES = ("app.py", "sampler_invsr.py", "requirements.txt", "README.md")
DESIGN_CARD_FOLDERS = ("utils", "configs", "weights", "datapipe", "tests")

# The library's layers, lowest first: a module imports only from its own layer and those below, so the
# settings sit below every user of them and no backend reaches up into the pipeline or the studio.
LAYERS = (("utils.config", "utils.checksums", "utils.devices", "datapipe"),
          ("utils.settings", "utils.tiling", "utils.postprocess", "utils.runtimes"),
          ("utils.backends",),
          ("utils.pipeline",),
          ("utils.batch", "utils.evaluation", "utils.training"),
          ("utils.studio",))

# module -> {imported project module: "file:line" of the first such import}
Graph = dict[str, dict[str, str]]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_library(module: str) -> bool:
    return any(_in(module, p) for p in LIBRARY_PACKAGES)


def is_entry_point(module: str) -> bool:
    return module in ENTRY_POINTS


def is_entry_point_or_script(module: str) -> bool:
    return module in ENTRY_POINTS or _in(module, "scripts")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root`` outside hidden folders."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts[:-1]):
            continue
        parts = rel.with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to: itself, or its longest prefix that is one (an attribute path)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path) -> dict[str, str]:
    """Project modules that ``module`` imports anywhere in its file, each with where it first does."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    plain_folder = path.parent != root and not (path.parent / "__init__.py").is_file()

    def qualify(name: str) -> str:
        # A file in a plain folder (tests/, scripts/) finds its siblings by bare name first: Python and pytest
        # put that folder on sys.path.
        return f"{package}.{name}" if plain_folder and f"{package}.{name.split('.')[0]}" in modules else name

    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [_resolve(qualify(alias.name), modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                origin = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                origin = qualify(node.module)
            # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` imports mod.
            targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else _resolve(origin, modules)
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target is not None and target != module:
                found.setdefault(target, f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return found


def sys_path_edits(root: Path) -> list[str]:
    """Where a project file changes sys.path (scripts import the installed library instead)."""
    def is_sys_path(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "path" and \
            isinstance(node.value, ast.Name) and node.value.id == "sys"

    found = []
    for path in module_files(root).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            mutated = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                is_sys_path(node.func.value)  # sys.path.insert(...), .append(...), ...
            assigned = isinstance(node, (ast.Assign, ast.AugAssign)) and any(
                is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
            if mutated or assigned:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return sorted(found)


def import_graph(root: Path) -> Graph:
    modules = module_files(root)
    return {name: imports_of(name, path, modules, root) for name, path in modules.items()}


def _strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components, each sorted; only the graph's own nodes count."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def find_cycles(graph: Graph) -> list[tuple[list[str], list[str]]]:
    """(cycle, component) per strongly connected component that has a cycle: one shortest cycle, as a
    path that returns to its start, and every module of the component (breaking one cycle of a larger
    component leaves others)."""
    cycles = []
    for component in _strongly_connected(graph):
        start, members = component[0], set(component)
        if len(component) == 1 and start not in graph[start]:
            continue
        came_from: dict[str, str] = {}
        queue = deque([start])
        while queue:  # breadth first inside the component, back to the start
            node = queue.popleft()
            if start in graph[node]:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                cycles.append(([start, *reversed(path[:-1]), start], component))
                break
            for nxt in sorted(graph[node]):
                if nxt in members and nxt not in came_from and nxt != start:
                    came_from[nxt] = node
                    queue.append(nxt)
    return cycles


def describe_cycle(graph: Graph, cycle: list[str], component: list[str]) -> str:
    steps = " → ".join([cycle[0]] + [f"{b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:])])
    return steps if len(component) == len(cycle) - 1 else f"{steps}; all modules in this tangle: {', '.join(component)}"


def forbidden_imports(graph: Graph, importer_rule, target_rule) -> list[str]:
    return [f"{src} imports {dst} ({where})" for src, targets in sorted(graph.items()) if importer_rule(src)
            for dst, where in sorted(targets.items()) if target_rule(dst)]


def layer_of(module: str):
    return next((i for i, packages in enumerate(LAYERS) if any(_in(module, p) for p in packages)), None)


def upward_imports(graph: Graph) -> list[str]:
    """Imports (TYPE_CHECKING and function-local ones included) from a lower layer into a higher one."""
    return [f"{src} imports {dst} ({where})" for src, targets in sorted(graph.items())
            if (low := layer_of(src)) is not None for dst, where in sorted(targets.items())
            if (high := layer_of(dst)) is not None and high > low]


def reachable(graph: Graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, {})
    return seen


def library_imports_of_entry_points(graph: Graph) -> list[str]:
    return forbidden_imports(graph, is_library, is_entry_point_or_script)


def entry_points_importing_entry_points(graph: Graph) -> list[str]:
    return forbidden_imports(graph, is_entry_point_or_script, is_entry_point)


# ------------------------------------------------------------------------------------------ the project

@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(PROJECT_ROOT)


def test_no_import_cycle(graph):
    cycles = [describe_cycle(graph, *found) for found in find_cycles(graph)]
    assert not cycles, "import cycles among project modules:\n" + "\n".join(cycles)


def test_library_imports_no_entry_point(graph):
    bad = library_imports_of_entry_points(graph)
    assert not bad, "utils/ and datapipe/ must not import entry points or scripts:\n" + "\n".join(bad)


def test_entry_points_and_scripts_share_code_only_through_the_library(graph):
    bad = entry_points_importing_entry_points(graph)
    assert not bad, "entry points and scripts must not import each other (move the shared code into " \
                    "utils/):\n" + "\n".join(bad)


def test_no_upward_import_between_layers(graph):
    bad = upward_imports(graph)
    assert not bad, "imports from a lower layer into a higher one (see LAYERS):\n" + "\n".join(bad)


def test_every_library_module_has_a_layer(graph):
    # A package missing from LAYERS would escape the rule above.
    loose = sorted(m for m in graph if is_library(m) and m not in ("utils", "datapipe") and layer_of(m) is None)
    assert not loose, f"add these to LAYERS: {', '.join(loose)}"


def test_the_cli_does_not_reach_the_studio(graph):
    studio = sorted(m for m in reachable(graph, "inference_invsr") if _in(m, "utils.studio"))
    assert not studio, f"inference_invsr imports studio code: {', '.join(studio)}"


def test_no_file_edits_sys_path():
    edits = sys_path_edits(PROJECT_ROOT)
    assert not edits, "sys.path is changed at " + ", ".join(edits) + "; the library is installed (make setup)"


def test_design_card_top_level_exists():
    missing = [f for f in DESIGN_CARD_FILES if not (PROJECT_ROOT / f).is_file()]
    missing += [f"{d}/" for d in DESIGN_CARD_FOLDERS if not (PROJECT_ROOT / d).is_dir()]
    assert not missing, f"the design card's top level is incomplete: {', '.join(missing)} missing"


def test_the_graph_sees_the_whole_project(graph):
    # Guards against a checker that silently parses nothing (then every rule above would pass).
    assert {"app", "inference_invsr", "sampler_invsr", "utils.config", "datapipe.image_io",
            "scripts.download_weights", "tests.test_layout"} <= set(graph)
    assert all(any(is_library(t) for t in graph[entry]) for entry in ("app", "inference_invsr", "sampler_invsr"))


# ----------------------------------------------------------------------------------- the checker itself

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


FAKE_PROJECT = {
    "app.py": "import utils.a\n",
    "inference_invsr.py": "PLAN = 1\n",
    "utils/__init__.py": "",
    "utils/a.py": "def late():\n    from . import b  # function-local and relative\n",
    "utils/b.py": "from utils.sub import c  # c is a submodule: this imports utils.sub.c\n",
    "utils/sub/__init__.py": "CONSTANT = 1\n",
    "utils/sub/c.py": "import utils.a\nfrom utils.sub import CONSTANT  # a name: this imports utils.sub\n",
    "utils/d.py": "def run():\n    from inference_invsr import PLAN\n",
    "scripts/tool.py": "import app\nfrom helper import x  # the script's own folder is on sys.path\n",
    "scripts/helper.py": "x = 1\n",
    "tests/test_x.py": "import app  # tests may import entry points\n",
    ".venv/lib/site.py": "import app\nimport utils.d\nimport sys\nsys.path.insert(0, '')\n",
}


def test_checker_finds_a_cycle_through_a_deferred_relative_import(tmp_path):
    _write(tmp_path, FAKE_PROJECT)
    graph = import_graph(tmp_path)
    assert set(graph) == {"app", "inference_invsr", "utils", "utils.a", "utils.b", "utils.sub", "utils.sub.c",
                          "utils.d", "scripts.tool", "scripts.helper", "tests.test_x"}  # .venv left out
    assert set(graph["utils.sub.c"]) == {"utils.a", "utils.sub"}
    assert set(graph["scripts.tool"]) == {"app", "scripts.helper"}
    cycles = find_cycles(graph)
    assert cycles == [(["utils.a", "utils.b", "utils.sub.c", "utils.a"], ["utils.a", "utils.b", "utils.sub.c"])]
    assert describe_cycle(graph, *cycles[0]) == ("utils.a → utils.b (utils/a.py:2) → utils.sub.c (utils/b.py:1) → "
                                                 "utils.a (utils/sub/c.py:1)")


def test_checker_finds_library_and_script_imports_of_entry_points(tmp_path):
    _write(tmp_path, FAKE_PROJECT)
    graph = import_graph(tmp_path)
    assert library_imports_of_entry_points(graph) == ["utils.d imports inference_invsr (utils/d.py:2)"]
    assert entry_points_importing_entry_points(graph) == ["scripts.tool imports app (scripts/tool.py:1)"]


def test_checker_passes_a_clean_project(tmp_path):
    clean = {name: text for name, text in FAKE_PROJECT.items() if name not in ("utils/d.py", "scripts/tool.py")}
    clean["utils/sub/c.py"] = "from utils.sub import CONSTANT\n"
    _write(tmp_path, clean)
    graph = import_graph(tmp_path)
    assert find_cycles(graph) == []
    assert library_imports_of_entry_points(graph) == entry_points_importing_entry_points(graph) == []


def test_checker_names_every_module_of_a_larger_tangle():
    graph = {"a": {"b": "a.py:1"}, "b": {"a": "b.py:1", "c": "b.py:2"}, "c": {"a": "c.py:1"}, "d": {"a": "d.py:1"}}
    (cycle, component), = find_cycles(graph)
    assert cycle == ["a", "b", "a"] and component == ["a", "b", "c"]
    assert describe_cycle(graph, cycle, component) == "a → b (a.py:1) → a (b.py:1); all modules in this tangle: a, b, c"


def test_checker_finds_an_upward_type_checking_import(tmp_path):
    _write(tmp_path, {"utils/backends/base.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                "    from utils.pipeline.run import Settings\n",
                      "utils/pipeline/run.py": "Settings = dict\n",
                      "utils/settings.py": "from utils.config import X\n", "utils/config.py": "X = 1\n"})
    bad = upward_imports(import_graph(tmp_path))
    assert bad == ["utils.backends.base imports utils.pipeline.run (utils/backends/base.py:3)"]


def test_checker_finds_sys_path_edits(tmp_path):
    _write(tmp_path, {**FAKE_PROJECT, "scripts/old.py": "import sys\nsys.path.insert(0, '..')\nsys.path += ['x']\n"
                                                        "sys.path[:0] = ['y']\nprint(sys.path)\n"})
    assert sys_path_edits(tmp_path) == ["scripts/old.py:2", "scripts/old.py:3", "scripts/old.py:4"]
