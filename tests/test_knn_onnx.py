"""k-NN slicing of ONNX models from other frameworks (no tensorflow), and the accuracy guard
k-NN slicing passes like every method.

The ONNX models are hand-built as PyTorch exports them (NCHW, fixed or dynamic batch, opset
13 or 17, softmax or logits; tests/onnx_models.py): a residual block in front of a
nearest-class-mean classifier, so what the model computes is known exactly.
"""
import json

import onnx
import pytest

from edgekit.compress.guard import GuardFailed
from edgekit.compress.knn.onnx_cuts import onnx_candidates
from edgekit.compress.knn.slice import knn_slice
from edgekit.errors import EdgekitError
from onnx_models import centroid_accuracy, centroid_onnx, residual_onnx, rgb_digits_npz
from test_onnx_model import run_blocked


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    from edgekit.data import load_data
    path = rgb_digits_npz(tmp_path_factory.mktemp("rgb") / "rgb.npz")
    return "npz:" + str(path), load_data("npz:" + str(path))


VARIANTS = {  # name -> residual_onnx kwargs
    "nchw": {},
    "nhwc": {"layout": "NHWC"},
    "batch1-opset17-softmax": {"batch": 1, "opset": 17, "softmax": True},
}


@pytest.fixture(scope="module")
def onnx_files(rgb, tmp_path_factory):
    d = tmp_path_factory.mktemp("res")
    return {n: residual_onnx(rgb[1], d / (n + ".onnx"), **kw) for n, kw in VARIANTS.items()}


@pytest.mark.parametrize("which, ops", [("blocks", ["Add"]),
                                        ("all", ["Conv", "Relu", "Conv", "Add"])])
def test_candidates_are_nchw_block_ends_before_the_classifier(onnx_files, which, ops):
    cands = onnx_candidates(onnx.load(str(onnx_files["nchw"])), which)
    assert [c.op for c in cands] == ops
    assert all(c.nchw and c.shape[-1] in (3, 10) for c in cands)   # NHWC (H, W, C) as read
    assert not {"/Flatten", "/means/Conv"} & {c.node for c in cands}   # the classifier


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_knn_slice_of_an_onnx_model_is_one_graph_that_agrees(name, onnx_files, rgb, tmp_path):
    spec, ds = rgb
    art = knn_slice(onnx_files[name], spec, tmp_path / "knn", max_bytes="none", progress=False)
    m = art.manifest
    assert m["method"]["params"]["cut"] == "/block/Add"
    assert m["input"]["layout"] == VARIANTS[name].get("layout", "NCHW")
    assert m["metrics"]["agreement"] == 1.0                          # ONNX graph == Python head
    before = m["metrics"]["before"]["accuracy"]
    assert before == pytest.approx(centroid_accuracy(ds), abs=1.0 / len(ds.y_test))
    # k-NN on the (identity) block's features beats the class means it replaces
    assert m["metrics"]["accuracy"] > before
    assert m["metrics"]["guard"]["passed"] and m["metrics"]["guard"]["split"] == "validation"
    assert "trunk.h5" not in m["files"]
    opset = VARIANTS[name].get("opset", 13)
    assert m["files"]["model.onnx"]["opset"] == opset
    assert max(o.version for o in onnx.load(str(art.path / "model.onnx")).opset_import) == opset


def test_onnx_knn_artifact_evals_and_benches_in_its_layout(onnx_files, rgb, tmp_path, run_cli):
    spec, ds = rgb
    out = tmp_path / "knn"
    code, _, err = run_cli("compress", onnx_files["nchw"], "--method", "knn-slice", "--data",
                           spec, "-o", out, "--max-bytes", "none")
    assert code == 0, err
    acc = json.loads((out / "manifest.json").read_text())["metrics"]["accuracy"]
    code, stdout, err = run_cli("eval", out, "--data", spec, "--json")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"]["onnxruntime"] == pytest.approx(acc)
    code, _, err = run_cli("bench", out, "--iterations", "5", "--data", spec, "--json",
                           tmp_path / "b.json")
    assert code == 0, err
    row = json.loads((tmp_path / "b.json").read_text())     # one runtime: one object
    assert row["accuracy"] == pytest.approx(acc)   # fed NHWC data, it would be scrambled


def test_onnx_knn_refuses_evolve_and_unknown_cuts_in_one_line(onnx_files, rgb, tmp_path):
    spec, _ = rgb
    for kw, words in (({"evolve": "cma"}, "Keras model"), ({"cut": "/nope"}, "no such cut"),
                      ({"cut": 9}, "out of range")):
        with pytest.raises(EdgekitError, match=words):
            knn_slice(onnx_files["nchw"], spec, tmp_path / "x", progress=False, **kw)
        assert not (tmp_path / "x").exists()


def test_onnx_without_any_cut_point_is_refused(rgb, tmp_path):
    spec, ds = rgb
    path = centroid_onnx(ds, tmp_path / "one_conv.onnx")     # input -> Conv -> Flatten
    with pytest.raises(EdgekitError, match="no cut point"):
        knn_slice(path, spec, tmp_path / "x", progress=False, cut_candidates="blocks")


def test_knn_slice_of_onnx_never_imports_tensorflow(onnx_files, rgb, tmp_path):
    spec, _ = rgb
    r = run_blocked([["compress", onnx_files["nchw"], "--method", "knn-slice", "--data", spec,
                      "-o", tmp_path / "knn", "--max-bytes", "none"],
                     ["bench", tmp_path / "knn", "--iterations", "3", "--data", spec]])
    assert "codes [0, 0]" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert "heavy []" in r.stdout


# -- the accuracy guard ------------------------------------------------------------------------------

def test_knn_slice_over_the_guard_writes_nothing_unless_allowed(tiny_artifact, digits, tmp_path):
    """One prototype per class at the first cut, k=1, 2 PCA dims: far below the CNN."""
    kw = dict(cut=1, prototypes=1, k=1, dims=2, int8=False, max_bytes="none", progress=False)
    with pytest.raises(GuardFailed, match=r"knn-slice lost .* pt of validation accuracy"):
        knn_slice(tiny_artifact.path, digits, tmp_path / "bad", **kw)
    assert not (tmp_path / "bad").exists()
    art = knn_slice(tiny_artifact.path, digits, tmp_path / "ok", allow_drop=True, **kw)
    g = art.manifest["metrics"]["guard"]
    assert not g["passed"] and g["allowed_drop"] and g["drop_pts"] > 1.0
    assert g["base_accuracy"] == pytest.approx(tiny_artifact.manifest["metrics"]["val_accuracy"])


def test_knn_slice_guard_via_cli_is_one_error_line(run_cli, tiny_artifact, tmp_path):
    code, out, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice", "--data",
                             "digits", "-o", tmp_path / "bad", "--cut", "1", "--prototypes", "1",
                             "--k", "1", "--dims", "2", "--no-int8", "--max-bytes", "none")
    assert code == 1
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "over --max-drop 1" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
