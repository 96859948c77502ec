"""The floors of ARCHITECTURE.md, checked by reading every library module's imports with `ast`.

Each module may import only from its own floor or the floors below it, module imports form no
cycle, components never import FiftyOne, the library never imports the entry points
(``operators/``, ``training/``, ``tests/``), and only ``stages/demo.py`` imports ``testing/``.
Imports under ``if TYPE_CHECKING:`` are for type checkers only and do not count; imports inside
functions do. Inside the library, the package's own modules are imported at module top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "fiftyone_usam"
PACKAGE = "fiftyone_usam"

# floor number per sub-package; top-level modules are the foundation (0)
FLOORS = {
    "sources": 1,
    "embeddings": 1,
    "head": 1,
    "inference": 2,
    "evaluation": 2,
    "fiftyone_io": 3,
    "execution": 4,
    "testing": 4,
    "stages": 5,
    "cli": 6,
}
ENTRY = 6  # the package's __init__ (lazy public exports), __main__ and cli/
COMPONENTS = {"sources", "embeddings", "head", "inference", "evaluation"}
# The foundation's one reader of FiftyOne's user settings (progress bars, zoo directory).
FOUNDATION_FIFTYONE = {f"{PACKAGE}.settings"}
ENTRY_POINTS = {"operators", "training", "tests", "benchmarks"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return ENTRY
    return FLOORS.get(parts[1], 0)


def group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects ``(imported module, line, at module top)``, skipping TYPE_CHECKING blocks."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, int, bool]] = []
        self._depth = 0

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self._depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - node.level + 1]
            name = ".".join([*base, node.module] if node.module else base)
        else:
            name = node.module or ""
        top = self._depth == 0
        self.found.append((name, node.lineno, top))
        # ``from package import module`` imports that module
        for alias in node.names:
            self.found.append((f"{name}.{alias.name}", node.lineno, top))


def read_imports() -> dict[str, list[tuple[str, int, bool]]]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        modules[name] = visitor.found
    return modules


MODULES = read_imports()


def own_imports(module: str) -> list[tuple[str, int, bool]]:
    """The library modules ``module`` imports (names resolved to modules that exist)."""
    out = []
    for name, line, top in MODULES[module]:
        if name in MODULES and name != module:
            out.append((name, line, top))
    return out


def test_the_check_sees_the_library():
    imported = {name for name, _, _ in own_imports(f"{PACKAGE}.stages.predict")}
    assert f"{PACKAGE}.head.checkpoint" in imported
    assert floor(f"{PACKAGE}.files") == 0 and floor(f"{PACKAGE}.stages.demo") == 5


def test_no_upward_imports():
    upward = [
        f"{module}:{line} imports {name} (floor {floor(name)} > {floor(module)})"
        for module in MODULES
        for name, line, _ in own_imports(module)
        if floor(name) > floor(module) and floor(module) != ENTRY
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {m: {name for name, _, _ in own_imports(m)} for m in MODULES}
    graph = {m: {n for n in deps if not m.startswith(n + ".")} for m, deps in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_components_and_foundation_do_not_import_fiftyone():
    found = [
        f"{module}:{line} imports {name}"
        for module, imports in MODULES.items()
        if group(module) in COMPONENTS or (floor(module) == 0 and module not in FOUNDATION_FIFTYONE)
        for name, line, _ in imports
        if name == "fiftyone" or name.startswith("fiftyone.")
    ]
    assert not found, "\n".join(found)


def test_library_does_not_import_entry_points():
    found = [
        f"{module}:{line} imports {name}"
        for module, imports in MODULES.items()
        for name, line, _ in imports
        if name.split(".")[0] in ENTRY_POINTS
    ]
    assert not found, "\n".join(found)


def test_only_the_demo_imports_testing():
    allowed = {f"{PACKAGE}.stages.demo"}
    found = [
        f"{module}:{line} imports {name}"
        for module in MODULES
        if group(module) != "testing" and module not in allowed
        for name, line, _ in own_imports(module)
        if group(name) == "testing"
    ]
    assert not found, "\n".join(found)


def test_own_modules_are_imported_at_module_top():
    # The CLI imports its stages inside the commands so that `usam --help` answers at once.
    found = [
        f"{module}:{line} imports {name} inside a function"
        for module in MODULES
        if floor(module) != ENTRY
        for name, line, top in own_imports(module)
        if not top
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("importer", "imported", "bad"),
    [
        ("fiftyone_usam.head.train", "fiftyone_usam.stages.train", True),
        ("fiftyone_usam.stages.train", "fiftyone_usam.head.train", False),
        ("fiftyone_usam.files", "fiftyone_usam.embeddings.store", True),
        ("fiftyone_usam.fiftyone_io.model", "fiftyone_usam.inference.predictor", False),
    ],
)
def test_floor_order_examples(importer, imported, bad):
    assert (floor(imported) > floor(importer)) is bad


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    """Non-blank, non-comment lines of a function's body, its docstring left out."""
    body = node.body  # type: ignore[attr-defined]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if not body:
        return 0
    span = lines[body[0].lineno - 1 : node.end_lineno]  # type: ignore[attr-defined]
    return sum(1 for line in span if line.strip() and not line.strip().startswith("#"))


def test_small_files_and_short_functions():
    long_files, long_functions = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > 400:
            long_files.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = _code_lines(node, lines)
                if count > 60:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_files, "\n".join(long_files)
    assert not long_functions, "\n".join(long_functions)
