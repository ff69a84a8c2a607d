"""edgekit.runtime stays light: Python 3.6 syntax (vermin) and no tensorflow on import."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BLOCKER = r"""
import sys
class Block(object):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "keras", "tensorrt"):
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, Block())
import edgekit.runtime, edgekit.runtime.base, edgekit.runtime.bench, edgekit.runtime.ort
import edgekit.runtime.openvino, edgekit.runtime.litert, edgekit.runtime.tensorrt
import edgekit.runtime.__main__ as m
from edgekit.runtime import open_runner
with open_runner("onnxruntime", m.TINY_ONNX) as r:
    r.infer(m.TINY_X)
with open_runner("litert", m.TINY_TFLITE) as r:
    r.infer(m.TINY_X)
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
print("HEAVY", bad)
"""


def _vermin(*paths):
    exe = Path(sys.executable).parent / "vermin"
    assert exe.exists(), "vermin is not installed: pip install vermin (make test installs it)"
    return subprocess.run([str(exe), "-t=3.6-", "--no-tips", "--violations"] + [str(p) for p in paths],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


def test_runtime_package_is_python36_syntax(tmp_path):
    out = _vermin(REPO / "edgekit" / "runtime", REPO / "edgekit" / "__init__.py")
    assert out.returncode == 0, out.stdout
    # and vermin does catch 3.8+ syntax, so the check above could fail
    (tmp_path / "new.py").write_text("if (n := 3):\n    print(f'{n=}')\n")
    assert _vermin(tmp_path / "new.py").returncode != 0


def test_runtime_imports_and_runs_with_tensorflow_unimportable():
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=str(REPO), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout
