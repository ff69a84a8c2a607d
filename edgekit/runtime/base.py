"""The runner contract shared by every backend (onnxruntime, OpenVINO, LiteRT, TensorRT).

A runner is created with a model path and options, then ``load()``-ed, ``infer()``-ed any
number of times, and ``close()``-d; it is a context manager. ``infer`` checks the input
against the model's declared shape and dtype and returns an ordered ``{name: ndarray}``.
Timing lives here (``last_infer_ms``), so every backend is measured the same way.
Python 3.6 syntax.
"""
import collections
import time

import numpy as np

from edgekit.runtime.errors import EdgekitError


class Runner(object):
    """Base class: subclasses implement ``_load``, ``_infer`` and optionally ``_close``.

    ``_load`` must set ``self.input_name``, ``self.input_shape`` (ints, ``None`` or -1 for a
    dynamic dimension), ``self.input_dtype`` (numpy dtype) and ``self.output_names``.
    """

    name = "base"

    def __init__(self, path, **options):
        self.path = str(path)
        self.options = options
        self.loaded = False
        self.input_name = None
        self.input_shape = None
        self.input_dtype = np.dtype("float32")
        self.output_names = []
        self.load_ms = None
        self.last_infer_ms = None

    # -- contract ---------------------------------------------------------------
    def load(self):
        if not self.loaded:
            start = time.perf_counter()
            self._load()
            self.load_ms = (time.perf_counter() - start) * 1e3
            self.loaded = True
        return self

    def infer(self, x):
        """Run one batch; returns an ordered dict ``{output name: ndarray}``."""
        if not self.loaded:
            raise EdgekitError("runner {} used before load()".format(self.name))
        x = self.check_input(x)
        start = time.perf_counter()
        outputs = self._infer(x)
        self.last_infer_ms = (time.perf_counter() - start) * 1e3
        return collections.OrderedDict(zip(self.output_names, outputs))

    def close(self):
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc):
        self.close()
        return False

    # -- helpers ----------------------------------------------------------------
    def check_input(self, x):
        """Refuse input of the wrong rank/shape; cast to the model's dtype if lossless."""
        x = np.asarray(x)
        shape = self.input_shape
        if shape is not None:
            if x.ndim != len(shape):
                raise EdgekitError(
                    "input has shape {} but the model expects {}".format(
                        tuple(x.shape), _shape_str(shape)))
            for got, want in zip(x.shape, shape):
                if isinstance(want, int) and want > 0 and got != want:
                    raise EdgekitError(
                        "input has shape {} but the model expects {}".format(
                            tuple(x.shape), _shape_str(shape)))
        want = np.dtype(self.input_dtype)
        if x.dtype != want:
            if want.kind == "f" and x.dtype.kind in "fiu":
                x = x.astype(want)
            else:
                raise EdgekitError(
                    "input dtype {} does not match the model's {}".format(x.dtype, want))
        return np.ascontiguousarray(x)

    # -- benchmarking -------------------------------------------------------------
    # what runtime_latency_ms() reads, named in the results (None: the runtime reports none)
    runtime_latency_source = None
    # True: read after each timed call; False: measured in profiled_latencies_ms' own pass
    runtime_latency_per_call = True

    def timed_call(self, x):
        """A zero-argument callable running one inference on ``x``: what the benchmark times.

        ``x`` is checked and bound once, so each call does as little Python work as the runtime
        allows: backends preset the input (an OpenVINO input tensor, an onnxruntime IO binding,
        a LiteRT ``set_tensor``) and call the runtime's own run method; outputs stay where the
        runtime puts them. The bound input is a private copy of ``x``; the callable is valid
        until the runner's next ``infer`` (bind again after one).
        """
        if not self.loaded:
            raise EdgekitError("runner {} used before load()".format(self.name))
        x = np.array(self.check_input(x), copy=True)
        infer = self._infer
        return lambda: infer(x)

    def runtime_latency_ms(self):
        """The runtime's own latency of the last timed call in ms, where it measures one
        (see :attr:`runtime_latency_source`); None elsewhere."""
        return None

    def profiled_latencies_ms(self, x, n):
        """The runtime's own latency of ``n`` extra calls on ``x`` in ms, for runtimes that
        measure it only in a profiling mode (see :attr:`runtime_latency_source`); None here."""
        return None

    def predict(self, x):
        """Class ids for a batch (see :func:`classes_from_outputs`)."""
        return classes_from_outputs(self.infer(x))

    def describe(self):
        return {"runtime": self.name, "runtime_version": self.version(), "device": self.device()}

    def version(self):
        return "unknown"

    def device(self):
        return "CPU"

    # -- to implement -----------------------------------------------------------
    def _load(self):
        raise NotImplementedError

    def _infer(self, x):
        raise NotImplementedError

    def _close(self):
        pass


def classes_from_outputs(outputs):
    """Predicted class ids from a runner's outputs.

    The first output decides: a 1-D output already holds class ids (the k-NN graph's
    ``class_id``); a 2-D one holds per-class scores and is arg-maxed.
    """
    return classes_of(list(outputs.values())[0])


def classes_of(first):
    """Class ids from one output array: 1-D = already class ids, else arg-max per sample."""
    first = np.asarray(first)
    if first.ndim == 1:
        return first.astype(np.int64)
    return np.argmax(first.reshape(first.shape[0], -1), axis=1).astype(np.int64)


def first_output(runner, x):
    """The first output of a loaded ``runner`` on all of ``x``: one call for a dynamic batch,
    else chunks of the model's static batch (the last one padded, then trimmed). What parity
    checks compare (here and in the OpenVINO 2022.3 interpreter).

    Example: ``first_output(open_runner("onnxruntime", "m.onnx"), x).shape`` -> (len(x), C)."""
    x = np.asarray(x, dtype=np.float32)
    shape = runner.input_shape or []
    b = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
    if b is None:
        return np.asarray(list(runner.infer(x).values())[0])
    outs = []
    for i in range(0, len(x), b):
        chunk = x[i:i + b]
        n = len(chunk)
        if n < b:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
        outs.append(np.asarray(list(runner.infer(chunk).values())[0])[:n])
    return np.concatenate(outs)


def _shape_str(shape):
    return "(" + ", ".join("N" if (d is None or d == -1 or not isinstance(d, int)) else str(d)
                           for d in shape) + ")"
