"""Fit a data set to the user's model: its preprocessing, its image size, its channels.

The model is the user's, and so is its input convention. Loaders return pixels as "unit"
values ``u`` in [0, 1]; :data:`PREPROCESS` maps them to what the model expects:

==========  ==========================  =====================================================
name        model input                 typical source
==========  ==========================  =====================================================
unit        ``u`` (raw / 255)           edgekit's own models, most Keras tutorials
raw         ``255 u`` (0..255)          models that carry ``Rescaling`` / ``Normalization``
symmetric   ``2 u - 1`` (raw/127.5 - 1) MobileNet / Inception ``preprocess_input``
imagenet    ``(u - mean) / std``        torchvision / timm, ImageNet mean/std per channel
==========  ==========================  =====================================================

or explicit ``{"scale": S, "mean": M, "std": SD}`` on 0..255 pixels: ``(raw*S - M) / SD``.
Without a choice, a model whose first layer is ``Rescaling`` or ``Normalization`` gets
``raw`` and any other ``unit``.

When the data's image size or channel count differs from the model's input (MNIST for a
32x32x3 model, a folder of assorted JPEGs), images are resized (bilinear, Pillow) and
channels repeated (1 -> 3) or reduced to luminance (3 -> 1), once, saying so on stderr
(per batch as they are read when the data set is kept lazy, :mod:`edgekit.images`).

One rule for every verb (:func:`check_fit`): a fit that keeps the picture -- enlarging, or
shrinking by at most :data:`MAX_SHRINK`x with the same aspect ratio, grey repeated to RGB --
is announced and recorded; one that does not -- shrinking by more (28x28 data for an 8x8
model), a change of aspect ratio, colour reduced to luminance or alpha dropped -- is refused
unless the user asked for it (``--resize``: :func:`allow_resize`). A fit an artifact's
manifest already records (it was made from data of that size) is re-applied without asking
again. Everything is
recorded in the manifest's ``input`` entry (``preprocess``, ``scale``/``mean``/``std``,
``resize``, ``channels``) and :func:`data_for` re-applies it for every later step (eval,
bench, export parity, the deploy bundle), so every runner sees identical inputs.

Example::

    ds = fit_data(load_data("mnist:DIR"), (32, 32, 3), preprocess="symmetric")
    ds.x_train.shape, ds.input_spec()["preprocess"]     # (54000, 32, 32, 3), 'symmetric'
"""
import contextlib
import contextvars
import math
import sys

import numpy as np

from edgekit.errors import EdgekitError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# name -> (factor on unit values, mean, std): x = (u * factor - mean) / std
PREPROCESS = {
    "unit": (1.0, [0.0], [1.0]),
    "raw": (255.0, [0.0], [1.0]),
    "symmetric": (2.0, [1.0], [1.0]),
    "imagenet": (1.0, IMAGENET_MEAN, IMAGENET_STD),
}
SELF_NORMALIZING = ("Rescaling", "Normalization")
MAX_SHRINK = 2.0     # shrinking images more than this (per side) needs --resize
MAX_ASPECT = 0.10    # a relative change of the aspect ratio above this needs --resize
MAX_GROW = 4.0       # enlarging more than this (per side: 1x1 data for an 8x8 model) too
F32_MAX = float(np.finfo(np.float32).max)

_RESIZE = contextvars.ContextVar("edgekit_resize", default=False)
_ANNOUNCED = set()


@contextlib.contextmanager
def allow_resize(on=True):
    """Within the block, fits :func:`check_fit` would refuse are made (the CLI's
    ``--resize``): every verb's data path reads it, however deep, without a parameter on each
    function between the command and :func:`fit_data` / :func:`data_for`."""
    token = _RESIZE.set(bool(on))
    try:
        yield
    finally:
        _RESIZE.reset(token)


