"""Knowledge distillation: a smaller student learns from the teacher's soft targets.

Loss (Hinton et al. 2015): ``alpha * CE(labels, student) + (1 - alpha) * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``, ``T`` = ``temperature``. The teacher's
logits on the training split are computed once, then the student trains with ``model.fit``.

The student is either named (``student="tiny"``: any :data:`edgekit.models.ARCHS` entry) or
derived from the teacher's own graph (:mod:`edgekit.compress.student`, any functional or
Sequential teacher, residual and concat joins kept): ``width`` multiplies every channel group
(MobileNet's width multiplier), ``depthwise=True`` turns every Conv2D after the first into a
SeparableConv2D (depthwise + pointwise), ``resolution=r`` makes the student see r-scaled
images (a ``Resizing`` first layer: MobileNet's resolution multiplier, ~r^2 the MACs). A
student with neither fewer params nor fewer MACs than the teacher is refused.

Example::

    art = distill("out/seed", "mnist:data/mnist", "out/student", width=0.25, epochs=5)
    art.manifest["metrics"]["params"], art.manifest["metrics"]["before"]["params"]
"""
import numpy as np

from edgekit.compress._common import GRAD_CLIP_NORM, TUNING, Job, printer
from edgekit.compress.options import declared
from edgekit.errors import EdgekitError

# training-time augmentation (``--augment``): Keras preprocessing layers in front of the student
# while it trains, gone at inference (the saved student is the net alone). "shift": up to 10%
# of height and width each way -- label-preserving for digits and most photos (a flip is not,
# for digits). Measured on MNIST (BENCHMARKS.md, optimize): see the labels-alone recipe.
AUGMENTS = ("none", "shift")
SHIFT = 0.1


