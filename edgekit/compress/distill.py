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

from edgekit.compress._common import Job, check_epochs, printer
from edgekit.errors import EdgekitError


def distill(model, data, out, student=None, width=None, depthwise=False, resolution=None,
            temperature=4.0,
            alpha=0.1, epochs=5, lr=1e-3, batch_size=128, seed=0, force=False, progress=True):
    """Distill ``model`` (the teacher) into a smaller student; writes the artifact ``out``.

    ``student``: an architecture name (``edgekit.models.ARCHS``) or None to derive it from the
    teacher with ``width`` in (0, 1] (default 0.5) and/or ``depthwise``.
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit._tf import set_seed
    from edgekit.models import ARCHS, build, count_params
    epochs = check_epochs(epochs)
    if epochs < 1:
        raise EdgekitError("distillation trains the student: --epochs must be >= 1")
    if width is not None and not 0.0 < float(width) <= 1.0:
        raise EdgekitError("--width must be in (0, 1], got {}".format(width))
    if float(temperature) <= 0:
        raise EdgekitError("--temperature must be > 0, got {}".format(temperature))
    if not 0.0 <= float(alpha) <= 1.0:
        raise EdgekitError("--alpha (weight of the hard-label loss) must be in [0, 1], got {}"
                           .format(alpha))
    if resolution is not None and not 0.0 < float(resolution) <= 1.0:
        raise EdgekitError("--resolution must be in (0, 1], got {}".format(resolution))
    if student is not None and (width is not None or depthwise or resolution is not None):
        raise EdgekitError("give --student NAME, or derive one with --width/--depthwise/"
                           "--resolution, not several")
    if student is not None and student not in ARCHS:
        raise EdgekitError("unknown student {!r}; choose one of: {} (or derive one with --width "
                           "/ --depthwise)".format(student, ", ".join(sorted(ARCHS))))
    job = Job(model, data, out, force)
    ds, teacher = job.ds, job.model
    say = printer(progress)
    set_seed(seed)
    if student is not None:
        net = build(student, ds.input_shape, ds.num_classes)
        how = {"student": student}
    else:
        width = (1.0 if resolution is not None else 0.5) if width is None else float(width)
        net = derive_student(teacher, width, bool(depthwise), resolution)
        how = {"width": width, "depthwise": bool(depthwise)}
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
    say("teacher {:,} params -> student {:,} params ({:.1f}x fewer); distilling {} epoch(s) at "
        "T={}, alpha={}".format(t_params, s_params, t_params / float(s_params), epochs,
                               temperature, alpha))
    _train(net, teacher, ds, float(temperature), float(alpha), epochs, lr, batch_size, progress)
    params = dict(how, temperature=float(temperature), alpha=float(alpha), epochs=epochs, lr=lr,
                  batch_size=batch_size, seed=seed, loss="alpha*CE + (1-alpha)*T^2*KL")
    extra = {"params_ratio": t_params / float(s_params)}
    return job.save(net, "distill", params, extra)


def derive_student(teacher, width, depthwise, resolution=None):
    """A fresh (untrained) student from the teacher's graph: see
    :func:`edgekit.compress.student.derive` (width by channel group, separable convs after the
    first, an r-scaled input resolution)."""
    from edgekit.compress.student import derive
    return derive(teacher, width, depthwise, resolution)


def _train(net, teacher, ds, temperature, alpha, epochs, lr, batch_size, progress):
    from edgekit._tf import keras, tf
    k, tfm = keras(), tf()
    n_cls = ds.num_classes
    soft_train = teacher.predict(ds.x_train, batch_size=256, verbose=0).astype(np.float32)
    soft_val = teacher.predict(ds.x_val, batch_size=256, verbose=0).astype(np.float32)
    y_train = np.concatenate([np.eye(n_cls, dtype=np.float32)[ds.y_train], soft_train], axis=1)
    y_val = np.concatenate([np.eye(n_cls, dtype=np.float32)[ds.y_val], soft_val], axis=1)
    T = temperature

    def loss(y_true, logits):
        hard, t_logits = y_true[:, :n_cls], y_true[:, n_cls:]
        ce = k.losses.categorical_crossentropy(hard, logits, from_logits=True)
        p_t = tfm.nn.softmax(t_logits / T)
        log_p_s = tfm.nn.log_softmax(logits / T)
        log_p_t = tfm.nn.log_softmax(t_logits / T)
        kl = tfm.reduce_sum(p_t * (log_p_t - log_p_s), axis=-1)
        return alpha * ce + (1.0 - alpha) * (T * T) * kl

    def acc(y_true, logits):
        return k.metrics.sparse_categorical_accuracy(tfm.argmax(y_true[:, :n_cls], axis=-1), logits)

    net.compile(optimizer=k.optimizers.Adam(lr), loss=loss, metrics=[acc])
    net.fit(ds.x_train, y_train, validation_data=(ds.x_val, y_val), epochs=epochs,
            batch_size=batch_size, verbose=1 if progress else 0)
    return net
