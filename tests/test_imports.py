"""Every import arrow points down, and the architecture page says so: the modules of `src/` read with
`ast` (imports inside functions count), their project imports resolved to modules, checked for circles
and for arrows up a layer, and compared with the table in docs/architecture.md."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

from src import PROJECT_ROOT

SRC = PROJECT_ROOT / "src"
# layers, lowest first: a module imports only from its own layer or below
LAYERS = [("src.shared",), ("src.models", "src.backends"), ("src.parent", "src.child")]
TOP = len(LAYERS)  # the entry points at src/*.py


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, at any depth (`from src.parent import answers` is
    `src.parent.answers`; `from src import PROJECT_ROOT` is `src`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in MODULES else node.module for n in names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("src")]
        found.update(n for n in names if n in MODULES)
    return found - {module_name(path)}


GRAPH = {name: project_imports(path) for name, path in MODULES.items()}


def layer(name: str) -> int:
    if name == "src":
        return 0  # the package's root: PROJECT_ROOT only
    for level, packages in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in packages):
            return level
    return TOP


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = sorted(f"{m} -> {i}" for m, imports in GRAPH.items() for i in imports if layer(i) > layer(m))
    assert upward == []


def package(name: str) -> str:
    """`src.parent.runner` -> `parent`; the entry points and `src` itself -> ``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 else ""


def test_the_hydra_process_and_the_child_never_import_each_other() -> None:
    across = sorted(
        f"{m} -> {i}"
        for m, imports in GRAPH.items()
        for i in imports
        if {package(m), package(i)} == {"parent", "child"}
    )
    assert across == []


def test_there_is_no_import_circle() -> None:
    """Tarjan's strongly connected components: any of more than one module is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in GRAPH:
        if name not in index:
            visit(name)
    assert circles == []


def architecture_table() -> list[tuple[list[str], list[str]]]:
    """The rows of docs/architecture.md's module table: (file patterns, importable module prefixes)."""
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Which process runs this line", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`src"):
            files = re.findall(r"`([^`]+)`", cells[0])
            allowed = re.findall(r"`(src[^`]*)`", cells[2])
            rows.append((files, allowed))
    return rows


def listed(path: str, pattern: str) -> bool:
    """A file named by a row's pattern, `*` within one folder (`src/backends/*.py` is not its subfolder)."""
    return len(Path(path).parts) == len(Path(pattern).parts) and fnmatch.fnmatch(path, pattern)


def test_the_architecture_table_lists_every_module_and_what_it_imports() -> None:
    rows = architecture_table()
    assert rows, "the table was not found"
    unlisted, twice, wrong = [], [], []
    for name, path in MODULES.items():
        rel = str(path.relative_to(PROJECT_ROOT))
        matches = [r for r in rows if any(listed(rel, f) for f in r[0])]
        if not matches:
            unlisted.append(rel)
            continue
        if len(matches) > 1:
            twice.append(rel)
        allowed = matches[0][1]
        for target in GRAPH[name]:
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append(f"{rel} imports {target}; the table allows {', '.join(allowed) or 'none'}")
    assert unlisted == [] and twice == [] and wrong == []
    for files, _ in rows:  # and no row names a module that is not there
        for pattern in files:
            assert any(listed(str(p.relative_to(PROJECT_ROOT)), pattern) for p in MODULES.values()), pattern
