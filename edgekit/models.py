"""Reference CNNs, model loading/saving, size and cost figures, ``train`` and ``evaluate``.

``seed-mnist-cnn`` is the Keras MNIST example CNN the seed talk used (1,199,882 params on
28x28x1; its two conv layers hold 18,816); ``tiny`` is a small CNN for fast tests. Input
size follows the data (8x8 digits work). ``gap-cnn`` is a 35k-param all-conv CNN ending in
global average pooling, the trunk of choice for k-NN slicing under a byte budget;
``micro-cnn`` the same layout at 8.7k params (a student for ~16 KB of flash), ``wide-gap-cnn``
at 51k (~60 KB).

Example::

    art = train("seed-mnist-cnn", "mnist:../shared/datasets/mnist", "out/seed", epochs=12)
    print(art.manifest["metrics"]["accuracy"])
"""
import contextlib
from pathlib import Path

import numpy as np

from edgekit.artifact import Artifact, describe_file, new_manifest, staging, write_manifest
from edgekit.data import dir_sha256, file_sha256, load_data
from edgekit.errors import EdgekitError
from edgekit.keras_layers import count_macs  # noqa: F401 (edgekit.models.count_macs: API)
from edgekit.keras_layers import flat_layers as _flat_layers  # noqa: F401 (older callers)
from edgekit.util import save_keras_h5

MODEL_FILE = "model.h5"


def seed_mnist_cnn(input_shape, num_classes):
    """Keras' mnist_cnn example: Conv32-Conv64-MaxPool-Dropout-Dense128-Dropout-Dense."""
    from edgekit._tf import keras
    k = keras()
    L = k.layers
    return k.Sequential([
        L.InputLayer(input_shape=input_shape, name="input"),
        L.Conv2D(32, 3, activation="relu", name="conv1"),
        L.Conv2D(64, 3, activation="relu", name="conv2"),
        L.MaxPooling2D(2, name="pool1"),
        L.Dropout(0.25, name="drop1"),
        L.Flatten(name="flatten"),
        L.Dense(128, activation="relu", name="fc1"),
        L.Dropout(0.5, name="drop2"),
        L.Dense(num_classes, name="logits"),
    ], name="seed_mnist_cnn")


