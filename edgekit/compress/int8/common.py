"""What the two int8 paths share: formats, their runtimes, the target check, the calibration
search's drop, measuring a quantized file and adding it to the manifest under the guard.

:mod:`edgekit.compress.int8` is the one int8 entry (Keras models there, ONNX models in
:mod:`edgekit.compress.int8.onnx`); both import from here, never from each other.
"""
from edgekit.errors import EdgekitError
from edgekit.runtime.registry import FORMAT_RUNTIME as RUNTIME  # noqa: F401 (API)
from edgekit.runtime.registry import FORMATS as _EXPORT_FORMATS
from edgekit.runtime.registry import ONNX_OPSET  # noqa: F401 (API)

# every export format, TFLite first (a Keras model's primary int8 file, written first)
FORMATS = tuple(sorted(_EXPORT_FORMATS, key=lambda f: f != "tflite"))
# what an ONNX model (no Keras) is quantized to: no ONNX -> TFLite converter here
ONNX_MODEL_FORMATS = tuple(f for f in FORMATS if f != "tflite")
FORMAT_NAMES = {"tflite": "TFLite", "onnx": "ONNX", "openvino": "OpenVINO IR"}


def onnx_int8_entry(opset, activations, per_channel, search):
    """The manifest facts of an int8 ONNX file (QDQ, int8 weights) and its calibration search."""
    return {"opset": opset, "quant_format": "QDQ",
            "activations": search.get("activations", activations),
            "reduce_range": bool(search.get("reduce_range", False)),
            "weights": "int8", "per_channel": bool(per_channel), "calibration": search,
            "float_layers": search["float_layers"]}


def add_quantized(files, tmp, name, fmt, precision, acc, val_acc, io_names, extra, rep, guard,
                  say):
    """Check one quantized file against the accuracy guard (GuardFailed over it) and add its
    manifest entries to ``files`` (an OpenVINO IR: the .xml counts the .bin's bytes too)."""
    from edgekit.artifact import describe_file
    hints = ["--calibration-samples above {}".format(len(rep)) if rep is not None
             else "--precision fp16", "--formats without {}".format(fmt)]
    checked = guard.check(val_acc, "{} {}".format(precision, fmt), hints)
    entry = describe_file(tmp / name, fmt, precision, accuracy=acc, inference=True, **io_names)
    entry["guard"] = checked
    entry.update(extra)
    if rep is not None:
        entry["calibration_samples"] = int(len(rep))
    files[name] = entry
    if fmt == "openvino":
        binf = name[:-4] + ".bin"
        entry["bytes"] += (tmp / binf).stat().st_size
        files[binf] = describe_file(tmp / binf, "openvino", precision, role="weights", of=name,
                                    inference=False)
    say("  {}: test accuracy {:.2%}, {:,} bytes".format(name, acc, entry["bytes"]))
    return entry


def _check_target(target, precision):
    from edgekit.targets import as_target
    t = as_target(target)
    if precision not in t["precisions"]:
        why = t["refuse_reasons"].get(precision, "")
        raise EdgekitError("target {} refuses {}{}: use --precision {}".format(
            t["name"], precision, " (" + why + ")" if why else "",
            "fp16" if "fp16" in t["precisions"] else t["precisions"][0]))


def check_formats(formats, precision, qat=False, onnx_model=False):
    """The formats to write (``formats`` as declared: a list of names, or None for every one
    this model and precision allow); one clear error for a combination that cannot be made."""
    allowed = ONNX_MODEL_FORMATS if onnx_model else FORMATS
    if formats is None:
        formats = ["tflite"] if qat else [f for f in allowed if precision == "int8" or f != "onnx"]
    if onnx_model and "tflite" in formats:
        raise EdgekitError("TFLite needs the Keras model (there is no ONNX->TFLite converter "
                           "here): an ONNX model is quantized with --formats onnx,openvino")
    bad = [f for f in formats if f not in allowed]
    if bad or not formats:
        raise EdgekitError("unknown quantize format {!r}; choose from: {}".format(
            ",".join(bad), ", ".join(allowed)))
    if qat and formats != ["tflite"]:
        raise EdgekitError("--qat writes int8 TFLite only (--formats tflite)")
    if precision == "fp16" and "onnx" in formats:
        others = [f for f in allowed if f != "onnx"]
        raise EdgekitError("fp16 is written as {} (no float16 ONNX converter installed here): use "
                           "--formats {}".format(" and ".join(FORMAT_NAMES[f] for f in others),
                                                 ",".join(others)))
    return list(dict.fromkeys(formats))


def _search_drop(job):
    """Points of validation accuracy the int8 calibration search aims to stay within per format:
    the run's --max-drop when the user gave one, else int8_search's own target (0.5, tighter
    than the guard's default 1.0). The guard then holds every written file to --max-drop."""
    from edgekit.compress.int8.search import DEFAULT_MAX_DROP
    if getattr(job, "max_drop_given", False):
        return float(job.max_drop)
    return DEFAULT_MAX_DROP


def _openvino(float_onnx, xml, precision, rep):
    """fp16 OpenVINO IR (int8 goes through ``int8_search.openvino_int8``)."""
    from edgekit.export.openvino import to_openvino
    xml.parent.mkdir(parents=True, exist_ok=True)
    to_openvino(float_onnx, xml, fp16=True)


def measure_file(runtime, path, splits):
    """Top-1 accuracy of a quantized file, run by its runtime, on each ``(x, y)`` of
    ``splits``; plus its input/output names."""
    from edgekit.runtime import open_runner
    from edgekit.images import as_float32
    from edgekit.runtime.bench import accuracy
    opts = {"allow_tf": True} if runtime == "litert" else {}
    with open_runner(runtime, path, **opts) as r:
        accs = [accuracy(r, as_float32(x), y, batch=256) for x, y in splits]
        return accs, {"input_name": r.input_name, "output_names": list(r.output_names)}
