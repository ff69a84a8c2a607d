"""What every compression method shares: load the input, measure "before", write "after".

Every method records, before and after: test accuracy, params, nonzero params, MACs, bytes
on disk (the Keras file), and the method's params; ``source.model_sha256`` is the input's.
"""
import contextlib
import gzip
import sys
from pathlib import Path

import numpy as np


from edgekit.errors import EdgekitError


class Job(object):
    """One compression run, input to output: data, model (Keras, or an ONNX file for the
    methods that run on one), its sha256 and "before" metrics, the accuracy guard, and the
    artifact it writes (:meth:`save` for a Keras model, :meth:`staging` + :meth:`write` for
    anything else) -- every method writes through here.

    Example::

        job = Job("out/seed", "digits", "out/x", force=False, method="knn-slice")
        with job.staging() as tmp:
            ...                                    # write files into tmp
            job.write(tmp, "knn-slice", params, metrics, files)
        art = job.artifact()
    """

    def __init__(self, model, data, out, force, max_drop=None, allow_drop=False,
                 preprocess=None, method=None, onnx=False):
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
        self.out, self.force = out, force
        self._before = None
        self._guard = None
        self._selection = None
        self.read_as = {}      # how a converted input was read (source keys; knn-slice)
        ds = data if hasattr(data, "x_train") else None
        self.onnx = None
        if onnx:                                   # the ONNX file is the model: no Keras
            from edgekit.data import file_sha256
            from edgekit.onnx_model import fit_data_to_onnx, inspect_onnx, onnx_source
            self.model_path, self.model = onnx_source(model), None
            self.onnx = inspect_onnx(self.model_path)
            self.ds = fit_data_to_onnx(self.onnx, ds or load_data(data), what=str(self.model_path),
                                       preprocess=preprocess, say=_say_stderr)
            self.output = self.onnx["output"]
            self.sha = file_sha256(self.model_path)
            self.source_model = model
            return
        if model is not None and not hasattr(model, "layers") and str(model).endswith(".onnx") \
                and method in TRAINING_METHODS:
            raise EdgekitError("{} is an ONNX model and {} needs to train it: give the Keras model "
                               "(.h5 / .keras / SavedModel), or use --method quantize / knn-slice, "
                               "which run on ONNX".format(model, TRAINING_METHODS[method]))
        self.model_path = Path(model) if not hasattr(model, "layers") else None
        self.model = load_model(model) if self.model_path is not None else model
        if method in GRAPH_METHODS:
            from edgekit.modelio.savedmodel import require_graph
            require_graph(self.model, model, GRAPH_METHODS[method])
        self.source_model = self.model_path
        self.ds = fit_data(ds or load_data(data), self.model, preprocess=preprocess,
                           say=_say_stderr)
        check_model_fits(self.model, self.ds)
        note = split_note(self.model_path, self.ds)
        if note:
            _say_stderr(note)
        self.output = output_convention(self.model)
        self.sha = model_sha256(self.model_path) if self.model_path is not None else None

    @property
    def guard(self):
        """The accuracy guard: the input's validation accuracy and ``--max-drop``."""
        if self._guard is None:
            from edgekit.compress.guard import Guard
            self._guard = Guard(self.before()["val_accuracy"], self.max_drop, self.allow_drop,
                                samples=len(self.ds.y_val), base_pred=self.base_val_pred(),
                                y=self.ds.y_val)
        return self._guard

    def selection(self):
        """``(data, guard)`` for fine-tuning: the training split minus a held-out, stratified
        **selection** slice (as large as the validation split, at most 20% of training) that
        early stopping and restore-best watch, and a guard on that slice.

        Choosing the best epoch on the validation split and then checking the guard on the
        same images is optimistic by about the spread of a few epochs' scores (on digits' 143
        validation images a fine-tune "gained" 3.5 pt on validation and lost 1.7 pt on test):
        the validation split stays untouched until :meth:`check_guard`. Tiny training sets
        (a slice under 30 images) select on validation as before.
        """
        if self._selection is None:
            import copy
            # the base's validation predictions now, before training touches weights it may
            # share (tfmot's pruning wrappers do)
            self.guard
            from edgekit.compress.guard import Guard, selection_fraction
            from edgekit.data import SPLIT_SEED, _stratified_split
            from edgekit.images import take
            from edgekit.models import keras_predict
            ds = self.ds
            frac = selection_fraction(len(ds.y_train), len(ds.y_val))
            if frac is None:
                self._selection = (ds, self.guard)
                return self._selection
            rest, sel = _stratified_split(np.asarray(ds.y_train), frac, SPLIT_SEED + 2)
            tune = copy.copy(ds)
            tune.x_train, tune.y_train = take(ds.x_train, rest), np.asarray(ds.y_train)[rest]
            tune.x_val, tune.y_val = take(ds.x_train, sel), np.asarray(ds.y_train)[sel]
            base = keras_predict(self.model, tune.x_val)
            guard = Guard(float(np.mean(base == tune.y_val)), self.max_drop, self.allow_drop,
                          samples=len(sel), base_pred=base, y=tune.y_val)
            guard.split = "selection"
            self._selection = (tune, guard)
        return self._selection

    def base_val_pred(self):
        """The input model's class ids on the validation split (the guard's paired bound)."""
        if self.onnx is not None:
            from edgekit.onnx_model import onnx_predict
            return onnx_predict(self.model_path, self.ds.x_val, self.onnx["layout"])
        from edgekit.models import keras_predict
        return keras_predict(self.model, self.ds.x_val)

    def default_batch_size(self):
        from edgekit.compress.guard import default_batch_size
        return default_batch_size(len(self.ds.x_train))

    def check_guard(self, model, hints=(), ran=None):
        """Validation accuracy of ``model`` against the guard: the manifest's ``guard`` record,
        or :class:`~edgekit.compress.guard.GuardFailed` (nothing written). ``ran``: what
        :func:`fine_tune` returned; a refusal then says how long it ran and why it stopped."""
        from edgekit.compress.guard import batchnorm_note
        from edgekit.models import keras_predict
        pred = keras_predict(model, self.ds.x_val)
        acc = float(np.mean(pred == self.ds.y_val))
        notes = []
        if not self.guard.allow_drop and acc < self.guard.floor:
            bn = batchnorm_note(model, self.ds.x_val, self.ds.y_val)
            if bn:
                notes.append("The result: " + bn)
        said = stop_sentence(ran, self.method)
        if said:
            notes.append(said[0].upper() + said[1:])
        return self.guard.check(acc, self.method or "compression", hints,
                                note=". ".join(notes) or None, pred=pred)

    @property
    def source(self):
        """The manifest ``source``: the input's sha256 and path, the data, and how the model
        was read (``keras_version``, ``loaded_as``, ``keras3``: :func:`edgekit.modelio.describe`)."""
        from edgekit.modelio import source_fields
        src = {"model_sha256": self.sha,
               "model": str(self.source_model) if self.source_model is not None else None,
               "data": self.ds.spec, "data_sha256": self.ds.fingerprint(),
               "split": self.ds.split}
        if self.onnx is None:
            src.update(source_fields(self.model_path))
        src.update(self.read_as)
        return src

    @property
    def keras3(self):
        """True when the user's model came from Keras 3: Keras outputs get a Keras 3 copy."""
        from edgekit.modelio import source_fields
        if self.read_as:
            return bool(self.read_as.get("keras3"))
        return self.onnx is None and bool(source_fields(self.model_path).get("keras3"))

    def before(self):
        """Metrics of the input model (test and validation accuracy, params, bytes; a Keras
        model also nonzero params, MACs, gzip bytes)."""
        if self._before is None:
            if self.onnx is not None:
                from edgekit.onnx_model import onnx_accuracy
                layout = self.onnx["layout"]
                self._before = {
                    "accuracy": onnx_accuracy(self.model_path, self.ds.x_test, self.ds.y_test,
                                              layout),
                    "val_accuracy": onnx_accuracy(self.model_path, self.ds.x_val, self.ds.y_val,
                                                  layout),
                    "params": self.onnx["params"], "bytes": self.input_bytes()}
            else:
                self._before = keras_figures(self.model, self.ds, self.keras_file())
        return self._before

    def input_bytes(self):
        """Bytes on disk of the model to compress; None for an in-memory model."""
        if self.onnx is not None:   # the .onnx and the external data beside it (torch's .data)
            return bytes_on_disk(self.model_path) + sum(
                bytes_on_disk(Path(self.model_path).parent / n) for n in self.onnx["external_data"])
        path = self.keras_file()
        return None if path is None else bytes_on_disk(path)

    def keras_file(self):
        """The input's Keras file on disk (artifact's model, the .h5 itself) or None."""
        return None if self.model_path is None else keras_file_of(self.model_path)

    def staging(self):
        """The staging dir of the artifact (renamed to ``out`` when the block succeeds, removed
        when it fails): nothing half-written."""
        from edgekit.artifact import staging
        return staging(self.out, force=self.force)

    def write(self, tmp, method, params, metrics, files, input_spec=None, output=None, **more):
        """The manifest of the compressed artifact staged in ``tmp``: method and params, source,
        input (default: the data's), classes, output convention, ``metrics`` and ``files``
        (and any ``more`` top-level keys)."""
        from edgekit.artifact import new_manifest, write_manifest
        manifest = new_manifest("compressed", method, params, self.source,
                                input_spec or self.ds.input_spec(), self.ds.classes, metrics)
        manifest["output"] = output or {"convention": self.output}
        manifest["files"].update(files)
        manifest.update(more)
        write_manifest(tmp, manifest)
        return manifest

    def artifact(self):
        from edgekit.artifact import Artifact
        return Artifact.open(self.out)

    def save(self, model, method, params, extra_metrics=None, extra_files=None, guard=None):
        """Write the compressed Keras model as an artifact with before/after metrics (and the
        guard's record, which every method must have passed)."""
        from edgekit.models import count_nonzero_params, save_keras_artifact
        metrics = {"nonzero_params": count_nonzero_params(model), "before": self.before()}
        if guard is not None:
            metrics["guard"] = guard
        metrics.update(extra_metrics or {})
        return save_keras_artifact(model, self.out, self.ds, method, params, self.source,
                                   force=self.force, extra_metrics=metrics, extra_files=extra_files,
                                   keras3_copy=self.keras3)


