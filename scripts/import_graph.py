"""The import graph of the `avel` package, read from the source text (nothing is imported).

Every ``.py`` file under ``avel/`` (following the committed links ``avel/datasets -> ../datasets``
and friends) is parsed with :mod:`ast`; absolute ``avel.*`` imports and relative imports are
resolved to the file they name. ``tests/test_architecture.py`` checks the dependency rule on
this graph and that docs/architecture.md holds the picture drawn from it.

    python scripts/import_graph.py            # print the room picture (mermaid)
    python scripts/import_graph.py --write    # update the picture in docs/architecture.md
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "avel"
DOC = REPO / "docs" / "architecture.md"
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"

# The rooms of the house: avel.<room>. Each may import the rooms listed (and itself).
ROOMS = ("datasets", "extractors", "models", "pipeline", "training", "cli")
ALLOWED: dict[str, frozenset[str]] = {
    "datasets": frozenset(),
    "extractors": frozenset({"datasets"}),
    "models": frozenset({"datasets"}),
    "pipeline": frozenset({"datasets", "extractors"}),
    "training": frozenset({"datasets", "models", "pipeline"}),
    "cli": frozenset({"datasets", "extractors", "models", "pipeline", "training"}),
}
# Ray stays in the orchestration code: extraction (pipeline) and distributed training.
RAY_ALLOWED = ("avel.pipeline", "avel.training.distributed")


@dataclass(frozen=True)
class Import:
    """One import statement's target as written in ``source`` (a module name)."""

    source: str  # importing module, e.g. "avel.extractors.i3d"
    target: str  # imported module (absolute), e.g. "avel.datasets.sampling"
    names: tuple[str, ...]  # ``from target import names`` (empty for ``import target``)
    line: int
    lazy: bool  # inside a function (runs on call, not at import)
    type_only: bool  # under ``if TYPE_CHECKING:``


@dataclass
class Graph:
    """Modules of the package (name -> file) and every import of them."""

    files: dict[str, Path]
    imports: list[Import] = field(default_factory=list)
    defined: dict[str, set[str]] = field(default_factory=dict)  # module -> top-level names
    has_getattr: set[str] = field(default_factory=set)  # modules with a module-level __getattr__

    def is_package(self, module: str) -> bool:
        return self.files[module].name == "__init__.py"

    def resolve(self, imp: Import) -> tuple[list[str], list[str]]:
        """(modules the import loads, problems) for an ``avel.*`` import."""
        if imp.target not in self.files:
            return [], [f"{imp.target} is no file of the package"]
        if not imp.names:
            return [imp.target], []
        modules, problems = [], []
        for name in imp.names:
            sub = f"{imp.target}.{name}"
            if sub in self.files:
                modules.append(sub)
            elif name == "*" or name in self.defined[imp.target] or imp.target in self.has_getattr:
                modules.append(imp.target)
            else:
                problems.append(f"{imp.target} defines no {name!r} and has no submodule {sub}")
        return sorted(set(modules)), problems

    def edges(self, *, lazy: bool = True, type_only: bool = False) -> dict[str, set[str]]:
        """module -> modules of the package it imports (unresolvable imports left out)."""
        out: dict[str, set[str]] = {m: set() for m in self.files}
        for imp in self.imports:
            if not imp.target.startswith(PACKAGE + ".") and imp.target != PACKAGE:
                continue
            if (imp.lazy and not lazy) or (imp.type_only and not type_only):
                continue
            modules, _ = self.resolve(imp)
            out[imp.source].update(m for m in modules if m != imp.source)
        return out


def room(module: str) -> str | None:
    """``avel.<room>`` of a module (None for the top-level ``avel`` package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_files(root: Path = REPO) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``avel/``, through the committed links."""
    files: dict[str, Path] = {}
    base = root / PACKAGE
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            parts = list(rel.parts) + ([] if fn == "__init__.py" else [fn[:-3]])
            files[".".join(parts)] = Path(dirpath) / fn
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):  # conditional definitions at module level
            names.update(_top_level_names(ast.Module(body=list(ast.iter_child_nodes(node)), type_ignores=[])))
    return names


def _collect(module: str, is_package: bool, tree: ast.Module) -> list[Import]:
    out: list[Import] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, lazy: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    out.append(Import(module, alias.name, (), child.lineno, lazy, type_only))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                names = tuple(a.name for a in child.names)
                out.append(Import(module, target, names, child.lineno, lazy, type_only))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            else:
                visit(child, lazy, type_only)

    visit(tree, False, False)
    return out


