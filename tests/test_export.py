"""edgekit export on the tiny digits CNN: every format and precision, parity, -o DIR, bad input.

All conversions are real (tf2onnx, TFLite converter, OpenVINO convert_model) and every file is
run by its runtime (onnxruntime, LiteRT, OpenVINO CPU). The session fixture is copied first.
"""
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.artifact import Artifact
from edgekit.errors import EdgekitError
from edgekit.export import export, export_all
from edgekit.export.parity import THRESHOLDS, check_file, compare, raise_on_failures


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_artifact):
    """tiny copy with every laptop-cpu format x precision: ONNX + TFLite + OpenVINO at fp32,
    TFLite + OpenVINO at fp16, TFLite int8."""
    dst = tmp_path_factory.mktemp("exp") / "tiny"
    shutil.copytree(tiny_artifact.path, dst)
    art = export_all(dst, "laptop-cpu", calibration_samples=100)   # fp32, fp16, int8 rounds
    assert art.path == dst
    return Artifact.open(dst)


EXPECTED = {"model.opset17.onnx": ("onnx", "fp32"),
            "model.fp32.tflite": ("tflite", "fp32"),
            "model.fp16.tflite": ("tflite", "fp16"),
            "model.int8.tflite": ("tflite", "int8"),
            "openvino/model.fp32.xml": ("openvino", "fp32"),
            "openvino/model.fp16.xml": ("openvino", "fp16")}


def test_every_format_and_precision_is_written_recorded_and_passes_parity(exported, digits):
    files = exported.files
    for name, (fmt, prec) in EXPECTED.items():
        e = files[name]
        assert (e["format"], e["precision"]) == (fmt, prec), name
        assert e["bytes"] == (exported.path / name).stat().st_size > 0
        assert e["target"] == "laptop-cpu" and e["targets"] == ["laptop-cpu"]
        assert e["output_names"] and e["input_name"]
        p = e["parity"]
        assert p["passed"] and p["samples"] == len(digits.y_test)
        assert p["agreement"] >= THRESHOLDS[prec]["agreement"]
        assert p["accuracy_export"] > 0.8
    assert files["model.opset17.onnx"]["opset"] == 17
    assert files["model.opset17.onnx"]["parity"]["max_abs_diff"] < 1e-4
    # the IR is a pair of files, each checksummed; only the .xml is an inference entry
    for prec in ("fp32", "fp16"):
        b = files["openvino/model.{}.bin".format(prec)]
        assert b["inference"] is False and b["of"] == "openvino/model.{}.xml".format(prec)
    assert files["openvino/model.fp16.bin"]["bytes"] < 0.6 * files["openvino/model.fp32.bin"]["bytes"]
    assert files["model.int8.tflite"]["bytes"] < files["model.fp32.tflite"]["bytes"]
    assert files["model.int8.tflite"]["calibration_samples"] == 100
    assert set(exported.manifest["exports"]) == {"laptop-cpu:fp32", "laptop-cpu:int8", "laptop-cpu:fp16"}
    Artifact.open(exported.path).verify()   # every sha256 still matches


def test_exported_files_run_in_their_runtimes_and_agree(exported, digits):
    from edgekit.runtime import open_runner
    x = digits.x_test[:64]
    outs = {}
    for name, rt in (("model.opset17.onnx", "onnxruntime"), ("openvino/model.fp32.xml", "openvino"),
                     ("model.fp32.tflite", "litert")):
        with open_runner(rt, exported.file(name)) as r:
            outs[name] = list(r.infer(x).values())[0]
    a, b, c = outs.values()
    assert np.allclose(a, b, atol=1e-4) and np.allclose(a, c, atol=1e-4)
    # the .tflite loads in tf.lite too (the "tflite-runtime / tf.lite where present" promise)
    from edgekit._tf import tf
    interp = tf().lite.Interpreter(model_path=str(exported.file("model.int8.tflite")))
    interp.allocate_tensors()
    assert interp.get_input_details()[0]["shape"][1:].tolist() == [8, 8, 1]


def test_parity_catches_a_corrupted_export(exported, digits, tmp_path):
    from edgekit.models import load_model
    ref = load_model(exported.path).predict(digits.x_test, verbose=0)
    src = exported.file("model.opset17.onnx")
    good = check_file("onnxruntime", src, ref, digits.x_test, digits.y_test, "fp32")
    assert good["passed"]
    m = onnx.load(str(src))
    rs = np.random.RandomState(0)
    for init in m.graph.initializer:          # perturb every float weight tensor
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.size > 16:
            init.CopyFrom(numpy_helper.from_array(
                (w + rs.normal(0, 0.5 * (w.std() + 1e-3), w.shape)).astype(np.float32), init.name))
    bad_path = tmp_path / "corrupt.onnx"
    onnx.save(m, str(bad_path))
    bad = check_file("onnxruntime", bad_path, ref, digits.x_test, digits.y_test, "fp32")
    assert not bad["passed"] and bad["agreement"] < 0.999 and bad["max_abs_diff"] > 0.1
    fake_int8 = compare(ref, ref[np.roll(np.arange(len(ref)), 1)], digits.y_test, "int8")
    with pytest.raises(EdgekitError) as ei:
        raise_on_failures({"corrupt.onnx": bad, "model.ok.tflite": good, "shifted.int8": fake_int8})
    msg = str(ei.value)
    assert "corrupt.onnx" in msg and "shifted.int8" in msg and "model.ok" not in msg
    assert "agreement" in msg and "accuracy drop" in msg      # every failed threshold is listed


