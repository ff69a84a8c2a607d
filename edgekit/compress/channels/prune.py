"""Channel removal by groups: rank, choose, and rebuild a smaller standard Keras model.

Works on the :mod:`edgekit.compress.channels.groups` of any functional or Sequential graph
(residual ``Add``, ``Concatenate``, depthwise / separable blocks, nested models such as
``keras.applications.MobileNetV2``):

* :func:`importance` scores every channel of a group by the L1 norm of all its members' weights
  on it (producers' filters, followers' per-channel weights — BatchNorm as its scale
  ``|gamma| / sqrt(var + eps)``, depthwise filters — and the consumers' input slices), each
  member normalised by its mean so that layers of different scales weigh the same; the group
  score is the mean over members (so scores of different groups are comparable: ~1 on average).
* :func:`choose` keeps per group the top channels: ``ratio`` (fraction removed from every
  prunable conv group), ``keep`` (``{layer: N}`` for the named layers' groups), or
  ``target_macs`` (a fraction of the original MACs: the globally weakest conv channels are
  removed until the estimate reaches it, each group keeping at least :data:`MIN_KEEP` of its
  channels). Dense units only change when named (``keep`` / ``dense_width``).
* :func:`rebuild` writes the same layers with fewer channels (config edited, weights sliced):
  a plain Keras model that saves, loads and exports like any other.

Example::

    small, report = prune_channels(model, target_macs=0.5)
    report["macs"], report["macs_before"], report["fenced"]
"""
import math

import numpy as np

from edgekit.compress.channels.groups import trace
from edgekit.errors import EdgekitError
from edgekit.keras_layers import MAC_LAYERS, layer_macs, output_shape

MIN_KEEP = 0.25  # a global (target-MACs) prune keeps at least this fraction of every group
# kept channel counts are multiples of ``round_to`` (Torch-Pruning's name for it; groups of
# fewer channels are cut freely). CPU runtimes block channels: onnxruntime's NCHWc kernels take
# 16 channels at a time on AVX-512 CPUs and 8 on AVX2, and a conv whose channels are not a
# multiple of the block falls back to im2col + reorders. Measured on MobileNetV2 0.35 at 32x32,
# --target-macs 0.5, onnxruntime 1 thread on an AVX-512 CPU (BENCHMARKS.md, issue 11): odd counts
# (9, 25, 737 ...) 2.7x SLOWER than unpruned; multiples of 8 1.07-2.0x faster depending on which
# groups were cut; multiples of 16 1.8-2.5x, every time. 16 is a multiple of 8, so it suits both.
# ``--round-to`` is declared in compress/options.py; by default (None) each cut takes the
# coarsest of these that still makes it (small nets: 16-channel groups can only be halved by 8).
AUTO_ROUND_TO = (16, 8, 1)


class OutOfReach(EdgekitError):
    """--target-macs cannot be reached under the floors and the rounding."""


CONV = ("Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D")


def prune_channels(model, ratio=None, keep=None, target_macs=None, dense_width=None,
                   round_to=None):
    """Trace, choose and rebuild in one call (``round_to``: kept counts are multiples of it).
    Returns ``(smaller_model, report)``; the report
    holds ``kept`` / ``original`` channels per producer layer, the ``fenced`` groups (kept
    whole, with why), and the MACs estimate before/after."""
    cg = trace(model)
    weights = layer_weights(cg)
    scores = importance(cg, weights)
    kept = choose(cg, scores, weights, ratio=ratio, keep=keep, target_macs=target_macs,
                  dense_width=dense_width, round_to=round_to)
    small = rebuild(model, cg, kept, weights)
    report = {"kept": {}, "original": {}, "macs_before": estimate_macs(cg, {}, weights),
              "macs": estimate_macs(cg, kept, weights),
              "fenced": [{"layers": g.producers, "channels": g.size, "why": g.fenced}
                         for g in cg.fenced() if "model output" not in g.fenced
                         and "model input" not in g.fenced]}
    for gid, idx in kept.items():
        g = cg.group(gid)
        if len(idx) == g.size:
            continue
        for name in g.producers:
            report["kept"][name] = int(len(idx))
            report["original"][name] = int(g.size)
    return small, report


# -- scoring -------------------------------------------------------------------------------------
def layer_weights(cg):
    """{layer name: its current weights} for every layer the channel groups touch."""
    return {name: use.layer.get_weights() for name, use in cg.uses.items()}


