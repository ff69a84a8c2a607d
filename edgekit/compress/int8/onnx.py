"""Post-training int8 (or OpenVINO FP16) of a user's ONNX model, from any framework.

The ONNX file is the model: no Keras, no tensorflow. Calibration images are drawn (seeded)
from the TRAINING split of ``data`` (or ``calibration_data``) and put into the model's input
layout (NCHW for PyTorch-style graphs). Two outputs, each measured by its own runtime on the
test split:

* ``model.int8.onnx``: onnxruntime ``quantize_static``, QDQ format, per-channel int8 weights;
* ``openvino/model.int8.xml`` (+ ``.bin``): NNCF on the model OpenVINO reads from the ONNX
  file (``precision="fp16"``: an FP16 IR instead).

Both go through the same calibration search as Keras models
(:mod:`edgekit.compress.int8.search`: calibration / preset chosen on the validation split,
sensitive layers kept float while the drop exceeds ``max_drop`` points).

TFLite and quantization-aware training need the Keras model and are refused in one line.

Example::

    art = quantize_onnx("resnet.onnx", "npz:cifar.npz", "out/resnet-int8", calibration_samples=300)
    art.files["model.int8.onnx"]["accuracy"], art.manifest["input"]["layout"]
"""
import tempfile
from pathlib import Path

from edgekit.errors import EdgekitError



def quantize_onnx(model, data, out, *, precision, formats, calibration_samples, calibration_data,
                  io, qat, target, onnx_activations, per_channel, seed, max_drop, allow_drop,
                  preprocess, force=False, progress=True):
    """Quantize the ONNX model ``model`` (a ``.onnx`` file or an imported artifact) and write
    the artifact ``out``; returns it. Called by :func:`edgekit.compress.int8.quantize` (the one int8 entry)
    with its options resolved (declared in :mod:`edgekit.compress.options`), the same
    accuracy guard (validation split, ``max_drop`` points) included."""
    from edgekit.calibration import calibration_set
    from edgekit.compress._common import Job, printer
    from edgekit.compress.int8.search import onnx_int8, openvino_int8
    from edgekit.images import as_float32
    from edgekit.compress.int8.common import (RUNTIME, _check_target, _openvino, _search_drop,
                                          add_quantized, check_formats, measure_file,
                                          onnx_int8_entry)
    from edgekit.onnx_model import (input_spec, output_spec, refuse_training, self_contained,
                                    to_model_layout)
    if qat:
        refuse_training(model, "quantization-aware training (--qat)")
    if target is not None:
        _check_target(target, precision)
    if io != "float":
        raise EdgekitError("--io sets the TFLite input type and an ONNX model is quantized to "
                           "ONNX and OpenVINO IR only: drop --io")
    fmts = check_formats(formats, precision, onnx_model=True)
    job = Job(model, data, out, force, max_drop=max_drop, allow_drop=allow_drop,
              preprocess=preprocess, method="quantize", onnx=True)
    src, facts, ds = job.model_path, job.onnx, job.ds
    if facts["precision"] != "fp32":
        raise EdgekitError("{} is already {} (quantize starts from an fp32 ONNX model)".format(
            src, facts["precision"]))
    layout = facts["layout"]
    say = printer(progress)
    rep = cal = None
    if precision == "int8":
        cal, rep = calibration_set(ds, calibration_data, calibration_samples, ds.input_shape,
                                   seed)
        rep = to_model_layout(rep, layout)
    say("measuring the fp32 model ...")
    before, guard = job.before(), job.guard
    # the search aims at the user's --max-drop, else its own 0.5; the guard then checks max_drop
    drop = _search_drop(job)
    x_test = to_model_layout(as_float32(ds.x_test), layout)
    x_val = to_model_layout(as_float32(ds.x_val), layout)

    files = {}
    with job.staging() as tmp, tempfile.TemporaryDirectory() as work:
        # functions inlined, external data embedded: what the quantizers need (a plain file
        # is used as it is)
        plain = self_contained(src, work)
        for fmt in fmts:
            say("quantizing to {} {} ...".format(precision, fmt))
            if fmt == "onnx":
                name = "model.int8.onnx"
                try:
                    search = onnx_int8(plain, tmp / name, rep, facts["input_name"], x_val,
                                       ds.y_val, drop, onnx_activations, per_channel,
                                       Path(work), say, guard_drop=guard.max_drop)
                except EdgekitError:
                    raise
                except Exception as exc:  # onnxruntime.quantization raises plain errors
                    raise EdgekitError("onnxruntime cannot quantize {}: {}".format(
                        src, _first_line(exc))) from None
                extra = onnx_int8_entry(facts["opset"], onnx_activations, search["per_channel"], search)
            else:
                name = "openvino/model.{}.xml".format(precision)
                extra = {"weights": name[:-4] + ".bin", "from": "ONNX {}".format(src.name)}
                if precision == "int8":
                    try:
                        search = openvino_int8(plain, tmp / name, rep, x_val, ds.y_val, drop, say,
                                               guard_drop=guard.max_drop)
                    except EdgekitError:
                        raise
                    except Exception as exc:  # openvino / nncf raise RuntimeError & co.
                        raise EdgekitError("OpenVINO/NNCF cannot quantize {}: {} (--formats onnx "
                                           "skips OpenVINO)".format(src, _first_line(exc))) from None
                    extra.update(calibration=search, float_layers=search["float_layers"])
                else:
                    _openvino(plain, tmp / name, precision, rep)
            (acc, val_acc), io_names = measure_file(RUNTIME[fmt], tmp / name, [
                (x_test, ds.y_test), (x_val, ds.y_val)])
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
        job.write(tmp, "quantize", params, metrics, files, input_spec=input_spec(facts, ds),
                  output=output_spec(facts))
    return job.artifact()


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


__all__ = ["quantize_onnx"]
