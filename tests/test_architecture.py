"""The dependency rule of docs/architecture.md, checked on the import graph read from the source
text (scripts/import_graph.py), and the page's picture of it."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


G = _load_graph_module()


@pytest.fixture(scope="module")
def graph():
    return G.build_graph(REPO)


def test_the_graph_covers_every_room_through_the_links(graph):
    rooms = {G.room(m) for m in graph.files}
    assert set(G.ROOMS) <= rooms
    # the linked folders are read as avel.<room>: the files of datasets/ appear once, under avel.datasets
    assert "avel.datasets.store" in graph.files
    assert graph.files["avel.datasets.store"].resolve() == (REPO / "datasets" / "store.py").resolve()
    assert len(graph.imports) > 100


def test_every_avel_import_resolves_to_a_file_and_a_definition(graph):
    assert G.unresolved(graph) == []


def test_rooms_import_only_what_the_rule_allows(graph):
    assert G.rule_violations(graph) == []


def test_ray_only_in_the_orchestration_code(graph):
    assert G.ray_violations(graph) == []
    eager = [
        f"{imp.source}:{imp.line}"
        for imp in graph.imports
        if (imp.target == "ray" or imp.target.startswith("ray.")) and not imp.lazy
    ]
    assert eager == [], "Ray is imported inside functions only: the package imports without it"


def test_no_import_cycles(graph):
    assert G.cycles(graph.edges(lazy=True)) == []


def test_architecture_doc_shows_the_generated_picture(graph):
    picture = G.doc_picture()
    assert picture is not None, "docs/architecture.md lacks the import-graph markers"
    assert picture == G.mermaid(graph), (
        "docs/architecture.md is out of date: run python scripts/import_graph.py --write"
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_each_kind_of_violation(tmp_path):
    """A small package breaking every rule once: each check names the file and line."""
    _write(
        tmp_path,
        {
            "avel/__init__.py": "",
            "avel/datasets/__init__.py": "",
            "avel/datasets/store.py": "from avel.models import heads\n",  # ground floor imports a room
            "avel/models/__init__.py": "from .heads import Head\n",
            "avel/models/heads.py": "class Head: ...\nfrom avel.models.missing import x\n",
            "avel/extractors/__init__.py": "",
            "avel/extractors/base.py": "from avel.extractors import nothing_here\nimport ray\n",
            "avel/training/__init__.py": "",
            "avel/training/run.py": "def f():\n    from avel.training.distributed import g\n",
            "avel/training/distributed.py": "from avel.training.run import f\n\n\ndef g(): ...\n",
        },
    )
    g = G.build_graph(tmp_path)
    unresolved = G.unresolved(g)
    assert any("heads.py:2" in p and "avel.models.missing" in p for p in unresolved), unresolved
    assert any("base.py:1" in p and "'nothing_here'" in p for p in unresolved), unresolved
    rules = G.rule_violations(g)
    assert len(rules) == 1 and "store.py:1" in rules[0] and "avel.models.heads" in rules[0], rules
    ray = G.ray_violations(g)
    assert len(ray) == 1 and "base.py:2" in ray[0], ray
    assert G.cycles(g.edges(lazy=True)) == [["avel.training.distributed", "avel.training.run"]]
    assert G.cycles(g.edges(lazy=False)) == []  # the lazy import is what closes it
    assert "training -.-> " not in G.mermaid(g) and "datasets --> models" in G.mermaid(g)
