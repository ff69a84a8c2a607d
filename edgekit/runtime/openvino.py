"""OpenVINO runner: the current API (``openvino.Core``) and the 2022.3 API
(``openvino.runtime.Core``, the last release with the NCS2's MYRIAD plugin).

Device ``CPU`` (laptop) or ``MYRIAD`` (NCS2, FP16). Python 3.6 syntax, numpy + openvino.

Example::

    with OvRunner("openvino/model.xml", device="CPU") as r:
        r.infer(x)
"""
import os

from edgekit.runtime.base import Runner
from edgekit.runtime.errors import EdgekitError, HardwareMissing, MissingDependency

NCS2_HELP = ("the NCS2 needs OpenVINO 2022.3 LTS with the MYRIAD plugin (the 2022.3 archive or the "
             "openvino/ubuntu20_runtime:2022.3.1 image; pip wheels have no MYRIAD), the udev rule "
             "for USB vendor 03e7 (install_NCS_udev_rules.sh; in Docker add --device-cgroup-rule="
             "'c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb) and the stick plugged in; "
             "`--device CPU` runs this path without a stick")


def _core():
    """(Core instance, version string): ``openvino.Core`` (2023+) or ``openvino.runtime.Core``
    (2022.3 LTS, the NCS2-era API; also where the MYRIAD plugin lives)."""
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependency("openvino is not installed: pip install openvino "
                                "(for the NCS2: OpenVINO 2022.3 LTS, see `--target ncs2`)")
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


def api_name(version):
    """'2022.3' for the NCS2-era API (openvino.runtime), else 'current'."""
    return "2022.3" if str(version).startswith("2022.") else "current"


class OvRunner(Runner):
    """Runs an OpenVINO IR (.xml) or ONNX file. Options: ``device`` (CPU), ``threads``."""

    name = "openvino"

    def _load(self):
        if os.path.isdir(self.path):  # an exported IR folder: its model.xml
            self.path = os.path.join(self.path, "model.xml")
        self.core, self._version = _core()
        self._device = self.options.get("device") or "CPU"
        if self._device not in self.core.available_devices:
            msg = "OpenVINO device {} not available here (found: {})".format(
                self._device, ", ".join(self.core.available_devices) or "none")
            if self._device == "MYRIAD":
                raise HardwareMissing(msg + ": " + NCS2_HELP)
            raise HardwareMissing(msg)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self._device == "MYRIAD":  # the stick computes in FP16 (IR may be FP16 or FP32)
            self.precision = "fp16"
        else:  # the CPU runs the IR as it is: the file's precision (int8 IR = int8 ops)
            self.precision = self.options.get("precision")
        if self.options.get("threads") and self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(int(self.options["threads"]))
        try:
            model = self.core.read_model(self.path)
            self.compiled = self.core.compile_model(model, self._device, config)
        except Exception as exc:  # openvino raises RuntimeError with multi-line text
            raise EdgekitError("OpenVINO cannot load {}: {}".format(
                self.path, str(exc).strip().splitlines()[0][:300] if str(exc) else exc))
        inp = self.compiled.inputs[0]
        ps = inp.get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else None for d in ps]
        self.input_name = inp.get_any_name()
        self.input_dtype = _np_type(inp.get_element_type())
        self.output_names = [_name(o, i) for i, o in enumerate(self.compiled.outputs)]
        self._ports = list(self.compiled.outputs)
        self.request = self.compiled.create_infer_request()

    def _infer(self, x):
        # infer() already returns copies of the outputs keyed by port (2022.3 and current API):
        # no second copy, and as little Python work between calls as benchmark_app does
        results = self.request.infer({0: x})
        return [results[port] for port in self._ports]

    def _close(self):
        self.request = None
        self.compiled = None

    def version(self):
        return str(self._version) if getattr(self, "_version", None) else "unknown"

    def device(self):
        return getattr(self, "_device", None) or self.options.get("device") or "CPU"

    def describe(self):
        info = Runner.describe(self)
        info["api"] = api_name(self.version())
        return info


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