def importance(cg, weights):
    """{group id: per-channel score} for every group with producers (L1, member-normalised)."""
    parts = {}
    for name in cg.order:
        use = cg.uses[name]
        w = weights[name]
        if not w:
            continue
        cls = use.cls
        if use.role == "produce":
            kernel = w[1] if cls.startswith("Separable") else w[0]
            out = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)
            _contribute(cg, parts, use.output, out)
            _contribute(cg, parts, use.inputs[0], _in_l1(cls, w))
        elif use.role == "follow":
            if cls.startswith("Depthwise"):
                per = np.abs(w[0]).reshape(-1, w[0].shape[-2], w[0].shape[-1]).sum(axis=(0, 2))
            elif cls == "BatchNormalization":
                cfg = use.layer.get_config()
                var = w[-1]
                gamma = w[0] if cfg.get("scale", True) else np.ones_like(var)
                per = np.abs(gamma) / np.sqrt(var + cfg.get("epsilon", 1e-3))
            elif cls == "LayerNormalization" and use.layer.get_config().get("scale", True):
                per = np.abs(w[0]).reshape(-1)
            else:
                continue
            _contribute(cg, parts, use.inputs[0], per)
    out = {}
    for gid, vecs in parts.items():
        out[gid] = np.mean(vecs, axis=0)
    for g in cg.groups:  # a group nobody scored (no weights): all channels equal
        out.setdefault(g.id, np.ones(g.size))
    return out


def _in_l1(cls, w):
    """L1 of each input channel's slice of a kernel."""
    if cls.startswith("Separable"):
        dw, pw = w[0], w[1]
        m = dw.shape[-1]
        cin = dw.shape[-2]
        a = np.abs(dw).reshape(-1, cin, m).sum(axis=(0, 2))
        b = np.abs(pw).reshape(cin, m, -1).sum(axis=(1, 2)) if pw.ndim == 2 else \
            np.abs(pw).reshape(-1, cin, m, pw.shape[-1]).sum(axis=(0, 2, 3))
        return a / max(a.mean(), 1e-12) + b / max(b.mean(), 1e-12)
    kernel = w[0]
    return np.abs(kernel).reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=(0, 2))


def _contribute(cg, parts, layout, vec):
    """Split a per-channel vector along a layout and add each group's (normalised) share."""
    offset = 0
    per_group = {}
    for gid, n in layout:
        per_group.setdefault(cg.find(gid), []).append(np.asarray(vec[offset:offset + n], float))
        offset += n
    for gid, chunks in per_group.items():
        v = np.sum(chunks, axis=0)
        mean = v.mean()
        if mean > 0:
            parts.setdefault(gid, []).append(v / mean)


# -- choosing ------------------------------------------------------------------------------------
def _conv_group(cg, g):
    return any(cg.uses[p].cls in CONV for p in g.producers)


def choose(cg, scores, weights, ratio=None, keep=None, target_macs=None, dense_width=None,
           round_to=None):
    """{group id: sorted kept channel indices} for every group that loses channels.
    ``ratio`` and ``target_macs`` keep multiples of ``round_to`` (None: :data:`AUTO_ROUND_TO`
    in turn -- 16 where that still makes the cut or reaches the target, else 8, else any
    count); ``keep`` counts are exact."""
    if round_to is not None and (isinstance(round_to, bool) or int(round_to) != round_to
                                 or int(round_to) < 1):
        raise EdgekitError("--round-to must be a whole number >= 1, got {!r}".format(round_to))
    steps = AUTO_ROUND_TO if round_to is None else (int(round_to),)
    kept = {}
    conv_groups = [g for g in cg.groups if g.producers and _conv_group(cg, g)]
    structured = ratio is not None or keep is not None or target_macs is not None
    if structured and not conv_groups and not keep:
        raise EdgekitError("the model has no Conv2D layers: structured pruning removes conv "
                           "filters (try unstructured --sparsity or --dense-width)")
    prunable = [g for g in conv_groups if g.prunable]
    if (ratio is not None or target_macs is not None) and not prunable:
        raise EdgekitError("no conv filters can be removed: every conv group is kept whole ({})"
                           .format("; ".join(sorted({w for g in conv_groups for w in g.fenced}))))
    if ratio is not None:
        for g in prunable:
            want = g.size * (1.0 - float(ratio))
            counts = [_rounded(want, g.size, m=m) for m in steps]
            n = next((c for c in counts if c < g.size), counts[0])  # the coarsest that cuts
            kept[g.id] = strongest(scores[g.id], n)
    for name, n in (keep or {}).items():
        g = _named_group(cg, name)
        if n > g.size:
            raise EdgekitError("--keep {}={} but {} has only {} channels".format(name, n, name,
                                                                                g.size))
        if g.id in kept and len(kept[g.id]) != n:
            raise EdgekitError("--keep names layers of one channel group ({}) with different "
                               "counts: their channels are coupled".format(", ".join(g.producers)))
        kept[g.id] = strongest(scores[g.id], int(n))
    if dense_width is not None:
        g = _first_hidden_dense(cg)
        if int(dense_width) > g.size:
            raise EdgekitError("--dense-width {} is wider than {}'s {} units".format(
                dense_width, g.producers[0], g.size))
        kept[g.id] = strongest(scores[g.id], int(dense_width))
    if target_macs is not None:
        for i, m in enumerate(steps):
            try:
                kept.update(_to_target(cg, prunable, scores, weights, float(target_macs), kept,
                                       m))
                break
            except OutOfReach:
                if i == len(steps) - 1:
                    raise
    return kept


