"""'Your CNN, not ours': edgekit on models it did not make, with default options.

Three measurements, each a sub-command; results as JSON (one object per run):

* ``defaults-digits``: ``edgekit train --arch seed-mnist-cnn --epochs 5`` on digits, then every
  compression method with **default** options. Each either writes an artifact within the
  guard (test accuracy recorded beside the base) or refuses with one line and writes nothing.
* ``dense-width``: ``prune --dense-width 8`` with default options on an MNIST
  ``seed-mnist-cnn`` (``--teacher DIR``, or trained here for 6 epochs).
* ``user-models``: a ``keras.applications.MobileNetV2`` (alpha 0.35, ``weights=None``) and the
  ResNet-style net of tests/zoo.py, trained with **plain Keras** on MNIST fitted to 32x32x3
  (``edgekit.adapt.fit_data``: resize + repeated channels), softmax heads, saved as ``.h5``;
  then edgekit on them: prune --sparsity 0.5, distill --width 0.5, int8 (TFLite, ONNX,
  OpenVINO), knn-slice, export (ONNX, TFLite, OpenVINO, with parity) and bench on every
  laptop runtime.

Example::

    .venv/bin/python benchmarks/your_cnn.py defaults-digits --out /tmp/ycnn --json benchmarks/results/your_cnn_defaults_digits.json
    .venv/bin/python benchmarks/your_cnn.py user-models --mnist ../shared/datasets/mnist --epochs 8 \\
        --out /tmp/ycnn-mnist --json benchmarks/results/your_cnn_user_models.json
"""
import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _record(results, path, key, value):
    results["runs"][key] = value
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({key: value}, default=str), flush=True)


def _compress(model, method, data, out, **params):
    from edgekit.compress import compress
    from edgekit.compress.guard import GuardFailed
    t0 = time.time()
    try:
        art = compress(model, method, data, out, force=True, progress=True, **params)
    except GuardFailed as exc:
        return {"refused": str(exc), "seconds": round(time.time() - t0, 1),
                "written": Path(out).exists()}
    m = art.manifest["metrics"]
    row = {"seconds": round(time.time() - t0, 1), "accuracy": m.get("accuracy"),
           "before_accuracy": m.get("before", {}).get("accuracy"), "guard": m.get("guard"),
           "params": m.get("params"), "before_params": m.get("before", {}).get("params"),
           "bytes": m.get("bytes"), "method_params": art.manifest["method"]["params"]}
    if m.get("formats"):
        row["formats"] = m["formats"]
        row["format_guards"] = {n: e.get("guard") for n, e in art.files.items() if e.get("guard")}
    return row


def defaults_digits(args, results):
    from edgekit.models import train
    out = Path(args.out)
    base = train("seed-mnist-cnn", "digits", out / "seed5", epochs=5, force=True, progress=False)
    _record(results, args.json, "base", {"accuracy": base.manifest["metrics"]["accuracy"],
                                         "val_accuracy": base.manifest["metrics"]["val_accuracy"],
                                         "epochs": 5})
    for label, method, params in (("prune", "prune", {}),
                                  ("prune-structured", "prune", {"structured": True}),
                                  ("dense-width-16", "prune", {"dense_width": 16}),
                                  ("quantize", "quantize", {}),
                                  ("distill", "distill", {})):
        _record(results, args.json, label, _compress(base.path, method, "digits", out / label,
                                                     **params))


def dense_width(args, results):
    from edgekit.models import train
    data = "mnist:" + args.mnist
    teacher = args.teacher
    if not teacher:
        teacher = train("seed-mnist-cnn", data, Path(args.out) / "seed", epochs=6, force=True).path
    _record(results, args.json, "dense-width-8",
            _compress(teacher, "prune", data, Path(args.out) / "dw8", dense_width=8))


def _plain_keras(name, ds, epochs, bn_momentum=None, augment=0.0):
    """Train as a user would: model.compile + model.fit, softmax head, Adam with a cosine
    learning-rate decay (a stock Keras schedule). ``bn_momentum`` is what a user does after
    edgekit's BatchNorm hint (keras.applications ship 0.999, Keras layers 0.99). ``augment``
    (a fraction of the image size) shifts training images at random with Keras'
    ``RandomTranslation`` in the input pipeline, not in the model, so the saved model is the
    plain network (MobileNetV2 at 32x32 overfits MNIST without it: 99.6% train, 98.0% val)."""
    from tests.zoo import build, compile_plain
    from edgekit._tf import set_seed
    model = build(name, ds.input_shape, ds.num_classes, head="softmax")
    if bn_momentum is not None:
        from edgekit.compress.guard import batchnorm_layers
        for layer in batchnorm_layers(model):
            layer.momentum = bn_momentum
    # the user holds out a validation set (edgekit's validation split), so the guard later
    # reads images the model never trained on
    import tf_keras as keras
    steps = epochs * -(-len(ds.x_train) // 128)
    set_seed(0)
    compile_plain(model, keras.optimizers.schedules.CosineDecay(1e-3, steps))
    t0 = time.time()
    if augment:
        import tensorflow as tf
        shift = keras.layers.RandomTranslation(augment, augment, fill_mode="constant", seed=0)
        train = (tf.data.Dataset.from_tensor_slices((ds.x_train, ds.y_train))
                 .shuffle(len(ds.x_train), seed=0).batch(128)
                 .map(lambda x, y: (shift(x, training=True), y), num_parallel_calls=2)
                 .prefetch(2))
        model.fit(train, epochs=epochs, verbose=2, validation_data=(ds.x_val, ds.y_val))
    else:
        model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=128, verbose=2, shuffle=True,
                  validation_data=(ds.x_val, ds.y_val))
    return model, time.time() - t0


