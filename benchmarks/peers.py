"""Issue 35: edgekit beside the tools our users would otherwise use, on the same models, the same
test images and the same calibration images.

For each model (a Keras ``.h5``; ``benchmarks/arch_mnist32.py`` writes the zoo's ResNet-,
Inception- and MobileNetV2-style nets trained on MNIST at 32x32x3, ``edgekit train gap-cnn``
the MNIST ``gap-cnn``):

* int8, per format, each tool's defaults on the same ``--calibration-samples`` training images
  (``edgekit.calibration.calibration_set``, seed 0):
  TFLite ``TFLiteConverter`` PTQ (``Optimize.DEFAULT`` + representative data);
  onnxruntime ``quantize_static`` (its defaults: QDQ, int8 activations, per-tensor, MinMax) and
  the same with ``per_channel=True``; NNCF ``nncf.quantize`` (defaults) on the OpenVINO model read
  from the same float ONNX -- beside ``edgekit.compress(..., "quantize")``;
* 50% magnitude pruning: tfmot's plain recipe (``prune_low_magnitude`` with
  ``ConstantSparsity(0.5)``, Adam 1e-3, ``--prune-epochs`` epochs, ``strip_pruning``) beside
  ``edgekit.compress(..., "prune", sparsity=0.5)`` with its defaults.

Each row: test accuracy (the data's test split) and its standard error, bytes, p50 latency
(batch 1, one thread, on the format's runtime; all files of a model timed in interleaved
rounds) and the wall time to produce it. ``ahead_pts``: edgekit minus the best peer default of
that format, with the test split's standard error to read it by.

    .venv/bin/python benchmarks/peers.py --models resnet=CACHE/resnet.h5,gap=CACHE/gap.h5 \\
        --data npz:CACHE/mnist32.npz --json benchmarks/results/peers.json
"""
import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}


def _timed(fn):
    t0 = time.time()
    out = fn()
    return out, round(time.time() - t0, 2)


def _ort_reader(name, rep):
    class Reader(object):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(rep):
                return None
            self.i += 1
            return {name: rep[self.i - 1:self.i]}

        def rewind(self):
            self.i = 0
    return Reader()


def peer_int8(net, fp32_onnx, input_name, rep, work):
    """The peers' default int8 files: {label: (format, path, seconds)}."""
    from edgekit._tf import tf as _tf
    tf = _tf()
    out = {}

    def tflite():
        conv = tf.lite.TFLiteConverter.from_keras_model(net)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen():
            for i in range(len(rep)):
                yield [rep[i:i + 1]]
        conv.representative_dataset = gen
        p = work / "tflite_ptq.tflite"
        p.write_bytes(conv.convert())
        return p
    p, s = _timed(tflite)
    out["TFLite PTQ"] = ("tflite", p, s)
    from onnxruntime.quantization import quantize_static
    for label, kw in (("ORT quantize_static", {}), ("ORT quantize_static per-channel",
                                                    {"per_channel": True})):
        p = work / ("ort_{}.onnx".format("pc" if kw else "default"))
        _, s = _timed(lambda: quantize_static(str(fp32_onnx), str(p), _ort_reader(input_name, rep),
                                              **kw))
        out[label] = ("onnx", p, s)

    def nncf_default():
        import nncf
        import openvino as ov
        m = ov.convert_model(str(fp32_onnx))
        name = m.inputs[0].get_any_name()
        q = nncf.quantize(m, nncf.Dataset([rep[i:i + 1] for i in range(len(rep))],
                                          lambda x: {name: x}), subset_size=len(rep))
        p = work / "nncf" / "model.xml"
        p.parent.mkdir(exist_ok=True)
        ov.save_model(q, str(p), compress_to_fp16=False)
        return p
    p, s = _timed(nncf_default)
    out["NNCF quantize"] = ("openvino", p, s)
    return out


def tfmot_prune(net, ds, epochs, batch_size=32, sparsity=0.5, lr=1e-3):
    """tfmot's documented recipe, nothing added; returns the stripped model."""
    from edgekit._tf import keras, tfmot
    k, mot = keras(), tfmot()
    m = mot.sparsity.keras.prune_low_magnitude(net, pruning_schedule=mot.sparsity.keras.ConstantSparsity(sparsity, 0))
    from edgekit.models import loss_for        # the loss the head needs (softmax or logits)
    m.compile(optimizer=k.optimizers.Adam(lr), loss=loss_for(net), metrics=["accuracy"])
    m.fit(ds.x_train, ds.y_train, batch_size=batch_size, epochs=epochs, verbose=0,
          callbacks=[mot.sparsity.keras.UpdatePruningStep()])
    return mot.sparsity.keras.strip_pruning(m)