def split_note(model_path, ds):
    """A "note: ..." when the input artifact was trained on this ``--data`` with another
    validation split than the one drawn now (:func:`edgekit.data.validation_fraction`; an
    artifact from before it recorded ``source.split`` drew 10%): some of today's validation
    images were then its training images, and the guard reads them optimistically. None
    otherwise (a model from elsewhere: edgekit cannot know what it was trained on)."""
    if model_path is None:
        return None
    p = Path(model_path)
    if not (p.is_dir() and (p / "manifest.json").exists()):
        return None
    from edgekit.artifact import Artifact
    try:
        src = Artifact.open(p, verify=False).manifest.get("source") or {}
    except Exception:   # a broken manifest is the loader's to report, not this note's
        return None
    if src.get("data") != ds.spec:
        return None
    from edgekit.data import VAL_FRACTION
    had = src.get("split")
    now = ds.split
    if had is None:
        if abs(now["validation_fraction"] - VAL_FRACTION) < 0.01:
            return None
        had_text = "its training held out {:.0%} (before the split was sized to the data)".format(
            VAL_FRACTION)
    elif had.get("validation_images") == now["validation_images"]:
        return None
    else:
        had_text = "its training held out {:,} images".format(had.get("validation_images") or 0)
    return ("note: {} was trained on {} with another validation split: {}, this run holds out "
            "{:,}; some of these validation images were its training images, so the guard reads "
            "them optimistically -- retrain it with this edgekit for a clean split".format(
                p, ds.spec, had_text, now["validation_images"]))


