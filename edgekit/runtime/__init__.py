"""What runs on a device: numpy plus ONE inference runtime per runner, never tensorflow.

Python 3.6 syntax (the Jetson Nano's Python). Every backend follows one contract
(:class:`edgekit.runtime.base.Runner`: load / infer / close, a context manager).

Example::

    from edgekit.runtime import open_runner
    with open_runner("onnxruntime", "model.onnx") as r:
        outputs = r.infer(x)          # {output name: ndarray}
"""
import importlib

from edgekit.runtime.errors import EdgekitError, MissingDependency
from edgekit.runtime.registry import RUNTIMES

# runtime name -> (module, class), and which model file format each runtime consumes: views of
# the one registry (edgekit.runtime.registry), kept under their old names
RUNNERS = {name: row["runner"] for name, row in RUNTIMES.items()}
RUNTIME_FORMATS = {name: row["format"] for name, row in RUNTIMES.items()}


def runner_class(name):
    """Return the runner class registered under ``name`` (imports its module lazily)."""
    if name not in RUNNERS:
        raise EdgekitError(
            "unknown runtime {!r}; choose one of: {}".format(name, ", ".join(sorted(RUNNERS)))
        )
    module, cls = RUNNERS[name]
    return getattr(importlib.import_module(module), cls)


def runner_options(runtime, threads=None, device=None, batch=1, max_batch=None):
    """The options ``runtime``'s runner takes for one benchmark run: ``threads`` (when given),
    OpenVINO's ``device`` (default CPU) and the static ``batch`` a device-compiled model is
    reshaped to, TensorRT's engine ``batch`` / ``max_batch`` (default max(64, batch)).
    One place for the host's ``edgekit bench`` and the device's ``python -m edgekit.runtime``.

    Example: ``runner_class("openvino")(path, **runner_options("openvino", device="MYRIAD"))``.
    """
    opts = {}
    if threads:
        opts["threads"] = int(threads)
    if runtime == "openvino":
        opts["device"] = device or "CPU"
        opts["batch"] = int(batch)
    if runtime == "tensorrt":
        opts["batch"] = int(batch)
        opts["max_batch"] = int(max_batch or max(64, int(batch)))
    return opts


def open_runner(name, path, **options):
    """Create and load the runner ``name`` for the model file at ``path``."""
    runner = runner_class(name)(path, **options)
    runner.load()
    return runner


__all__ = ["RUNNERS", "RUNTIME_FORMATS", "runner_class", "runner_options", "open_runner", "EdgekitError",
           "MissingDependency"]
