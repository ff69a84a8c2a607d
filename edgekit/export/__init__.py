"""Export an artifact to ONNX / TFLite / OpenVINO IR, each checked for parity.

``export(artifact, formats)`` writes the files into the artifact itself (so ``bench`` and
``deploy`` find them) or, with ``out=``, into a new artifact directory. Target rules come from
``targets/*.toml`` (edgekit.targets): allowed formats and precisions, max opset, forbidden ops.
Nothing is written unless every export passes parity.

Example::

    export("out/seed", ["onnx", "openvino"], target="ncs2")    # FP16 IR + ONNX opset 13
"""
import shutil
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

FORMATS = ("onnx", "tflite", "openvino")
FORMAT_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}


def export(artifact, formats=("onnx",), target=None, precision=None, out=None, force=False,
           data=None, parity_samples=1000, batch=None, calibration_samples=200, opset=None):
    """Export ``artifact`` to ``formats``; returns the (re)opened Artifact."""
    from edgekit.artifact import Artifact, describe_file, staging, write_manifest
    from edgekit.data import load_data
    from edgekit.targets import check_onnx_model, check_precision, load_target

    formats = _parse_formats(formats)
    art = Artifact.open(artifact)
    tname = target or "laptop-cpu"
    t = load_target(tname)
    precision = precision or t.get("default_precision", "fp32")
    check_precision(t, precision)
    for fmt in formats:
        if fmt not in t["formats"]:
            raise EdgekitError("target {} does not run {} (it runs: {})".format(
                tname, fmt, ", ".join(t["formats"])))
    if out is not None and Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    opset = int(opset or min(13, t["max_opset"]))
    if opset > t["max_opset"]:
        raise EdgekitError("opset {} is above {}'s max {}".format(opset, tname, t["max_opset"]))

    ds = load_data(data or art.manifest["source"].get("data") or "digits")
    x, y = ds.x_test[:parity_samples], ds.y_test[:parity_samples]
    model, ref = _reference(art, x)

    stage = art.staging_dir()
    try:
        entries, parity = {}, {}
        onnx_name = None
        if "onnx" in formats or "openvino" in formats:
            onnx_name, entry = _onnx(art, model, stage, opset, batch, tname)
            if onnx_name not in art.files or "onnx" in formats:
                problems = check_onnx_model(stage / onnx_name if (stage / onnx_name).exists()
                                            else art.file(onnx_name), t)
                if problems:
                    raise EdgekitError("{} cannot run this ONNX: {}".format(tname, "; ".join(problems)))
            if (stage / onnx_name).exists():
                entries[onnx_name] = entry
        if "openvino" in formats:
            from edgekit.export.openvino import to_openvino
            src = stage / onnx_name if (stage / onnx_name).exists() else art.file(onnx_name)
            ov_name = "openvino-{}".format(precision if precision != "int8" else "fp32")
            ov_prec = "fp16" if precision == "fp16" else "fp32"
            to_openvino(src, stage / ov_name, ov_prec)
            entries[ov_name] = describe_file(stage / ov_name, "openvino", ov_prec, entry="model.xml",
                                             target=tname)
            if "onnx" not in formats and onnx_name in entries:
                del entries[onnx_name]
                (stage / onnx_name).unlink()
        if "tflite" in formats:
            if model is None:
                raise EdgekitError("TFLite export needs the Keras model and {} has none (a k-NN "
                                   "sliced artifact ships one ONNX graph: use onnx/openvino)".format(art.path))
            from edgekit.export.tflite import to_tflite
            name = "model.{}.tflite".format(precision)
            to_tflite(model, stage / name, precision,
                      representative=ds.x_train[:calibration_samples])
            entries[name] = describe_file(stage / name, "tflite", precision, target=tname)
        for name, entry in entries.items():
            got = _run(stage / name, entry, x)
            fig = compare_for(entry, ref, got, y)
            entry["parity"] = fig
            parity[name] = fig
        from edgekit.export.parity import raise_on_failures
        raise_on_failures(parity)
        for e in entries.values():
            e["parity"] = {k: v for k, v in e["parity"].items() if k != "failures"}
        updates = {"exports": {name: {"target": tname, "precision": e["precision"]}
                               for name, e in entries.items()}}
        if out is None:
            art.add_files(stage, entries, updates)
            return art
        with staging(out, force=force) as tmp:
            import copy
            manifest = copy.deepcopy(art.manifest)
            manifest["kind"] = "export"
            for name in list(manifest["files"]):
                _copy(art.file(name), tmp / name)
            for name in entries:
                shutil.move(str(stage / name), str(tmp / name))
            manifest["files"].update(entries)
            manifest.setdefault("exports", {}).update(updates["exports"])
            write_manifest(tmp, manifest)
        return Artifact.open(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def compare_for(entry, ref, got, y):
    from edgekit.export.parity import compare
    return compare(ref, got, y, entry["precision"] if entry["precision"] in ("fp16", "int8") else "fp32")


def _parse_formats(formats):
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise EdgekitError("unknown export format {!r}; choose from: {}".format(
            ",".join(bad) or "", ", ".join(FORMATS)))
    return list(dict.fromkeys(formats))


def _reference(art, x):
    """(keras model or None, reference first-output on x)."""
    if art.find("keras"):
        from edgekit.models import load_model
        model = load_model(art.path)
        if tuple(model.input_shape[1:]) != tuple(x.shape[1:]):
            raise EdgekitError("the model expects input {} but the data has {}".format(
                tuple(model.input_shape[1:]), tuple(x.shape[1:])))
        return model, model.predict(x, batch_size=256, verbose=0)
    onnx = [n for n in art.find("onnx") if art.files[n].get("inference", True)]
    if not onnx:
        raise EdgekitError("{} holds neither a Keras model nor an ONNX graph to export".format(art.path))
    from edgekit.runtime import open_runner
    with open_runner("onnxruntime", art.file(onnx[0])) as r:
        return None, list(r.infer(x).values())[0]


def _onnx(art, model, stage, opset, batch, tname):
    """Write (or reuse) the ONNX file; returns (name, files entry)."""
    from edgekit.artifact import describe_file
    if model is None:
        name = [n for n in art.find("onnx") if art.files[n].get("inference", True)][0]
        return name, art.files[name]
    from edgekit.export.onnx import to_onnx
    name = "model.onnx" if batch is None else "model.b{}.onnx".format(batch)
    info = to_onnx(model, stage / name, opset=opset, batch=batch)
    return name, describe_file(stage / name, "onnx", "fp32", opset=info["opset"],
                               input_name=info["input_name"], output_names=info["output_names"],
                               batch=batch, target=tname)


def _run(path, entry, x):
    from edgekit.runtime import open_runner
    rt = FORMAT_RUNTIME[entry["format"]]
    p = Path(path) / entry["entry"] if entry.get("entry") else Path(path)
    with open_runner(rt, p) as r:
        if r.input_shape and isinstance(r.input_shape[0], int) and r.input_shape[0] > 0:
            b = r.input_shape[0]
            n = (len(x) // b) * b
            return np.concatenate([list(r.infer(x[i:i + b]).values())[0] for i in range(0, n, b)])
        return list(r.infer(x).values())[0]


def _copy(src, dst):
    if Path(src).is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