def build_graph(root: Path = REPO) -> Graph:
    """Parse every module of the package under ``root``."""
    graph = Graph(package_files(root))
    for module, path in graph.files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph.defined[module] = _top_level_names(tree)
        if "__getattr__" in graph.defined[module]:
            graph.has_getattr.add(module)
        graph.imports += _collect(module, graph.is_package(module), tree)
    return graph


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
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

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def unresolved(graph: Graph) -> list[str]:
    """``file:line: problem`` for every ``avel.*`` import that names no file or no definition."""
    out = []
    for imp in graph.imports:
        if imp.target == PACKAGE or imp.target.startswith(PACKAGE + "."):
            _, problems = graph.resolve(imp)
            out += [f"{_where(graph, imp)}: {p}" for p in problems]
    return out


def rule_violations(graph: Graph) -> list[str]:
    """Imports from one room into another that :data:`ALLOWED` does not list (lazy ones too)."""
    out = []
    for imp in graph.imports:
        if imp.type_only or not imp.target.startswith(PACKAGE + "."):
            continue
        src = room(imp.source)
        modules, _ = graph.resolve(imp)
        for target in modules:
            dst = room(target)
            if src and dst and dst != src and dst not in ALLOWED.get(src, frozenset()):
                out.append(
                    f"{_where(graph, imp)}: {imp.source} imports {target} ({src} may import only "
                    f"{sorted(ALLOWED.get(src, ())) or 'nothing else from avel'})"
                )
    return out


def ray_violations(graph: Graph) -> list[str]:
    """Ray imports outside the orchestration code (:data:`RAY_ALLOWED`)."""
    return [
        f"{_where(graph, imp)}: {imp.source} imports {imp.target} (Ray belongs in {', '.join(RAY_ALLOWED)})"
        for imp in graph.imports
        if (imp.target == "ray" or imp.target.startswith("ray."))
        and not any(imp.source == a or imp.source.startswith(a + ".") for a in RAY_ALLOWED)
    ]


def _where(graph: Graph, imp: Import) -> str:
    path = graph.files[imp.source]
    try:
        shown = path.relative_to(REPO)
    except ValueError:
        shown = path
    return f"{shown}:{imp.line}"


def room_edges(graph: Graph) -> dict[tuple[str, str], bool]:
    """(from room, to room) -> True when some import between them runs at import time
    (False: only lazy imports, inside functions)."""
    out: dict[tuple[str, str], bool] = {}
    for imp in graph.imports:
        if imp.type_only or not imp.target.startswith(PACKAGE + "."):
            continue
        modules, _ = graph.resolve(imp)
        for target in modules:
            a, b = room(imp.source), room(target)
            if a and b and a != b:
                out[(a, b)] = out.get((a, b), False) or not imp.lazy
    return out


def ray_rooms(graph: Graph) -> dict[str, bool]:
    """room -> True when it imports Ray at import time (False: lazily only)."""
    out: dict[str, bool] = {}
    for imp in graph.imports:
        if imp.target == "ray" or imp.target.startswith("ray."):
            r = room(imp.source)
            if r:
                out[r] = out.get(r, False) or not imp.lazy
    return out


def mermaid(graph: Graph) -> str:
    """The rooms and their arrows: solid = imported at import time, dotted = only inside functions."""
    lines = ["```mermaid", "flowchart BT"]
    for r in ROOMS:
        lines.append(
            f"    {r}[{r}/]" if r in ("datasets", "extractors", "models", "pipeline") else f"    {r}[avel/{r}/]"
        )
    lines.append("    ray((Ray))")
    for (a, b), eager in sorted(room_edges(graph).items()):
        lines.append(f"    {a} {'-->' if eager else '-.->'} {b}")
    for r, eager in sorted(ray_rooms(graph).items()):
        lines.append(f"    {r} {'-->' if eager else '-.->'} ray")
    lines.append("```")
    return "\n".join(lines)


def doc_picture(doc: Path = DOC) -> str | None:
    """The picture between the markers in docs/architecture.md (None when absent)."""
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_picture(picture: str, doc: Path = DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{BEGIN}\n{picture}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the picture in docs/architecture.md")
    args = parser.parse_args()
    picture = mermaid(build_graph())
    if args.write:
        write_picture(picture)
    print(picture)


if __name__ == "__main__":
    main()