def keras_file_of(path):
    """The Keras file behind a model path: an artifact dir's model, else the path itself."""
    p = Path(path)
    if p.is_dir() and (p / "manifest.json").exists():
        from edgekit.artifact import Artifact
        return Artifact.open(p, verify=False).keras_path()
    return p


def keras_figures(model, ds, path=None):
    """accuracy / params / nonzero params / MACs / bytes (+ gzip bytes) of a Keras model."""
    from edgekit.models import count_macs, count_nonzero_params, count_params, keras_accuracy
    fig = {"accuracy": keras_accuracy(model, ds.x_test, ds.y_test),
           "val_accuracy": keras_accuracy(model, ds.x_val, ds.y_val),
           "params": count_params(model), "nonzero_params": count_nonzero_params(model),
           "macs": count_macs(model)}
    if path is not None:
        fig["bytes"] = bytes_on_disk(path)
        if Path(path).is_file():
            fig["gzip_bytes"] = gzip_size(path)
    return fig


def bytes_on_disk(path):
    """Bytes of a file, or of every file under a directory (a SavedModel)."""
    path = Path(path)
    if path.is_file():
        return int(path.stat().st_size)
    return int(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()))


def gzip_size(path):
    """Bytes of the file after gzip -9 (what sparsity buys on disk / over the wire)."""
    return len(gzip.compress(Path(path).read_bytes(), 9))


