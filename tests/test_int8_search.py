"""int8 calibration search: every method scored on validation, the sensitive layers really
left float (nodes_to_exclude), OpenVINO's float-layer report, and the CLI table per format."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def float_onnx(tiny_artifact, digits, tmp_path_factory):
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    path = tmp_path_factory.mktemp("int8") / "tiny.onnx"
    info = to_onnx(load_model(tiny_artifact.path), path)
    rep = np.ascontiguousarray(digits.x_train[:64], dtype=np.float32)
    return path, info["input_name"], rep


def _float_nodes(path):
    """Conv/Gemm/MatMul nodes whose weight input is a plain float initializer (not DQ'd)."""
    import onnx
    g = onnx.load(str(path)).graph
    inits = {i.name for i in g.initializer}
    return sorted(n.name for n in g.node
                  if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in inits)


def test_onnx_search_scores_every_method_and_keeps_sensitive_layers_float(float_onnx, digits,
                                                                          tmp_path):
    from edgekit.compress.int8_search import ONNX_METHODS, onnx_int8
    path, name, rep = float_onnx
    rec = onnx_int8(path, tmp_path / "a.onnx", rep, name, digits.x_val, digits.y_val,
                    max_drop=100.0, work=tmp_path)
    # every method with per-channel and per-tensor weights; the best on validation chosen
    assert set(rec["candidates"]) == set(ONNX_METHODS) | {m + "/per-tensor" for m in ONNX_METHODS}
    assert rec["candidates"][rec["method"] + ("" if rec["per_channel"] else "/per-tensor")] == \
        max(rec["candidates"].values())
    assert rec["float_layers"] == [] and _float_nodes(tmp_path / "a.onnx") == []
    # an impossible budget: the sensitivity pass ranks every layer and keeps the worst float
    rec = onnx_int8(path, tmp_path / "b.onnx", rep, name, digits.x_val, digits.y_val,
                    max_drop=-1.0, work=tmp_path)
    ranked = [n for n, _ in rec["sensitivity"]]
    assert len(ranked) == 3                               # conv1, conv2, logits of `tiny`
    assert rec["float_layers"] and rec["float_layers"] == ranked[:len(rec["float_layers"])]
    assert _float_nodes(tmp_path / "b.onnx") == sorted(rec["float_layers"])
    cost = rec["float_cost"]  # what keeping them float cost, measured (may be < 0 bytes on a
    assert isinstance(cost["bytes"], int)  # tiny net: fewer Q/DQ nodes vs fp32 weights)
    assert cost["p50_ms_all_int8"] > 0 and cost["p50_ms_chosen"] > 0


def test_openvino_search_lists_no_float_layer_when_all_int8(float_onnx, digits, tmp_path):
    from edgekit.compress.int8_search import OPENVINO_PRESETS, openvino_int8
    path, _, rep = float_onnx
    rec = openvino_int8(path, tmp_path / "ov" / "m.xml", rep, digits.x_val, digits.y_val,
                        max_drop=100.0)
    assert set(rec["candidates"]) == set(OPENVINO_PRESETS) | {
        p + "/per-tensor" for p in OPENVINO_PRESETS}
    key = rec["preset"] + ("" if rec["per_channel"] else "/per-tensor")
    assert rec["candidates"][key] == max(rec["candidates"].values())
    assert rec["float_layers"] == []
    assert (tmp_path / "ov" / "m.bin").stat().st_size > 0


def test_float_ops_finds_an_unquantized_model_float(float_onnx):
    import openvino as ov
    from edgekit.compress.int8_search import float_ops
    m = ov.convert_model(str(float_onnx[0]))
    assert len(float_ops(m)) == 3


def test_before_after_rows_cover_every_format():
    from edgekit.cli.compress import _format_rows
    m = {"formats": {"model.int8.tflite": {"accuracy": 0.95, "bytes": 100, "fp32_bytes": 400},
                     "model.int8.onnx": {"accuracy": 0.9, "bytes": 120, "fp32_bytes": 410},
                     "openvino/model.int8.xml": {"accuracy": 0.97, "bytes": 300,
                                                 "fp32_bytes": None}}}
    rows = {r[0]: r[1:] for r in _format_rows({"accuracy": 0.96}, m)}
    assert rows["test accuracy, model.int8.onnx"][1].endswith("(-6.00 pt)")
    assert rows["test accuracy, openvino/model.int8.xml"][1].endswith("(+1.00 pt)")
    assert rows["bytes, model.int8.tflite"] == ("400", "100")
    assert rows["bytes, openvino/model.int8.xml"] == ("-", "300")


@pytest.mark.slow
def test_cli_table_shows_every_format(tiny_artifact, tmp_path, run_cli):
    code, out, err = run_cli("compress", tiny_artifact.path, "--method", "quantize",
                             "--calibration-samples", "50", "--data", "digits",
                             "-o", tmp_path / "q")
    assert code == 0, err
    for name in ("model.int8.tflite", "model.int8.onnx", "openvino/model.int8.xml"):
        assert "test accuracy, " + name in out and "bytes, " + name in out, out
