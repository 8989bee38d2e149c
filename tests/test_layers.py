"""The layers of ``common/``: the library below, the application (``common/app``) above, imports one way only.

Everything is read with ``ast`` (``tools/import_graph.py``), nothing is imported, so the whole module runs in well
under two seconds. docs/architecture.md explains the order.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graph_tool = _load_tool()


@pytest.fixture(scope="module")
def trees():
    return graph_tool.parse_package(REPO / "common")


@pytest.fixture(scope="module")
def graph(trees):
    return graph_tool.import_graph(REPO / "common", trees)


def _is_app(module: str) -> bool:
    return graph_tool.unit_of(module) in ("app", "__main__")


def test_library_and_integrations_never_import_the_app(graph):
    offenders = [f"{module}:{line} imports {name}" for module, names in graph.items() if not _is_app(module)
                 for name, line in names if name == "common.app" or name.startswith("common.app.")]
    assert not offenders, "the library imports the application layer:\n" + "\n".join(offenders)
    # the servers built on the bundles (MONAI Deploy, MONAI Label) use the library only, as the bundles do
    for path in sorted((REPO / "integrations").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.startswith("common.app") for n in names), f"{path}:{node.lineno}"


def test_bundle_configs_never_reference_the_app():
    configs = sorted(REPO.glob("bundles/*/configs/*.json"))
    assert len(configs) >= 12  # three bundles, at least train/evaluate/inference/metadata each
    for path in configs:
        text = path.read_text()
        json.loads(text)
        assert "common.app" not in text and "common.__main__" not in text, path


def test_every_unit_has_a_layer_and_imports_run_down(graph):
    units = {graph_tool.unit_of(m) for m in graph} - {None}
    placed = graph_tool.layer_index()
    assert units - set(placed) == set(), "place these in tools/import_graph.py LAYERS"
    assert set(placed) - units == set(), "LAYERS names modules that no longer exist"
    assert graph_tool.layer_violations(graph) == []
    assert graph_tool.cycles(graph_tool.unit_edges(graph)) == []


def test_the_checker_sees_an_upward_import_even_inside_a_function(tmp_path):
    """The checks above can fail: a lazy import from data up to evaluation, and a relative one up to the app."""
    package = tmp_path / "common"
    (package / "data").mkdir(parents=True)
    (package / "app").mkdir()
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("from .volumes import load\n")
    (package / "data" / "volumes.py").write_text("def load():\n    from common.evaluation.pd import ErrorBank\n")
    (package / "nifti.py").write_text("from .app import demo\n")
    (package / "app" / "__init__.py").write_text("from ..data import load\n")
    graph = graph_tool.import_graph(package)
    assert graph["common.data"] == [("common.data.volumes", 1), ("common.data.volumes.load", 1)]
    assert graph["common.app"] == [("common.data", 1), ("common.data.load", 1)]  # `..` from a package
    found = graph_tool.layer_violations(graph)
    assert len(found) == 4 and found[0].startswith("common.data.volumes:2 imports common.evaluation.pd "), found
    assert {f.split(" ")[0] for f in found} == {"common.data.volumes:2", "common.nifti:1"}
    assert graph_tool.cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c", "a"]]
    assert graph_tool.reduced({("a", "b"), ("b", "c"), ("a", "c")}) == [("a", "b"), ("b", "c")]


def test_architecture_doc_shows_the_current_graph(graph):
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert graph_tool.markdown(graph) in doc, "refresh it: python tools/import_graph.py --write docs/architecture.md"


def test_one_owner_of_the_bundles_folder_and_the_result_layout(trees):
    """``common.paths`` agrees with the repository and with the configs' own ``output_dir`` expression; no other
    library module spells the bundles' folder or a split folder by hand."""
    spec = importlib.util.spec_from_file_location("paths_under_test", REPO / "common" / "paths.py")
    paths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paths)
    assert paths.BUNDLES_DIR == REPO / "bundles" and paths.bundle_dir("pd_ae") == REPO / "bundles" / "pd_ae"
    assert paths.split_eval_dir("out", "pd_ae") == Path("out/experiments/pd_ae/split_00/eval/split_0")
    assert paths.split_eval_dir(None, "ad_vae3d", 12) == Path("outputs/experiments/ad_vae3d/split_12/eval/split_12")
    for path in sorted(REPO.glob("bundles/*/configs/evaluate.json")):
        expression = json.loads(path.read_text())["output_dir"]
        assert expression.startswith("$"), path
        code = expression[1:].replace("@bundle_dir", repr("/r/split_03")).replace("@split_index", "3")
        assert Path(eval(code, {"os": os})) == paths.eval_dir("/r/split_03", 3), path  # our own configs' expression
    for path, tree in trees.items():
        if path == REPO / "common" / "paths.py":
            continue
        for node in ast.walk(tree):
            hand_made = (isinstance(node, ast.Constant) and node.value == "bundles") or (
                isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
                and str(node.values[0].value).startswith("split_"))
            assert not hand_made, f"{path}:{node.lineno}: use common.paths"