def printer(progress):
    def say(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)
    return say


# how every fine-tuning / distillation run steps (recorded in manifests as is). Gradients are
# clipped to a global norm of 1.0: a half-width MobileNetV2 student on MNIST swung (training
# accuracy 92.7% -> 84.4% within an epoch, refused at -1.82 .. -5.02 pt) and converged to
# -0.60 pt (test) with the clip, everything else equal (BENCHMARKS "Users' models on MNIST").
GRAD_CLIP_NORM = 1.0
TUNING = {"lr_schedule": "cosine decay over the epoch cap", "grad_clip_global_norm": GRAD_CLIP_NORM}


EXTEND_ROUNDS = 2   # extra rounds of the cap a default fine-tune may add while still improving

# why a fine-tune stopped (the manifest's ``stop_reason``; :func:`stop_sentence` says it)
STOP_REASONS = {
    "guard met": "selection accuracy back within the guard and no longer improving",
    "patience": "no improvement for {patience} epochs",
    "cap reached, not improving": "the {cap}-epoch cap reached, no longer improving",
    "cap reached, still improving": "the {cap}-epoch cap (--epochs) reached while still "
                                    "improving",
    "rounds limit": "still improving after {extra} extra round(s) of {cap} epochs: the limit "
                    "(--budget allows no more rounds, only less time)",
    "budget spent": "--budget {budget} spent",
}


def stop_sentence(ran, method=None):
    """"fine-tuning ran 14 epochs (2 rounds) in 31 s: stopped, <why>" from what
    :func:`train_rounds` returned, for the success and the refusal messages alike
    ("distillation ran ..." for ``method="distill"``)."""
    if not ran or not ran.get("stop_reason"):
        return None
    rounds = ran.get("rounds") or 1
    return "{} ran {} epoch{}{} in {:.0f} s: stopped, {}".format(
        "distillation" if method == "distill" else "fine-tuning", ran["epochs_run"], "" if ran["epochs_run"] == 1 else "s",
        " ({} rounds)".format(rounds) if rounds > 1 else "", ran["seconds"], ran["stopped"])


def fine_tune(model, job, epochs, lr, batch_size, progress, callbacks=(), start_epoch=0,
              label="fine-tuning", patience=None, extend=False, budget=None):
    """Fine-tune ``model`` on the job's training split under its accuracy guard.

    ``epochs`` is the cap (0: no fine-tuning); training stops once accuracy on the held-out
    selection slice (:meth:`Job.selection`) is back within the guard or stops improving,
    keeping the best epoch (see :mod:`edgekit.compress.guard`); the validation split is left
    for the guard itself. BatchNorm momentum is held at 0.9 meanwhile. The learning rate
    decays (cosine, per epoch) from ``lr`` over the cap and gradients are clipped to a global
    norm of :data:`GRAD_CLIP_NORM`: MobileNetV2 at 50% sparsity
    recovered at 1e-3 (val 96.3% after 2 epochs; 91.9% at 1e-4) but swung to 82.6% the next
    epoch at that constant rate.

    ``extend`` and ``budget``: see :func:`train_rounds`. Returns its record for the manifest.
    """
    from edgekit.compress.guard import PATIENCE, bn_momentum
    from edgekit.models import fit
    if epochs <= 0:
        return {"epochs_run": 0, "best_epoch": None}
    tune_ds, sel_guard = job.selection()

    def one_round(stop, rounds):
        fit(model, tune_ds, epochs, batch_size=batch_size, lr=lr / (2 ** rounds),
            progress=progress, callbacks=list(callbacks) + [stop], label=label,
            schedule="cosine", clipnorm=GRAD_CLIP_NORM)
    with bn_momentum(model):
        return train_rounds(model, one_round, sel_guard, epochs, patience or PATIENCE,
                            printer(progress), label, start_epoch=start_epoch, extend=extend,
                            budget=budget)