def tiny_cnn(input_shape, num_classes):
    """A small CNN for fast tests: Conv8-Pool-Conv16-Pool(if room)-Dense."""
    from edgekit._tf import keras
    k = keras()
    L = k.layers
    layers = [L.InputLayer(input_shape=input_shape, name="input"),
              L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
              L.MaxPooling2D(2, name="pool1"),
              L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")]
    if min(input_shape[:2]) >= 8:
        layers.append(L.MaxPooling2D(2, name="pool2"))
    layers += [L.Flatten(name="flatten"), L.Dense(num_classes, name="logits")]
    return k.Sequential(layers, name="tiny_cnn")


def gap_cnn(input_shape, num_classes):
    """An all-conv CNN ending in global average pooling, built to be k-NN-sliced at ``gap``.

    Conv16-Conv16-Pool-Conv32-Conv32-Pool-Conv64-GAP-Dense (3x3, "same", batch-norm after each
    conv): 35k params, ~5.5M MACs on 28x28. Its ``gap`` output is a 64-dim embedding whose
    k-NN accuracy matches the softmax head's, so the whole trunk + an int8 prototype set fits
    in well under 74 KB (BENCHMARKS.md, k-NN slicing).
    """
    return _bn_gap_cnn(input_shape, num_classes, (16, 16, 32, 32, 64), "gap_cnn")


def micro_cnn(input_shape, num_classes):
    """``gap-cnn``'s layout at about a quarter of its size, for flash budgets of ~16 KB.

    Conv8-Conv12-Pool-Conv16-Conv16-Pool-Conv24-GAP-Dense (3x3, "same", batch-norm after each
    conv): 8,674 weights (+ batch-norm on 76 channels, folded on export), ~1.7M MACs on 28x28; its
    int8 TFLite file is about 14 KB. Not ``gap-cnn --width 0.5`` (17 KB in int8): the first
    layers stay narrow where the feature maps are large, the width goes where they are small.
    """
    return _bn_gap_cnn(input_shape, num_classes, (8, 12, 16, 16, 24), "micro_cnn")


def wide_gap_cnn(input_shape, num_classes):
    """``gap-cnn``'s layout with the width moved where the maps are small, for ~64 KB of flash.

    Conv16-Conv24-Pool-Conv32-Conv40-Pool-Conv80-GAP-Dense (3x3, "same", batch-norm after each
    conv): 50.8k conv weights, ~7.8M MACs on 28x28 (gap-cnn: 35k, 5.5M); its int8 TFLite file
    is about 60 KB -- the largest built-in student under the seed talk's 74 KB.
    """
    return _bn_gap_cnn(input_shape, num_classes, (16, 24, 32, 40, 80), "wide_gap_cnn")


def _bn_gap_cnn(input_shape, num_classes, widths, name):
    """Conv-Conv-Pool-Conv-Conv-Pool-Conv-GAP-Dense with ``widths`` (3x3, "same", no bias,
    batch-norm + ReLU after each conv); a pooling step is skipped when the map is under 4 px
    (8x8 digits keep one)."""
    from edgekit._tf import keras
    k = keras()
    L = k.layers
    layers = [L.InputLayer(input_shape=input_shape, name="input")]
    w = list(widths)
    plan = [(w[0], "conv1"), (w[1], "conv2"), "pool1", (w[2], "conv3"), (w[3], "conv4"),
            "pool2", (w[4], "conv5")]
    size = min(input_shape[:2])
    for item in plan:
        if isinstance(item, str):
            if size >= 4:  # 8x8 digits: keep one pooling step
                layers.append(L.MaxPooling2D(2, name=item))
                size //= 2
            continue
        filters, lname = item
        layers += [L.Conv2D(filters, 3, padding="same", use_bias=False, name=lname),
                   L.BatchNormalization(momentum=0.9, name=lname + "_bn"),
                   L.ReLU(name=lname + "_relu")]
    layers += [L.GlobalAveragePooling2D(name="gap"), L.Dense(num_classes, name="logits")]
    return k.Sequential(layers, name=name)


# architecture name -> builder(input_shape, num_classes). A plain dict.
ARCHS = {
    "seed-mnist-cnn": seed_mnist_cnn,
    "tiny": tiny_cnn,
    "gap-cnn": gap_cnn,
    "micro-cnn": micro_cnn,
    "wide-gap-cnn": wide_gap_cnn,
}


def build(arch, input_shape, num_classes):
    if arch not in ARCHS:
        raise EdgekitError("unknown architecture {!r}; choose one of: {}".format(
            arch, ", ".join(sorted(ARCHS))))
    try:
        return ARCHS[arch](tuple(input_shape), int(num_classes))
    except ValueError as exc:  # Keras: a conv/pool output of size <= 0
        if "<= 0" not in str(exc) and "negative" not in str(exc).lower():
            raise
        h, w, c = tuple(input_shape)
        need = _min_size(arch, c, num_classes)
        raise EdgekitError("{}x{} images are too small for --arch {}: its convolutions and "
                           "pooling need at least {}x{} (resize the data first)".format(
                               h, w, arch, need, need)) from None


def _min_size(arch, channels, num_classes, limit=256):
    """The smallest square input ``arch`` builds for (doubling then bisecting)."""
    def ok(n):
        try:
            ARCHS[arch]((n, n, channels), int(num_classes))
            return True
        except ValueError:
            return False
    hi = 2
    while not ok(hi) and hi < limit:
        hi *= 2
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def load_model(path):
    """Load a Keras model from an artifact dir, ``.h5``/``.keras`` file or SavedModel dir, as
    a tf_keras model whichever Keras wrote it (:mod:`edgekit.modelio`: Keras 3 files are
    translated and checked; a SavedModel without a Keras graph is wrapped)."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError("model {} does not exist".format(path))
    if path.is_dir() and (path / "manifest.json").exists():
        path = Artifact.open(path).keras_path()
    elif path.is_dir() and not (path / "saved_model.pb").exists():
        raise EdgekitError("{} is neither an edgekit artifact nor a SavedModel directory".format(path))
    elif path.suffix == ".onnx":
        raise EdgekitError("{} is an ONNX model: this step needs the Keras model "
                           "(.h5 or SavedModel)".format(path))
    elif not path.is_dir():
        from edgekit.util import check_regular_file
        check_regular_file(path, "model")  # a FIFO would block h5py's open forever
    from edgekit.modelio import read_keras
    return read_keras(path, custom_objects=_custom_objects())[0]


def _custom_objects():
    """Layers edgekit adds (k-NN head and others register here)."""
    return {}


def model_sha256(path):
    path = Path(path)
    if path.is_dir():
        if (path / "manifest.json").exists():
            art = Artifact.open(path, verify=False)
            keras = art.find("keras")
            if keras:
                return art.files[keras[0]]["sha256"]
        return dir_sha256(path)
    return file_sha256(path)


def count_params(model):
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


def count_nonzero_params(model):
    return int(sum(int(np.count_nonzero(w)) for w in model.get_weights()))


def keras_predict(model, x, batch_size=256):
    """Class ids predicted by a Keras model (``x``: an ndarray or lazy images)."""
    from edgekit.images import keras_predict_batches
    return np.argmax(keras_predict_batches(model, x, batch_size), axis=1)


def keras_accuracy(model, x, y, batch_size=256):
    return float(np.mean(keras_predict(model, x, batch_size) == y))


def check_model_fits(model, data):
    """Refuse a dataset whose image shape or class count does not fit the model."""
    want = tuple(model.input_shape[1:])
    if want != data.input_shape:
        raise EdgekitError("the model expects input {} but {} has images of shape {}".format(
            want, data.spec, data.input_shape))
    n_out = model.output_shape[-1]
    if n_out != data.num_classes:
        raise EdgekitError("the model has {} outputs but {} has {} classes".format(
            n_out, data.spec, data.num_classes))


SCHEDULES = ("constant", "cosine")
OUTPUTS = ("softmax", "logits")


def output_convention(model):
    """``"softmax"`` when the model ends in a softmax (a ``Softmax`` layer, an ``Activation``
    or any layer with ``activation="softmax"``, also inside a nested model), else ``"logits"``.

    Users' models end in softmax more often than not; every loss, the distillation targets and
    the manifest follow what the model really outputs.
    """
    from edgekit.keras_layers import output_layer
    layer = output_layer(model)
    if layer is None:
        return "logits"
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None) or (act if isinstance(act, str) else "")
    return "softmax" if name == "softmax" else "logits"


def as_logits(outputs, convention):
    """Logits (up to a per-row constant, which softmax ignores) of a model's outputs:
    ``log(p)`` for probabilities. Works on numpy arrays and tensorflow tensors."""
    if convention != "softmax":
        return outputs
    if isinstance(outputs, np.ndarray):
        return np.log(np.clip(outputs, 1e-12, 1.0)).astype(np.float32)
    # a model's own softmax output carries its logits (Keras' crossentropy uses the same):
    # log(clip(p)) has no gradient where p < 1e-12, so a confidently wrong student never
    # learns those images (a MobileNetV2 student stalled at ~91% training accuracy)
    logits = getattr(outputs, "_keras_logits", None)
    if logits is not None:
        return logits
    op = getattr(outputs, "op", None)
    if op is not None and getattr(op, "type", None) == "Softmax":
        return op.inputs[0]
    from edgekit._tf import tf
    t = tf()
    return t.math.log(t.clip_by_value(outputs, 1e-12, 1.0))


def loss_for(model):
    """Sparse categorical cross-entropy matching the model's output convention."""
    from edgekit._tf import keras
    return keras().losses.SparseCategoricalCrossentropy(
        from_logits=output_convention(model) == "logits")


def check_training_params(epochs=None, lr=None, batch_size=None, min_epochs=1):
    """Refuse hyperparameters Keras would take and turn into NaN weights or a crash:
    ``epochs`` < ``min_epochs`` (0 where it means "no fine-tuning"), ``batch_size`` < 1,
    ``lr`` not a finite number > 0 (``--lr nan``)."""
    import math
    if epochs is not None and int(epochs) < min_epochs:
        raise EdgekitError("--epochs must be >= {} (got {})".format(min_epochs, epochs))
    if batch_size is not None and int(batch_size) < 1:
        raise EdgekitError("--batch-size must be >= 1 (got {})".format(batch_size))
    if lr is not None and not (math.isfinite(lr) and 0 < lr <= 10):
        raise EdgekitError("--lr must be a number in (0, 10] (got {})".format(lr))


def fit(model, data, epochs, batch_size=128, lr=1e-3, progress=True, callbacks=(),
        schedule="constant", initial_epoch=0, label="training", clipnorm=None):
    """Compile (Adam, sparse CE matching the output convention) and fit on the train split,
    validating on val. Progress is edgekit's own (one line per epoch: loss, validation
    accuracy), not Keras' per-step lines.

    ``schedule``: ``constant`` learning rate, or ``cosine`` decay from ``lr`` to 0 over the
    epochs (per epoch; worth ~0.2 pt on MNIST for small nets). ``clipnorm``: clip each
    step's gradients to this global norm (None: no clipping).
    """
    import math
    from edgekit._tf import keras
    k = keras()
    if schedule not in SCHEDULES:
        raise EdgekitError("unknown --schedule {!r}; choose one of: {}".format(
            schedule, ", ".join(SCHEDULES)))
    check_training_params(epochs, lr, batch_size, min_epochs=0)
    callbacks = list(callbacks)
    if schedule == "cosine":
        callbacks.append(k.callbacks.LearningRateScheduler(
            lambda e: lr * 0.5 * (1 + math.cos(math.pi * e / epochs))))
    if progress:
        from edgekit.progress import epoch_progress
        callbacks.insert(0, epoch_progress(epochs, label))
    model.compile(optimizer=k.optimizers.Adam(lr, global_clipnorm=clipnorm),
                  loss=loss_for(model), metrics=["accuracy"])
    from edgekit.images import keras_fit_args
    with ctrl_c_at_batch_end() as stop:
        model.fit(**keras_fit_args(data.x_train, data.y_train, batch_size,
                                   validation_data=(data.x_val, data.y_val)),
                  epochs=epochs, verbose=0, callbacks=callbacks + [stop],
                  initial_epoch=initial_epoch)
    return model


@contextlib.contextmanager
def ctrl_c_at_batch_end():
    """A Keras callback that raises KeyboardInterrupt at the first batch end after Ctrl-C.

    Python's own SIGINT handler raises KeyboardInterrupt at whatever bytecode runs next; inside
    Keras' fit that is often a TensorFlow object's ``__del__``, where the exception is printed
    as "Exception ignored in ..." and lost — the run goes on as if Ctrl-C never came. Here the
    signal only sets a flag (a second Ctrl-C raises at once), and the callback raises from
    ordinary code at the next batch end. Main thread only (elsewhere: a no-op callback).
    The same callback ends training at an :mod:`edgekit.deadline` (``optimize --budget``), in
    any thread.
    """
    import signal
    import threading
    from edgekit._tf import keras
    pressed = []

    import time
    from edgekit.deadline import estimate, passed

    class _Stop(keras().callbacks.Callback):
        def _check(self, *args, **kwargs):
            if pressed:
                raise KeyboardInterrupt()

        def _train_batch(self, *args, **kwargs):
            self._check()
            if passed():  # optimize --budget's deadline (edgekit.deadline): stop training now
                self.model.stop_training = True

        def on_train_begin(self, logs=None):
            self._t0, self._first = time.time(), None

        def on_epoch_end(self, epoch, logs=None):
            self._check()
            self._first = epoch if self._first is None else self._first
            estimate(epoch + 1 - self._first, (self.params or {}).get("epochs", 0) - self._first,
                     time.time() - self._t0)
        on_test_batch_end = _check
        on_train_batch_end = _train_batch

    if threading.current_thread() is not threading.main_thread():
        yield _Stop()
        return

    def _handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt()
        pressed.append(signum)

    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield _Stop()
        if pressed:   # fit returned between the signal and a batch end
            raise KeyboardInterrupt()
    finally:
        signal.signal(signal.SIGINT, previous)


def model_metrics(model, data, file_path):
    """The manifest metrics of a Keras model: test accuracy, params, MACs, bytes on disk."""
    return {
        "accuracy": keras_accuracy(model, data.x_test, data.y_test),
        "val_accuracy": keras_accuracy(model, data.x_val, data.y_val),
        "params": count_params(model),
        "macs": count_macs(model),
        "bytes": int(Path(file_path).stat().st_size),
    }


def save_keras_artifact(model, out, data, method, params, source, force=False, extra_metrics=None,
                        extra_files=None, keras3_copy=False):
    """Save a Keras model as an artifact dir (atomic) and return the opened Artifact.

    ``keras3_copy``: also write the model as a Keras 3 ``.keras`` file (checked equal), for a
    user who gave a Keras 3 model (:func:`edgekit.modelio.keras3_file`)."""
    with staging(out, force=force) as tmp:
        save_keras_h5(model, tmp / MODEL_FILE)
        if keras3_copy:
            from edgekit.modelio import keras3_file
            extra_files = dict(extra_files or {}, **keras3_file(model, tmp, "model"))
        metrics = model_metrics(model, data, tmp / MODEL_FILE)
        metrics.update(extra_metrics or {})
        manifest = new_manifest("model" if method in ("train", "import") else "compressed",
                                method, params,
                                source, data.input_spec(), data.classes, metrics)
        manifest["output"] = {"convention": output_convention(model)}
        manifest["files"][MODEL_FILE] = describe_file(tmp / MODEL_FILE, "keras", "fp32")
        for name, entry in (extra_files or {}).items():
            manifest["files"][name] = entry
        write_manifest(tmp, manifest)
    return Artifact.open(out)


def train(arch, data, out, epochs=5, batch_size=128, seed=0, lr=1e-3, force=False,
          progress=True, callbacks=(), schedule="constant"):
    """Train a reference CNN on ``data`` and write it as an artifact to ``out``.

    ``callbacks`` are extra Keras callbacks (e.g. a progress bar; pass ``progress=False``).
    """
    from edgekit._tf import set_seed
    check_training_params(epochs, lr, batch_size)
    ds = data if hasattr(data, "x_train") else load_data(data)
    if schedule not in SCHEDULES:
        raise EdgekitError("unknown --schedule {!r}; choose one of: {}".format(
            schedule, ", ".join(SCHEDULES)))
    if Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    set_seed(seed)
    model = build(arch, ds.input_shape, ds.num_classes)
    fit(model, ds, epochs, batch_size=batch_size, lr=lr, progress=progress, callbacks=callbacks,
        schedule=schedule)
    params = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "seed": seed, "lr": lr,
              "schedule": schedule}
    source = {"model_sha256": None, "data": ds.spec, "data_sha256": ds.fingerprint(),
              "split": ds.split}
    return save_keras_artifact(model, out, ds, "train", params, source, force=force)


KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def evaluate(artifact, data, runtime=None, preprocess=None, say=None):
    """Test-split accuracy of a model: an artifact (its Keras model, or its exported files via
    their runners), a bare ONNX file (onnxruntime, or ``runtime="openvino"``; never imports
    tensorflow) or a bare Keras model (``.h5`` / ``.keras`` / SavedModel dir).

    Returns ``{runtime: accuracy}``, e.g. ``evaluate("resnet.onnx", "digits")`` ->
    ``{"onnxruntime": 0.97}``. ``preprocess`` (a bare model file only: an artifact's manifest
    records its own): what :func:`edgekit.adapt.fit_data` takes; ``say`` gets the one-line note
    when an ONNX file does not tell its input scaling.
    """
    from edgekit.onnx_model import is_onnx_file
    path = Path(str(artifact))
    if is_onnx_file(path):
        return _evaluate_onnx(path, data, runtime, preprocess, say)
    if _is_bare_keras(path):
        if runtime not in (None, "keras"):
            raise EdgekitError("{} is a Keras model: evaluate it with --runtime keras, or make "
                               "it an artifact (`edgekit import {} -o ART --data SPEC`) and "
                               "export that".format(path, path))
        from edgekit.adapt import fit_data
        model = load_model(path)
        ds = data if hasattr(data, "x_train") else load_data(data)
        ds = fit_data(ds, model, preprocess=preprocess)  # (Rescaling inside -> raw), size, channels
        check_model_fits(model, ds)
        return {"keras": keras_accuracy(model, ds.x_test, ds.y_test)}
    from edgekit.adapt import data_for
    from edgekit.runtime import RUNTIME_FORMATS
    if runtime not in (None, "keras") and runtime not in RUNTIME_FORMATS:
        raise EdgekitError("unknown --runtime {!r}: use keras, {}".format(
            runtime, ", ".join(RUNTIME_FORMATS)))
    art = Artifact.open(artifact)
    if preprocess is not None:   # never ignored silently
        raise EdgekitError("{} records its input preprocessing ({}) in its manifest: drop "
                           "--preprocess/--scale/--mean/--std, or import the model file again "
                           "with them (edgekit import FILE -o ART ...)".format(
                               art.path, (art.manifest.get("input") or {}).get("preprocess")
                               or "unit"))
    ds = data if hasattr(data, "x_train") else load_data(data)
    ds = data_for(ds, art.manifest.get("input"))
    results = {}
    keras_files = [n for n in art.find("keras") if art.files[n].get("inference", True)]
    if keras_files and runtime in (None, "keras"):
        model = load_model(art.path)
        check_model_fits(model, ds)
        results["keras"] = keras_accuracy(model, ds.x_test, ds.y_test)
    if runtime not in (None, "keras") or not results:
        art.check_data_fits(ds)  # runners would score any class count: refuse a misfit
        from edgekit.onnx_model import manifest_layout, to_model_layout
        from edgekit.runtime import RUNTIME_FORMATS, open_runner
        from edgekit.runtime.bench import accuracy
        x_test = to_model_layout(ds.x_test, manifest_layout(art.manifest))
        from edgekit.runtime.registry import installed
        names = [runtime] if runtime else [rt for rt in RUNTIME_FORMATS if installed(rt)]
        for rt in names:
            files = [n for n in art.find(RUNTIME_FORMATS[rt]) if art.files[n].get("inference", True)]
            if not files and rt == "openvino":  # OpenVINO reads ONNX as well
                files = [n for n in art.find("onnx") if art.files[n].get("inference", True)]
            if not files:
                continue
            with open_runner(rt, art.file(files[0])) as r:
                results[rt] = accuracy(r, x_test, ds.y_test)
    if not results and runtime not in (None, "keras"):
        fmt = RUNTIME_FORMATS[runtime]
        raise EdgekitError("{} has no {} file for --runtime {}: export it first: edgekit export "
                           "{} --format {}".format(art.path, fmt, runtime, art.path,
                                                   "onnx" if fmt in ("onnx", "openvino") else fmt))
    if not results:
        raise EdgekitError("{} holds no model edgekit can evaluate here".format(art.path))
    return results


