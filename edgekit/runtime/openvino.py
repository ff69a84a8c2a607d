"""OpenVINO runner: the current API (``openvino.Core``) and the 2022.3 API
(``openvino.runtime.Core``, the last release with the NCS2's MYRIAD plugin).

Device ``CPU`` (laptop) or ``MYRIAD`` / ``MYRIAD.<id>`` (NCS2, FP16). A device that is not
attached raises HardwareMissing (exit 2), never a CPU fallback; results name the device the
compiled model runs on. MYRIAD compiles static shapes only, so the input is reshaped to a
static ``batch`` (default 1; a static IR of another batch too) before ``compile_model``.
Python 3.6 syntax, numpy + openvino.

Example::

    with OvRunner("openvino/model.xml", device="CPU") as r:
        r.infer(x)
"""
import os

import numpy as np

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency

NCS2_HELP = ("the NCS2 needs OpenVINO 2022.3 LTS with the MYRIAD plugin (the 2022.3 archive or the "
             "openvino/ubuntu20_runtime:2022.3.1 image; pip wheels have no MYRIAD), the udev rule "
             "for USB vendor 03e7 (install_NCS_udev_rules.sh; in Docker add --device-cgroup-rule="
             "'c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb) and the stick plugged in on an x86-64 "
             "host; `--device CPU` runs this path on the CPU (and the results say CPU)")


# the CPU plugin runs what the IR says, not bf16 (its default where AVX512-BF16 / AMX exist)
CPU_F32 = {"INFERENCE_PRECISION_HINT": "f32"}

def _core():
    """(Core instance, version string): ``openvino.Core`` (2023+) or ``openvino.runtime.Core``
    (2022.3 LTS, the NCS2-era API; also where the MYRIAD plugin lives)."""
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependency("openvino is not installed: pip install openvino "
                                "(for the NCS2: OpenVINO 2022.3 LTS, see `edgekit doctor --target NAME`)")
    core_cls = getattr(ov, "Core", None)
    version = getattr(ov, "__version__", None)
    if core_cls is None or version is None:  # 2022.x: everything under openvino.runtime
        try:
            from openvino import runtime as ovr
        except ImportError:
            raise MissingDependency("this openvino has neither openvino.Core nor "
                                    "openvino.runtime.Core: pip install openvino")
        core_cls = core_cls or ovr.Core
        version = version or ovr.get_version()
    return core_cls(), version


def _tensor_class():
    """``openvino.Tensor`` (2023+) or ``openvino.runtime.Tensor`` (2022.3)."""
    import openvino as ov
    cls = getattr(ov, "Tensor", None)
    if cls is None:
        from openvino import runtime as ovr
        cls = ovr.Tensor
    return cls


def _core_version():
    try:
        import openvino as ov
        return getattr(ov, "__version__", None) or __import__(
            "openvino.runtime", fromlist=["get_version"]).get_version()
    except ImportError:
        return "unknown"


