"""The package's shape (docs/architecture.md): imports point one way, from the driver and CLI down to config and the
records, with no cycle (function-level imports counted: they hide a cycle, they do not remove it); the benchmarks
are imported by nothing but the CLI; the core math imports no Ray; modules and functions stay small."""

import ast
import os
import pathlib

import pytest

from conftest import ROOT

PACKAGE = pathlib.Path(ROOT) / "ol_ray"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # longer only with a docstring sentence "Long because ..."

# lower layers never import higher ones; a part's config.py and the contracts' registries are at the bottom
LAYERS = [
    ["ol_ray.errors", "ol_ray.registry", "ol_ray.records", "ol_ray.jsonl", "ol_ray.*.config", "ol_ray.selection.base",
     "ol_ray.batching.base", "ol_ray.state.contract"],
    ["ol_ray.config"],
    ["ol_ray.models"],
    ["ol_ray.data"],
    ["ol_ray.tasks"],
    ["ol_ray.selection", "ol_ray.batching"],
    ["ol_ray.weights"],
    ["ol_ray.scoring", "ol_ray.state", "ol_ray.continual"],
    ["ol_ray.observe"],
    ["ol_ray.learner"],
    ["ol_ray.driver", "ol_ray.serve"],
    ["ol_ray.bench"],
    ["ol_ray.cli", "ol_ray"],
]
WITHOUT_RAY = ["ol_ray.selection", "ol_ray.batching", "ol_ray.tasks", "ol_ray.learner.core", "ol_ray.learner.update",
               "ol_ray.learner.updating", "ol_ray.learner.distributed",
               "ol_ray.continual", "ol_ray.config", "ol_ray.records"]


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def resolve(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """The package's modules this one imports (anywhere in it) and the top-level names of everything it imports."""
    own, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            external.add(name.split(".")[0])
            if name.split(".")[0] == "ol_ray":
                own.add(resolve(name))
    return own, external


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, patterns in enumerate(LAYERS):
        for pattern in patterns:
            if "*" in pattern:
                prefix, suffix = pattern.split("*")
                hit = module.startswith(prefix) and module.endswith(suffix) and module.count(".") == 2
                length = 100 if hit else -1  # a part's config.py is at the bottom, whatever its part's layer
            else:
                hit = module == pattern or module.startswith(pattern + ".")
                length = len(pattern)
            if hit and length > rank:
                best, rank = index, length
    assert best >= 0, f"{module} has no layer: add it to LAYERS and docs/architecture.md"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, (own, _) in GRAPH.items() for target in own
              if target != module and not module.startswith(target + ".") and layer_of(target) > layer_of(module)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = {module: {t for t in own if t != module and not module.startswith(t + ".")}
             for module, (own, _) in GRAPH.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_benchmarks_are_imported_only_by_the_cli():
    importers = sorted(module for module, (own, _) in GRAPH.items()
                       if not module.startswith("ol_ray.bench") and module != "ol_ray.cli"
                       and any(t.startswith("ol_ray.bench") for t in own))
    assert not importers, importers


@pytest.mark.parametrize("prefix", WITHOUT_RAY)
def test_the_core_imports_no_ray(prefix):
    users = [module for module, (_, external) in GRAPH.items()
             if (module == prefix or module.startswith(prefix + ".")) and "ray" in external]
    assert not users, users


def test_modules_stay_small():
    large = {module: n for module, path in MODULES.items()
             if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not large, large


def test_long_functions_say_why():
    unexplained = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    unexplained.append(f"{module}.{node.name}: {length} lines")
    assert not unexplained, unexplained


def test_the_architecture_page_names_every_package():
    page = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert all(f"ol_ray/{name}/" in page for name in packages), packages