def train_rounds(model, one_round, sel_guard, epochs, patience, say, label, start_epoch=0,
                 extend=False, budget=None, settle=True, method=None):
    """Train ``model`` in rounds of ``epochs`` (the cap) under the guard's early stop, and say
    how long and why it stopped -- fine-tuning's and distillation's one loop.

    ``one_round(stop, rounds)`` runs one cap of training (learning rate ``lr / 2**rounds``)
    with the :func:`~edgekit.compress.guard.guard_stop` callback ``stop``.

    ``extend=True`` (the cap was edgekit's default, not the user's ``--epochs``): when the cap
    is reached short of the guard while the selection accuracy is still improving (its best is
    the last epoch), training goes on for another cap at half the rate, at most
    :data:`EXTEND_ROUNDS` times -- what a tfmot user does by simply training longer. The best
    epoch over all rounds is kept.

    ``budget``: seconds of wall time the whole training may take (``--budget``, parsed once
    by :func:`edgekit.deadline.parse_budget`); training ends at the first batch past it
    (:mod:`edgekit.deadline`, nested inside an enclosing ``optimize --budget``), the best
    epoch so far kept, and no further round starts.

    Returns ``{"epochs_run", "best_epoch", "seconds", "stop_reason", "stopped"}`` (+
    ``"rounds"`` with ``extend``, ``"budget_s"`` with a budget) for the manifest;
    ``stop_reason`` is a key of :data:`STOP_REASONS`, ``stopped`` its sentence.
    """
    import time
    from edgekit import deadline
    from edgekit.compress.guard import guard_stop
    t0 = time.time()
    at = None
    if budget is not None:
        outer = deadline.left()
        at = t0 + float(budget) if outer is None else t0 + min(float(budget), outer)
    total, best, best_weights, best_epoch, rounds = 0, -1.0, None, None, 0
    with deadline.until(at) if at is not None else contextlib.nullcontext():
        while True:
            stop = guard_stop(sel_guard, patience=patience,
                              start_epoch=start_epoch if rounds == 0 else 0, say=say,
                              settle=settle)
            one_round(stop, rounds)
            ran = stop.summary()
            if stop.best > best:
                best, best_weights = stop.best, model.get_weights()
                best_epoch = None if ran["best_epoch"] is None else total + ran["best_epoch"]
            elif best_weights is not None:
                model.set_weights(best_weights)
            total += ran["epochs_run"]
            rounds += 1
            full = ran["epochs_run"] == epochs
            improving = full and ran["best_epoch"] == epochs and not stop.reached
            cut = at is not None and deadline.was_cut()
            if cut:     # the deadline stopped it (mid-epoch), whatever else was true
                reason = "budget spent"
            elif stop.reached:
                reason = "guard met"
            elif not full:
                reason = "patience"
            elif not improving:
                reason = "cap reached, not improving"
            elif not extend:
                reason = "cap reached, still improving"
            elif rounds > EXTEND_ROUNDS:
                reason = "rounds limit"
            else:
                reason = None
            if reason is None and at is not None and at - time.time() < (
                    time.time() - t0) / float(rounds) / 10.0:
                reason = "budget spent"     # not even a tenth of a round's time left
            if reason is not None:
                break
            say("{}: still improving at the {}-epoch cap ({:.2%}, short of the guard's "
                "{:.2%}): {} more epochs at half the rate (round {} of at most {}{})".format(
                    label, epochs, stop.best, sel_guard.target, epochs, rounds + 1,
                    EXTEND_ROUNDS + 1, "" if at is None else
                    ", {:.0f} s of --budget left".format(at - time.time())))
    deadline.passed()   # an enclosing deadline (optimize --budget) that passed meanwhile: cut
    out = {"epochs_run": total, "best_epoch": best_epoch,
           "seconds": round(time.time() - t0, 1), "stop_reason": reason,
           "stopped": STOP_REASONS[reason].format(
               patience=patience, cap=epochs, extra=EXTEND_ROUNDS,
               budget=None if budget is None else "{:g} s".format(float(budget)))}
    if extend:
        out["rounds"] = rounds
    if budget is not None:
        out["budget_s"] = float(budget)
    say(stop_sentence(out, method))
    return out


# methods that need the Keras layer graph (refused on a SavedModel of TF functions only)
GRAPH_METHODS = {"prune": "pruning", "distill": "distillation", "qat": "quantization-aware training",
                 "knn-slice": "k-NN slicing of the Keras model"}

# methods that train the model (refuse ONNX input) -> what they do
TRAINING_METHODS = {"prune": "pruning (fine-tuning)", "distill": "distillation (training a student)",
                    "qat": "quantization-aware training"}


def _say_stderr(msg):
    print(msg, file=sys.stderr, flush=True)