def p50s(files, x, rounds=3, iterations=200):
    """{key: p50 ms}: batch 1, one thread, every file timed in each of ``rounds`` rounds."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import measure
    got = {k: [] for k in files}
    for _ in range(rounds):
        for k, (fmt, path) in files.items():
            opts = {"allow_tf": True} if fmt == "tflite" else {}
            with open_runner(RUNTIME[fmt], path, threads=1, **opts) as r:
                got[k].append(measure(r, x[:100], batch=1, warmup=20,
                                      iterations=iterations)["latency_ms"]["p50"])
    return {k: float(np.median(v)) for k, v in got.items()}


def run_model(name, path, data, ds, out, a):
    from edgekit.calibration import calibration_set
    from edgekit.compress import compress
    from edgekit.compress.guard import GuardFailed
    from edgekit.compress.int8 import measure_file
    from edgekit.export.onnx import to_onnx
    from edgekit.images import as_float32
    from edgekit.models import keras_accuracy, load_model
    net = load_model(path)
    _, rep = calibration_set(ds, None, a.calibration_samples, ds.input_shape, 0)
    rep = np.ascontiguousarray(rep, dtype=np.float32)
    x_test, y_test = as_float32(ds.x_test), ds.y_test
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    info = to_onnx(net, fp32)
    rows = {"float": {"format": "onnx", "path": fp32, "seconds": 0.0, "tool": "float"}}
    if "quantize" in a.only:
        for label, (fmt, p, s) in peer_int8(net, fp32, info["input_name"], rep, work).items():
            rows[label] = {"format": fmt, "path": p, "seconds": s, "tool": "peer"}
        t0 = time.time()
        art = compress(str(path), "quantize", data, work / "edgekit-int8", force=True,
                       calibration_samples=a.calibration_samples, allow_drop=True,
                       progress=False)
        secs = round(time.time() - t0, 2)
        for fname, e in art.manifest["files"].items():
            if e.get("inference") and e.get("precision") == "int8":
                cal = e.get("calibration") or {}
                rows["edgekit " + e["format"]] = {"format": e["format"], "path": art.path / fname,
                                                 "seconds": secs, "tool": "edgekit",
                                                 "chosen": cal.get("chosen_by"),
                                                 "candidate": cal.get("chosen") or cal.get(
                                                     "preset"),
                                                 "float_layers": e.get("float_layers", []),
                                                 "float_candidate": cal.get("float_candidate")}
    if "prune" in a.only:
        t0 = time.time()
        try:
            m, s = _timed(lambda: tfmot_prune(load_model(path), ds, a.prune_epochs))
            p = work / "tfmot_prune.onnx"
            to_onnx(m, p)
            rows["tfmot prune 0.5"] = {"format": "onnx", "path": p, "seconds": s, "tool": "peer",
                                       "keras_accuracy": keras_accuracy(m, x_test, y_test)}
        except (ValueError, TypeError, RuntimeError) as exc:  # what tfmot cannot wrap
            rows["tfmot prune 0.5"] = {"refused": str(exc).splitlines()[0][:300],
                                       "tool": "peer", "seconds": round(time.time() - t0, 2)}
        t0 = time.time()
        try:
            art = compress(str(path), "prune", data, work / "edgekit-prune", force=True,
                           sparsity=0.5, progress=False)
            p = work / "edgekit_prune.onnx"
            to_onnx(load_model(art.path), p)
            rows["edgekit prune 0.5"] = {"format": "onnx", "path": p, "tool": "edgekit",
                                         "seconds": round(time.time() - t0, 2),
                                         "epochs_run": art.manifest["method"]["params"].get(
                                             "epochs_run")}
        except GuardFailed as exc:
            rows["edgekit prune 0.5"] = {"refused": str(exc), "tool": "edgekit",
                                         "seconds": round(time.time() - t0, 2)}
    live = {k: r for k, r in rows.items() if "path" in r}
    for k, r in live.items():
        (acc,), _ = measure_file(RUNTIME[r["format"]], r["path"], [(x_test, y_test)])
        r.update(accuracy=acc, bytes=_bytes(r["path"]),
                 test_se=float(np.sqrt(acc * (1 - acc) / len(y_test))))
    lat = p50s({k: (r["format"], r["path"]) for k, r in live.items()}, x_test)
    for k, r in live.items():
        r["p50_ms"] = lat[k]
    _ahead(rows)
    return {k: {f: (str(v) if isinstance(v, Path) else v) for f, v in r.items() if f != "path"}
            for k, r in rows.items()}


def _bytes(p):
    p = Path(p)
    return p.stat().st_size + (p.with_suffix(".bin").stat().st_size if p.suffix == ".xml" else 0)


def _ahead(rows):
    """edgekit minus the best peer default of its format (points), where both were written."""
    for k, r in rows.items():
        if r.get("tool") != "edgekit" or "accuracy" not in r:
            continue
        peers = [p for p in rows.values() if p.get("tool") == "peer"
                 and p.get("format") == r["format"] and "accuracy" in p
                 and ("prune" in p.get("path").name) == ("prune" in k)]
        if peers:
            best = max(peers, key=lambda p: p["accuracy"])
            r["ahead_pts"] = round(100 * (r["accuracy"] - best["accuracy"]), 2)
            r["faster_than_best_peer"] = r["p50_ms"] <= best["p50_ms"]
            r["p50_vs_best_peer"] = round(r["p50_ms"] / best["p50_ms"], 3)  # noise: a few %


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="name=path.h5,...")
    ap.add_argument("--data", required=True, help="data spec, e.g. npz:mnist32.npz")
    ap.add_argument("--only", default="quantize,prune")
    ap.add_argument("--calibration-samples", type=int, default=200)
    ap.add_argument("--prune-epochs", type=int, default=2)
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)
    from edgekit.adapt import fit_data
    from edgekit.data import load_data
    from edgekit.models import load_model
    results = {"machine": {"cpu": _cpu(), "cores": _cores(), "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
               "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out or tmp)
        for item in a.models.split(","):
            name, path = item.split("=", 1)
            data = a.data
            ds = fit_data(load_data(data), load_model(path))   # as edgekit compress fits it
            results["models"][name] = run_model(name, Path(path), data, ds, out, a)
            Path(a.json).write_text(json.dumps(results, indent=1, default=str))
            print(json.dumps({name: results["models"][name]}, indent=1, default=str), flush=True)


def _cpu():
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _cores():
    import os
    return os.cpu_count()


if __name__ == "__main__":
    main()
