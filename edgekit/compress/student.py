"""Derive a distillation student from the teacher's own graph (MobileNet's three moves).

* ``width`` (MobileNet's width multiplier): every prunable channel group of the teacher
  (:mod:`edgekit.compress.channels.groups`: coupled convs through Add / Concatenate / depthwise,
  hidden Dense units) gets ``width * channels`` rounded as MobileNet rounds (:func:`scaled`:
  multiples of 8, at least 8); fenced groups and the classifier keep theirs. Residual
  shortcuts and concatenations stay exactly where they were.
* ``depthwise`` (the seed paper's AlexNet move): every Conv2D after the first with a kernel
  larger than 1x1 becomes a SeparableConv2D (depthwise + pointwise); 1x1 convs stay (a 1x1
  separable conv is a 1x1 conv plus a per-channel scale: no saving).
* ``resolution`` (MobileNet's resolution multiplier): the student sees ``r``-scaled images.
  The resize is the student's first layer (``Resizing``, bilinear): the artifact still takes
  the teacher's input, so every runner, export and deploy bundle resizes the same way, with
  no preprocessing of its own. MACs of the layers after it fall by about ``r**2``.

The student is a model of the teacher's kind (Sequential or functional). Without
``depthwise`` it starts from the teacher's own weights (``init="teacher"``): each group keeps
its channels with the largest L1 norm (the ranking of ``prune --structured``), sliced — so
distillation fine-tunes a pruned teacher instead of training from nothing (a half-width
MobileNetV2 student on MNIST ended 9.3 pt below its teacher from random weights, 4.9 pt from
the teacher's channels, both after the default 8 epochs). ``init="random"`` (and every
depthwise student, whose layers change kind) is fresh.

Example::

    net = derive(teacher, width=0.5)
    net = derive(teacher, width=1.0, resolution=0.75)      # same params, ~0.56x MACs
"""
import numpy as np

from edgekit.compress.channels.groups import trace
from edgekit.compress.channels.prune import from_config, importance, layer_weights, \
    resized_config, set_sliced, strongest
from edgekit.errors import EdgekitError

RESIZE_LAYER = "student_resize"
INITS = ("teacher", "random")
_SEPARABLE_KEYS = ("name", "trainable", "dtype", "filters", "kernel_size", "strides", "padding",
                   "data_format", "dilation_rate", "activation", "use_bias")


def derive(teacher, width=1.0, depthwise=False, resolution=None, init="teacher", report=None):
    """A student: the teacher's graph, ``width``-scaled groups, optionally separable convs
    and an ``r``-scaled input resolution; weights from the teacher's strongest channels
    (``init="teacher"``, not with ``depthwise``) or fresh (``"random"``). ``report`` (a dict)
    gets ``fresh_layers``: the layers of a teacher-initialised student whose weights could not
    be sliced from the teacher's and start fresh (e.g. a Dense after Flatten at a new
    resolution) — recorded in the distillation manifest."""
    if init not in INITS:
        raise EdgekitError("student init must be one of {}, got {!r}".format(", ".join(INITS), init))
    cg = trace(teacher)
    inherit = init == "teacher" and not depthwise
    weights = layer_weights(cg) if inherit else None
    scores = importance(cg, weights) if inherit else {}
    kept = {g.id: (strongest(scores[g.id], scaled(g.size, width)) if g.id in scores
                   else np.arange(scaled(g.size, width)))
            for g in cg.groups if g.prunable}
    cfg, entries = resized_config(teacher, cg, kept)
    if depthwise:
        _separable(cg, entries)
    if resolution is not None and float(resolution) != 1.0:
        _resize_input(cfg, teacher, float(resolution))
    if cfg.get("name"):
        cfg["name"] = cfg["name"] + "_student"
    try:
        net = from_config(teacher, cfg, cg)
        if inherit:
            fresh = set_sliced(net, cg, kept, weights, strict=False)
            if report is not None:
                report["fresh_layers"] = list(fresh)
        return net
    except ValueError as exc:  # a layer built for fixed sizes (padding, Reshape) refuses
        if resolution is None:
            raise
        first = [ln for ln in str(exc).splitlines() if ln.strip()]
        raise EdgekitError("--resolution {} gives {}x{} inputs, which the teacher's layers "
                           "cannot take: {}".format(resolution, *student_size(
                               teacher.input_shape, resolution), first[0][:200] if first else exc)
                           ) from None


