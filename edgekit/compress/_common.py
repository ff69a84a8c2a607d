"""What prune / quantize / distill share: load the input, measure "before", save "after".

Every method records, before and after: test accuracy, params, nonzero params, MACs, bytes
on disk (the Keras file), and the method's params; ``source.model_sha256`` is the input's.
"""
import gzip
import sys
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError


class Job(object):
    """The input side of a compression run: data, model, its sha256 and "before" metrics."""

    def __init__(self, model, data, out, force, max_drop=None, allow_drop=False,
                 preprocess=None, method=None):
        from edgekit.adapt import fit_data
        from edgekit.compress.guard import DEFAULT_MAX_DROP, check_max_drop
        from edgekit.data import load_data
        from edgekit.models import check_model_fits, load_model, model_sha256, output_convention
        if Path(out).exists() and not force:
            raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
        self.max_drop = check_max_drop(DEFAULT_MAX_DROP if max_drop is None else max_drop)
        self.max_drop_given = max_drop is not None
        self.allow_drop = bool(allow_drop)
        self.method = method
        if model is not None and not hasattr(model, "layers") and str(model).endswith(".onnx") \
                and method in TRAINING_METHODS:
            raise EdgekitError("{} is an ONNX model and {} needs to train it: give the Keras model "
                               "(.h5 / .keras / SavedModel), or use --method quantize / knn-slice, "
                               "which run on ONNX".format(model, TRAINING_METHODS[method]))
        self.model_path = Path(model) if not hasattr(model, "layers") else None
        self.model = load_model(model) if self.model_path is not None else model
        ds = data if hasattr(data, "x_train") else load_data(data)
        self.ds = fit_data(ds, self.model, preprocess=preprocess, say=_say_stderr)
        check_model_fits(self.model, self.ds)
        self.output = output_convention(self.model)
        self.sha = model_sha256(self.model_path) if self.model_path is not None else None
        self.out, self.force = out, force
        self._before = None
        self._guard = None

    @property
    def guard(self):
        """The accuracy guard: the input's validation accuracy and ``--max-drop``."""
        if self._guard is None:
            from edgekit.compress.guard import Guard
            self._guard = Guard(self.before()["val_accuracy"], self.max_drop, self.allow_drop,
                                samples=len(self.ds.y_val))
        return self._guard

    def default_batch_size(self):
        from edgekit.compress.guard import default_batch_size
        return default_batch_size(len(self.ds.x_train))

    def check_guard(self, model, hints=()):
        """Validation accuracy of ``model`` against the guard: the manifest's ``guard`` record,
        or :class:`~edgekit.compress.guard.GuardFailed` (nothing written)."""
        from edgekit.compress.guard import batchnorm_note
        from edgekit.models import keras_accuracy
        acc = keras_accuracy(model, self.ds.x_val, self.ds.y_val)
        note = None
        if not self.guard.allow_drop and acc < self.guard.floor:
            bn = batchnorm_note(model, self.ds.x_val, self.ds.y_val)
            note = "The result: " + bn if bn else None
        return self.guard.check(acc, self.method or "compression", hints, note=note)

    @property
    def source(self):
        return {"model_sha256": self.sha, "model": str(self.model_path) if self.model_path else None,
                "data": self.ds.spec, "data_sha256": self.ds.fingerprint()}

    def before(self):
        """Metrics of the input model (test accuracy, params, nonzero, MACs, bytes, gzip bytes)."""
        if self._before is None:
            self._before = keras_figures(self.model, self.ds, self.keras_file())
        return self._before

    def keras_file(self):
        """The input's Keras file on disk (artifact's model, the .h5 itself) or None."""
        p = self.model_path
        if p is None:
            return None
        if p.is_dir() and (p / "manifest.json").exists():
            from edgekit.artifact import Artifact
            return Artifact.open(p, verify=False).keras_path()
        return p

    def save(self, model, method, params, extra_metrics=None, extra_files=None, guard=None):
        """Write the compressed Keras model as an artifact with before/after metrics (and the
        guard's record, which every method must have passed)."""
        from edgekit.models import count_nonzero_params, save_keras_artifact
        metrics = {"nonzero_params": count_nonzero_params(model), "before": self.before()}
        if guard is not None:
            metrics["guard"] = guard
        metrics.update(extra_metrics or {})
        return save_keras_artifact(model, self.out, self.ds, method, params, self.source,
                                   force=self.force, extra_metrics=metrics, extra_files=extra_files)


def keras_figures(model, ds, path=None):
    """accuracy / params / nonzero params / MACs / bytes (+ gzip bytes) of a Keras model."""
    from edgekit.models import count_macs, count_nonzero_params, count_params, keras_accuracy
    fig = {"accuracy": keras_accuracy(model, ds.x_test, ds.y_test),
           "val_accuracy": keras_accuracy(model, ds.x_val, ds.y_val),
           "params": count_params(model), "nonzero_params": count_nonzero_params(model),
           "macs": count_macs(model)}
    if path is not None:
        path = Path(path)
        if path.is_file():
            fig["bytes"] = int(path.stat().st_size)
            fig["gzip_bytes"] = gzip_size(path)
        else:
            fig["bytes"] = int(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))
    return fig


def gzip_size(path):
    """Bytes of the file after gzip -9 (what sparsity buys on disk / over the wire)."""
    return len(gzip.compress(Path(path).read_bytes(), 9))


def check_epochs(epochs):
    if epochs is None or int(epochs) < 0:
        raise EdgekitError("--epochs must be >= 0")
    return int(epochs)


def calibration_images(ds, samples, model_shape, seed=0):
    """``samples`` images drawn (seeded) from the TRAINING split; refuses a shape mismatch."""
    samples = int(samples)
    if samples < 1:
        raise EdgekitError("--calibration-samples must be >= 1")
    x = ds.x_train
    if tuple(x.shape[1:]) != tuple(model_shape):
        raise EdgekitError("calibration data {} has images of shape {} but the model expects {}"
                           .format(ds.spec, tuple(x.shape[1:]), tuple(model_shape)))
    rs = np.random.RandomState(seed)
    k = min(samples, len(x))
    return np.ascontiguousarray(x[np.sort(rs.choice(len(x), k, replace=False))], dtype=np.float32)


def printer(progress):
    def say(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)
    return say


def fine_tune(model, job, epochs, lr, batch_size, progress, callbacks=(), start_epoch=0,
              label="fine-tuning", patience=None):
    """Fine-tune ``model`` on the job's training split under its accuracy guard.

    ``epochs`` is the cap (0: no fine-tuning); training stops once validation accuracy is
    back within the guard or stops improving, keeping the best epoch (see
    :mod:`edgekit.compress.guard`). BatchNorm momentum is held at 0.9 meanwhile.
    Returns ``{"epochs_run", "best_epoch"}`` for the manifest.
    """
    from edgekit.compress.guard import PATIENCE, bn_momentum, guard_stop
    from edgekit.models import fit
    if epochs <= 0:
        return {"epochs_run": 0, "best_epoch": None}
    stop = guard_stop(job.guard, patience=patience or PATIENCE, start_epoch=start_epoch,
                      say=printer(progress))
    with bn_momentum(model):
        fit(model, job.ds, epochs, batch_size=batch_size, lr=lr, progress=progress,
            callbacks=list(callbacks) + [stop], label=label)
    return stop.summary()


# methods that train the model (refuse ONNX input) -> what they do
TRAINING_METHODS = {"prune": "pruning (fine-tuning)", "distill": "distillation (training a student)",
                    "qat": "quantization-aware training"}


def _say_stderr(msg):
    print(msg, file=sys.stderr, flush=True)
