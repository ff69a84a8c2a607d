"""Pruning: unstructured magnitude pruning (tfmot), structured filter removal, dense width.

Three moves, one function (:func:`prune`):

* **unstructured** (default): ``tfmot.sparsity.keras.prune_low_magnitude`` with a
  ``PolynomialDecay`` schedule up to ``sparsity``, fine-tuning, ``strip_pruning``. The kernels
  keep their shapes, full of zeros: the file gzips much smaller, but a dense runtime multiplies
  the zeros all the same, so **sparsity alone saves no latency**.
* **structured** (``structured=True``, ``ratio`` or ``keep``): rank every Conv2D's filters by
  L1 norm, physically remove the weakest, and the matching input channels of the next layer
  (depthwise/separable/BatchNorm pass-through, Dense rows after Flatten or global pooling);
  rebuild a smaller standard Keras model, fine-tune. This is what makes a model faster.
* **dense width** (``dense_width=N``): shrink the first hidden Dense layer to its N units
  with the largest L1 weight norm (the seed talk's 128 -> 64/32/16/8), fine-tune.

Structured and dense-width may be combined. Hand-written here (tfmot has no channel removal).

Example::

    art = prune("out/seed", "mnist:data/mnist", "out/pruned", sparsity=0.8, epochs=2)
    art = prune("out/seed", "mnist:data/mnist", "out/thin", structured=True, ratio=0.5)
    art.manifest["metrics"]["macs"], art.manifest["metrics"]["before"]["macs"]
"""
import math
import tempfile
from pathlib import Path

import numpy as np

from edgekit.compress._common import Job, check_epochs, fine_tune, gzip_size, printer
from edgekit.errors import EdgekitError

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "Conv1D")
NO_LATENCY_NOTE = ("note: unstructured sparsity alone saves no latency - the kernels keep their "
                   "shapes and dense runtimes multiply the zeros; it saves bytes once compressed "
                   "(gzip). For speed, remove channels: --structured.")
# layers that keep the channel axis as it is (no weights, or weights per channel handled below)
_PASS = ("InputLayer", "Dropout", "SpatialDropout2D", "Activation", "ReLU", "LeakyReLU", "ELU",
         "PReLU_", "MaxPooling2D", "AveragePooling2D", "GaussianNoise", "GaussianDropout",
         "ZeroPadding2D", "Cropping2D", "Softmax", "AlphaDropout", "ActivityRegularization")


