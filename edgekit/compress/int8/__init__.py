"""Quantization: post-training full-integer int8 for TFLite, ONNX and OpenVINO; QAT; float16.

One calibration set feeds all three int8 paths: ``calibration_samples`` images drawn (seeded)
from the TRAINING split of ``data`` (or of ``calibration_data``, another spec):

* TFLite: ``edgekit.export.tflite.to_tflite`` (TFLiteConverter, representative data set,
  builtin int8 kernels), float in/out by default or int8 in/out (``io="int8"``);
* ONNX: the float ONNX from ``edgekit.export.onnx.to_onnx``, then onnxruntime's
  ``quantize_static`` in QDQ format (per-channel int8 weights), calibration method (MinMax /
  Entropy / Percentile) chosen on the validation split, and the most sensitive layers kept
  float when the drop still exceeds the allowed one (``edgekit.compress.int8.search``);
* OpenVINO: ``nncf.quantize`` on the model read from that float ONNX (preset chosen on
  validation; ``nncf.quantize_with_accuracy_control`` when still over the allowed drop),
  ``openvino.save_model``. Layers left float are listed in the file's manifest entry.

Each quantized file is run by its own runtime (onnxruntime / LiteRT / OpenVINO runners) on
the test split; its accuracy, bytes and sha256 go to the manifest.

``qat=True``: tfmot ``quantize_model`` (fake-quant), fine-tune ``epochs``, then int8 TFLite.
``precision="fp16"``: TFLite float16 and OpenVINO FP16 IR. ``target``: refuses what the target's
descriptor (``targets/*.toml``) does not run (int8 on the NCS2 or the Jetson Nano).

Example::

    art = quantize("out/seed", "mnist:data/mnist", "out/int8", calibration_samples=500)
    art.files["model.int8.onnx"]["accuracy"]
"""
import tempfile
from pathlib import Path

import numpy as np

from edgekit.calibration import calibration_set
from edgekit.compress._common import TUNING, Job, fine_tune, printer
from edgekit.compress.options import declared
from edgekit.compress.int8.common import (  # noqa: F401 (FORMATS ...: this module's API)
    FORMAT_NAMES, FORMATS, ONNX_MODEL_FORMATS, ONNX_OPSET, RUNTIME, _check_target, _openvino,
    _search_drop, add_quantized, check_formats, measure_file, onnx_int8_entry)
from edgekit.compress.int8.onnx import quantize_onnx
from edgekit.errors import EdgekitError


