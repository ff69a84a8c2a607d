"""Post-training int8 (or OpenVINO FP16) of a user's ONNX model, from any framework.

The ONNX file is the model: no Keras, no tensorflow. Calibration images are drawn (seeded)
from the TRAINING split of ``data`` (or ``calibration_data``) and put into the model's input
layout (NCHW for PyTorch-style graphs). Two outputs, each measured by its own runtime on the
test split:

* ``model.int8.onnx``: onnxruntime ``quantize_static``, QDQ format, per-channel int8 weights;
* ``openvino/model.int8.xml`` (+ ``.bin``): NNCF on the model OpenVINO reads from the ONNX
  file (``precision="fp16"``: an FP16 IR instead).

Both go through the same calibration search as Keras models
(:mod:`edgekit.compress.int8_search`: calibration / preset chosen on the validation split,
sensitive layers kept float while the drop exceeds ``max_drop`` points).

TFLite and quantization-aware training need the Keras model and are refused in one line.

Example::

    art = quantize_onnx("resnet.onnx", "npz:cifar.npz", "out/resnet-int8", calibration_samples=300)
    art.files["model.int8.onnx"]["accuracy"], art.manifest["input"]["layout"]
"""
import tempfile
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

FORMATS = ("onnx", "openvino")
RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}


