"""Compression methods behind one verb: ``compress(model, method, data, out, **params)``.

Each method is one public function in its own module, registered in :data:`METHODS`
(a plain dict, ``name -> "module:function"``) and imported only when used; its options are
declared once, in :mod:`edgekit.compress.options`.

Example::

    from edgekit.compress import compress
    art = compress("out/seed", "prune", "digits", "out/pruned", sparsity=0.8, epochs=2)
    art = compress("out/seed", "quantize", "digits", "out/int8", calibration_samples=200)
    art = compress("out/seed", "distill", "digits", "out/student", width=0.25)
    art = compress("out/seed", "knn-slice", "digits", "out/knn", cut="auto", k=5)
"""
import importlib

from edgekit.compress.options import method_options, table

METHODS = {
    "prune": "edgekit.compress.prune:prune",
    "quantize": "edgekit.compress.int8:quantize",
    "distill": "edgekit.compress.distill:distill",
    "knn-slice": "edgekit.compress.knn.slice:knn_slice",
}

# methods that retrain the model: they need the Keras model, never an ONNX file
TRAINS = ("prune", "distill")


def compress(model, method, data, out, **params):
    """Run compression ``method`` on ``model`` with ``data``; writes the artifact ``out``.

    ``params`` are the method's options (:data:`edgekit.compress.options.OPTIONS`), plus
    ``force`` and ``progress``; they are converted and checked as the CLI's flags are, with
    the same message (:func:`edgekit.compress.options.resolve`)."""
    table(method)  # an unknown method: one clear error
    if method in TRAINS or (method == "quantize" and params.get("qat")):
        from edgekit.onnx_model import refuse_training
        refuse_training(model, method if method in TRAINS else "quantize --qat")
    module, func = METHODS[method].split(":")
    return getattr(importlib.import_module(module), func)(model, data, out, **params)


# CLI options each method takes (derived from the declarations; one command serves every method)
METHOD_OPTIONS = method_options()