def check_fit(ds, src, size, channels, accepted=None):
    """Refuse (EdgekitError) a fit of ``ds``'s images ``src`` (H, W, C) to ``size`` (H, W or
    None) / ``channels`` (or None) that changes what the images show -- shrinking by more than
    :data:`MAX_SHRINK`x, enlarging by more than :data:`MAX_GROW`x, another aspect ratio,
    colour to luminance, alpha dropped -- unless
    ``--resize`` was given (:func:`allow_resize`) or ``accepted`` (the manifest's ``input``)
    records this same fit from this same source size."""
    if _RESIZE.get():
        return
    accepted = accepted or {}
    problems = []
    if size is not None:
        h, w = size
        same_as_made = list(accepted.get("source_size") or []) == [int(src[0]), int(src[1])] \
            and list(accepted.get("resize") or []) == [int(h), int(w)]
        shrink = max(float(src[0]) / h, float(src[1]) / w)
        aspect = abs((float(src[1]) / src[0]) / (float(w) / h) - 1.0)
        grow = max(float(h) / src[0], float(w) / src[1])
        if not same_as_made and shrink > MAX_SHRINK:
            problems.append("shrinking them {:.3g}x loses most of each image".format(shrink))
        if not same_as_made and grow > MAX_GROW:
            problems.append("enlarging them {:.3g}x invents most of each image".format(grow))
        if not same_as_made and aspect > MAX_ASPECT:
            problems.append("{}x{} -> {}x{} changes their aspect ratio".format(
                src[0], src[1], h, w))
    if channels is not None and not (src[2] == 1 and channels in (3, 4)):
        how = "luminance" if channels == 1 else "drop-alpha"
        if accepted.get("channels") != how:
            problems.append("{} channels -> {} ({}) changes what the channels mean".format(
                src[2], channels, "colour to luminance" if channels == 1 else "alpha dropped"))
    if problems:
        want = "x".join(str(v) for v in ((size or src[:2]) + (channels or src[2],)))
        raise EdgekitError("{} has {}x{}x{} images but the model expects {}: {}; pass --resize "
                           "to fit them anyway, or give data of the model's size".format(
                               ds.spec, src[0], src[1], src[2], want, "; ".join(problems)))


def announce(text):
    """Say ``text`` on stderr once per process (eval, bench, export fit the same data to the
    same model several times; the user reads it once)."""
    if text not in _ANNOUNCED:
        _ANNOUNCED.add(text)
        print("note: " + text, file=sys.stderr, flush=True)


def parse_preprocess(preprocess=None, scale=None, mean=None, std=None):
    """A :data:`PREPROCESS` name, or explicit ``scale``/``mean``/``std`` (on 0..255 pixels),
    as ``(name, factor, mean, std)``; None when nothing was asked."""
    explicit = any(v is not None for v in (scale, mean, std))
    if preprocess is not None and explicit:
        raise EdgekitError("give --preprocess NAME or --scale/--mean/--std, not both")
    if isinstance(preprocess, dict):
        scale, mean, std = preprocess.get("scale"), preprocess.get("mean"), preprocess.get("std")
        explicit, preprocess = True, None
    if explicit:
        s = _finite(1.0 if scale is None else scale, "--scale")
        if s <= 0:
            raise EdgekitError("--scale must be > 0, got {}".format(scale))
        m = _floats(0.0 if mean is None else mean, "--mean")
        sd = _floats(1.0 if std is None else std, "--std")
        if any(v <= 0 for v in sd):
            raise EdgekitError("--std values must be > 0, got {}".format(std))
        _check_range(255.0 * s, m, sd)
        return "custom", 255.0 * s, m, sd
    if preprocess is None:
        return None
    if preprocess not in PREPROCESS:
        raise EdgekitError("unknown --preprocess {!r}; choose one of: {} (or --scale/--mean/--std)"
                           .format(preprocess, ", ".join(PREPROCESS)))
    factor, m, sd = PREPROCESS[preprocess]
    return preprocess, factor, list(m), list(sd)


def _check_range(factor, mean, std):
    """Refuse --scale/--mean/--std whose normalised pixels ``(u * factor - mean) / std``, u in
    [0, 1], are not finite float32 numbers (the models run in float32): ``--scale 1e300``,
    ``--std 1e-45``, ``--mean 1e39`` would feed inf/NaN to every runtime."""
    with np.errstate(all="ignore"):
        f32 = [np.float32(v) for v in [factor] + list(mean) + list(std)]
        lo_hi = [(np.float32(u) * f32[0] - np.float32(m)) / np.float32(sd)
                 for u in (0.0, 1.0) for m in mean for sd in std]
    bad = [v for v in f32 + lo_hi if not np.isfinite(v)] or \
        [v for v in std if np.float32(v) == 0 or abs(v) < float(np.finfo(np.float32).tiny)]
    if bad:
        raise EdgekitError("--scale {:g} / --mean {} / --std {} give normalised pixels outside "
                           "float32 (inf or NaN): the models compute in float32; use values "
                           "that keep (raw * scale - mean) / std within +-{:.1e}".format(
                               factor / 255.0, ",".join("{:g}".format(v) for v in mean),
                               ",".join("{:g}".format(v) for v in std), F32_MAX))


def _finite(v, flag):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise EdgekitError("{} must be a number, got {!r}".format(flag, v)) from None
    if not math.isfinite(f):
        raise EdgekitError("{} must be finite, got {}".format(flag, v))
    return f


