"""The import contract: nnaudit's layers, and a checker that reads every import statement of the package.

Layers (DESIGN.md), from the top; a module may import only from its own layer or lower ones::

    5 application  app, audit.cli, audit.cli_decide, audit.cli_export, audit.cli_plan(_counts), audit.cli_store,
                   audit.mlflow_export, audit.demo, audit.testing, reports.dashboard
    4 rendering    reports
    3 decisions    audit.decide
    2 sections     attacks | explain | audit.fairness | audit.performance | audit.shift   (independent of each other)
    1 engine       audit

A module belongs to the layer of its longest listed prefix. Every import statement counts, at module
level or inside a function, under ``TYPE_CHECKING`` or not: a lazy import is still a dependency. The
section packages are independent siblings: the engine reaches them through entry points, and one section
reads another's outputs through the audit context, never by importing it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("audit", "attacks", "explain", "reports")
LAYERS: dict[str, tuple[int, str]] = {
    "app": (5, "application"),
    "audit.cli": (5, "application"),
    "audit.cli_decide": (5, "application"),
    "audit.cli_plan": (5, "application"),
    "audit.cli_plan_counts": (5, "application"),
    "audit.cli_export": (5, "application"),
    "audit.mlflow_export": (5, "application"),
    "audit.cli_store": (5, "application"),
    "audit.demo": (5, "application"),
    "audit.demo_text": (5, "application"),
    "audit.testing": (5, "application"),  # the conformance suite drives plugins of every kind, as the CLI does
    "reports.dashboard": (5, "application"),
    "reports": (4, "rendering"),
    "audit.decide": (3, "decisions"),
    "attacks": (2, "sections"),
    "explain": (2, "sections"),
    "audit.fairness": (2, "sections"),
    "audit.performance": (2, "sections"),
    "audit.shift": (2, "sections"),
    "audit": (1, "engine"),
}
SECTION_PACKAGES = tuple(prefix for prefix, (layer, _) in LAYERS.items() if layer == 2)


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}: {self.why}"


def _prefix(module: str, prefixes: object) -> str | None:
    found = [p for p in prefixes if module == p or module.startswith(p + ".")]  # type: ignore[attr-defined]
    return max(found, key=len) if found else None


def layer_of(module: str) -> tuple[int, str]:
    prefix = _prefix(module, LAYERS)
    if prefix is None:
        raise KeyError(f"module {module} belongs to no layer; add its package to tests/layers.py LAYERS")
    return LAYERS[prefix]


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package under ``root`` (and app.py)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    if (root / "app.py").is_file():
        found["app"] = root / "app.py"
    return found


def imports(root: Path) -> list[tuple[str, str, int]]:
    """(importer, imported module of the package, line) for every import statement, lazy ones included."""
    known = modules(root)

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i])
        return None

    edges: list[tuple[str, str, int]] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
            targets = {t for t in (resolve(n) for n in names) if t is not None and t != module}
            edges.extend((module, target, node.lineno) for target in sorted(targets))
    return edges


def violations(root: Path) -> list[Violation]:
    """Every import that points up a layer or across section packages, and every module outside the layers."""
    out: list[Violation] = []
    for module in modules(root):
        try:
            layer_of(module)
        except KeyError as err:
            out.append(Violation(module, module, 0, str(err)))
    for importer, imported, line in imports(root):
        (low, low_name), (high, high_name) = layer_of(importer), layer_of(imported)
        if high > low:
            out.append(Violation(importer, imported, line, f"layer {low} ({low_name}) imports layer {high} "
                                 f"({high_name}); imports only point down"))
            continue
        a, b = _prefix(importer, SECTION_PACKAGES), _prefix(imported, SECTION_PACKAGES)
        if a is not None and b is not None and a != b:
            out.append(Violation(importer, imported, line, f"section package {a} imports section package {b}; "
                                 "sections are independent (read another section's outputs from the context)"))
    return out


def cycles(root: Path) -> list[list[str]]:
    """Import cycles among the package's modules (strongly connected components of more than one module)."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root)}
    for importer, imported, _ in imports(root):
        graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan's algorithm
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found