def test_failed_parity_writes_nothing(tiny_artifact, artifact_copy, monkeypatch):
    """An export whose ONNX gets corrupted fails with every failing file named, and the artifact
    (manifest and directory) is left exactly as it was."""
    import edgekit.export.onnx as eo
    real = eo.to_onnx

    def corrupting(model, path, **kw):
        info = real(model, path, **kw)
        m = onnx.load(str(path))
        for init in m.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.float32 and w.ndim >= 2:
                init.CopyFrom(numpy_helper.from_array(np.flip(w).copy(), init.name))
        onnx.save(m, str(path))
        return info
    monkeypatch.setattr(eo, "to_onnx", corrupting)
    art = artifact_copy(tiny_artifact)
    before = sorted(p.name for p in art.iterdir())
    manifest = (art / "manifest.json").read_text()
    with pytest.raises(EdgekitError, match="parity check failed") as ei:
        export(art, "onnx,openvino")
    assert "model.opset17.onnx" in str(ei.value) and "openvino/model.fp32.xml" in str(ei.value)
    assert sorted(p.name for p in art.iterdir()) == before
    assert (art / "manifest.json").read_text() == manifest


def test_cli_out_dir_refuses_existing_unless_force(tiny_artifact, tmp_path, run_cli):
    out = tmp_path / "exp"
    code, stdout, err = run_cli("export", tiny_artifact.path, "--format", "onnx", "-o", out,
                                "--parity-samples", "100", "--batch", "4")
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "export" and m["source"]["artifact"] == str(tiny_artifact.path)
    e = m["files"]["model.opset17.b4.onnx"]
    assert e["batch"] == 4 and e["parity"]["samples"] == 100
    assert "model.h5" in m["files"] and (out / "model.h5").is_file()
    assert "model.opset17.b4.onnx" not in tiny_artifact.files        # the source is untouched
    model = onnx.load(str(out / "model.opset17.b4.onnx"))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    code, _, err = run_cli("export", tiny_artifact.path, "--format", "onnx", "-o", out)
    assert code == 1 and "already exists" in err and "--force" in err
    code, _, err = run_cli("export", out, "--format", "onnx", "-o", out, "--force",
                           "--parity-samples", "50")
    assert code == 0, err
    Artifact.open(out)


@pytest.mark.parametrize("args, needle", [
    (["--format", "onnx,pdf"], "unknown export format 'pdf'"),
    (["--format", "onnx", "--target", "toaster"], "unknown target 'toaster'"),
    (["--format", "onnx", "--precision", "fp8"], "unknown precision"),
    (["--format", "onnx", "--precision", "int8"], "edgekit compress"),
    (["--format", "openvino", "--precision", "int8"], "--method quantize"),
    (["--format", "onnx", "--opset", "18"], "above laptop-cpu's max opset 17"),
    (["--format", "onnx", "--batch", "2", "--dynamic-batch"], "not both"),
])
def test_cli_bad_options_exit_1_before_any_work(tiny_artifact, run_cli, args, needle):
    code, _, err = run_cli("export", tiny_artifact.path, *args)
    assert code == 1 and err.startswith("error: ") and needle in err, err
    assert "Traceback" not in err


def test_refuses_dir_without_manifest_and_modified_artifact(tiny_artifact, artifact_copy, tmp_path,
                                                            run_cli):
    code, _, err = run_cli("export", tmp_path, "--format", "onnx")
    assert code == 1 and "no manifest.json" in err
    art = artifact_copy(tiny_artifact)
    with open(art / "model.h5", "ab") as fh:
        fh.write(b"\0")
    code, _, err = run_cli("export", art, "--format", "onnx")
    assert code == 1 and "artifact modified since it was written" in err


def test_ops_a_format_cannot_express_are_named(tmp_path):
    from edgekit._tf import keras, tf
    from edgekit.export.onnx import to_onnx
    from edgekit.export.tflite import to_tflite
    k = keras()
    inp = k.Input((8, 8, 1))
    h = k.layers.Dense(4)(k.layers.Flatten()(inp))
    model = k.Model(inp, k.layers.Lambda(tf().math.special.bessel_i0e)(h))
    with pytest.raises(EdgekitError, match=r"TFLite cannot express op tf\.BesselI0e"):
        to_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(EdgekitError, match="ONNX cannot express op BesselI0e"):
        to_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.tflite").exists() and not (tmp_path / "m.onnx").exists()


