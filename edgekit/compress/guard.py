"""The accuracy guard every compression passes, and fine-tuning budgeted to the data.

A compression is judged on the **validation** split (never the test split): its accuracy
after, against the input model's before. Over ``max_drop`` points lost, the method fails
closed: :class:`GuardFailed` (exit 1, one line with the measured drop and what to try) is
raised before anything is written — unless the user passed ``allow_drop``.

Fine-tuning is budgeted in optimizer steps, not epochs, so 1,300 images and 60,000 images
both get a real fine-tune: the epoch cap is ``ceil(steps / steps_per_epoch)`` (``--epochs``
overrides it), the batch size defaults to 32 below 10,000 images (128 above), and
:func:`guard_stop` ends training once accuracy on a **selection** slice held out of the
training split (``Job.selection``; never the validation split, which the guard alone reads)
is back within half the allowed drop and has stopped improving (one epoch without a new
best), or after ``patience`` epochs without improvement; the best epoch's weights are
restored.

Example::

    guard = Guard(base_val=0.981, max_drop=1.0)
    cap = epoch_cap(len(ds.x_train), batch_size=32, steps=FINE_TUNE_STEPS)
    fit(model, ds, cap, callbacks=[guard_stop(guard)])
    guard.check(keras_accuracy(model, ds.x_val, ds.y_val), "prune", ["more --epochs"])
"""
import contextlib
import math

import numpy as np

from edgekit.errors import EdgekitError

DEFAULT_MAX_DROP = 1.0        # points of validation accuracy a method may lose
FINE_TUNE_STEPS = 1500        # optimizer steps a fine-tune may take (prune, QAT)
DISTILL_STEPS = 3000          # a student trains from scratch: twice that
MIN_EPOCHS = 2
PATIENCE = 5
DISTILL_PATIENCE = 15         # a student trained from scratch improves slowly and noisily
SETTLE = 1                    # once within the guard: epochs without improvement before stopping
SMALL_DATA = 10000            # below this many training images, batch 32 (else 128)
BN_FINE_TUNE_MOMENTUM = 0.9   # see bn_momentum()
BOUND_SE = 1.0                # the guard holds the drop's upper bound: drop + BOUND_SE * SE


class GuardFailed(EdgekitError):
    """A compression lost more validation accuracy than allowed (nothing was written)."""


def check_max_drop(max_drop):
    """``--max-drop`` in points: a finite number in [0, 100]."""
    try:
        v = float(max_drop)
    except (TypeError, ValueError):
        raise EdgekitError("--max-drop must be a number of accuracy points, got {!r}".format(
            max_drop)) from None
    if not math.isfinite(v) or not 0.0 <= v <= 100.0:
        raise EdgekitError("--max-drop must be between 0 and 100 points, got {}".format(max_drop))
    return v