def _named_group(cg, name):
    use = cg.uses.get(name) or cg._by_short_name(name)
    producers = sorted(u.name for u in cg.uses.values() if u.role == "produce")
    if use is None or use.role != "produce":
        raise EdgekitError("--keep names {}, which is not a Conv2D / Dense layer of the model "
                           "(prunable layers: {})".format(name, ", ".join(producers)))
    g = cg.group(use.output[0][0])
    if g.fenced:
        raise EdgekitError("--keep {}: its channels are kept whole ({})".format(
            name, "; ".join(g.fenced)))
    return g


def _first_hidden_dense(cg):
    for name in cg.order:
        use = cg.uses[name]
        if use.cls == "Dense":
            g = cg.group(use.output[0][0])
            if g.prunable:
                return g
    raise EdgekitError("--dense-width needs a hidden Dense layer (one before the output); the "
                       "model has none")


def _rounded(n, size, up=False, m=AUTO_ROUND_TO[0]):
    """``n`` channels as a multiple of ``m`` (nearest, or rounded up), at least ``m``, never
    above ``size``; a group smaller than ``m`` takes the largest :data:`AUTO_ROUND_TO` step
    that fits it (8 for 8-15 channels; any count under 8)."""
    if size < m:
        m = max([s for s in AUTO_ROUND_TO if s <= size] or [1])
    k = int(math.ceil(n / float(m)) if up else round(n / float(m))) * m
    return int(min(size, max(m, k)))


def strongest(score, k):
    """Indices of the ``k`` largest scores, in their original order."""
    return np.sort(np.argsort(-np.asarray(score), kind="stable")[:int(k)])


def _to_target(cg, prunable, scores, weights, fraction, fixed, round_to):
    """Remove the globally weakest conv channels until MACs <= fraction * original."""
    if not 0.0 < fraction < 1.0:
        raise EdgekitError("--target-macs is a fraction of the original MACs in (0, 1), got {}"
                           .format(fraction))
    full = estimate_macs(cg, fixed, weights)
    goal = fraction * estimate_macs(cg, {}, weights)
    cand = []  # (score, group id, channel) removable under the floor, weakest first per group
    order = {}
    for g in prunable:
        if g.id in fixed:
            continue
        s = scores[g.id]
        order[g.id] = np.argsort(s, kind="stable")
        floor = _rounded(MIN_KEEP * g.size, g.size, up=True, m=round_to)
        for rank in range(g.size - floor):
            c = order[g.id][rank]
            cand.append((float(s[c]), g.id, rank))
    cand.sort()

    def kept_after(n_removed):
        removed = {}
        for _, gid, _rank in cand[:n_removed]:
            removed[gid] = removed.get(gid, 0) + 1
        out = dict(fixed)
        for gid, r in removed.items():
            size = len(order[gid])
            n_kept = _rounded(size - r, size, up=True, m=round_to)
            out[gid] = np.sort(order[gid][size - n_kept:])
        return out
    if full <= goal:
        return {}
    if estimate_macs(cg, kept_after(len(cand)), weights) > goal:
        least = estimate_macs(cg, kept_after(len(cand)), weights)
        raise OutOfReach("--target-macs {} is out of reach: keeping {:.0%} of every conv group "
                         "and the layers kept whole leaves {:,} MACs ({:.2f} of the original)"
                         .format(fraction, MIN_KEEP, least,
                                   least / float(estimate_macs(cg, {}, weights))))
    lo, hi = 0, len(cand)  # smallest n with macs(n) <= goal
    while lo < hi:
        mid = (lo + hi) // 2
        if estimate_macs(cg, kept_after(mid), weights) <= goal:
            hi = mid
        else:
            lo = mid + 1
    return {gid: idx for gid, idx in kept_after(lo).items() if gid not in fixed}