DIVISOR = 8


def scaled(n, width):
    """``n`` channels times ``width`` by MobileNet's own rule (``_make_divisible`` of
    keras.applications): a multiple of 8, at least 8, never below 90% of ``n * width`` — a
    group of fewer than 8 channels is scaled as is. CPU kernels block channels by 8 (odd
    counts made a pruned MobileNetV2 2.7x slower, see ``channel_prune``), and it keeps
    MobileNetV2 0.35's 8-channel bottlenecks from being halved to 4."""
    v = n * float(width)
    if n < DIVISOR:
        return max(1, int(round(v)))
    new = max(DIVISOR, int(v + DIVISOR / 2) // DIVISOR * DIVISOR)
    if new < 0.9 * v:
        new += DIVISOR
    return int(min(new, n)) if width <= 1 else int(new)


def student_size(shape, resolution):
    """(height, width) the student's convolutions see for an input of ``shape`` (N,H,W,C)."""
    return tuple(max(1, int(round(d * float(resolution)))) for d in shape[1:3])


def _separable(cg, entries):
    seen_conv = False
    for name in cg.order:
        use = cg.uses[name]
        if use.cls != "Conv2D":
            continue
        entry = entries[use.path]
        c = entry["config"]
        kernel = c.get("kernel_size", 1)
        kernel = tuple(kernel) if isinstance(kernel, (list, tuple)) else (kernel, kernel)
        if seen_conv and kernel != (1, 1):
            entry["class_name"] = "SeparableConv2D"
            entry.pop("module", None)
            entry.pop("registered_name", None)
            entry["config"] = dict((key, c[key]) for key in _SEPARABLE_KEYS if key in c)
            entry["config"]["depth_multiplier"] = 1
        seen_conv = True


def _resize_input(cfg, teacher, r):
    """Insert a bilinear ``Resizing`` to ``r`` x the input size right after the input."""
    shape = tuple(teacher.input_shape)
    if len(shape) != 4:
        raise EdgekitError("--resolution needs image input (N,H,W,C); the teacher takes {}"
                           .format(shape))
    h, w = student_size(shape, r)
    if min(h, w) < 4:
        raise EdgekitError("--resolution {} leaves {}x{} pixels: too small".format(r, h, w))
    resize = {"class_name": "Resizing",
              "config": {"name": RESIZE_LAYER, "trainable": False, "dtype": "float32",
                         "height": h, "width": w, "interpolation": "bilinear",
                         "crop_to_aspect_ratio": False}}
    layers = cfg["layers"]
    if "input_layers" not in cfg:  # Sequential: insert after the InputLayer
        at = 1 if layers and layers[0]["class_name"] == "InputLayer" else 0
        if at == 0:
            layers.insert(0, {"class_name": "InputLayer", "config": {
                "batch_input_shape": [None] + list(shape[1:]), "dtype": "float32",
                "name": "student_input"}})
            at = 1
        layers.insert(at, resize)
    else:
        (inp, node, tensor), = [tuple(x) for x in cfg["input_layers"]][:1] or [(None, 0, 0)]
        if len(cfg["input_layers"]) != 1:
            raise EdgekitError("--resolution needs a single-input teacher")
        for entry in layers:
            for call in entry.get("inbound_nodes", []):
                for ref in call:
                    if ref[0] == inp:
                        ref[0] = RESIZE_LAYER
        resize["name"] = RESIZE_LAYER
        resize["inbound_nodes"] = [[[inp, node, tensor, {}]]]
        layers.insert(1 + [e["config"]["name"] for e in layers].index(inp), resize)
    # nested models built for the teacher's input size are rebuilt for the student's
    _nested_inputs(cfg, shape[1:3], (h, w))


def _nested_inputs(cfg, old_hw, new_hw):
    for entry in cfg.get("layers", []):
        c = entry.get("config", {})
        if entry.get("class_name") in ("Functional", "Sequential", "Model") and "layers" in c:
            for inner in c["layers"]:
                if inner.get("class_name") == "InputLayer":
                    s = inner["config"].get("batch_input_shape")
                    if s and len(s) == 4 and tuple(s[1:3]) == tuple(old_hw):
                        inner["config"]["batch_input_shape"] = [s[0], new_hw[0], new_hw[1], s[3]]
            _nested_inputs(c, old_hw, new_hw)


__all__ = ["derive", "scaled", "student_size", "RESIZE_LAYER"]
