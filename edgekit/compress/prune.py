"""Pruning: unstructured magnitude pruning (tfmot), structured filter removal, dense width.

Three moves, one function (:func:`prune`):

* **unstructured** (default): ``tfmot.sparsity.keras.prune_low_magnitude`` with a
  ``PolynomialDecay`` schedule up to ``sparsity``, fine-tuning, ``strip_pruning``. The kernels
  keep their shapes, full of zeros: the file gzips much smaller, but a dense runtime multiplies
  the zeros all the same, so **sparsity alone saves no latency**.
* **structured** (``structured=True``, ``ratio``, ``keep`` or ``target_macs``): physically
  remove the weakest conv channels by *channel group* (``edgekit.compress.channels.groups``:
  layers coupled by Add / Concatenate / depthwise / BatchNorm / Flatten->Dense are cut
  together; Lambda, custom layers and channel-mixing Reshapes fence their group off, kept
  whole); ranked by the summed L1 of all members; per group (``ratio``, ``keep``) or globally
  down to a fraction of the MACs (``target_macs``); rebuild a smaller standard Keras model
  (``edgekit.compress.channels.prune``), fine-tune. This is what makes a model faster.
* **dense width** (``dense_width=N``): shrink the first hidden Dense layer to its N units
  with the largest L1 weight norm (the seed talk's 128 -> 64/32/16/8), fine-tune.

Structured and dense-width may be combined. Hand-written here (tfmot has no channel removal).

Example::

    art = prune("out/seed", "mnist:data/mnist", "out/pruned", sparsity=0.8, epochs=2)
    art = prune("out/seed", "mnist:data/mnist", "out/thin", structured=True, ratio=0.5)
    art = prune("resnet.h5", "npz:mnist32.npz", "out/half", structured=True, target_macs=0.5)
    art.manifest["metrics"]["macs"], art.manifest["metrics"]["before"]["macs"]
"""
import math
import tempfile
from pathlib import Path

import numpy as np

from edgekit.compress._common import TUNING, Job, fine_tune, gzip_size, printer
from edgekit.compress.options import declared
from edgekit.errors import EdgekitError
from edgekit.util import save_keras_h5

PRUNABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "Conv1D")
NO_LATENCY_NOTE = ("note: unstructured sparsity alone saves no latency - the kernels keep their "
                   "shapes and dense runtimes multiply the zeros; it saves bytes once compressed "
                   "(gzip). For speed, remove channels: --structured.")


