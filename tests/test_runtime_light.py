"""edgekit.runtime and `edgekit --help` stay light: no tensorflow, Python 3.6 syntax.

Each check runs in a fresh interpreter: a meta_path blocker makes tensorflow, tf_keras and
openvino unimportable, so any import of them fails loudly instead of passing silently.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from devices import py36_python

BLOCKER = """
import sys
class _Block(object):
    BLOCKED = ("tensorflow", "tf_keras", "openvino", "tensorflow_model_optimization", "tf2onnx")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError("blocked by test: " + name)
        return None
    find_module = None
sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def tiny_onnx(tiny_artifact, tmp_path_factory):
    """The tiny digits model as an ONNX file (opset 13: fine for onnxruntime 1.10 too)."""
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    to_onnx(load_model(tiny_artifact.path), path, opset=13)
    return path


def run_py(code, python=sys.executable, timeout=120, env=None):
    e = dict(os.environ, PYTHONPATH=str(REPO))
    e.update(env or {})
    return subprocess.run([python, "-c", BLOCKER + code], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), env=e)


def test_blocker_really_blocks():
    r = run_py("import tensorflow")
    assert r.returncode != 0 and "blocked by test: tensorflow" in r.stderr


def test_runtime_runs_onnx_without_tensorflow(tiny_onnx, digits):
    np.save(str(tiny_onnx.parent / "x.npy"), digits.x_test[:32])
    r = run_py("""
import numpy as np
import edgekit.runtime, edgekit.runtime.base, edgekit.runtime.bench, edgekit.runtime.ort
from edgekit.runtime import open_runner
from edgekit.runtime.bench import measure
x = np.load(r"{x}")
with open_runner("onnxruntime", r"{m}") as r:
    print("classes", r.predict(x)[:5].tolist())
res = measure(edgekit.runtime.ort.OrtRunner(r"{m}"), x, None, warmup=2, iterations=5)
print("iterations", res["iterations"])
bad = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "openvino")]
print("heavy", bad)
""".format(x=tiny_onnx.parent / "x.npy", m=tiny_onnx))
    assert r.returncode == 0, r.stderr
    assert "iterations 5" in r.stdout and "heavy []" in r.stdout


def test_cli_help_and_doctor_without_tensorflow():
    r = run_py("""
from edgekit.cli import main
for argv in (["--help"], ["doctor", "--json"]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
print("heavy", [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras")])
""")
    assert r.returncode == 0, r.stderr
    assert "Usage: edgekit" in r.stdout and '"tensorflow"' in r.stdout
    assert "heavy []" in r.stdout


def test_importtime_of_cli_has_no_tensorflow():
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgekit.cli"],
                       capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    rows = [l.split("|") for l in r.stderr.splitlines() if l.startswith("import time:")]
    names = [row[2].strip() for row in rows[1:]]
    assert "edgekit.cli" in names
    assert not [n for n in names if n.split(".")[0] in ("tensorflow", "tf_keras", "openvino")]
    cumulative_us = int(rows[names.index("edgekit.cli") + 1][1])
    # measured ~0.3 s on the 2-core CI VM; tensorflow alone takes several seconds
    assert cumulative_us < 2.0e6, cumulative_us


def test_runtime_is_python36_syntax():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    r = subprocess.run([vermin, "-t=3.6-", "--violations", "--no-tips", "edgekit/runtime",
                        "edgekit/__init__.py"], capture_output=True, text=True, cwd=str(REPO))
    assert r.returncode == 0, r.stdout + r.stderr


def test_runtime_imports_on_the_nanos_python36(tiny_onnx, digits):
    """The real thing: Python 3.6.15 + numpy 1.19.5 + onnxruntime 1.10.0, as on a Jetson Nano."""
    np.save(str(tiny_onnx.parent / "x36.npy"), digits.x_test[:16])
    r = run_py("""
import numpy as np
from edgekit.runtime import open_runner
with open_runner("onnxruntime", r"{m}") as r:
    print("ok", sys.version_info[:2], r.predict(np.load(r"{x}")).shape)
""".format(m=tiny_onnx, x=tiny_onnx.parent / "x36.npy"), python=py36_python())
    assert r.returncode == 0, r.stderr
    assert "ok (3, 6) (16,)" in r.stdout
