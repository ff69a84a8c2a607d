"""Where the device software venvs live, for tests that run the devices' own Python.

``py36_python()``: Python 3.6 + numpy 1.19.5 + onnxruntime 1.10.0 (the Jetson Nano's Python).
``ov2022_python()``: Python 3.10 + openvino 2022.3.1 (the NCS2-era API, CPU plugin).
Lookup: env var, then /work/main/.devices/<name>/bin/python, then /tmp/<name>/bin/python.
Missing -> pytest.fail (not skip): build them with `make device-venvs`.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _find(env, name):
    cands = [os.environ.get(env)] if os.environ.get(env) else []
    cands += [str(REPO / ".devices" / name / "bin" / "python"),
              "/work/main/.devices/{}/bin/python".format(name),
              "/tmp/{}/bin/python".format(name)]
    for c in cands:
        if c and Path(c).exists():
            return c
    pytest.fail("device venv {} not found (tried {}): run `make device-venvs` or set {}".format(
        name, ", ".join(cands), env))


def py36_python():
    return _find("EDGEKIT_PY36", "py36")


def ov2022_python():
    return _find("EDGEKIT_OV2022_PYTHON", "ov2022")
