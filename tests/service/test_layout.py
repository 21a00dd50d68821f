"""The folders of service/ are its architecture: few packages, small modules, imports that only go
down (no door imports the other), a short path from the entry point to the runtime, and every
module named in docs/development.md."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
MAX_LINES = 350
# what each package may import from the others (ops stands beside: settings, metrics, tracing and
# the like serve every layer; its server.py assembles the process from all of them)
ALLOWED = {
    "core": set(),
    "versions": {"core", "ops"},
    "calls": {"core", "ops", "versions"},
    "grpc": {"core", "ops", "versions", "calls"},
    "http": {"core", "ops", "versions", "calls"},
    "ops": {"core", "versions"},
    "bulk": {"core", "ops", "versions"},  # a third way in, beside the doors: no call layer, no server
}
ASSEMBLERS = {"service.ops.server", "service.__main__"}  # the process: every layer, both doors


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in SERVICE.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


@functools.cache
def imports(path: Path, runtime_only: bool) -> frozenset[str]:
    """The service modules `path` imports (runtime_only: leaving out those under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    known = modules()
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return frozenset(name for name in found if name in known and name.startswith("service."))


def package_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else None


def test_service_has_a_few_packages_and_small_modules() -> None:
    entries = sorted(p.name for p in SERVICE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 9, entries
    long = {
        str(p.relative_to(ROOT)): n
        for p in SERVICE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_packages_import_only_downward_and_no_door_imports_the_other() -> None:
    wrong = []
    for name, path in modules().items():
        own = package_of(name)
        if own is None or name in ASSEMBLERS:
            continue
        for target in imports(path, runtime_only=False):
            other = package_of(target)
            if other is not None and other != own and other not in ALLOWED[own]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles_and_short_chains_from_the_entry_point() -> None:
    """Run-time imports only: an import used in annotations alone sits under TYPE_CHECKING (ruff
    TC001) and loads nothing."""
    graph = {name: imports(path, runtime_only=True) for name, path in modules().items()}

    @functools.cache
    def chain(name: str, goal: str | None, seen: frozenset[str] = frozenset()) -> int:
        """Modules on the longest chain from `name` down to `goal` (None: to any module; 0: `goal` is
        not reached)."""
        assert name not in seen, f"import cycle through {name}"
        if name == goal:
            return 1
        below = [chain(target, goal, seen | {name}) for target in graph[name]]
        reached = [depth for depth in below if depth]
        if reached:
            return 1 + max(reached)
        return 1 if goal is None else 0

    assert 0 < chain("service.__main__", "service.core.runtime") <= 7
    assert chain("service.__main__", None) <= 8


def described(path: Path, base: Path) -> str:
    """How the guide names a module: its path under its package root; a package by its folder."""
    relative = path.relative_to(base)
    return f"`{relative.parent}/`" if path.name == "__init__.py" else f"`{relative}`"


@pytest.mark.parametrize("package", ["service", "model_export"])
def test_every_module_is_described_in_the_development_guide(package: str) -> None:
    guide = (ROOT / "docs" / "development.md").read_text()
    base = ROOT / package
    names = [
        described(path, base)
        for path in sorted(base.rglob("*.py"))
        if path.parent != base or path.name != "__init__.py"
    ]
    missing = [name for name in names if name not in guide]
    assert not missing, f"modules of {package}/ not in docs/development.md: {missing}"


def test_the_architecture_picture_is_drawn_from_the_code(tmp_path: Path) -> None:
    """docs/architecture.svg is what docs/architecture.py draws from the packages now."""
    drawn = tmp_path / "architecture.svg"
    subprocess.run(
        [sys.executable, str(ROOT / "docs" / "architecture.py"), str(drawn)], check=True, capture_output=True
    )
    assert drawn.read_text() == (ROOT / "docs" / "architecture.svg").read_text(), (
        "run python docs/architecture.py"
    )