@declared("quantize")
def quantize(model, data, out, *, precision, formats, calibration_samples, calibration_data, io,
             qat, epochs, lr, batch_size, target, onnx_activations, per_channel, seed, max_drop,
             allow_drop, preprocess, force=False, progress=True):
    """Quantize ``model`` (artifact dir, .h5 or SavedModel) and write the artifact ``out``.

    ``precision``: int8 (default) or fp16. ``formats``: any of tflite, onnx, openvino (default:
    all three; ``qat`` writes TFLite). ``io``: TFLite input/output type, float or int8.
    ``onnx_activations``: uint8 (default, U8S8: onnxruntime's fast path on x86) or int8.
    Every written file is run by its runtime on the validation split: one that loses more than
    ``max_drop`` points (default 1.0) fails the whole run closed (GuardFailed, nothing written)
    unless ``allow_drop``. Returns the written :class:`~edgekit.artifact.Artifact`.
    Options are declared (types, defaults, checks) in :mod:`edgekit.compress.options`.
    An ONNX model (a bare ``.onnx`` or an imported one) goes to
    :func:`edgekit.compress.int8.onnx.quantize_onnx` (no tensorflow).
    """
    from edgekit.onnx_model import onnx_source
    if onnx_source(model) is not None:
        return quantize_onnx(model, data, out, precision=precision, formats=formats,
                             calibration_samples=calibration_samples,
                             calibration_data=calibration_data, io=io, qat=qat, target=target,
                             onnx_activations=onnx_activations, per_channel=per_channel,
                             seed=seed, max_drop=max_drop, allow_drop=allow_drop,
                             preprocess=preprocess, force=force, progress=progress)
    from edgekit._tf import set_seed
    if target is not None:
        _check_target(target, precision)
    if qat and precision != "int8":
        raise EdgekitError("--qat trains for int8: drop --precision fp16")
    fmts = check_formats(formats, precision, qat)
    if qat and epochs is not None and epochs < 1:
        raise EdgekitError("--qat needs fine-tuning: --epochs must be >= 1")
    job = Job(model, data, out, force, max_drop=max_drop, allow_drop=allow_drop,
              preprocess=preprocess, method="qat" if qat else "quantize")
    say = printer(progress)
    net = job.model
    rep = None
    if precision == "int8":
        cal, rep = calibration_set(job.ds, calibration_data, calibration_samples,
                                   net.input_shape[1:], seed)
    before = job.before()
    set_seed(seed)
    if qat:
        from edgekit.compress.guard import epoch_cap
        batch_size = batch_size or job.default_batch_size()
        epochs = epoch_cap(len(job.ds.x_train), batch_size, epochs)
        net = _qat(net, job, epochs, lr, batch_size, progress, say)

    files, figures = {}, {}
    with job.staging() as tmp, tempfile.TemporaryDirectory() as work:
        work = Path(work)
        float_onnx = None
        if "onnx" in fmts or "openvino" in fmts:
            from edgekit.export.onnx import to_onnx
            float_onnx = work / "model.fp32.onnx"
            info = to_onnx(net, float_onnx, opset=ONNX_OPSET)
            figures["onnx_fp32_bytes"] = float_onnx.stat().st_size
        for fmt in fmts:
            say("quantizing to {} {} ...".format(precision, fmt))
            if fmt == "tflite":
                name = "model.{}.tflite".format(precision)
                _tflite(net, tmp / name, precision, rep, io, qat)
                extra = {"io": io if precision == "int8" else "float"}
                if rep is not None:
                    extra["calibration"] = {"method": "TFLiteConverter min/max over the "
                                                      "representative images", "float_layers": []}
            elif fmt == "onnx":
                from edgekit.compress.int8.search import onnx_int8
                name = "model.{}.onnx".format(precision)
                search = onnx_int8(float_onnx, tmp / name, rep, info["input_name"], job.ds.x_val,
                                   job.ds.y_val, _search_drop(job), onnx_activations,
                                   per_channel, work, say, guard_drop=job.guard.max_drop)
                extra = onnx_int8_entry(ONNX_OPSET, onnx_activations, search["per_channel"], search)
            else:
                name = "openvino/model.{}.xml".format(precision)
                extra = {"weights": name[:-4] + ".bin", "from": "float ONNX opset {}".format(
                    ONNX_OPSET)}
                if precision == "int8":
                    from edgekit.compress.int8.search import openvino_int8
                    search = openvino_int8(float_onnx, tmp / name, rep, job.ds.x_val,
                                           job.ds.y_val, _search_drop(job), say,
                                           guard_drop=job.guard.max_drop)
                    extra.update(calibration=search, float_layers=search["float_layers"])
                else:
                    _openvino(float_onnx, tmp / name, precision, rep)
            (acc, val_acc), io_names = measure_file(RUNTIME[fmt], tmp / name, [
                (job.ds.x_test, job.ds.y_test), (job.ds.x_val, job.ds.y_val)])
            add_quantized(files, tmp, name, fmt, precision, acc, val_acc, io_names, extra, rep,
                          job.guard, say)
        primary = [n for n in files if files[n].get("inference")][0]
        metrics = {"accuracy": files[primary]["accuracy"], "bytes": files[primary]["bytes"],
                   "params": before["params"], "macs": before["macs"],
                   "nonzero_params": before["nonzero_params"], "primary": primary,
                   "formats": {n: {"accuracy": e["accuracy"], "bytes": e["bytes"],
                                   "ratio_vs_fp32": None} for n, e in files.items()
                               if e.get("inference")},
                   "before": before}
        fp32_bytes = {"tflite": _float_tflite_bytes(job.model, work),
                      "onnx": figures.get("onnx_fp32_bytes"),
                      "openvino": figures.get("onnx_fp32_bytes")}
        for n, f in metrics["formats"].items():
            ref = fp32_bytes.get(files[n]["format"])
            f["fp32_bytes"] = ref
            f["ratio_vs_fp32"] = (ref / float(f["bytes"])) if ref else None
            f["float_layers"] = files[n].get("float_layers", [])
            note = _size_note(files[n]["format"], f["ratio_vs_fp32"], precision)
            if note:
                f["size_note"] = note
        params = {"precision": precision, "formats": list(fmts), "qat": bool(qat),
                  "calibration_samples": None if rep is None else int(len(rep)),
                  "calibration_data": (cal.spec if rep is not None else None),
                  "calibration_split": "train" if rep is not None else None,
                  "io": io, "onnx_activations": onnx_activations, "per_channel": bool(per_channel),
                  "seed": seed, "target": target}
        if qat:
            params.update(epochs=epochs, lr=lr, batch_size=batch_size, **TUNING)
        input_spec = job.ds.input_spec()
        if io == "int8" and "tflite" in fmts and precision == "int8":
            input_spec["tflite_dtype"] = "int8"
        job.write(tmp, "quantize", params, metrics, files, input_spec=input_spec)
    return job.artifact()