@declared("prune")
def prune(model, data, out, *, sparsity, structured, ratio, keep, dense_width, target_macs,
          round_to, epochs, lr, batch_size, seed, budget, max_drop, allow_drop, preprocess,
          force=False, progress=True):
    """Prune ``model`` (artifact dir, .h5 or SavedModel) and write the artifact ``out``.

    Unstructured (default, ``sparsity`` in (0, 1), default 0.8); ``structured=True`` removes
    conv channels by channel group (``ratio`` in (0, 1): fraction removed from every group,
    default 0.5; or ``keep``: a dict / ``"conv1=16,conv2=32"`` of channels kept per layer; or
    ``target_macs`` in (0, 1): globally weakest first until MACs <= that fraction of the
    original's; ``ratio`` and ``target_macs`` keep multiples of ``round_to`` channels, default
    16 where that still cuts, else 8);
    ``dense_width=N`` shrinks the first hidden Dense layer to N units.
    Fine-tuning on the training split is budgeted in optimizer steps (``epochs`` caps it) and
    stops once validation accuracy is back within ``max_drop`` points (default 1.0) of the
    input's; over it, nothing is written (GuardFailed) unless ``allow_drop``. A default cap
    reached while still improving is extended (at most two more rounds); ``budget`` (seconds,
    ``--budget 10m``) bounds the fine-tune's wall time, and the manifest and the messages say
    how long it ran and why it stopped.
    Options are declared (types, defaults, checks) in :mod:`edgekit.compress.options`.
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit._tf import set_seed
    reshape = bool(structured) or dense_width is not None
    if sparsity is not None and reshape:
        raise EdgekitError("--sparsity is for unstructured pruning; with --structured / "
                           "--dense-width give --ratio/--keep/--dense-width instead")
    if (ratio is not None or keep is not None or target_macs is not None) and not structured:
        raise EdgekitError("--ratio/--keep/--target-macs need --structured")
    if round_to is not None and not structured:  # it would be ignored
        raise EdgekitError("--round-to needs --structured (it rounds the channel counts "
                           "structured pruning keeps)")
    if sparsity is None and not reshape:
        sparsity = 0.8
    if sum(v is not None for v in (ratio, keep, target_macs)) > 1:
        raise EdgekitError("give one of --ratio, --keep or --target-macs, not several")
    if structured and ratio is None and keep is None and target_macs is None:
        ratio = 0.5
    keep = parse_keep(keep)
    job = Job(model, data, out, force, max_drop=max_drop, allow_drop=allow_drop,
              preprocess=preprocess, method="prune")
    say = printer(progress)
    set_seed(seed)
    batch_size = batch_size or job.default_batch_size()
    if not reshape:
        # 1e-3: the rate of tfmot's own pruning guide (Adam's default); cosine-decayed
        return _unstructured(job, float(sparsity), epochs, lr or 1e-3, batch_size, progress, say,
                             budget=budget)
    return _reshaped(job, bool(structured), ratio, keep, dense_width, epochs, lr or 5e-4,
                     batch_size, progress, say, target_macs=target_macs, round_to=round_to,
                     budget=budget)


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
    from edgekit.keras_layers import flat_layers
    return [layer.name for layer in flat_layers(model)
            if type(layer).__name__ in PRUNABLE and layer.get_weights()]


def _unstructured(job, sparsity, epochs, lr, batch_size, progress, say, budget=None):
    from edgekit._tf import keras, tfmot
    from edgekit.models import count_nonzero_params
    model = job.model
    names = prunable_layers(model)
    if not names:
        raise EdgekitError("{} has no prunable layers (Conv2D / Dense kernels): nothing to "
                           "prune".format(job.model_path or "the model"))
    from edgekit.compress.guard import epoch_cap
    if epochs is not None and epochs < 1:
        raise EdgekitError("unstructured pruning needs fine-tuning: --epochs must be >= 1")
    before = job.before()
    k, mot = keras(), tfmot()
    n = len(job.ds.x_train)
    per_epoch = int(math.ceil(n / float(batch_size)))
    cap = epoch_cap(n, batch_size, epochs)
    # sparsity ramps up over the first half of the cap (at least one epoch), then holds while
    # the guard decides when accuracy is back
    ramp = max(1, cap // 2)
    steps = per_epoch * ramp
    freq = max(1, min(100, steps // 10))
    end = max(freq, (steps // freq) * freq)
    schedule = mot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity,
                                                  begin_step=0, end_step=end, frequency=freq)
    say("pruning {} layers to {:.0%} sparsity over {} steps ({} epoch(s)), then fine-tuning "
        "until validation accuracy is within --max-drop {:g} of {:.2%} (at most {} epochs, "
        "batch {})".format(len(names), sparsity, end, ramp, job.max_drop, before["val_accuracy"],
                           cap, batch_size))
    wrapped = _prune_wrap(model, mot, schedule, names, k)
    ran = fine_tune(wrapped, job, cap, lr, batch_size, progress, start_epoch=ramp,
                    callbacks=[mot.sparsity.keras.UpdatePruningStep()], label="pruning",
                    extend=epochs is None, budget=budget)
    if ran.get("stop_reason") == "budget spent" and ran["epochs_run"] <= ramp:
        raise EdgekitError(
            "--budget {:g} s ended the fine-tune in the pruning ramp (epoch {} of the {} that "
            "reach {:.0%} sparsity, {:.0f} s): the model is not pruned to --sparsity, nothing "
            "written. Try a longer --budget, or fewer --epochs (a shorter ramp)".format(
                budget, ran["epochs_run"], ramp, sparsity, ran["seconds"]))
    stripped = _strip(wrapped, mot, k)
    per_layer = layer_sparsity(stripped, names)
    kernels = [w for n in names for w in _kernels(_find_layer(stripped, n))]
    total = float(sum(int(np.sum(w == 0)) for w in kernels)) / sum(w.size for w in kernels)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.h5"
        save_keras_h5(stripped, p)
        gz = gzip_size(p)
    guard = job.check_guard(stripped, hints=["more --epochs (cap was {})".format(cap),
                                             "a lower --sparsity than {:g}".format(sparsity)],
                            ran=ran)
    params = {"mode": "unstructured", "sparsity": sparsity, "schedule": "PolynomialDecay",
              "end_step": end, "frequency": freq, "epochs": cap, "lr": lr,
              **TUNING,
              "batch_size": batch_size, "layers": names, "max_drop": job.max_drop}
    params.update(ran)
    extra = {"sparsity": total, "layer_sparsity": per_layer, "gzip_bytes": gz,
             "gzip_ratio": before.get("gzip_bytes", gz) / float(gz),
             "note": NO_LATENCY_NOTE[len("note: "):]}
    art = job.save(stripped, "prune", params, extra, guard=guard)
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
        if getattr(layer, "layers", None) and isinstance(layer, k.Model):  # a nested model
            return k.models.clone_model(layer, clone_function=wrap)  # (keras.applications)
        if layer.name in names:
            return mot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer
    return k.models.clone_model(model, clone_function=wrap)


def _strip(model, mot, k):
    """``strip_pruning``, also inside nested models (tfmot's stops at the top level)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import \
        PruneLowMagnitude as wrapper

    def unwrap(layer):
        if isinstance(layer, wrapper):
            return layer.layer
        if getattr(layer, "layers", None) and isinstance(layer, k.Model):
            return k.models.clone_model(layer, clone_function=unwrap)
        return layer
    return k.models.clone_model(model, clone_function=unwrap) if any(
        getattr(l, "layers", None) for l in model.layers) else \
        mot.sparsity.keras.strip_pruning(model)


def _find_layer(model, name):
    """A layer by name, also inside nested models."""
    from edgekit.keras_layers import flat_layers
    for layer in flat_layers(model):
        if layer.name == name:
            return layer
    return model.get_layer(name)


def _kernels(layer):
    """A layer's kernels: every weight of rank >= 2 (a SeparableConv2D has two, its depthwise
    and pointwise kernels; biases and BatchNorm vectors are rank 1)."""
    return [w for w in layer.get_weights() if np.ndim(w) >= 2]


def layer_sparsity(model, names):
    """Fraction of zeros over all of each named layer's kernels (both kernels of a
    SeparableConv2D, not only the first weight)."""
    out = {}
    for n in names:
        ws = _kernels(_find_layer(model, n))
        out[n] = float(sum(int(np.sum(w == 0)) for w in ws)) / max(1, sum(w.size for w in ws))
    return out


# -- structured / dense width -----------------------------------------------------------------
def _reshaped(job, structured, ratio, keep, dense_width, epochs, lr, batch_size, progress, say,
              target_macs, round_to, budget=None):
    model = job.model
    before = job.before()
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.models import count_macs, count_params
    small, report = prune_channels(model, ratio=ratio if structured else None,
                                   keep=keep if structured else None, target_macs=target_macs,
                                   dense_width=dense_width, round_to=round_to)
    if count_params(small) >= before["params"] and dense_width is None:
        raise EdgekitError("structured pruning removed no channel (params {:,} -> {:,}){}: "
                           "nothing written; use a smaller --round-to or a lower --ratio / "
                           "--target-macs".format(before["params"], count_params(small),
                                                  "" if round_to is None else
                                                  " with --round-to {}".format(round_to)))
    say("removed channels: " + ", ".join("{} {}->{}".format(
        n, report["original"][n], k) for n, k in report["kept"].items())
        + "; params {:,} -> {:,}, MACs {:,} -> {:,}".format(
            before["params"], count_params(small), before["macs"], count_macs(small)))
    for f in report["fenced"]:
        say("kept whole: {} ({})".format(", ".join(f["layers"]), "; ".join(f["why"])))
    from edgekit.compress.guard import epoch_cap
    cap = epoch_cap(len(job.ds.x_train), batch_size, epochs)
    if cap > 0:
        say("fine-tuning until validation accuracy is within --max-drop {:g} of {:.2%} (at most "
            "{} epochs, batch {})".format(job.max_drop, before["val_accuracy"], cap, batch_size))
    ran = fine_tune(small, job, cap, lr, batch_size, progress, extend=epochs is None,
                    budget=budget)
    hints = ["more --epochs (cap was {})".format(cap)]
    if ratio is not None:
        hints.append("a lower --ratio than {:g}".format(float(ratio)))
    if target_macs is not None:
        hints.append("a higher --target-macs than {:g}".format(float(target_macs)))
    if dense_width is not None:
        hints.append("a wider --dense-width than {}".format(int(dense_width)))
    guard = job.check_guard(small, hints=hints, ran=ran)
    epochs = cap
    mode = "+".join(m for m, on in (("structured", structured), ("dense-width", dense_width))
                    if on is not None and on is not False)
    params = {"mode": mode, "criterion": "L1", "epochs": epochs, "lr": lr,
              **TUNING,
              "batch_size": batch_size,
              "kept": report["kept"], "original": report["original"],
              "fenced": report["fenced"]}
    if ratio is not None:
        params["ratio"] = float(ratio)
    if target_macs is not None:
        params["target_macs"] = float(target_macs)
    if ratio is not None or target_macs is not None:
        params["round_to"] = "auto" if round_to is None else int(round_to)
    if dense_width is not None:
        params["dense_width"] = int(dense_width)
    extra = {"macs_ratio": before["macs"] / float(max(1, count_macs(small))),
             "params_ratio": before["params"] / float(max(1, count_params(small)))}
    params["max_drop"] = job.max_drop
    params.update(ran)
    return job.save(small, "prune", params, extra, guard=guard)
