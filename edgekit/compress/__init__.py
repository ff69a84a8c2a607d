"""Compression methods behind one verb: ``compress(model, method, data, out, **params)``.

Each method is one public function in its own module, registered in :data:`METHODS`
(a plain dict, ``name -> "module:function"``) and imported only when used.

Example::

    from edgekit.compress import compress
    art = compress("out/seed", "prune", "digits", "out/pruned", sparsity=0.8, epochs=2)
    art = compress("out/seed", "quantize", "digits", "out/int8", calibration_samples=200)
    art = compress("out/seed", "distill", "digits", "out/student", width=0.25)
    art = compress("out/seed", "knn-slice", "digits", "out/knn", cut="auto", k=5)
"""
import importlib

from edgekit.errors import EdgekitError

METHODS = {
    "prune": "edgekit.compress.prune:prune",
    "quantize": "edgekit.compress.quantize:quantize",
    "distill": "edgekit.compress.distill:distill",
    "knn-slice": "edgekit.compress.knn_slice:knn_slice",
}

# methods that retrain the model: they need the Keras model, never an ONNX file
TRAINS = ("prune", "distill")


def compress(model, method, data, out, **params):
    """Run compression ``method`` on ``model`` with ``data``; writes the artifact ``out``."""
    if method not in METHODS:
        raise EdgekitError("unknown compression method {!r}; available here: {}".format(
            method, ", ".join(sorted(METHODS))))
    if method in TRAINS or (method == "quantize" and params.get("qat")):
        from edgekit.onnx_model import refuse_training
        refuse_training(model, method if method in TRAINS else "quantize --qat")
    module, func = METHODS[method].split(":")
    return getattr(importlib.import_module(module), func)(model, data, out, **params)


_COMMON = {"epochs", "lr", "batch_size", "seed", "max_drop", "allow_drop", "preprocess"}
# CLI options each method takes (the command declares them all; one command serves every method)
METHOD_OPTIONS = {
    "prune": _COMMON | {"sparsity", "structured", "ratio", "keep", "dense_width", "target_macs"},
    "quantize": _COMMON | {"precision", "formats", "calibration_samples", "calibration_data",
                           "io", "onnx_activations", "qat", "target"},
    "distill": _COMMON | {"student", "width", "depthwise", "resolution", "temperature", "alpha"},
    "knn-slice": {"cut", "cut_candidates", "k", "prototypes", "dims", "pool", "int8",
                  "int8_weights", "objective",
                  "max_bytes", "min_accuracy", "evolve", "strategy", "generations", "population",
                  "time_budget", "init", "seed", "checkpoint", "executor",
                  "max_drop", "allow_drop", "preprocess"},
}


def check_params(method, params):
    """Refuse options that belong to another method (``--sparsity`` with ``--method quantize``)
    and training hyperparameters Keras would turn into NaN (``--lr nan``, ``--batch-size 0``)."""
    from edgekit.models import check_training_params
    check_training_params(lr=params.get("lr"), batch_size=params.get("batch_size"))
    allowed = METHOD_OPTIONS.get(method)
    if allowed is None:
        return
    bad = sorted(set(params) - allowed)
    if bad:
        def flag(name):
            return "--" + name.replace("_", "-")
        raise EdgekitError("{} {} not an option of --method {} (its options: {})".format(
            ", ".join(flag(b) for b in bad), "is" if len(bad) == 1 else "are", method,
            " ".join(flag(a) for a in sorted(allowed))))
