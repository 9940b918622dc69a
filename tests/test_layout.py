"""The architecture's rules, checked on the source: dependencies run dgls -> engine -> kernels,
no import cycles, no module over 400 lines, no function over 80 (Triton kernel bodies excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"dgls": ROOT / "dgls", "dgls.engine": ROOT / "engine", "dgls.kernels": ROOT / "kernels"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _modules() -> dict[str, Path]:
    """Every source module by its installed dotted name."""
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "dgls" and parts[:1] in (["engine"], ["kernels"]):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> set[str]:
    """The dgls modules `name` imports, anywhere in the file (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(name, path).split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    if name.startswith("dgls.kernels"):
        return 0
    if name.startswith("dgls.engine"):
        return 1
    return 2


def test_dependencies_run_one_way() -> None:
    upward = [f"{a} imports {b}" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)]
    assert not upward, "engine/ and kernels/ must not import the server:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if dep.startswith(node + ".") or node.startswith(dep + ".") and MODULES[dep].name == "__init__.py":
                continue  # a package and its own modules
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_and_function_sizes(name: str) -> None:
    path = MODULES[name]
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {source.count(chr(10))} lines"
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any("jit" in ast.unparse(d) for d in node.decorator_list):
                continue  # a Triton kernel: one fused body by design
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({length} lines)")
    assert not long, f"{path.relative_to(ROOT)}: " + ", ".join(long)


def test_the_checker_sees_the_layers() -> None:
    """The rules above are only worth something if the graph is real."""
    assert "dgls.engine.engine" in MODULES and "dgls.kernels.diffusion_head" in MODULES
    assert "dgls.pipeline" in GRAPH["dgls.handlers"] or "dgls.pipeline" in GRAPH["dgls.connection"]
    assert any(dep.startswith("dgls.kernels") for dep in GRAPH["dgls.engine.denoise"])