def _is_bare_keras(path):
    if path.is_file():
        return path.suffix.lower() in KERAS_SUFFIXES
    return path.is_dir() and (path / "saved_model.pb").is_file() \
        and not (path / "manifest.json").exists()


def _evaluate_onnx(path, data, runtime, preprocess=None, say=None):
    """Accuracy of a bare ONNX file: onnxruntime by default, OpenVINO reads ONNX too."""
    from edgekit.onnx_model import fit_data_to_onnx, inspect_onnx, onnx_accuracy
    rt = runtime or "onnxruntime"
    if rt not in ("onnxruntime", "openvino"):
        raise EdgekitError("{} is an ONNX model: --runtime onnxruntime or openvino runs it "
                           "(not {})".format(path, rt))
    facts = inspect_onnx(path)
    ds = data if hasattr(data, "x_train") else load_data(data)
    ds = fit_data_to_onnx(facts, ds, what=str(path), preprocess=preprocess, say=say)
    acc = onnx_accuracy(path, ds.x_test, ds.y_test, facts["layout"], runtime=rt)
    chance = 1.0 / max(1, ds.num_classes)
    if say and preprocess is None and not facts.get("preprocess") and acc < 2 * chance:
        say("note: {:.2%} is near chance ({:.0%}): the pixel values fed (0..1) are likely not "
            "the ones {} was trained on; try --preprocess raw|symmetric|imagenet or "
            "--scale/--mean/--std".format(acc, chance, path))
    return {rt: acc}
