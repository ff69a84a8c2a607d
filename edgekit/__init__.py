"""edgekit: shrink a trained CNN, export it, run it on edge targets, measured one way.

The same verbs as the CLI, imported lazily so ``import edgekit`` stays light (the device
bundle ships this file too: Python 3.6 syntax, no heavy imports here)::

    import edgekit
    art = edgekit.train("tiny", "digits", "out/tiny", epochs=5)
    edgekit.export(art.path, formats=["onnx"])

A verb named like its module (``export``, ``bench``, ``compress``, ``deploy``, ``doctor``,
``optimize``, ``report``, ``demo``) is that module made callable: ``edgekit.export(...)`` calls
``edgekit.export.export(...)`` and ``edgekit.export.onnx`` is still the submodule, whichever
was imported first (Python sets ``edgekit.export`` to the module on import).
"""
import importlib
import sys
import types

__version__ = "0.1.0"

# public verb -> "module:function"; resolved on first use
_VERBS = {
    "load_data": "edgekit.data:load_data",
    "train": "edgekit.models:train",
    "evaluate": "edgekit.models:evaluate",
    "eval": "edgekit.models:evaluate",         # the CLI's name for evaluate
    "Artifact": "edgekit.artifact:Artifact",
    "bench": "edgekit.bench:bench",
    "report": "edgekit.report:report",
    "export": "edgekit.export:export",
    "deploy": "edgekit.deploy:deploy",
    "compress": "edgekit.compress:compress",
    "optimize": "edgekit.optimize:optimize",
    "doctor": "edgekit.doctor:doctor",
    "demo": "edgekit.demo:demo",
    "import_model": "edgekit.importer:import_model",
}


def _module_verb(name):
    """True when verb ``name`` lives in the module ``edgekit.<name>`` under the same name."""
    return _VERBS.get(name) == "edgekit.{0}:{0}".format(name)


class _VerbModule(types.ModuleType):
    """A verb's module that is also the verb: calling it calls its function of the same name."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """``edgekit`` itself: a verb's module, when Python binds it here on import, becomes
    callable (:class:`_VerbModule`) instead of hiding the verb."""

    def __setattr__(self, name, value):
        if _module_verb(name) and type(value) is types.ModuleType:
            value.__class__ = _VerbModule
        super().__setattr__(name, value)


def __getattr__(name):
    if name in _VERBS:
        module, attr = _VERBS[name].split(":")
        mod = importlib.import_module(module)
        if _module_verb(name):  # the import bound (and made callable) the module itself
            return sys.modules[module]
        return getattr(mod, attr)
    raise AttributeError("module 'edgekit' has no attribute {!r}".format(name))


sys.modules[__name__].__class__ = _Package