def test_identity_reshapes_tf2onnx_puts_before_batchnorm_are_dropped(tmp_path):
    """At a 1x1 feature map tf2onnx writes Conv -> Reshape([-1, C, 1, 1]) -> BatchNorm, which
    keeps onnxruntime from folding the BatchNorm (30% of a MobileNetV2's latency at 32x32).
    The export drops them; the outputs are the Keras model's."""
    import onnxruntime as ort
    from edgekit._tf import keras
    from edgekit.export.onnx import to_onnx
    L = keras().layers
    inp = L.Input((8, 8, 3))
    x = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, padding="same")(inp)))
    x = L.DepthwiseConv2D(3, strides=4, padding="same", use_bias=False)(x)   # 1x1 from here
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(x))
    model = keras().Model(inp, L.Dense(4, activation="softmax")(L.GlobalAveragePooling2D()(x)))
    to_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert "Reshape" not in ops and ops.count("BatchNormalization") >= 1
    x = np.random.RandomState(0).rand(5, 8, 8, 3).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)


def _reshape_graph(in_shape, target, as_output=False, computed=False):
    """input -> Relu -> Reshape(target) [-> Relu] ; the Reshape's shape an initializer (or a
    Shape node's output when ``computed``)."""
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Relu", ["x"], ["a"])]
    inits = []
    if computed:
        nodes.append(helper.make_node("Shape", ["a"], ["shape"]))
    else:
        inits.append(numpy_helper.from_array(np.array(target, np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", ["a", "shape"], ["r" if not as_output else "y"]))
    if not as_output:
        nodes.append(helper.make_node("Relu", ["r"], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, in_shape if computed else
                                       ["M" if d == -1 else d for d in target])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("in_shape,target,dropped,kw", [
    (["N", 4, 1, 1], [-1, 4, 1, 1], 1, {}),              # tf2onnx's: dynamic batch, identity
    ([2, 4, 1, 1], [2, 4, 1, 1], 1, {}),                 # static batch, identity
    ([2, 4, 1, 1], [-1, 4], 0, {}),                      # a real reshape (flatten)
    ([2, 4, 1, 1], [-1, 1, 4, 1], 0, {}),                # same size, other layout
    (["N", "C", 1, 1], [-1, 4, 1, 1], 0, {}),            # input channels unknown: kept
    (["N", 4, 1, 1], [-1, 4, 1, 1], 0, {"as_output": True}),   # the graph's output: kept
    ([2, 4, 1, 1], None, 0, {"computed": True}),         # shape computed at run time: kept
])
def test_drop_identity_reshapes_table(in_shape, target, dropped, kw):
    import onnxruntime as ort
    from edgekit.export.onnx import drop_identity_reshapes
    proto = _reshape_graph(in_shape, target, **kw)
    before = proto.SerializeToString()
    assert drop_identity_reshapes(proto) == dropped
    onnx.checker.check_model(proto)
    assert sum(n.op_type == "Reshape" for n in proto.graph.node) == 1 - dropped
    assert len(proto.graph.initializer) == (0 if dropped or kw.get("computed") else 1)
    x = np.random.RandomState(1).randn(2, 4, 1, 1).astype(np.float32)
    run = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for b in (before, proto.SerializeToString())]
    np.testing.assert_array_equal(run[0], run[1])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_intermediate_names_are_stripped_outputs_unchanged(tmp_path, precision):
    """to_tflite drops the fused intermediate tensor names (bytes nothing reads): the file is
    smaller than the converter's, the interpreter gives bit-identical outputs, and the input /
    output names and the signature runner are kept."""
    from edgekit._tf import tf
    from edgekit.export.tflite import strip_internal_names, to_tflite
    from edgekit.models import build
    model = build("micro-cnn", (28, 28, 1), 10)
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "m.tflite"
    to_tflite(model, path, precision=precision, representative=x)
    stripped = path.read_bytes()
    conv = tf().lite.TFLiteConverter.from_keras_model(model)
    if precision == "int8":
        conv.optimizations = [tf().lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        conv.target_spec.supported_ops = [tf().lite.OpsSet.TFLITE_BUILTINS_INT8]
    raw = conv.convert()
    assert len(raw) - len(stripped) > 500
    assert strip_internal_names(stripped) == stripped          # idempotent

    def run(blob):
        it = tf().lite.Interpreter(model_content=blob)
        it.allocate_tensors()
        names = ([d["name"] for d in it.get_input_details()],
                 [d["name"] for d in it.get_output_details()])
        inner = [d["name"] for d in it.get_tensor_details()]
        outs = []
        for i in range(len(x)):
            it.set_tensor(it.get_input_details()[0]["index"], x[i:i + 1])
            it.invoke()
            outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
        sig = it.get_signature_runner()(**{it.get_signature_list()["serving_default"]["inputs"][0]:
                                           x[:1]})
        return names, inner, np.concatenate(outs), sig
    names_raw, inner_raw, out_raw, sig_raw = run(raw)
    names, inner, out, sig = run(stripped)
    assert names == names_raw and all(names[0] + names[1])
    assert sum(map(len, inner)) < sum(map(len, inner_raw)) / 2
    np.testing.assert_array_equal(out, out_raw)
    assert [np.asarray(v).tolist() for v in sig.values()] == \
        [np.asarray(v).tolist() for v in sig_raw.values()]