def prune(model, data, out, sparsity=None, structured=False, ratio=None, keep=None,
          dense_width=None, epochs=2, lr=None, batch_size=128, seed=0, force=False,
          progress=True):
    """Prune ``model`` (artifact dir, .h5 or SavedModel) and write the artifact ``out``.

    Unstructured (default, ``sparsity`` in (0, 1), default 0.8); ``structured=True`` removes
    Conv2D filters (``ratio`` in (0, 1): fraction removed, default 0.5; or ``keep``: a dict /
    ``"conv1=16,conv2=32"`` of filters kept per layer); ``dense_width=N`` shrinks the first
    hidden Dense layer to N units. ``epochs`` of fine-tuning on the training split.
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit._tf import set_seed
    epochs = check_epochs(epochs)
    reshape = bool(structured) or dense_width is not None
    if sparsity is not None and reshape:
        raise EdgekitError("--sparsity is for unstructured pruning; with --structured / "
                           "--dense-width give --ratio/--keep/--dense-width instead")
    if (ratio is not None or keep is not None) and not structured:
        raise EdgekitError("--ratio/--keep need --structured")
    if sparsity is None and not reshape:
        sparsity = 0.8
    if sparsity is not None and not 0.0 < float(sparsity) < 1.0:
        raise EdgekitError("--sparsity must be between 0 and 1 (exclusive), got {}".format(sparsity))
    if ratio is not None and keep is not None:
        raise EdgekitError("give either --ratio or --keep, not both")
    if structured and ratio is None and keep is None:
        ratio = 0.5
    if ratio is not None and not 0.0 < float(ratio) < 1.0:
        raise EdgekitError("--ratio (fraction of filters removed) must be between 0 and 1 "
                           "(exclusive), got {}".format(ratio))
    if dense_width is not None and int(dense_width) < 1:
        raise EdgekitError("--dense-width must be >= 1, got {}".format(dense_width))
    keep = parse_keep(keep)
    job = Job(model, data, out, force)
    say = printer(progress)
    set_seed(seed)
    if not reshape:
        return _unstructured(job, float(sparsity), epochs, lr or 1e-4, batch_size, progress, say)
    return _reshaped(job, bool(structured), ratio, keep, dense_width, epochs, lr or 5e-4,
                     batch_size, progress, say)


def parse_keep(keep):
    """``"conv1=16,conv2=32"`` or a dict -> {layer name: filters kept}."""
    if keep is None or isinstance(keep, dict):
        return keep
    out = {}
    for part in str(keep).split(","):
        name, sep, n = part.strip().partition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise EdgekitError("--keep takes LAYER=N[,LAYER=N...] with N >= 1, got {!r}".format(keep))
        out[name.strip()] = int(n)
    return out


# -- unstructured ---------------------------------------------------------------------------
def prunable_layers(model):
    """Names of the layers magnitude pruning can sparsify (those with a kernel)."""
    from edgekit.models import _flat_layers
    return [layer.name for layer in _flat_layers(model)
            if type(layer).__name__ in PRUNABLE and layer.get_weights()]


def _unstructured(job, sparsity, epochs, lr, batch_size, progress, say):
    from edgekit._tf import keras, tfmot
    from edgekit.models import count_nonzero_params, fit
    model = job.model
    names = prunable_layers(model)
    if not names:
        raise EdgekitError("{} has no prunable layers (Conv2D / Dense kernels): nothing to "
                           "prune".format(job.model_path or "the model"))
    if epochs < 1:
        raise EdgekitError("unstructured pruning needs fine-tuning: --epochs must be >= 1")
    before = job.before()
    k, mot = keras(), tfmot()
    steps = int(math.ceil(len(job.ds.x_train) / float(batch_size))) * epochs
    freq = max(1, min(100, steps // 10))
    end = max(freq, (int(steps * 0.7) // freq) * freq)  # reach the target, then recover
    schedule = mot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                  begin_step=0, end_step=end, frequency=freq)
    say("pruning {} layers to {:.0%} sparsity over {} steps, fine-tuning {} epoch(s)".format(
        len(names), sparsity, end, epochs))
    wrapped = _prune_wrap(model, mot, schedule, names, k)
    fit(wrapped, job.ds, epochs, batch_size=batch_size, lr=lr, progress=progress,
        callbacks=[mot.sparsity.keras.UpdatePruningStep()])
    stripped = mot.sparsity.keras.strip_pruning(wrapped)
    per_layer = layer_sparsity(stripped, names)
    kernels = [w for n in names for w in [stripped.get_layer(n).get_weights()[0]]]
    total = float(sum(int(np.sum(w == 0)) for w in kernels)) / sum(w.size for w in kernels)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.h5"
        stripped.save(str(p), include_optimizer=False)
        gz = gzip_size(p)
    params = {"mode": "unstructured", "sparsity": sparsity, "schedule": "PolynomialDecay",
              "end_step": end, "frequency": freq, "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "layers": names}
    extra = {"sparsity": total, "layer_sparsity": per_layer, "gzip_bytes": gz,
             "gzip_ratio": before.get("gzip_bytes", gz) / float(gz),
             "note": NO_LATENCY_NOTE[len("note: "):]}
    art = job.save(stripped, "prune", params, extra)
    say("sparsity reached: " + ", ".join("{} {:.1%}".format(n, s) for n, s in per_layer.items()))
    say("nonzero params {:,} -> {:,}; gzip {:,} -> {:,} bytes ({:.1f}x)".format(
        before["nonzero_params"], count_nonzero_params(stripped), before.get("gzip_bytes", 0), gz,
        extra["gzip_ratio"]))
    say(NO_LATENCY_NOTE)
    return art


def _prune_wrap(model, mot, schedule, names, k):
    """Wrap exactly the layers in ``names`` (the tfmot-documented clone_model recipe: the
    wrapped layers are the trained ones, so their weights carry over)."""
    def wrap(layer):
        if layer.name in names:
            return mot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer
    return k.models.clone_model(model, clone_function=wrap)


def layer_sparsity(model, names):
    """Fraction of zeros in each named layer's kernel."""
    out = {}
    for n in names:
        w = model.get_layer(n).get_weights()[0]
        out[n] = float(np.sum(w == 0)) / w.size
    return out


