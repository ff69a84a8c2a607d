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
    floats = rec["float_candidate"]["float_layers"]
    assert floats and floats == ranked[:len(floats)]
    # written only when it is needed (test_*_keeps_layers_float_only_when_...)
    assert rec["float_layers"] == (floats if rec["float_candidate"]["kept"] else [])
    assert _float_nodes(tmp_path / "b.onnx") == sorted(rec["float_layers"])
    cost = rec["float_cost"]  # what keeping them float cost, measured (may be < 0 bytes on a
    assert isinstance(cost["bytes"], int)  # tiny net: fewer Q/DQ nodes vs fp32 weights)
    assert cost["p50_ms_all_int8"] > 0 and cost["p50_ms_partly_float"] > 0


def test_openvino_search_lists_no_float_layer_when_all_int8(float_onnx, digits, tmp_path):
    from edgekit.compress.int8.search import OPENVINO_PRESETS, openvino_int8, standard_error
    path, _, rep = float_onnx
    rec = openvino_int8(path, tmp_path / "ov" / "m.xml", rep, digits.x_val, digits.y_val,
                        max_drop=100.0)
    # both presets x per-channel / per-tensor weights, the default preset with the full
    # BiasCorrection too; the best kept, or NNCF's default when within one SE of it
    assert set(rec["candidates"]) == {p + w for p in OPENVINO_PRESETS
                                      for w in ("", "/per-tensor")} | {
        "performance/bias-correction", "performance/per-tensor/bias-correction"}
    key = rec["preset"] + ("" if rec["per_channel"] else "/per-tensor") + (
        "" if rec["fast_bias_correction"] else "/bias-correction")
    best = max(rec["candidates"].values())
    got = rec["candidates"][key]
    assert got == best or (key == "performance" and best - got <= standard_error(
        best, rec["validation_samples"]))
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


def test_keep_float_only_when_the_fully_int8_file_fails_the_guard_or_loses_by_one_se():
    from edgekit.compress.int8.search import keep_float, standard_error
    n, base = 400, 0.96
    se = standard_error(0.95, n)                                          # ~1.09 pt
    # equally accurate (within one SE) and inside the guard: the fully-int8 file
    assert keep_float(0.95, 0.95 + se / 2, 0.955, n, 1.0, 1)[0] is False
    assert keep_float(0.955, 0.955 + se / 2, base, n, 2.0, 1)[0] is False
    # more accurate by more than one SE: the partly-float file, whatever the guard
    keep, why = keep_float(0.95 - 2 * se, 0.95, base, n, 100.0, 1)
    assert keep and "more than one standard error" in why
    # the fully-int8 file fails the guard: float layers that help are kept, ones that do not
    keep, why = keep_float(0.94, 0.945, base, n, 1.0, 2)
    assert keep and "over the guard's --max-drop 1" in why
    assert keep_float(0.94, 0.94, base, n, 1.0, 2)[0] is False
    # timed: a partly-float file that is more accurate and measured faster is kept; an equally
    # accurate one is not, however fast; a slower one needs the guard or one SE
    keep, why = keep_float(0.955, 0.955 + se / 2, base, n, 2.0, 1, (0.10, 0.08))
    assert keep and "measured faster" in why
    assert keep_float(0.955, 0.955, base, n, 2.0, 1, (0.10, 0.08))[0] is False
    keep, why = keep_float(0.955, 0.955 + se / 2, base, n, 2.0, 1, (0.08, 0.10))
    assert not keep and "0.0800 vs 0.1000 ms p50" in why


def _outlier_onnx(tiny_artifact, digits, path, scale=300.0):
    """`tiny` with one conv2 channel scaled down by ``scale`` and the logits rows it feeds
    scaled up by it: the same function in float (ReLU and max-pool commute with a positive
    scale), but int8 weights of the logits layer lose every other row to the outlier rows --
    a model that needs its last layer float."""
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    net = load_model(tiny_artifact.path)
    ref = net.predict(digits.x_val.astype(np.float32), verbose=0)
    conv, logits = net.get_layer("conv2"), net.get_layer("logits")
    k, b = conv.get_weights()
    c = 3
    k[..., c] /= scale
    b[c] /= scale
    conv.set_weights([k, b])
    w, wb = logits.get_weights()
    w[c::k.shape[-1]] *= scale                   # flatten of (2, 2, 16): channel c every 16th
    logits.set_weights([w, wb])
    got = net.predict(digits.x_val.astype(np.float32), verbose=0)
    assert np.array_equal(ref.argmax(1), got.argmax(1))
    info = to_onnx(net, path)
    return path, info["input_name"]


