"""ONNX (or a model OpenVINO reads) -> OpenVINO IR (.xml + .bin), FP32 or FP16, and the
OpenVINO 2022.3 check the NCS2 needs.

``to_openvino`` uses the current OpenVINO (``convert_model`` + ``save_model`` with
``compress_to_fp16``). ``check_ov2022`` runs a model in the OpenVINO 2022.3.1 venv (the last
release with the NCS2's MYRIAD plugin; its pip wheel carries the CPU plugin) in a subprocess
and returns its outputs, or why it could not read the file.

Example::

    xml = to_openvino("model.opset13.onnx", "openvino/model.fp16.xml", fp16=True, batch=1)
    res = check_ov2022(xml, x[:100])       # {"readable": True, "outputs": ndarray, ...}
"""
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, MissingDependency

REPO = Path(__file__).resolve().parent.parent.parent

# Runs inside the OpenVINO 2022.3 venv (Python 3.10, numpy < 2) with edgekit's device-side
# package (edgekit/runtime, copied next to it): OvRunner reads and compiles the model on the CPU
# and predicts, exactly as on the NCS2's host (there with device MYRIAD).
_OV2022_SCRIPT = r"""
import json, sys
import numpy as np
from openvino.runtime import get_version
from edgekit.runtime.base import first_output
from edgekit.runtime.openvino import OvRunner
try:
    runner = OvRunner(sys.argv[1], device="CPU")
    runner.load()
except Exception as exc:
    exc = exc.__context__ or exc  # OpenVINO's own multi-line message, not the one-line summary
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    print(json.dumps({"readable": False, "version": get_version(),
                      "error": (lines[-1] if lines else type(exc).__name__)[:300]}))
    sys.exit(0)
out = first_output(runner, np.load(sys.argv[2]))
runner.close()
np.save(sys.argv[3], out)
print(json.dumps({"readable": True, "version": get_version(), "runner": "OvRunner"}))
"""


def ov2022_python():
    """The Python of the OpenVINO 2022.3 venv, or None: $EDGEKIT_OV2022_PYTHON, then
    .devices/ov2022 (``make device-venvs``), then /tmp/ov2022."""
    cands = [os.environ.get("EDGEKIT_OV2022_PYTHON"),
             str(REPO / ".devices" / "ov2022" / "bin" / "python"),
             "/tmp/ov2022/bin/python"]
    for c in cands:
        if c and Path(c).exists():
            return c
    return None


def to_openvino(model, out_xml, fp16=True, batch=None):
    """Convert ``model`` (an ONNX path, or anything ``openvino.convert_model`` takes) to IR at
    ``out_xml`` (+ the .bin next to it). ``fp16`` compresses weights to FP16; ``batch`` fixes the
    batch dimension (MYRIAD compiles static shapes). Returns the xml Path.
    An op OpenVINO cannot convert raises EdgekitError naming it."""
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependency("openvino is not installed: pip install 'edgekit[openvino]'") from None
    try:
        m = ov.convert_model(str(model) if isinstance(model, (str, Path)) else model)
        if batch is not None:
            ps = m.inputs[0].get_partial_shape()
            ps[0] = int(batch)
            m.reshape({m.inputs[0]: ps})
    except Exception as exc:  # OpConversionFailure etc. carry the op name in their first line
        raise EdgekitError("OpenVINO IR cannot express this model: {}".format(_op_line(exc))) from None
    out = Path(out_xml)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(m, str(out), compress_to_fp16=bool(fp16))
    return out


def check_ov2022(model_path, x, python=None, timeout=600):
    """Load and run ``model_path`` (IR .xml or .onnx) in OpenVINO 2022.3.1 on CPU.

    Returns ``{"readable": bool, "version": str, "outputs": ndarray (first output) | None,
    "error": str (when not readable)}``. Raises MissingDependency when the 2022.3 venv is absent.
    """
    python = python or ov2022_python()
    if python is None:
        raise MissingDependency("OpenVINO 2022.3 venv not found (needed to check NCS2 exports): "
                                "run `make device-venvs`, set EDGEKIT_OV2022_PYTHON, or skip the "
                                "check with --no-ov2022-check")
    with tempfile.TemporaryDirectory(prefix="edgekit-ov2022-") as tmp:
        xin, xout = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(xin, np.ascontiguousarray(x, dtype=np.float32))
        script = Path(tmp) / "run.py"
        script.write_text(_OV2022_SCRIPT)
        from edgekit.resources import runtime_sources
        for rel, data in runtime_sources().items():  # the device-side package, nothing else
            dst = Path(tmp) / "pkg" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(Path(tmp) / "pkg")
        try:
            p = subprocess.run([python, str(script), str(model_path), str(xin), str(xout)],
                               capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"readable": False, "version": "2022.3", "outputs": None,
                    "error": "timed out after {} s".format(timeout)}
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            err = (p.stderr.strip().splitlines() or ["exit code {}".format(p.returncode)])[-1]
            return {"readable": False, "version": "2022.3", "outputs": None, "error": err[:300]}
        res = json.loads(lines[-1])
        res["outputs"] = np.load(xout) if res.get("readable") else None
        return res


def _op_line(exc):
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # OpenVINO's frontend message: "... No conversion rule found for op: X"
        if "op" in ln.lower() and ("conversion" in ln.lower() or "not supported" in ln.lower()):
            return ln[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


__all__ = ["to_openvino", "check_ov2022", "ov2022_python"]