def _qat(model, job, epochs, lr, batch_size, progress, say):
    from edgekit._tf import tfmot
    mot = tfmot()
    try:
        q = mot.quantization.keras.quantize_model(model)
    except (ValueError, RuntimeError) as exc:
        raise EdgekitError("quantization-aware training cannot wrap this model: {}".format(
            str(exc).splitlines()[0][:200])) from None
    say("quantization-aware training: {} epoch(s)".format(epochs))
    # fine_tune trains q in place and returns what it ran (epochs), not the model
    fine_tune(q, job, epochs, lr, batch_size or job.default_batch_size(), progress,
              label="quantization-aware training")
    return q


def _tflite(model, path, precision, rep, io, qat):
    from edgekit.export.tflite import to_tflite
    to_tflite(model, path, precision, representative=rep, int8_io=(io == "int8"))


def _float_tflite_bytes(model, work):
    from edgekit.export.tflite import to_tflite
    p = Path(work) / "model.fp32.tflite"
    if not p.exists():
        to_tflite(model, p, "fp32")
    return p.stat().st_size


def _size_note(fmt, ratio, precision):
    """Why an int8 file is far from 4x smaller than fp32 (None when it is not)."""
    if precision != "int8" or not ratio or ratio >= 3.0:
        return None
    why = {"openvino": "the IR's XML graph, fp32 biases and FakeQuantize/scale constants are "
                       "not int8",
           "onnx": "every QuantizeLinear/DequantizeLinear pair adds nodes and fp32 scales",
           "tflite": "the flatbuffer's graph and per-channel scales are not int8"}[fmt]
    return ("{:.1f}x, not ~4x: on a small model fixed costs dominate - {}".format(ratio, why))


def int8_tensor_summary(path):
    """What a test (or a curious user) checks: int8 tensors inside an ONNX / TFLite file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        m = onnx.load(str(path))
        ops = [n.op_type for n in m.graph.node]
        int8 = [t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        return {"quantize_nodes": ops.count("QuantizeLinear"),
                "dequantize_nodes": ops.count("DequantizeLinear"), "int8_initializers": len(int8)}
    from edgekit.runtime.litert import _interpreter_class
    cls, _ = _interpreter_class(allow_tf=True)
    it = cls(model_path=str(path))
    dtypes = [d["dtype"] for d in it.get_tensor_details()]
    return {"int8_tensors": int(sum(1 for d in dtypes if d == np.int8)),
            "input_dtype": str(np.dtype(it.get_input_details()[0]["dtype"])),
            "output_dtype": str(np.dtype(it.get_output_details()[0]["dtype"]))}


__all__ = ["quantize", "int8_tensor_summary"]