# -- structured / dense width -----------------------------------------------------------------
def _reshaped(job, structured, ratio, keep, dense_width, epochs, lr, batch_size, progress, say):
    model = job.model
    before = job.before()
    layers = _chain(model)
    plan = {}
    if structured:
        convs = [l for l in layers if type(l).__name__ == "Conv2D"]
        if not convs:
            raise EdgekitError("{} has no Conv2D layers: structured pruning removes conv filters "
                               "(try unstructured --sparsity or --dense-width)".format(
                                   job.model_path or "the model"))
        if keep:
            unknown = sorted(set(keep) - {l.name for l in convs})
            if unknown:
                raise EdgekitError("--keep names {} which are not Conv2D layers (Conv2D layers: "
                                   "{})".format(", ".join(unknown), ", ".join(l.name for l in convs)))
        for layer in convs:
            kernel = layer.get_weights()[0]
            n = kernel.shape[-1]
            if keep:
                if layer.name not in keep:
                    continue
                kept = keep[layer.name]
                if kept > n:
                    raise EdgekitError("--keep {}={} but {} has only {} filters".format(
                        layer.name, kept, layer.name, n))
            else:
                kept = max(1, int(round(n * (1.0 - float(ratio)))))
            plan[layer.name] = _top(np.abs(kernel).reshape(-1, n).sum(axis=0), kept)
    if dense_width is not None:
        dense = [l for l in layers if type(l).__name__ == "Dense"]
        if len(dense) < 2:
            raise EdgekitError("--dense-width needs a hidden Dense layer (one before the output); "
                               "{} has none".format(job.model_path or "the model"))
        first = dense[0]
        kernel = first.get_weights()[0]
        n = kernel.shape[-1]
        if int(dense_width) > n:
            raise EdgekitError("--dense-width {} is wider than {}'s {} units".format(
                dense_width, first.name, n))
        # rank units by the L1 norm of their incoming + outgoing weights
        nxt = dense[1].get_weights()[0]
        score = np.abs(kernel).sum(axis=0) + np.abs(nxt).sum(axis=1) if nxt.shape[0] == n \
            else np.abs(kernel).sum(axis=0)
        plan[first.name] = _top(score, int(dense_width))
    small = rebuild(model, plan)
    from edgekit.models import count_macs, count_params
    say("removed units: " + ", ".join("{} {}->{}".format(
        n, _width(model.get_layer(n)), len(ix)) for n, ix in plan.items())
        + "; params {:,} -> {:,}, MACs {:,} -> {:,}".format(
            before["params"], count_params(small), before["macs"], count_macs(small)))
    fine_tune(small, job.ds, epochs, lr, batch_size, progress)
    mode = "+".join(m for m, on in (("structured", structured), ("dense-width", dense_width))
                    if on is not None and on is not False)
    params = {"mode": mode, "criterion": "L1", "epochs": epochs, "lr": lr,
              "batch_size": batch_size,
              "kept": {n: int(len(ix)) for n, ix in plan.items()},
              "original": {n: _width(model.get_layer(n)) for n in plan}}
    if ratio is not None:
        params["ratio"] = float(ratio)
    if dense_width is not None:
        params["dense_width"] = int(dense_width)
    extra = {"macs_ratio": before["macs"] / float(max(1, count_macs(small))),
             "params_ratio": before["params"] / float(max(1, count_params(small)))}
    return job.save(small, "prune", params, extra)


def _top(score, k):
    """Indices of the ``k`` largest scores, in their original order."""
    return np.sort(np.argsort(-np.asarray(score), kind="stable")[:k])