def plugin_version(device="MYRIAD"):
    """'<plugin library> <build>' of the OpenVINO plugin for ``device``, or MissingDependency.

    Asks ``Core().get_versions(device)``, which loads the plugin without needing the stick:
    the pip wheels of 2022.3.x answer "not registered" for MYRIAD, the 2022.3 archive / the
    openvino/ubuntu20_runtime:2022.3.1 image answer with the MYRIAD plugin's version.
    The NCS2 image's Dockerfile runs this at build time so an image without MYRIAD never gets built.
    """
    core, _ = _core()
    try:
        v = core.get_versions(device)[device]
    except Exception as exc:  # RuntimeError: Device with "MYRIAD" name is not registered ...
        raise MissingDependency("this OpenVINO has no {} plugin ({}): {}".format(
            device, str(exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__,
            NCS2_HELP if is_myriad(device) else "install an OpenVINO that has it"))
    return "{} {}".format(v.description, v.build_number)


def api_name(version):
    """'2022.3' for the NCS2-era API (openvino.runtime), else 'current'."""
    return "2022.3" if str(version).startswith("2022.") else "current"


def match_device(wanted, available):
    """The device name to compile for, or None when ``wanted`` is not attached.

    ``MYRIAD`` matches one stick whether OpenVINO lists it as ``MYRIAD`` or, with several
    sticks, as ``MYRIAD.<id>`` (e.g. ``MYRIAD.3.1-ma2480``): the plugin then takes a free one.
    ``MYRIAD.<id>`` picks that stick only. Other devices match exactly.
    """
    available = list(available or [])
    if wanted in available:
        return wanted
    if "." not in wanted and any(d.startswith(wanted + ".") for d in available):
        return wanted
    return None


def is_myriad(device):
    return device == "MYRIAD" or str(device).startswith("MYRIAD.")


def static_shape(partial_shape, batch, rebatch=False):
    """A static input shape for MYRIAD from a (partial) shape list with None for dynamic dims:
    the dynamic batch (first) dimension becomes ``batch`` (with ``rebatch``, a static one too:
    MYRIAD compiles any static batch, so ``--batch 8`` on a batch-1 IR is reshaped, not
    refused); any other dynamic dimension cannot be guessed and is refused."""
    dims = list(partial_shape)
    if dims and (dims[0] is None or rebatch):
        dims[0] = int(batch)
    if any(d is None for d in dims):
        raise EdgekitError("MYRIAD compiles static shapes only and this input's shape {} has a "
                           "dynamic non-batch dimension: export the model with a fixed input "
                           "size".format(_dims_str(partial_shape)))
    return dims


class OvRunner(Runner):
    """Runs an OpenVINO IR (.xml) or ONNX file.

    Options: ``device`` (default CPU; ``MYRIAD`` or ``MYRIAD.<id>`` for an NCS2 stick),
    ``threads`` (CPU), ``batch`` (the static batch a MYRIAD model is reshaped to, default 1),
    ``core`` (an ``openvino.runtime.Core`` to use instead of a new one).
    A device that is not attached raises HardwareMissing (exit 2): never a silent fallback.
    """

    name = "openvino"

    def _load(self):
        if os.path.isdir(self.path):  # an exported IR folder: its model.xml
            self.path = os.path.join(self.path, "model.xml")
        if self.options.get("core") is not None:  # a Core made by the caller (tests, tuning)
            self.core = self.options["core"]
            self._version = _core_version()
        else:
            self.core, self._version = _core()
        wanted = self.options.get("device") or "CPU"
        self._device = match_device(wanted, self.core.available_devices)
        if self._device is None:
            msg = "OpenVINO device {} not available here (found: {})".format(
                wanted, ", ".join(self.core.available_devices) or "none")
            if is_myriad(wanted):
                raise HardwareMissing(msg + ": " + NCS2_HELP)
            raise HardwareMissing(msg)
        config = self._config()
        if is_myriad(self._device):  # the stick computes in FP16 (IR may be FP16 or FP32)
            self.precision = "fp16"
        else:  # the CPU runs the IR as it is: the file's precision (int8 IR = int8 ops)
            self.precision = self.options.get("precision")
        self.reshaped = None
        try:
            model = self.core.read_model(self.path)
            if is_myriad(self._device):  # static shapes, at the batch asked for
                self.reshaped = self._make_static(model) or None
            self.compiled = self.core.compile_model(model, self._device, config)
        except EdgekitError:
            raise
        except Exception as exc:  # openvino raises RuntimeError with multi-line text
            raise EdgekitError("OpenVINO cannot load {}: {}".format(
                self.path, str(exc).strip().splitlines()[0][:300] if str(exc) else exc))
        self._executed_on = _execution_devices(self.compiled, self._device)
        inp = self.compiled.inputs[0]
        ps = inp.get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else None for d in ps]
        self.input_name = inp.get_any_name()
        self.input_dtype = _np_type(inp.get_element_type())
        self.output_names = [_name(o, i) for i, o in enumerate(self.compiled.outputs)]
        self._ports = list(self.compiled.outputs)
        self.request = self.compiled.create_infer_request()
        self._timed = None

    def _config(self):
        """compile_model's config: the latency hint, and the thread count when asked on CPU.

        On the CPU, inference precision is pinned to f32: on a CPU with AVX512-BF16 / AMX the
        plugin would otherwise run an fp32 IR in bf16 (logits off by ~0.06 of 18 on a Xeon
        with AMX), and a parity check or an fp32 accuracy would not be fp32's. Quantized
        layers of an int8 IR still run in int8."""
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self._device == "CPU":
            config.update(CPU_F32)
        if self.options.get("threads") and self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(int(self.options["threads"]))
        return config

    def _make_static(self, model):
        """Reshape every input to a static shape with the first dimension = the ``batch`` option
        (MYRIAD's compiler throws on a dynamic parameter; a static IR exported for batch 1 is
        re-batched, as benchmark_app -b does). Returns {input name: [old dims, new dims]}."""
        batch = self.options.get("batch")
        rebatch = batch is not None
        batch = int(batch or 1)
        shapes, changed = {}, {}
        for i, port in enumerate(model.inputs):
            old = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            new = static_shape(old, batch, rebatch=rebatch and i == 0)
            shapes[i] = new
            if new != old:
                changed[_name(port, i)] = [_dims_str(old), _dims_str(new)]
        if changed:
            model.reshape(shapes)
        return changed

    def _infer(self, x):
        # infer() already returns copies of the outputs keyed by port (2022.3 and current API):
        # no second copy
        results = self.request.infer({0: x})
        return [results[port] for port in self._ports]

    runtime_latency_source = ("OpenVINO InferRequest.latency: the runtime's own time of each "
                              "call, inside its C++ infer (what benchmark_app reports)")

    def timed_call(self, x):
        """``InferRequest.infer()`` on an input tensor preset once (sharing a private copy of
        ``x``): no per-call dict or copy, the call benchmark_app -api sync times. A request of
        its own, so ``infer()`` with other batches is not tied to the preset tensor."""
        if not self.loaded:
            raise EdgekitError("runner openvino used before load()")
        self._preset = np.array(self.check_input(x), copy=True)   # the tensor shares it
        self._timed = self._static_compiled(self._preset.shape).create_infer_request()
        self._timed.set_input_tensor(_tensor_class()(self._preset, shared_memory=True))
        return self._timed.infer

    def _static_compiled(self, shape):
        """The model compiled for exactly ``shape`` when its input is dynamic (as
        ``benchmark_app -shape`` does): OpenVINO's CPU plugin re-infers dynamic shapes on every
        call, ~10-15% of a 0.3 ms model. A deployment timing one batch size runs it static too.
        Cached per shape; a static model is returned as it is."""
        if all(d is not None for d in self.input_shape):
            return self.compiled
        shape = tuple(int(d) for d in shape)
        cache = self.__dict__.setdefault("_static", {})
        if shape not in cache:
            model = self.core.read_model(self.path)
            model.reshape({0: list(shape)})
            cache[shape] = self.core.compile_model(model, self._device, self._config())
        return cache[shape]

    def runtime_latency_ms(self):
        return float(self._timed.latency)

    def _close(self):
        self.request = self._timed = None
        self._static = {}
        self.compiled = None

    def version(self):
        return str(self._version) if getattr(self, "_version", None) else "unknown"

    def device(self):
        """The device the compiled model runs on (not merely the one asked for)."""
        return getattr(self, "_executed_on", None) or self.options.get("device") or "CPU"

    def describe(self):
        info = Runner.describe(self)
        info["api"] = api_name(self.version())
        name = getattr(self, "_full_name", None)
        if name is None and getattr(self, "core", None) is not None:
            name = self._full_name = _full_device_name(self.core, self.device())
        if name:
            info["device_name"] = name
        if getattr(self, "reshaped", None):
            info["reshaped"] = self.reshaped
        return info


def _execution_devices(compiled, device):
    """Where the compiled model runs: ``EXECUTION_DEVICES`` where the API has it (2023.0+);
    OpenVINO 2022.3 lacks that property (checked on 2022.3.1), and there a model compiled
    for one named device (never AUTO/MULTI here) runs on exactly that device."""
    try:
        got = compiled.get_property("EXECUTION_DEVICES")
    except Exception:  # 2022.3: "Unsupported ExecutableNetwork config key"
        return device
    if isinstance(got, (list, tuple)):
        got = ",".join(str(g) for g in got)
    return str(got) or device


def _full_device_name(core, device):
    try:
        return str(core.get_property(device.split(",")[0], "FULL_DEVICE_NAME"))
    except Exception:  # a plugin without the property: the name alone is enough
        return None


def _dims_str(dims):
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def _name(output, index):
    try:
        return output.get_any_name()
    except RuntimeError:
        return "output_{}".format(index)


def _np_type(element_type):
    name = str(element_type).lower()
    for key, np_name in (("f32", "float32"), ("f16", "float16"), ("i8", "int8"), ("u8", "uint8"),
                         ("float32", "float32"), ("float16", "float16")):
        if key in name:
            return np_name
    return "float32"