def user_models(args, results):
    from edgekit.adapt import fit_data
    from edgekit.bench import bench
    from edgekit.data import load_data
    from edgekit.export import export
    from edgekit.models import keras_accuracy
    out = Path(args.out)
    data = "mnist:" + args.mnist
    ds = fit_data(load_data(data), (32, 32, 3), say=print)
    for name in args.models.split(","):
        h5 = out / (name + ".h5")
        h5.parent.mkdir(parents=True, exist_ok=True)
        if h5.exists() and args.reuse:  # a model trained by an earlier run of this script
            from edgekit.models import load_model
            model, secs = load_model(h5), None
        else:
            model, secs = _plain_keras(name, ds, args.epochs, args.bn_momentum, args.augment)
            model.save(str(h5), include_optimizer=False)
        base = {"test_accuracy": keras_accuracy(model, ds.x_test, ds.y_test),
                "val_accuracy": keras_accuracy(model, ds.x_val, ds.y_val),
                "train_seconds": None if secs is None else round(secs, 1),
                "epochs": args.epochs, "bn_momentum": args.bn_momentum, "augment": args.augment,
                "bytes": h5.stat().st_size}
        _record(results, args.json, name + "/base", base)
        for label, method, params in (("prune50", "prune", {"sparsity": 0.5}),
                                      ("distill50", "distill", {"width": 0.5}),
                                      ("int8", "quantize", {}),
                                      ("knn", "knn-slice", {"cut": "auto"})):
            if label not in args.only.split(","):
                continue
            try:
                row = _compress(h5, method, data, out / name / label, **params)
            except Exception as exc:  # record and go on to the next method
                row = {"error": "{}: {}".format(type(exc).__name__, exc),
                       "trace": traceback.format_exc()[-2000:]}
            _record(results, args.json, "{}/{}".format(name, label), row)
        if "export" in args.only.split(","):
            try:
                # the pruned artifact (else the distilled one): export + parity + bench
                src = next((out / name / d for d in ("prune50", "distill50")
                            if (out / name / d / "manifest.json").exists()), out / name / "prune50")
                ex = export(src, ["onnx", "tflite", "openvino"], target="laptop-cpu", data=data)
                parity = {n: (e.get("parity") or {}) for n, e in ex.files.items() if e.get("parity")}
                rows = bench(src, "laptop-cpu", runtime="all", data=data)
                _record(results, args.json, name + "/export+bench", {
                    "artifact": src.name, "parity": parity,
                    "bench": [{"runtime": r["runtime"], "file": r.get("file"),
                               "p50_ms": r["latency_ms"]["p50"],
                               "accuracy": r.get("accuracy")} for r in rows]})
            except Exception as exc:
                _record(results, args.json, name + "/export+bench",
                        {"error": "{}: {}".format(type(exc).__name__, exc),
                         "trace": traceback.format_exc()[-2000:]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("defaults-digits", "dense-width", "user-models"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--json")
    ap.add_argument("--mnist", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--teacher")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--models", default="resnet,mobilenetv2")
    ap.add_argument("--only", default="prune50,distill50,int8,knn,export")
    ap.add_argument("--bn-momentum", type=float, default=None,
                    help="BatchNorm momentum for the plain-Keras training (shipped: 0.999 in keras.applications, 0.99 in Keras layers)")
    ap.add_argument("--augment", type=float, default=0.0,
                    help="random shifts of the training images, a fraction of their size (e.g. 0.08)")
    ap.add_argument("--reuse", action="store_true", help="reuse OUT/NAME.h5 if present")
    args = ap.parse_args()
    results = {"what": args.what, "machine": "{} ({} cores)".format(platform.node(), os.cpu_count()),
               "command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "runs": {}}
    {"defaults-digits": defaults_digits, "dense-width": dense_width,
     "user-models": user_models}[args.what](args, results)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
