"""knn_slice on digits: cut sweep rule, honest bytes, Python/ONNX/OpenVINO agreement, bad input."""
import json
import subprocess

import numpy as np
import onnx
import pytest

from edgekit.compress.knn_onnx import check_standard_ops
from edgekit.compress.knn_slice import candidate_cuts, knn_slice, pick_cut
from edgekit.errors import EdgekitError
from tests.devices import ov2022_python

ACC_FLOOR = 0.85     # tiny CNN on 8x8 digits reaches ~0.9+; a broken head lands near 0.1


@pytest.fixture(scope="module")
def auto_art(tmp_path_factory, tiny_artifact, digits):
    out = tmp_path_factory.mktemp("knn") / "auto"
    return knn_slice(tiny_artifact.path, digits, out, cut="auto", prototypes=10, int8=True,
                     progress=False)


def test_auto_cut_follows_the_rule_and_reports_honest_bytes(auto_art, tiny_artifact):
    m = auto_art.manifest
    assert m["kind"] == "compressed" and m["method"]["name"] == "knn-slice"
    sweep = json.loads((auto_art.path / "sweep.json").read_text())["sweep"]
    assert sweep == m["metrics"]["sweep"] and len(sweep) == 4
    assert [r["layer"] for r in sweep] == ["conv1", "pool1", "conv2", "pool2"]
    best = max(r["val_accuracy"] for r in sweep)
    want = min((r for r in sweep if r["val_accuracy"] == best), key=lambda r: r["bytes"])
    assert m["method"]["params"]["cut"] == want["layer"]
    # pick_cut's other objectives on the same (real) sweep
    assert pick_cut(sweep, "size")["bytes"] == min(r["bytes"] for r in sweep)
    assert pick_cut(sweep, "latency")["latency_ms_p50"] == min(r["latency_ms_p50"] for r in sweep)
    # bytes: metrics.bytes is the ONNX file on disk, parts add up inside it
    onnx_path = auto_art.path / "model.onnx"
    assert m["metrics"]["bytes"] == onnx_path.stat().st_size == m["files"]["model.onnx"]["bytes"]
    parts = m["metrics"]["bytes_parts"]
    assert sum(parts.values()) == m["metrics"]["bytes"] and min(parts.values()) >= 0
    assert m["files"]["trunk.h5"]["inference"] is False
    assert m["files"]["model.onnx"]["inference"] is True
    assert m["metrics"]["prototypes"] == 100                     # 10 per class x 10 classes
    assert parts["prototypes_labels"] == 100 * m["metrics"]["dims"] + 100 + 4   # int8 + labels + scale
    assert m["metrics"]["accuracy"] > ACC_FLOOR
    assert m["metrics"]["agreement"] == 1.0
    assert m["metrics"]["accuracy_python"] == m["metrics"]["accuracy_onnx"]


def test_graph_is_standard_ops_opset13_constant_k(auto_art):
    model = onnx.load(str(auto_art.path / "model.onnx"))
    assert check_standard_ops(model)
    assert [o.version for o in model.opset_import] == [13]
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert [o.name for o in model.graph.output] == ["class_id", "scores"]
    ops = {n.op_type for n in model.graph.node}
    assert {"TopK", "Gather", "ArgMax", "MatMul"} <= ops and not ops & {"Scan", "Loop"}


def _ort_pred(path, x):
    from edgekit.runtime.ort import OrtRunner
    with OrtRunner(path) as r:
        return r.predict(x)


def test_openvino_ir_identical_predictions(auto_art, digits, tmp_path):
    import openvino as ov
    path = auto_art.path / "model.onnx"
    ir = tmp_path / "knn.xml"
    ov.save_model(ov.convert_model(str(path)), str(ir))
    compiled = ov.Core().compile_model(str(ir), "CPU")
    res = compiled(digits.x_test)
    cid = res[compiled.outputs[0]]
    assert np.array_equal(cid.astype(np.int64), _ort_pred(path, digits.x_test))


def test_openvino_2022_loads_and_agrees(auto_art, digits, tmp_path):
    path = auto_art.path / "model.onnx"
    np.save(tmp_path / "x.npy", digits.x_test)
    code = ("import numpy as np, sys\n"
            "from openvino.runtime import Core\n"
            "c = Core(); m = c.read_model(sys.argv[1]); cm = c.compile_model(m, 'CPU')\n"
            "x = np.load(sys.argv[2]); r = cm.infer_new_request({0: x})\n"
            "np.save(sys.argv[3], r[cm.outputs[0]].astype(np.int64))\n")
    subprocess.run([ov2022_python(), "-c", code, str(path), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "y.npy"), _ort_pred(path, digits.x_test))


def test_prototype_reduction_shrinks_the_file(auto_art, tiny_artifact, digits, tmp_path):
    cut = auto_art.manifest["method"]["params"]["cut"]
    full = knn_slice(tiny_artifact.path, digits, tmp_path / "full", cut=cut, k=3, dims=0,
                     reduction="all", progress=False)
    fm, am = full.manifest["metrics"], auto_art.manifest["metrics"]
    assert fm["prototypes"] == len(digits.y_train) > am["prototypes"]
    assert fm["bytes"] > 3 * am["bytes"]
    assert fm["bytes"] == (full.path / "model.onnx").stat().st_size
    assert fm["agreement"] == 1.0 and fm["accuracy"] > ACC_FLOOR


def test_candidate_cuts_skip_the_output(tiny_artifact):
    from edgekit.models import load_model
    m = load_model(tiny_artifact.path)
    assert [m.layers[i].name for i in candidate_cuts(m)] == ["conv1", "pool1", "conv2", "pool2"]


@pytest.mark.parametrize("kwargs, match", [
    ({"cut": "nope"}, "no such layer"),
    ({"cut": "logits"}, "output layer"),
    ({"cut": "99"}, "out of range"),
    ({"cut": "pool2", "k": 50, "prototypes": 2}, "larger than the prototype count"),
    ({"cut": "pool2", "prototypes": 500}, "larger than the smallest class"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tiny_artifact, digits, tmp_path, kwargs,
                                                       match):
    out = tmp_path / "out"
    with pytest.raises(EdgekitError, match=match):
        knn_slice(tiny_artifact.path, digits, out, progress=False, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_max_bytes_nothing_meets_exit_1(run_cli, tiny_artifact, tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice", "--data",
                           "digits", "-o", out, "--cut", "auto", "--prototypes", "2",
                           "--max-bytes", "2000")
    assert code == 1
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert line and "smallest reachable is" in line[0] and "--max-bytes" in line[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