def _width(layer):
    cfg = layer.get_config()
    return int(cfg.get("filters") or cfg.get("units"))


def _chain(model):
    """The model's layers as a single chain; refuses branching graphs (and nested models)."""
    layers = list(model.layers)
    for layer in layers:
        if hasattr(layer, "layers") and layer.layers:
            raise EdgekitError("nested model {} inside: channel removal handles a flat chain of "
                               "layers only".format(layer.name))
        nodes = getattr(layer, "_inbound_nodes", [])
        for node in nodes:
            inbound = node.inbound_layers
            if isinstance(inbound, (list, tuple)) and len(inbound) > 1:
                raise EdgekitError("layer {} merges branches: channel removal handles a plain "
                                   "chain of layers only".format(layer.name))
    return layers


def rebuild(model, plan):
    """A new, smaller model: layer ``name`` keeps output units ``plan[name]``; the inputs of the
    layers after it are sliced to match. Standard Keras layers only (it exports like any other).
    """
    from edgekit._tf import keras
    k = keras()
    cfg = model.get_config()
    layer_cfgs = {c["config"]["name"]: c for c in cfg["layers"]}
    new_weights = {}
    cur = None  # kept indices along the channel axis flowing out of the previous layer
    for layer in model.layers:
        cls = type(layer).__name__
        w = layer.get_weights()
        c = layer_cfgs.get(layer.name)
        if c is not None:
            c.pop("build_config", None)
        out_keep = plan.get(layer.name)
        if cls in ("Conv2D", "Dense"):
            kernel, rest = w[0], w[1:]
            if cur is not None:
                kernel = kernel[cur] if cls == "Dense" else kernel[:, :, cur, :]
            if out_keep is not None:
                kernel = kernel[..., out_keep]
                rest = [b[out_keep] for b in rest]
                c["config"]["filters" if cls == "Conv2D" else "units"] = int(len(out_keep))
            new_weights[layer.name] = [kernel] + rest
            cur = out_keep
        elif cls == "DepthwiseConv2D":
            kernel, rest = w[0], w[1:]
            mult = kernel.shape[-1]
            if cur is not None:
                kernel = kernel[:, :, cur, :]
                rest = [b.reshape(-1, mult)[cur].reshape(-1) for b in rest]
                cur = (np.asarray(cur)[:, None] * mult + np.arange(mult)[None, :]).reshape(-1)
            new_weights[layer.name] = [kernel] + rest
        elif cls == "SeparableConv2D":
            dw, pw, rest = w[0], w[1], w[2:]
            mult = dw.shape[-1]
            if cur is not None:
                dw = dw[:, :, cur, :]
                rows = (np.asarray(cur)[:, None] * mult + np.arange(mult)[None, :]).reshape(-1)
                pw = pw[:, :, rows, :]
            if out_keep is not None:
                pw = pw[..., out_keep]
                rest = [b[out_keep] for b in rest]
                c["config"]["filters"] = int(len(out_keep))
            new_weights[layer.name] = [dw, pw] + rest
            cur = out_keep
        elif cls == "BatchNormalization":
            new_weights[layer.name] = [v[cur] for v in w] if cur is not None else w
        elif cls == "Flatten":
            if cur is not None:
                shape = layer.input_shape[1:]
                chans = shape[-1]
                positions = int(np.prod(shape[:-1]))
                cur = (np.arange(positions)[:, None] * chans + np.asarray(cur)[None, :]).reshape(-1)
        elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D") or cls in _PASS:
            if w:
                new_weights[layer.name] = w
        else:
            if cur is not None or w:
                raise EdgekitError("layer {} ({}) is not handled by channel removal; supported: "
                                   "Conv2D, Depthwise/SeparableConv2D, Dense, BatchNormalization, "
                                   "pooling, Flatten, Dropout, activations".format(layer.name, cls))
    if isinstance(model, k.Sequential):
        small = k.Sequential.from_config(cfg)
    else:
        small = k.Model.from_config(cfg)
    for name, weights in new_weights.items():
        small.get_layer(name).set_weights(weights)
    return small