class Guard(object):
    """Validation accuracy before (``base_val``) and the most a method may lose.

    Given the input model's validation predictions (``base_pred``, labels ``y``), a result
    checked with its own predictions is held to the drop's **upper bound**: the measured
    drop plus ``BOUND_SE`` standard errors of the paired difference (the images one model
    gets right and the other wrong). On 6,000 MNIST validation images that adds ~0.2 pt; on
    digits' 359 (:func:`edgekit.data.validation_fraction`) about 0.6 pt, on the 143 it held
    out before about 1 pt, unless the predictions barely changed (int8), so a result the split
    cannot show to be within ``max_drop`` is refused instead of written. The record's
    ``resolution_pts`` is that standard error: drops below it are noise to this split.
    """

    split = "validation"   # the images it is measured on ("selection": fine-tuning's slice)

    def __init__(self, base_val, max_drop=DEFAULT_MAX_DROP, allow_drop=False, samples=None,
                 base_pred=None, y=None):
        self.base_val = float(base_val)
        self.max_drop = check_max_drop(max_drop)
        self.allow_drop = bool(allow_drop)
        self.samples = None if samples is None else int(samples)
        self.base_pred = None if base_pred is None else np.asarray(base_pred)
        self.y = None if y is None else np.asarray(y)

    def paired(self, pred):
        """``(drop_pts, upper_pts, changed)`` of predictions ``pred`` against the base's on
        the same validation images, or None without base predictions."""
        if self.base_pred is None or self.y is None or pred is None:
            return None
        pred = np.asarray(pred)
        n = len(self.y)
        if n == 0 or len(pred) != n or len(self.base_pred) != n:
            return None
        base_ok, ok = self.base_pred == self.y, pred == self.y
        lost, won = int(np.sum(base_ok & ~ok)), int(np.sum(~base_ok & ok))
        drop = (lost - won) / float(n)
        var = max(lost + won - (lost - won) ** 2 / float(n), 0.0) / float(n) ** 2
        return 100.0 * drop, 100.0 * (drop + BOUND_SE * math.sqrt(var)), lost + won

    @property
    def stderr_pts(self):
        """Standard error (points) of an accuracy measured on the validation split: below
        ~1,000 images it is as large as the guard itself (digits at 98.6%: 0.98 pt on 143
        images, 0.62 pt on the 359 held out now)."""
        if not self.samples:
            return None
        p = min(max(self.base_val, 1e-3), 1 - 1e-3)
        return 100.0 * math.sqrt(p * (1 - p) / self.samples)

    @property
    def floor(self):
        """The lowest validation accuracy that passes."""
        return self.base_val - self.max_drop / 100.0

    @property
    def target(self):
        """Where fine-tuning may stop early: within half the allowed drop (a margin, so the
        test split — measured once, afterwards — is not left at the edge)."""
        return self.base_val - self.max_drop / 200.0

    def drop_pts(self, acc):
        return (self.base_val - float(acc)) * 100.0

    def within(self, acc):
        """The ``--max-drop`` rule, the one place it is written: True when validation
        accuracy ``acc`` lost at most ``max_drop`` points against ``base_val``. Every
        compression's :meth:`check` and every ``optimize`` candidate
        (:func:`edgekit.optimize.evaluate.evaluate`) are held to it."""
        return float(acc) >= self.floor - 1e-9

    def check(self, acc, method, hints=(), note=None, pred=None):
        """The manifest's ``guard`` record; raises :class:`GuardFailed` over the limit.
        ``pred``: the result's validation predictions (then the paired upper bound counts)."""
        acc = float(acc)
        within = self.within(acc)
        pair = self.paired(pred)
        bound_ok = pair is None or pair[1] <= self.max_drop + 1e-9
        passed = within and bound_ok
        record = {"split": "validation", "base_accuracy": self.base_val, "accuracy": acc,
                  "drop_pts": round(self.drop_pts(acc), 3), "max_drop_pts": self.max_drop,
                  "passed": bool(passed), "allowed_drop": bool(self.allow_drop and not passed)}
        if pair is not None:
            record.update(drop_upper_pts=round(pair[1], 3), changed_predictions=pair[2],
                          resolution_pts=round((pair[1] - pair[0]) / BOUND_SE, 3),
                          bound="drop + {:g} SE of the paired difference".format(BOUND_SE))
        if self.samples:
            record["samples"] = self.samples
            record["stderr_pts"] = round(self.stderr_pts, 2)
            if self.stderr_pts > self.max_drop:
                record["note"] = ("{} validation images measure accuracy to about +/-{:.1f} pt, "
                                  "more than --max-drop {:g}: the guard cannot tell a drop that "
                                  "small from noise".format(self.samples, self.stderr_pts,
                                                            self.max_drop))
        if passed or self.allow_drop:
            return record
        if within:   # measured within --max-drop, but the split cannot show it
            tips = list(hints) + ["more validation images (a larger data set)",
                                  "--max-drop {:g} to accept it".format(
                                      math.ceil(pair[1] * 10) / 10.0),
                                  "--allow-drop to write it anyway"]
            raise GuardFailed(
                "{} measured {} ({:.2%} -> {:.2%}), but {} validation images cannot "
                "show it is within --max-drop {:g}: {} predictions changed, so the drop may be "
                "up to {:.2f} pt (+{:g} standard error): nothing written.{} Try {}".format(
                    method, _pts_change(self.drop_pts(acc)), self.base_val, acc, len(self.y),
                    self.max_drop,
                    pair[2], pair[1], BOUND_SE, " " + note + "." if note else "",
                    "; ".join(tips)))
        tips = list(hints) + ["--max-drop {:g} to accept it".format(
            math.ceil(self.drop_pts(acc) * 10) / 10.0), "--allow-drop to write it anyway"]
        raise GuardFailed("{} lost {:.2f} pt of validation accuracy ({:.2%} -> {:.2%}), over "
                          "--max-drop {:g}: nothing written.{} Try {}".format(
                              method, self.drop_pts(acc), self.base_val, acc, self.max_drop,
                              " " + note + "." if note else "", "; ".join(tips)))


SELECTION_MAX_FRACTION = 0.2   # of the training split held out for epoch selection
SELECTION_MIN_IMAGES = 30


def selection_fraction(n_train, n_val):
    """Fraction of the training split held out to select epochs: as many images as the
    validation split, at most 20%; None when that is under 30 images (select on validation)."""
    n_train, n_val = int(n_train), int(n_val)
    if n_train <= 0:
        return None
    frac = min(float(n_val) / n_train, SELECTION_MAX_FRACTION)
    return frac if frac * n_train >= SELECTION_MIN_IMAGES else None


