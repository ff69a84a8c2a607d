"""onnxruntime runner (CPU by default). Needs only numpy + onnxruntime; Python 3.6 syntax.

Example::

    with OrtRunner("model.onnx", threads=1) as r:
        scores = r.infer(x)["logits"]
"""
import numpy as np

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, MissingDependency

_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


class OrtRunner(Runner):
    """Runs an ONNX file with onnxruntime. Options: ``threads`` (intra-op), ``providers``."""

    name = "onnxruntime"

    def _load(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("onnxruntime is not installed: pip install onnxruntime")
        self._ort = ort
        try:
            self.session = self._session()
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EdgekitError("onnxruntime cannot load {}: {}".format(
                self.path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) else None for d in inp.shape]
        self.input_dtype = _DTYPES.get(inp.type, "float32")
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _session(self, profile_prefix=None):
        """An InferenceSession of the file with the runner's options (``threads``,
        ``providers``), profiling into ``profile_prefix``* when given."""
        ort = self._ort
        so = ort.SessionOptions()
        threads = self.options.get("threads")
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        providers = self.options.get("providers") or ["CPUExecutionProvider"]
        return ort.InferenceSession(self.path, sess_options=so, providers=providers)

    def _infer(self, x):
        return self.session.run(self.output_names, {self.input_name: x})

    def timed_call(self, x):
        """``run_with_iobinding`` on an IO binding made once: the input bound as an OrtValue (a
        private copy of ``x``), outputs left on the CPU where onnxruntime allocates them."""
        if not self.loaded:
            raise EdgekitError("runner onnxruntime used before load()")
        self._preset = np.array(self.check_input(x), copy=True)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name,
                                    self._ort.OrtValue.ortvalue_from_numpy(self._preset))
        for name in self.output_names:
            binding.bind_output(name)
        run, self._binding = self.session.run_with_iobinding, binding
        return lambda: run(binding)

    runtime_latency_source = ("onnxruntime profiling: the 'model_run' duration of each call "
                              "in a second session with profiling on, run after the timed calls "
                              "on the same input (profiling adds its own small cost)")

    runtime_latency_per_call = False   # profiling would slow the very calls it times

    def profiled_latencies_ms(self, x, n):
        """onnxruntime's own latency of ``n`` calls on ``x``: a second session of the same file
        with ``enable_profiling``, its trace's ``model_run`` events (microseconds) in ms.
        Separate from the timed session, so the wall-clock figures are taken unprofiled."""
        import json
        import os
        import shutil
        import tempfile
        tmp = tempfile.mkdtemp(prefix="edgekit-ortprof-")
        try:
            sess = self._session(profile_prefix=os.path.join(tmp, "ort"))
            feed = {self.input_name: np.array(self.check_input(x), copy=True)}
            for _ in range(int(n)):
                sess.run(self.output_names, feed)
            with open(sess.end_profiling()) as f:
                trace = json.load(f)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        runs = [e["dur"] / 1e3 for e in trace
                if isinstance(e, dict) and e.get("name") == "model_run" and "dur" in e]
        return runs[-int(n):] if runs else None

    def _close(self):
        self.session = None
        self._binding = None

    def version(self):
        try:
            import onnxruntime as ort
            return ort.__version__
        except ImportError:
            return "missing"
