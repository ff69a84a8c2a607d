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
    from edgekit.compress.int8.search import ONNX_METHODS, ORT_DEFAULT, onnx_int8, standard_error
    path, name, rep = float_onnx
    rec = onnx_int8(path, tmp_path / "a.onnx", rep, name, digits.x_val, digits.y_val,
                    max_drop=100.0, work=tmp_path)
    # every method with per-channel and per-tensor weights, plus onnxruntime's own default;
    # the best on validation chosen, or the default when within one standard error of it
    assert set(rec["candidates"]) == set(ONNX_METHODS) | {
        m + "/per-tensor" for m in ONNX_METHODS} | {ORT_DEFAULT}
    best = max(rec["candidates"].values())
    got = rec["candidates"][rec["chosen"]]
    assert got == best or (rec["chosen"] == ORT_DEFAULT and
                           best - got <= standard_error(best, rec["validation_samples"]))
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
    from edgekit.compress.int8.search import OPENVINO_PRESETS, openvino_int8
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
    from edgekit.compress.int8.search import float_ops
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


def test_choose_prefers_the_standard_default_only_within_one_standard_error():
    from edgekit.compress.int8.search import choose, standard_error
    n = 400
    se = standard_error(0.95, n)                   # ~1.09 pt
    order = ["fast", "default"]
    assert choose({"fast": 0.95, "default": 0.95 - se / 2}, order, n, "default")[0] == "default"
    assert choose({"fast": 0.95, "default": 0.95 - 2 * se}, order, n, "default")[0] == "fast"
    assert choose({"fast": 0.90, "default": 0.95}, order, n, "default")[0] == "default"
    assert choose({"fast": 0.95, "default": 0.90}, order, n, "missing")[0] == "fast"


def test_x86_without_vnni_reads_the_cpu_flags(tmp_path):
    import platform
    from edgekit.compress.int8.search import x86_without_vnni
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    new.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_vnni\n")
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert x86_without_vnni(str(old)) is x86
    assert x86_without_vnni(str(new)) is False


def test_uint8_activations_use_reduce_range_without_vnni(float_onnx, digits, tmp_path):
    """On a CPU without VNNI, every uint8 candidate carries 7-bit weights (|q| <= 64): the
    saturation onnxruntime warns of cannot happen; with VNNI the full int8 range is used."""
    import onnx
    from onnx import numpy_helper
    from edgekit.compress.int8.search import onnx_int8

    def max_weight(p):
        g = onnx.load(str(p)).graph
        return max(int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
                   for t in g.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims)
    path, name, rep = float_onnx
    for no_vnni, limit in ((True, 64), (False, 127)):
        work = tmp_path / str(no_vnni)
        work.mkdir()
        rec = onnx_int8(path, work / "m.onnx", rep, name, digits.x_val, digits.y_val,
                        max_drop=100.0, work=work, no_vnni=no_vnni)
        assert rec["cpu_without_vnni"] is no_vnni and rec["reduce_range"] in (no_vnni, False)
        peak = max_weight(work / "cand.MinMax.onnx")          # a uint8-activation candidate
        assert peak <= limit and (no_vnni or peak > 64)