def _pts_change(drop):
    """"0.70 pt lost" / "0.70 pt gained" for a drop in points."""
    return "{:.2f} pt {}".format(abs(drop), "lost" if drop >= 0 else "gained")


def default_batch_size(n_train):
    return 32 if int(n_train) < SMALL_DATA else 128


def epoch_cap(n_train, batch_size, epochs=None, steps=FINE_TUNE_STEPS, min_epochs=MIN_EPOCHS):
    """The most epochs a fine-tune may run: ``epochs`` if given, else enough for ``steps``."""
    if epochs is not None:
        return int(epochs)
    per_epoch = max(1, int(math.ceil(int(n_train) / float(batch_size))))
    return max(int(min_epochs), int(math.ceil(steps / float(per_epoch))))


def guard_stop(guard, patience=PATIENCE, start_epoch=0, say=None, settle=True):
    """A Keras callback: stop once validation accuracy has reached ``guard.target`` and then
    an epoch brings no new best (:data:`SETTLE`; not with ``settle=False``), or after
    ``patience`` epochs without improvement; restore the best epoch's weights at the end.
    Epochs before ``start_epoch`` (e.g. a pruning ramp) are not candidates."""
    from edgekit._tf import keras

    class GuardStop(keras().callbacks.Callback):
        def __init__(self):
            super(GuardStop, self).__init__()
            self.best, self.best_weights, self.best_epoch, self.bad = -1.0, None, None, 0
            self.epochs_run = 0
            self.reached = False

        def summary(self):
            """What the manifest records: epochs actually run, the (1-based) epoch kept."""
            return {"epochs_run": self.epochs_run,
                    "best_epoch": None if self.best_epoch is None else self.best_epoch + 1}

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.epochs_run = epoch + 1
            val = logs.get("val_accuracy", logs.get("val_acc"))
            if val is None or epoch + 1 < start_epoch:
                return
            val = float(val)
            if val > self.best:
                self.best, self.best_weights, self.best_epoch, self.bad = \
                    val, self.model.get_weights(), epoch, 0
            else:
                self.bad += 1
            if val >= guard.target:
                self.reached = True
            if settle and self.reached and self.bad >= SETTLE:
                if say:
                    say("{} accuracy {:.2%} (best {:.2%}, epoch {}) is within the guard "
                        "(base {:.2%}, --max-drop {:g}) and no longer improving: stopping".format(
                            guard.split, val, self.best, self.best_epoch + 1, guard.base_val,
                            guard.max_drop))
                self.model.stop_training = True
            elif self.bad >= patience:
                if say:
                    say("no improvement for {} epochs: stopping (best {:.2%} at epoch {})".format(
                        patience, self.best, self.best_epoch + 1))
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return GuardStop()


def batchnorm_layers(model):
    from edgekit.keras_layers import flat_layers
    return [l for l in flat_layers(model) if type(l).__name__ == "BatchNormalization"]


@contextlib.contextmanager
def bn_momentum(model, momentum=BN_FINE_TUNE_MOMENTUM):
    """Fine-tune with BatchNorm momentum at most ``momentum``, then put the model's own back.

    ``keras.applications`` nets ship momentum 0.999: their moving statistics take thousands of
    steps to follow changed weights, so a short fine-tune leaves inference-mode accuracy far
    below training-mode accuracy. The saved model keeps its original configuration.
    """
    layers = [l for l in batchnorm_layers(model) if float(l.momentum) > momentum]
    saved = [l.momentum for l in layers]
    for l in layers:
        l.momentum = momentum
    try:
        yield len(layers)
    finally:
        for l, m in zip(layers, saved):
            l.momentum = m


def batchnorm_note(model, x, y, samples=512):
    """A sentence when a BatchNorm model's inference-mode accuracy is far below its
    training-mode accuracy (moving statistics that never caught up), else None."""
    if not batchnorm_layers(model) or len(x) == 0:
        return None
    from edgekit.models import keras_accuracy
    n = min(int(samples), len(x))
    infer = keras_accuracy(model, x[:n], y[:n])
    train_mode = float(np.mean(np.argmax(np.asarray(model(x[:n], training=True)), axis=1) == y[:n]))
    if train_mode - infer < 0.2:
        return None
    moms = sorted({float(l.momentum) for l in batchnorm_layers(model)})
    return ("its BatchNorm moving statistics look stale: {:.1%} in training mode vs {:.1%} in "
            "inference mode (BatchNorm momentum {}); fine-tune longer, or retrain with momentum "
            "0.9".format(train_mode, infer, "/".join("{:g}".format(m) for m in moms)))
