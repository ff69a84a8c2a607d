"""Compression methods behind one verb: ``compress(model, method, data, out, **params)``.

Each method is one public function in its own module, registered in :data:`METHODS`
(a plain dict, ``name -> "module:function"``) and imported only when used.

Example::

    from edgekit.compress import compress
    art = compress("out/seed", "knn-slice", "digits", "out/knn", cut="auto", k=5)
"""
import importlib

from edgekit.errors import EdgekitError

METHODS = {
    "knn-slice": "edgekit.compress.knn_slice:knn_slice",
}


def compress(model, method, data, out, **params):
    """Run compression ``method`` on ``model`` with ``data``; writes the artifact ``out``."""
    if method not in METHODS:
        raise EdgekitError("unknown compression method {!r}; available here: {}".format(
            method, ", ".join(sorted(METHODS))))
    module, func = METHODS[method].split(":")
    return getattr(importlib.import_module(module), func)(model, data, out, **params)
