"""Knowledge distillation: a smaller student learns from the teacher's soft targets.

Loss (Hinton et al. 2015): ``alpha * CE(labels, student) + (1 - alpha) * T^2 *
KL(softmax(teacher / T) || softmax(student / T))``, ``T`` = ``temperature``. The teacher's
logits on the training split are computed once, then the student trains with ``model.fit``.

The student is either named (``student="tiny"``: any :data:`edgekit.models.ARCHS` entry) or
derived from the teacher: ``width`` multiplies every conv filter count and hidden Dense width
(MobileNet's width multiplier), ``depthwise=True`` turns every Conv2D after the first into a
SeparableConv2D (depthwise + pointwise). A student not smaller than the teacher is refused.

Example::

    art = distill("out/seed", "mnist:data/mnist", "out/student", width=0.25, epochs=5)
    art.manifest["metrics"]["params"], art.manifest["metrics"]["before"]["params"]
"""
import numpy as np

from edgekit.compress._common import Job, check_epochs, printer
from edgekit.errors import EdgekitError


def distill(model, data, out, student=None, width=None, depthwise=False, temperature=4.0,
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
    if student is not None and (width is not None or depthwise):
        raise EdgekitError("give --student NAME, or derive one with --width/--depthwise, not both")
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
        width = 0.5 if width is None else float(width)
        net = derive_student(teacher, width, bool(depthwise))
        how = {"width": width, "depthwise": bool(depthwise)}
    t_params, s_params = count_params(teacher), count_params(net)
    if s_params >= t_params:
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


def derive_student(teacher, width, depthwise):
    """A fresh (untrained) copy of the teacher's architecture: every Conv2D's filters and every
    hidden Dense's units times ``width``; with ``depthwise``, every Conv2D after the first
    becomes a SeparableConv2D (the first sees the raw image: MobileNet keeps it a full conv)."""
    from edgekit._tf import keras
    k = keras()
    cfg = teacher.get_config()
    entries = cfg["layers"]
    dense = [e for e in entries if e["class_name"] == "Dense"]
    output = dense[-1]["config"]["name"] if dense else None
    seen_conv = False
    for e in entries:
        e.pop("build_config", None)
        c = e["config"]
        if e["class_name"] == "Conv2D":
            c["filters"] = _scaled(c["filters"], width)
            if depthwise and seen_conv:
                e["class_name"] = "SeparableConv2D"
                keep = ("name", "trainable", "dtype", "filters", "kernel_size", "strides",
                        "padding", "data_format", "dilation_rate", "activation", "use_bias")
                e["config"] = dict((key, c[key]) for key in keep if key in c)
                e["config"]["depth_multiplier"] = 1
            seen_conv = True
        elif e["class_name"] == "Dense" and c["name"] != output:
            c["units"] = _scaled(c["units"], width)
    if cfg.get("name"):
        cfg["name"] = cfg["name"] + "_student"
    if isinstance(teacher, k.Sequential):
        return k.Sequential.from_config(cfg)
    return k.Model.from_config(cfg)


def _scaled(n, width):
    return max(1, int(round(n * width)))


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