# -- cost ----------------------------------------------------------------------------------------
def estimate_macs(cg, kept, weights):
    """MACs of the model after ``kept``: :func:`edgekit.keras_layers.layer_macs` (the formula
    of :func:`edgekit.keras_layers.count_macs`) on the channel counts left."""
    total = 0
    for name in cg.order:
        use = cg.uses[name]
        cls = use.cls
        if cls not in MAC_LAYERS or not weights[name]:
            continue
        cin = cg.layout_sizes(use.inputs[0], kept)
        cout = cg.layout_sizes(use.output, kept)
        k = weights[name][0].shape
        total += layer_macs(cls, output_shape(use.layer) if cls != "Dense" else None,
                            int(np.prod(k[:-2])), cin, cout, k[-1])
    return int(total)


# -- rebuilding ----------------------------------------------------------------------------------
def rebuild(model, cg, kept, weights=None):
    """A new model: the same layers, group g keeping channels ``kept[g]``, weights sliced."""
    weights = weights if weights is not None else layer_weights(cg)
    cfg, entries = resized_config(model, cg, kept)
    small = from_config(model, cfg, cg)
    set_sliced(small, cg, kept, weights)
    return small


def set_sliced(small, cg, kept, weights, strict=True):
    """Give ``small`` (built from :func:`resized_config` with ``kept``) the original layers'
    ``weights`` sliced to the kept channels. ``strict=False``: a layer whose shapes differ
    (a Dense after Flatten when the input resolution changed) keeps its fresh weights; their
    names are returned."""
    fresh = []
    for name in cg.order:
        use = cg.uses[name]
        xin = cg.indices(use.inputs[0], kept) if use.inputs else None
        w = _slice(use, weights[name], xin, cg.indices(use.output, kept))
        if not w:
            continue
        layer = _get(small, use.path)
        if not strict and [tuple(v.shape) for v in layer.get_weights()] != \
                [tuple(v.shape) for v in w]:
            fresh.append(name)
            continue
        layer.set_weights(w)
    return fresh


def resized_config(model, cg, kept):
    """``model.get_config()`` with every layer's filters / units (and channel-keeping
    Reshapes' target shape) set to what ``kept`` leaves; also ``{layer path: config entry}``."""
    cfg = model.get_config()
    entries = {}
    _index_config(cfg, (), entries)
    for name in cg.order:
        use = cg.uses[name]
        entry = entries.get(use.path)
        if entry is None:
            continue
        c = entry["config"]
        n = cg.layout_sizes(use.output, kept)
        if use.role == "produce":
            c["units" if use.cls == "Dense" else "filters"] = int(n)
        elif use.cls == "Reshape" and "target_shape" in c:
            c["target_shape"] = list(c["target_shape"])[:-1] + [int(n)]
    return cfg, entries


def from_config(model, cfg, cg=None):
    """Build a model of ``model``'s kind (Sequential or functional) from an edited config."""
    from edgekit._tf import keras
    k = keras()
    layers = cg.uses.values() if cg is not None else []
    custom = {type(u.layer).__name__: type(u.layer) for u in layers}
    # the config comes from a model already in memory: its Lambdas' code is loaded (and ran)
    # already, so rebuilding them is no new trust decision
    from tf_keras.src.saving.serialization_lib import SafeModeScope
    with k.utils.custom_object_scope(custom), SafeModeScope(False):
        if isinstance(model, k.Sequential):
            return k.Sequential.from_config(cfg)
        return k.Model.from_config(cfg)


def _slice(use, w, xin, xout):
    cls = use.cls
    if not w:
        return w
    if use.role == "produce":
        if cls.startswith("Separable"):
            dw, pw, rest = w[0], w[1], w[2:]
            m = dw.shape[-1]
            rows = (np.asarray(xin)[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            return [dw[..., xin, :], pw[..., rows, :][..., xout]] + [b[xout] for b in rest]
        return [w[0][..., xin, :][..., xout]] + [b[xout] for b in w[1:]]
    if use.role == "follow":
        if cls.startswith("Depthwise"):
            return [w[0][..., xin, :]] + [b[xin] for b in w[1:]]
        n_full = sum(n for _, n in use.inputs[0])
        return [v[..., xin] if v.shape and v.shape[-1] == n_full else v for v in w]
    return w


def _index_config(cfg, prefix, out):
    for entry in cfg.get("layers", []):
        entry.pop("build_config", None)
        c = entry.get("config", {})
        path = prefix + (c.get("name"),)
        out[path] = entry
        if entry.get("class_name") in ("Functional", "Sequential", "Model") and "layers" in c:
            _index_config(c, path, out)


def _get(model, path):
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


__all__ = ["prune_channels", "importance", "choose", "estimate_macs", "rebuild", "resized_config",
           "from_config", "layer_weights", "strongest", "set_sliced", "MIN_KEEP"]