def test_onnx_fully_int8_beats_an_equally_accurate_partly_float_candidate(float_onnx, digits,
                                                                        tmp_path):
    """max_drop -1 forces the sensitivity pass to build a partly-float file; on `tiny`, where
    int8 costs nothing, it is within one SE of the fully-int8 one, so the fully-int8 file is
    written unless the float one is both more accurate and measured faster (both timed), and
    the manifest says why."""
    from edgekit.compress.int8.search import onnx_int8, standard_error
    path, name, rep = float_onnx
    rec = onnx_int8(path, tmp_path / "m.onnx", rep, name, digits.x_val, digits.y_val,
                    max_drop=-1.0, work=tmp_path, guard_drop=100.0)
    fc = rec["float_candidate"]
    gain = fc["validation_accuracy"] - rec["candidates"][rec["chosen"]]
    assert fc["float_layers"] and gain <= standard_error(fc["validation_accuracy"],
                                                         rec["validation_samples"])
    assert fc["p50_ms_all_int8"] > 0 and fc["p50_ms_partly_float"] > 0
    wins = gain > 0 and fc["p50_ms_partly_float"] < fc["p50_ms_all_int8"]
    assert fc["kept"] is wins
    assert rec["float_layers"] == (fc["float_layers"] if wins else [])
    assert _float_nodes(tmp_path / "m.onnx") == sorted(rec["float_layers"])
    assert ("measured faster" if wins else "fully int8 kept") in rec["chosen_by"]


def test_onnx_keeps_layers_float_only_when_the_fully_int8_file_is_not_good_enough(
        tiny_artifact, digits, tmp_path):
    from edgekit.compress.int8.search import onnx_int8
    path, name = _outlier_onnx(tiny_artifact, digits, tmp_path / "outlier.onnx")
    rep = np.ascontiguousarray(digits.x_train[:64], dtype=np.float32)
    for guard in (1.0, 100.0):            # fails the guard / passes it but loses by > 1 SE
        work = tmp_path / str(guard)
        work.mkdir()
        rec = onnx_int8(path, work / "m.onnx", rep, name, digits.x_val, digits.y_val,
                        max_drop=0.5, work=work, guard_drop=guard)
        fc = rec["float_candidate"]
        assert fc["kept"] is True and rec["float_layers"] == fc["float_layers"]
        assert fc["validation_accuracy"] > max(rec["candidates"].values()) + 0.05
        assert _float_nodes(work / "m.onnx") == sorted(rec["float_layers"])
        assert ("over the guard" in rec["chosen_by"]) == (guard == 1.0)


def test_openvino_prefers_fully_int8_and_keeps_float_only_when_needed(float_onnx, tiny_artifact,
                                                                     digits, tmp_path):
    from edgekit.compress.int8.search import openvino_int8, standard_error
    path, _, rep = float_onnx
    # `tiny`: accuracy control (forced by max_drop -1) cannot beat the fully-int8 file by one SE
    rec = openvino_int8(path, tmp_path / "a" / "m.xml", rep, digits.x_val, digits.y_val,
                        max_drop=-1.0, guard_drop=100.0)
    assert rec["accuracy_control"]
    if "float_candidate" in rec:          # accuracy control may revert nothing at all
        fc = rec["float_candidate"]
        key = rec["preset"] + ("" if rec["per_channel"] else "/per-tensor") + (
            "" if rec["fast_bias_correction"] else "/bias-correction")
        gain = fc["validation_accuracy"] - rec["candidates"][key]
        wins = gain > standard_error(fc["validation_accuracy"], rec["validation_samples"]) or (
            gain > 0 and fc["p50_ms_partly_float"] < fc["p50_ms_all_int8"])
        assert fc["kept"] is wins
        assert (rec["float_layers"] != []) is wins
        if not wins:
            assert "fully int8 kept" in rec["chosen_by"]
    # the outlier model: the fully-int8 files fail the guard, the float logits layer is kept
    out, _ = _outlier_onnx(tiny_artifact, digits, tmp_path / "outlier.onnx")
    rec = openvino_int8(out, tmp_path / "b" / "m.xml", rep, digits.x_val, digits.y_val,
                        max_drop=0.5, guard_drop=1.0)
    fc = rec["float_candidate"]
    assert fc["kept"] is True and rec["float_layers"] == fc["float_layers"]
    assert fc["validation_accuracy"] > max(rec["candidates"].values()) + 0.05
    assert fc["p50_ms_all_int8"] > 0 and fc["p50_ms_partly_float"] > 0
