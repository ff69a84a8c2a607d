"""edgekit: shrink a trained CNN, export it, run it on edge targets, measured one way.

The same verbs as the CLI, imported lazily so ``import edgekit`` stays light (the device
bundle ships this file too: Python 3.6 syntax, no heavy imports here)::

    import edgekit
    art = edgekit.train("tiny", "digits", "out/tiny", epochs=5)
    edgekit.export(art.path, formats=["onnx"])
"""
import importlib

__version__ = "0.1.0"

# public verb -> "module:function"; resolved on first use
_VERBS = {
    "load_data": "edgekit.data:load_data",
    "train": "edgekit.models:train",
    "evaluate": "edgekit.models:evaluate",
    "Artifact": "edgekit.artifact:Artifact",
    "bench": "edgekit.bench:bench",
    "report": "edgekit.report:report",
    "export": "edgekit.export:export",
    "deploy": "edgekit.deploy:deploy",
    "compress": "edgekit.compress:compress",
    "import_model": "edgekit.importer:import_model",
}


def __getattr__(name):
    if name in _VERBS:
        module, attr = _VERBS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError("module 'edgekit' has no attribute {!r}".format(name))