def _floats(v, flag):
    if isinstance(v, str):
        v = [p for p in v.replace(";", ",").split(",") if p.strip()]
    if not isinstance(v, (list, tuple)):
        v = [v]
    if not v:
        raise EdgekitError("{} needs at least one number".format(flag))
    return [_finite(x, flag) for x in v]


def model_preprocess(model):
    """``raw`` when the model normalizes inputs itself (first layer Rescaling/Normalization),
    else ``unit``."""
    from edgekit.keras_layers import flat_layers
    for layer in flat_layers(model):
        cls = type(layer).__name__
        if cls == "InputLayer":
            continue
        return "raw" if cls in SELF_NORMALIZING else "unit"
    return "unit"


def fit_data(ds, model_or_shape, preprocess=None, say=None):
    """``ds`` fitted to a model (or an input shape ``(H, W, C)``): preprocessing, size, channels.

    ``preprocess``: a :data:`PREPROCESS` name, a ``{"scale","mean","std"}`` dict, a parsed
    tuple from :func:`parse_preprocess`, or None (detect from the model; shape only: ``unit``).
    Returns ``ds`` itself when nothing changes.
    """
    if hasattr(model_or_shape, "input_shape"):
        shape = tuple(model_or_shape.input_shape[1:])
        detected = model_preprocess(model_or_shape)
    else:
        shape = tuple(model_or_shape)
        detected = "unit"
    if isinstance(preprocess, tuple):
        parsed = preprocess
    else:
        parsed = parse_preprocess(preprocess) if preprocess is not None else None
    if parsed is None:
        parsed = parse_preprocess(detected)
    return _apply(ds, shape, parsed, say)


def data_for(ds, input_spec, say=None):
    """``ds`` prepared as an artifact's manifest ``input`` entry says (preprocessing, resize,
    channels): what eval, bench, export and deploy use, so they see what compress saw."""
    input_spec = input_spec or {}
    shape = input_spec.get("shape")
    if not shape or len(shape) != 4 or any(d is None for d in shape[1:]):
        return ds
    if str(input_spec.get("layout", "NHWC")).upper() == "NCHW":
        shape = [shape[0], shape[2], shape[3], shape[1]]
    name = input_spec.get("preprocess")
    if name in PREPROCESS:
        parsed = parse_preprocess(name)
    else:  # explicit numbers (or a manifest from before preprocessing was recorded)
        unit = float(getattr(ds, "unit_scale", ds.norm.get("scale", 1.0)))
        parsed = ("custom" if name else "unit", float(input_spec.get("scale", unit)) / unit,
                  list(input_spec.get("mean", [0.0])), list(input_spec.get("std", [1.0])))
    return _apply(ds, tuple(int(d) for d in shape[1:]), parsed, say, accepted=input_spec)


