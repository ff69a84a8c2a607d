"""Which packages edgekit can use: their distribution names, installed versions and the
command that installs each. The inference runtimes' rows come from the runtime registry
(:mod:`edgekit.runtime.registry`); the rest (the compress/search stack) are listed here.

Versions come from ``importlib.metadata`` (package metadata only): fast, never imports
tensorflow. Read by ``edgekit doctor`` and by the target checks (:mod:`edgekit.targets`).

Example::

    package_version("onnxruntime")        # '1.20.1' or None
    INSTALL["tfmot"]                      # "pip install 'edgekit[compress]'"
"""
import importlib.metadata

from edgekit.runtime.registry import RUNTIMES

# report name -> (distribution names to try, in order: first installed wins; install command)
_ROWS = {
    "numpy": (["numpy"], "pip install numpy"),
    "tensorflow": (["tensorflow", "tensorflow-cpu", "tensorflow-aarch64"],
                   "pip install 'edgekit[compress]'"),
    "tf_keras": (["tf-keras", "tf_keras"], "pip install 'edgekit[compress]'"),
    "tfmot": (["tensorflow-model-optimization"], "pip install 'edgekit[compress]'"),
    "tf2onnx": (["tf2onnx"], "pip install 'edgekit[compress]'"),
    "onnx": (["onnx"], "pip install onnx"),
    "onnxruntime": None, "openvino": None, "litert": None,      # the runtime registry's rows
    "tflite-runtime": (["tflite-runtime"], "pip install tflite-runtime"),
    "tensorrt": None,
    "pycuda": (["pycuda"], "on the Jetson: pip3 install pycuda (needs CUDA 10.2 from JetPack 4.6.x)"),
    "nncf": (["nncf"], "pip install 'edgekit[openvino]'"),
    "paramiko": (["paramiko"], "pip install paramiko"),
    "cma": (["cma"], "pip install 'edgekit[evolve]'"),
    "deap": (["deap"], "pip install 'edgekit[evolve]'"),
    "dask": (["distributed", "dask"], "pip install 'edgekit[evolve]'"),
}
_ROWS = {name: row or (RUNTIMES[name]["dists"], RUNTIMES[name]["install"])
         for name, row in _ROWS.items()}

# report name -> distribution names to try, in order (first installed wins)
PACKAGES = {name: list(row[0]) for name, row in _ROWS.items()}
# report name -> what to run when it is missing
INSTALL = {name: row[1] for name, row in _ROWS.items()}


def package_version(name):
    """Installed version of report name ``name`` (see :data:`PACKAGES`), or None."""
    for dist in PACKAGES.get(name, [name]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def install_hint(name):
    """What to run to get package ``name`` (``pip install NAME`` when it has no row)."""
    return INSTALL.get(name, "pip install " + name)


__all__ = ["PACKAGES", "INSTALL", "package_version", "install_hint"]
