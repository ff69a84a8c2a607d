"""LiteRT / TFLite runner: ``ai_edge_litert``, else ``tflite_runtime``, else ``tf.lite``.

Handles int8-quantized inputs/outputs (scale, zero point). Python 3.6 syntax; tensorflow is
only touched as an explicit last fallback (``allow_tf=True``), inside ``_load``.

Example::

    with LiteRTRunner("model.int8.tflite", threads=1) as r:
        r.infer(x)
"""
import numpy as np

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, MissingDependency


def _interpreter_class(allow_tf=False):
    """(Interpreter class, version text): ai_edge_litert, else tflite_runtime, else — only when
    ``allow_tf`` (host side, explicit) — tensorflow's tf.lite, which imports all of TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        import ai_edge_litert
        return Interpreter, "ai-edge-litert " + getattr(ai_edge_litert, "__version__", "")
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        import tflite_runtime
        return Interpreter, "tflite-runtime " + getattr(tflite_runtime, "__version__", "")
    except ImportError:
        pass
    if allow_tf:
        try:
            import tensorflow as tf  # explicit last resort: heavy, host only
            return tf.lite.Interpreter, "tf.lite " + tf.__version__
        except ImportError:
            pass
    raise MissingDependency("no TFLite runtime: pip install ai-edge-litert "
                            "(or tflite-runtime)")


class LiteRTRunner(Runner):
    """Runs a .tflite file. Options: ``threads``; ``allow_tf`` (default False) lets it fall back
    to TensorFlow's tf.lite when neither ai-edge-litert nor tflite-runtime is installed."""

    name = "litert"

    def _load(self):
        cls, self._version = _interpreter_class(bool(self.options.get("allow_tf")))
        try:
            self.interp = cls(model_path=self.path, num_threads=self.options.get("threads"))
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgekitError("LiteRT cannot load {}: {}".format(self.path, exc))
        self._in = self.interp.get_input_details()[0]
        self._outs = self.interp.get_output_details()
        self.input_name = self._in["name"]
        self.input_shape = [int(d) for d in self._in["shape"]]
        self.input_shape[0] = None  # batch resized on demand
        self.input_dtype = "float32"  # quantisation handled here
        self.output_names = [o["name"] for o in self._outs]
        self._batch = int(self._in["shape"][0])

    def _set_input(self, x):
        """Resize to ``x``'s batch if needed, quantize for an int8/uint8 input, set it."""
        if x.shape[0] != self._batch:
            self.interp.resize_tensor_input(self._in["index"], list(x.shape))
            self.interp.allocate_tensors()
            self._in = self.interp.get_input_details()[0]
            self._outs = self.interp.get_output_details()
            self._batch = x.shape[0]
        dtype = self._in["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.interp.set_tensor(self._in["index"], x)

    def timed_call(self, x):
        """``invoke()`` on an input set once (``set_tensor``): nothing else per call."""
        if not self.loaded:
            raise EdgekitError("runner litert used before load()")
        self._set_input(self.check_input(x))
        return self.interp.invoke

    def _infer(self, x):
        self._set_input(x)
        self.interp.invoke()
        outs = []
        for o in self._outs:
            y = self.interp.get_tensor(o["index"])
            if o["dtype"] in (np.int8, np.uint8) and o["quantization"][0]:
                scale, zero = o["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y)
        return outs

    def _close(self):
        self.interp = None

    def version(self):
        return getattr(self, "_version", "unknown").strip()