def _apply(ds, shape, parsed, say, accepted=None):
    name, factor, mean, std = parsed
    unit_scale = float(getattr(ds, "unit_scale", ds.norm.get("scale", 1.0)))
    cur = ds.norm
    cur_factor = float(cur.get("scale", unit_scale)) / unit_scale
    same_norm = (abs(cur_factor - factor) < 1e-9 and list(map(float, cur.get("mean", [0.0]))) ==
                 list(map(float, mean)) and list(map(float, cur.get("std", [1.0]))) ==
                 list(map(float, std)))
    if len(shape) != 3:
        raise EdgekitError("the model's input {} is not an image (H, W, C)".format(shape))
    h, w, c = (int(d) if d is not None else None for d in shape)
    src = ds.input_shape
    size_change = (h is not None and w is not None) and (src[0], src[1]) != (h, w)
    chan_change = c is not None and src[2] != c
    if chan_change and not ((src[2] == 1 and c in (3, 4)) or (src[2] in (3, 4) and c == 1)
                            or (src[2] == 4 and c == 3)):
        raise EdgekitError("{} has {}-channel images but the model expects {} channels: only "
                           "1 -> 3 (repeat) and 3 -> 1 (luminance) are adapted".format(
                               ds.spec, src[2], c))
    for vec, flag in ((mean, "mean"), (std, "std")):
        if len(vec) not in (1, c or len(vec)):
            if name in PREPROCESS:  # a preset's numbers, not something the user typed
                raise EdgekitError("--preprocess {} normalises {} channels (its per-channel "
                                   "mean/std) but the model's input has {}: use --preprocess "
                                   "unit/raw/symmetric or --scale/--mean/--std with {} "
                                   "value(s)".format(name, len(vec), c, c))
            raise EdgekitError("--{} has {} values but the model's input has {} channels".format(
                flag, len(vec), c))
    check_fit(ds, src, (h, w) if size_change else None, c if chan_change else None, accepted)
    if same_norm and not size_change and not chan_change:
        if getattr(ds, "adapt", None) is None:   # a shallow copy: the caller's ds stays as given
            import copy
            ds = copy.copy(ds)
            ds.adapt = {"preprocess": name}
        return ds
    changes = []
    if not same_norm:
        changes.append("preprocessing {}".format(_describe(name, factor, mean, std)))
    if size_change:
        changes.append("resized {}x{} -> {}x{}".format(src[0], src[1], h, w))
    if chan_change:
        changes.append("channels {} -> {} ({})".format(
            src[2], c, "repeated" if src[2] == 1 else "luminance" if c == 1 else "alpha dropped"))
    if say:
        say("data {} fitted to the model: {}".format(ds.spec, "; ".join(changes)))
    elif size_change or chan_change:  # never silently: the user sees it, results record it
        announce("data {} fitted to the model: {}".format(ds.spec, "; ".join(
            ch for ch in changes if not ch.startswith("preprocessing"))))

    step = Convert(cur.get("mean", [0.0]), cur.get("std", [1.0]), cur_factor,
                   (h, w) if size_change else None, c if chan_change else None,
                   factor, mean, std)
    out_shape = (h or src[0], w or src[1], c or src[2])

    def convert(x):
        from edgekit.images import LAZY_BYTES, LazyImages, is_lazy
        if is_lazy(x):
            return x.then(step, out_shape)
        if 4 * len(x) * int(np.prod(out_shape)) > LAZY_BYTES:   # the result would be large:
            return LazyImages(x, 1.0, step, out_shape)          # converted per batch, read
        out = [step(x[i:i + 4096]) for i in range(0, len(x), 4096)]  # bounded temporaries
        if not out:
            return np.zeros((0,) + out_shape, np.float32)
        return np.concatenate(out)

    from edgekit.data import Dataset
    norm = {"scale": unit_scale * factor, "mean": [float(v) for v in mean],
            "std": [float(v) for v in std]}
    new = Dataset(ds.spec, convert(ds.x_train), ds.y_train, convert(ds.x_val), ds.y_val,
                  convert(ds.x_test), ds.y_test, ds.classes, norm)
    new.unit_scale = unit_scale
    new.adapt = {"preprocess": name}
    if size_change:
        new.adapt["resize"] = [h, w]
        new.adapt["source_size"] = [int(src[0]), int(src[1])]
    if chan_change:
        new.adapt["channels"] = "repeat" if src[2] == 1 else "luminance" if c == 1 else "drop-alpha"
    return new


class Convert(object):
    """One batch from a data set's normalisation to another's, resized and channel-adapted
    on the way: ``u = (x * std_old + mean_old) / factor_old`` (unit values), resize,
    channels, then ``(u * factor - mean) / std``. A plain class (picklable), applied eagerly
    or per batch by :class:`edgekit.images.LazyImages` (same values either way)."""

    def __init__(self, mean_old, std_old, factor_old, size, channels, factor, mean, std):
        self.m_old = np.asarray(mean_old, np.float32)
        self.s_old = np.asarray(std_old, np.float32)
        self.f_old = np.float32(factor_old)
        self.size, self.channels = size, channels
        self.factor = np.float32(factor)
        self.m_new = np.asarray(mean, np.float32)
        self.s_new = np.asarray(std, np.float32)

    def __call__(self, x):
        u = (x * self.s_old + self.m_old) / self.f_old
        if self.size is not None:
            u = _resize(u, *self.size)
        if self.channels is not None:
            u = _channels(u, self.channels)
        return ((u * self.factor - self.m_new) / self.s_new).astype(np.float32)


def _describe(name, factor, mean, std):
    if name != "custom":
        return name
    return "x = (raw * {:g} - {}) / {}".format(factor / 255.0, mean, std)


def _resize(u, h, w):
    """Bilinear resize of a float batch (N, H, W, C) with Pillow, channel by channel."""
    from PIL import Image
    n, _, _, c = u.shape
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        for j in range(c):
            im = Image.fromarray(np.ascontiguousarray(u[i, :, :, j]), mode="F")
            out[i, :, :, j] = np.asarray(im.resize((w, h), Image.BILINEAR), np.float32)
    return out


def _channels(u, c):
    if u.shape[-1] == 1:
        return np.repeat(u, c, axis=-1)
    if c == 1:
        lum = np.asarray([0.299, 0.587, 0.114], np.float32)
        return (u[..., :3] @ lum)[..., None]
    return u[..., :c]