@declared("distill")
def distill(model, data, out, *, student, width, depthwise, resolution, temperature, alpha, epochs,
            lr, batch_size, seed, max_drop, allow_drop, preprocess, augment="none", settle=True,
            refit=False, refit_epochs=None, budget=None, force=False, progress=True):
    """Distill ``model`` (the teacher) into a smaller student; writes the artifact ``out``.

    ``student``: an architecture name (``edgekit.models.ARCHS``; with ``width`` /
    ``depthwise`` / ``resolution``: that architecture scaled) or None to derive it from the
    teacher with ``width`` in (0, 1] (default 0.5) and/or ``depthwise``. Training is budgeted
    in optimizer steps (``epochs`` caps it) and stops once the student's validation accuracy
    is within ``max_drop`` points of the teacher's and an epoch brings no new best
    (``settle=False``: only the cap or the patience stops it -- a search after the best
    student, not the first good-enough one); a student that cannot get there is not
    written (GuardFailed) unless ``allow_drop``. ``augment="shift"`` trains on randomly
    shifted images (:data:`AUGMENTS`). ``refit=True``: once the selection slice has chosen the
    epoch count, the student trains again from the same start on the whole training split for
    that many epochs (:func:`_refit`; about twice the time), and that is the model checked.
    ``refit_epochs=N``: that refit alone, for the N epochs an earlier selection run of the
    same student and seed chose (what ``optimize`` does for its chosen candidate): no held-out
    slice, the same model ``refit=True`` gives when its selection chooses N.
    Options are declared (types, defaults, checks) in :mod:`edgekit.compress.options`.
    A default cap (no ``epochs``) reached while still improving goes on for at most two more
    rounds; ``budget`` (seconds, ``--budget 10m``) bounds the training's wall time, and the
    manifest and the messages say how long it ran and why it stopped.
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit._tf import set_seed
    from edgekit.compress.guard import DISTILL_STEPS, epoch_cap
    from edgekit.models import ARCHS, build, count_params
    if epochs is not None and epochs < 1:
        raise EdgekitError("distillation trains the student: --epochs must be >= 1")
    if student is not None and student not in ARCHS:
        raise EdgekitError("unknown student {!r}; choose one of: {} (or derive one with --width "
                           "/ --depthwise)".format(student, ", ".join(sorted(ARCHS))))
    job = Job(model, data, out, force, max_drop=max_drop, allow_drop=allow_drop,
              preprocess=preprocess, method="distill")
    ds, teacher = job.ds, job.model
    say = printer(progress)
    set_seed(seed)
    batch_size = batch_size or job.default_batch_size()
    # a default cap reached while still improving goes on (train_rounds); not before a refit,
    # which replays the chosen epochs on the cap's own schedule
    extend = epochs is None and not refit and refit_epochs is None and bool(settle)
    epochs = epoch_cap(len(ds.x_train), batch_size, epochs, steps=DISTILL_STEPS)
    if refit_epochs is not None and not 1 <= int(refit_epochs) <= epochs:
        raise EdgekitError("--refit-epochs {} must be within 1..--epochs ({}): the refit runs on "
                           "the same cosine schedule".format(refit_epochs, epochs))
    if student is not None:
        if (job.ds.adapt or {}).get("preprocess", "unit") != "unit":
            raise EdgekitError("--student {} is an edgekit architecture trained on unit-scaled "
                               "inputs; this teacher expects {!r} preprocessing: derive the "
                               "student with --width / --depthwise instead".format(
                                   student, job.ds.adapt["preprocess"]))
        net = build(student, ds.input_shape, ds.num_classes)
        how = {"student": student}
        if width is not None or depthwise or resolution is not None:  # the built-in, scaled
            width = 1.0 if width is None else float(width)
            net = derive_student(net, width, bool(depthwise), resolution, init="random")
            how.update(width=width, depthwise=bool(depthwise))
            if resolution is not None:
                how["resolution"] = float(resolution)
    else:
        width = (1.0 if resolution is not None else 0.5) if width is None else float(width)
        derived = {}
        net = derive_student(teacher, width, bool(depthwise), resolution, report=derived)
        how = {"width": width, "depthwise": bool(depthwise),
               "student_init": "random" if depthwise else "teacher (strongest channels, L1)"}
        if "fresh_layers" in derived:
            how["student_fresh_layers"] = derived["fresh_layers"]
        if resolution is not None:
            from edgekit.compress.student import student_size
            how.update(resolution=float(resolution),
                       student_input=list(student_size(teacher.input_shape, resolution)))
    from edgekit.models import count_macs
    t_params, s_params = count_params(teacher), count_params(net)
    if s_params >= t_params and count_macs(net) >= count_macs(teacher):
        raise EdgekitError("the student has {:,} params, not fewer than the teacher's {:,}: pick a "
                           "smaller --student or a lower --width".format(s_params, t_params))
    before = job.before()
    say("teacher {:,} params ({} out) -> student {:,} params ({:.1f}x fewer); distilling at "
        "T={}, alpha={} until validation accuracy is within --max-drop {:g} of {:.2%} (at most "
        "{} epochs, batch {})".format(t_params, job.output, s_params, t_params / float(s_params),
                                      temperature, alpha, job.max_drop, before["val_accuracy"],
                                      epochs, batch_size))
    start = net.get_weights() if refit or refit_epochs else None
    if refit_epochs is not None:    # the selection ran before (same student, same seed)
        ran = {"selection": "an earlier run (refit_epochs)"}
    else:
        ran = _train(net, teacher, job, float(temperature), float(alpha), epochs, lr,
                     batch_size, progress, settle=bool(settle), augment=augment, seed=seed,
                     extend=extend, budget=budget)
    if refit and refit_epochs is None and job.selection()[0] is job.ds:
        refit = False       # nothing was held out (a tiny training split): nothing to add
        ran["refit"] = None
    if refit or refit_epochs is not None:
        chosen = int(refit_epochs or ran.get("best_epoch") or ran.get("epochs_run") or epochs)
        say("refitting on all {:,} training images for the {} epochs chosen".format(
            len(ds.y_train), chosen))
        net.set_weights(start)
        set_seed(seed)
        _refit(net, teacher, job, float(temperature), float(alpha), chosen, epochs, lr,
               batch_size, progress, augment=augment, seed=seed)
        ran["refit"] = {"epochs": chosen, "images": int(len(ds.y_train))}
    hints = ["more --epochs (cap was {})".format(epochs)]
    hints.append("a larger student (--width above {:g})".format(width) if student is None
                 else "a larger --student than {}".format(student))
    guard = job.check_guard(net, hints=hints, ran=ran)
    params = dict(how, temperature=float(temperature), alpha=float(alpha), epochs=epochs, lr=lr,
                  **TUNING,
                  batch_size=batch_size, seed=seed, loss="alpha*CE + (1-alpha)*T^2*KL",
                  augment=augment,
                  teacher_output=job.output, max_drop=job.max_drop, settle=bool(settle), **ran)
    extra = {"params_ratio": t_params / float(s_params)}
    return job.save(net, "distill", params, extra, guard=guard)


def derive_student(teacher, width, depthwise, resolution=None, init="teacher", report=None):
    """A student from the teacher's graph: see :func:`edgekit.compress.student.derive` (width
    by channel group from the teacher's strongest channels, separable convs after the first,
    an r-scaled input resolution)."""
    from edgekit.compress.student import derive
    return derive(teacher, width, depthwise, resolution, init=init, report=report)


def _augmented(net, augment, seed):
    """``net`` behind the training-time augmentation layers (they pass images through
    unchanged at inference); ``net`` itself when there are none. The weights are shared: training
    the wrapper trains ``net``."""
    if augment in (None, "none"):
        return net
    from edgekit._tf import keras
    k = keras()
    inp = k.Input(shape=net.input_shape[1:], name="augment_input")
    x = k.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="nearest", seed=int(seed),
                                   name="augment_shift")(inp)
    return k.Model(inp, net(x), name="augmented_" + net.name)


def _train(net, teacher, job, temperature, alpha, epochs, lr, batch_size, progress, settle=True,
           augment="none", seed=0, extend=False, budget=None):
    """Fit the student on [one-hot labels | teacher logits] with the KD loss, under the guard:
    on the training split minus the selection slice, the best epoch (on that slice) kept; in
    rounds of the cap while still improving (``extend``), within ``budget`` seconds
    (:func:`~edgekit.compress._common.train_rounds`)."""
    from edgekit.compress._common import train_rounds
    from edgekit.compress.guard import DISTILL_PATIENCE
    ds, sel_guard = job.selection()   # validation stays untouched for the guard

    def one_round(stop, rounds):
        callbacks = [stop]
        if progress:
            from edgekit.progress import epoch_progress
            callbacks.insert(0, epoch_progress(epochs, "distilling"))
        _fit(net, teacher, ds.x_train, ds.y_train, (ds.x_val, ds.y_val), ds.num_classes,
             temperature, alpha, epochs, epochs, lr / (2 ** rounds), batch_size, callbacks,
             augment, seed)
    return train_rounds(net, one_round, sel_guard, epochs, DISTILL_PATIENCE, printer(progress),
                        "distilling", extend=extend, budget=budget, settle=settle,
                        method="distill")


def _refit(net, teacher, job, temperature, alpha, epochs, cap, lr, batch_size, progress,
           augment="none", seed=0):
    """Train ``net`` (back at its starting weights) again on the **whole** training split --
    the selection slice too -- for the ``epochs`` the selection chose, on the same learning-rate
    schedule (cosine over ``cap`` epochs): scikit-learn's ``refit`` after a search. The guard
    then checks it on the validation split, which neither run has seen."""
    ds = job.ds
    callbacks = []
    if progress:
        from edgekit.progress import epoch_progress
        callbacks.append(epoch_progress(epochs, "refitting"))
    _fit(net, teacher, ds.x_train, ds.y_train, None, ds.num_classes, temperature, alpha, epochs,
         cap, lr, batch_size, callbacks, augment, seed)


def _fit(net, teacher, x, y, val, n_cls, temperature, alpha, epochs, cap, lr, batch_size,
         callbacks, augment, seed):
    """``epochs`` of ``model.fit`` on ``x`` with the KD loss (learning rate cosine-decayed over
    ``cap`` epochs, gradients clipped), ``val`` = (x, y) watched by the callbacks or None.

    Teacher and student logits come from their outputs as the models define them: a softmax
    model's probabilities become ``log p`` (softmax(log p / T) = softmax(z / T) exactly).
    """
    from edgekit._tf import keras, tf
    from edgekit.compress.guard import bn_momentum
    from edgekit.images import keras_fit_args, keras_predict_batches
    from edgekit.models import as_logits, ctrl_c_at_batch_end, output_convention
    k, tfm = keras(), tf()
    t_conv, s_conv = output_convention(teacher), output_convention(net)

    def targets(xs, ys):
        soft = as_logits(keras_predict_batches(teacher, xs).astype(np.float32), t_conv)
        return np.concatenate([np.eye(n_cls, dtype=np.float32)[ys], soft], axis=1)
    T = temperature

    def loss(y_true, out):
        hard, t_logits = y_true[:, :n_cls], y_true[:, n_cls:]
        logits = as_logits(out, s_conv)
        ce = k.losses.categorical_crossentropy(hard, logits, from_logits=True)
        p_t = tfm.nn.softmax(t_logits / T)
        log_p_s = tfm.nn.log_softmax(logits / T)
        log_p_t = tfm.nn.log_softmax(t_logits / T)
        kl = tfm.reduce_sum(p_t * (log_p_t - log_p_s), axis=-1)
        return alpha * ce + (1.0 - alpha) * (T * T) * kl

    def acc(y_true, out):
        return k.metrics.sparse_categorical_accuracy(tfm.argmax(y_true[:, :n_cls], axis=-1), out)

    # the learning rate decays (cosine) over the epoch cap: at a constant 1e-3 a
    # MobileNetV2-derived student on MNIST diverged after its third epoch (val 92.7% -> 59%);
    # gradients are clipped (_common.GRAD_CLIP_NORM): without, the same student swung by 8 pt
    # of training accuracy within an epoch even under the decay
    steps = max(1, cap * int(np.ceil(len(x) / float(batch_size))))
    fit_net = _augmented(net, augment, seed)
    fit_net.compile(optimizer=k.optimizers.Adam(k.optimizers.schedules.CosineDecay(lr, steps),
                                                global_clipnorm=GRAD_CLIP_NORM),
                    loss=loss, metrics=[acc])
    extra = {} if val is None else {"validation_data": (val[0], targets(*val))}
    with bn_momentum(net), ctrl_c_at_batch_end() as ctrl_c:
        fit_net.fit(**keras_fit_args(x, targets(x, y), batch_size, **extra),
                    epochs=epochs, verbose=0, callbacks=callbacks + [ctrl_c])