def quantize_onnx(model, data, out, precision="int8", formats=None, calibration_samples=200,
                  calibration_data=None, io="float", qat=False, target=None,
                  onnx_activations="uint8", per_channel=True, seed=0, max_drop=None,
                  allow_drop=False, preprocess=None, force=False, progress=True):
    """Quantize the ONNX model ``model`` (a ``.onnx`` file or an imported artifact) and write
    the artifact ``out``; returns it. Options as :func:`edgekit.compress.quantize.quantize`,
    the same accuracy guard (validation split, ``max_drop`` points) included."""
    from edgekit.artifact import Artifact, describe_file, new_manifest, staging, write_manifest
    from edgekit.compress._common import calibration_images, printer
    from edgekit.compress.guard import DEFAULT_MAX_DROP, Guard
    from edgekit.compress.int8_search import DEFAULT_MAX_DROP as SEARCH_DROP
    from edgekit.compress.int8_search import onnx_int8, openvino_int8
    from edgekit.images import as_float32
    from edgekit.compress.quantize import _check_target, _openvino, add_quantized
    from edgekit.data import file_sha256, load_data
    from edgekit.onnx_model import (fit_data_to_onnx, input_spec, inspect_onnx, onnx_accuracy,
                                    onnx_source, output_spec, refuse_training, to_model_layout)
    src = onnx_source(model)
    if qat:
        refuse_training(model, "quantization-aware training (--qat)")
    if precision not in ("int8", "fp16"):
        raise EdgekitError("--precision must be int8 or fp16 (fp32 is the model you have)")
    if target is not None:
        _check_target(target, precision)
    if io != "float":
        raise EdgekitError("--io sets the TFLite input type and an ONNX model is quantized to "
                           "ONNX and OpenVINO IR only: drop --io")
    if onnx_activations not in ("uint8", "int8"):
        raise EdgekitError("--onnx-activations must be uint8 or int8")
    fmts = _formats(formats, precision)
    if Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    facts = inspect_onnx(src)
    if facts["precision"] != "fp32":
        raise EdgekitError("{} is already {} (quantize starts from an fp32 ONNX model)".format(
            src, facts["precision"]))
    layout = facts["layout"]
    ds = data if hasattr(data, "x_train") else load_data(data)
    say = printer(progress)
    ds = fit_data_to_onnx(facts, ds, what=str(src), preprocess=preprocess, say=say)
    rep = cal = None
    if precision == "int8":
        cal = ds
        if calibration_data is not None:
            from edgekit.adapt import data_for
            cal = calibration_data if hasattr(calibration_data, "x_train") \
                else load_data(calibration_data)
            cal = data_for(cal, ds.input_spec())
        rep = to_model_layout(calibration_images(cal, calibration_samples, ds.input_shape, seed),
                              layout)
    say("measuring the fp32 model ...")
    before = {"accuracy": onnx_accuracy(src, ds.x_test, ds.y_test, layout),
              "val_accuracy": onnx_accuracy(src, ds.x_val, ds.y_val, layout),
              "params": facts["params"], "bytes": int(src.stat().st_size)}
    guard = Guard(before["val_accuracy"], DEFAULT_MAX_DROP if max_drop is None else max_drop,
                  allow_drop, samples=len(ds.y_val))
    # the search aims at the user's --max-drop, else its own 0.5; the guard then checks max_drop
    drop = SEARCH_DROP if max_drop is None else guard.max_drop
    x_test = to_model_layout(as_float32(ds.x_test), layout)
    x_val = to_model_layout(as_float32(ds.x_val), layout)

    files = {}
    with staging(out, force=force) as tmp, tempfile.TemporaryDirectory() as work:
        for fmt in fmts:
            say("quantizing to {} {} ...".format(precision, fmt))
            if fmt == "onnx":
                name = "model.int8.onnx"
                try:
                    search = onnx_int8(src, tmp / name, rep, facts["input_name"], x_val,
                                       ds.y_val, drop, onnx_activations, per_channel,
                                       Path(work), say)
                except EdgekitError:
                    raise
                except Exception as exc:  # onnxruntime.quantization raises plain errors
                    raise EdgekitError("onnxruntime cannot quantize {}: {}".format(
                        src, _first_line(exc))) from None
                extra = {"opset": facts["opset"], "quant_format": "QDQ",
                         "activations": onnx_activations, "weights": "int8",
                         "per_channel": bool(per_channel), "calibration": search,
                         "float_layers": search["float_layers"]}
            else:
                name = "openvino/model.{}.xml".format(precision)
                extra = {"weights": name[:-4] + ".bin", "from": "ONNX {}".format(src.name)}
                if precision == "int8":
                    search = openvino_int8(src, tmp / name, rep, x_val, ds.y_val, drop, say)
                    extra.update(calibration=search, float_layers=search["float_layers"])
                else:
                    _openvino(src, tmp / name, precision, rep)
            acc, io_names = _measure(RUNTIME[fmt], tmp / name, x_test, ds.y_test)
            val_acc, _ = _measure(RUNTIME[fmt], tmp / name, x_val, ds.y_val)
            add_quantized(files, tmp, name, fmt, precision, acc, val_acc, io_names, extra, rep,
                          guard, say)
        primary = [n for n in files if files[n].get("inference")][0]
        metrics = {"accuracy": files[primary]["accuracy"], "bytes": files[primary]["bytes"],
                   "params": facts["params"], "primary": primary, "before": before,
                   "formats": {n: {"accuracy": e["accuracy"], "bytes": e["bytes"],
                                   "fp32_bytes": before["bytes"],
                                   "ratio_vs_fp32": before["bytes"] / float(e["bytes"]),
                                   "float_layers": e.get("float_layers", [])}
                               for n, e in files.items() if e.get("inference")}}
        params = {"precision": precision, "formats": list(fmts), "qat": False,
                  "calibration_samples": None if rep is None else int(len(rep)),
                  "calibration_data": cal.spec if rep is not None else None,
                  "calibration_split": "train" if rep is not None else None,
                  "onnx_activations": onnx_activations, "per_channel": bool(per_channel),
                  "seed": seed, "target": target, "from": "onnx", "max_drop": guard.max_drop}
        source = {"model_sha256": file_sha256(src), "model": str(model), "data": ds.spec,
                  "data_sha256": ds.fingerprint()}
        manifest = new_manifest("compressed", "quantize", params, source,
                                input_spec(facts, ds), ds.classes, metrics)
        manifest["output"] = output_spec(facts)
        manifest["files"] = files
        write_manifest(tmp, manifest)
    return Artifact.open(out)


def _formats(formats, precision):
    if formats is None:
        formats = list(FORMATS) if precision == "int8" else ["openvino"]
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = [f.lower() for f in formats]
    if "tflite" in formats:
        raise EdgekitError("TFLite needs the Keras model (there is no ONNX->TFLite converter "
                           "here): an ONNX model is quantized with --formats onnx,openvino")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise EdgekitError("unknown quantize format {!r}; choose from: {}".format(
            ",".join(bad), ", ".join(FORMATS)))
    if precision == "fp16" and "onnx" in formats:
        raise EdgekitError("fp16 is written as OpenVINO IR (no float16 ONNX converter installed "
                           "here): use --formats openvino")
    return list(dict.fromkeys(formats))


def _measure(runtime, path, x, y):
    """Test accuracy of a quantized file run by its runtime, plus its input/output names."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import accuracy
    with open_runner(runtime, path) as r:
        return accuracy(r, x, y, batch=256), {"input_name": r.input_name,
                                              "output_names": list(r.output_names)}


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["quantize_onnx"]
