"""The runtime package on the devices' own software, for real (subprocesses):

* Jetson Nano's Python 3.6.15 + numpy 1.19.5 + onnxruntime 1.10.0 (``py36_python()``), given
  exactly what the deploy bundle ships: edgekit/__init__.py + edgekit/runtime/;
* OpenVINO 2022.3.1 (the NCS2-era ``openvino.runtime`` API) on its CPU plugin
  (``ov2022_python()``), plus its MYRIAD-absent path (exit 2, what to install/attach).
"""
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from devices import ov2022_python, py36_python

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A temp copy of edgekit/__init__.py + edgekit/runtime (what the deploy bundle ships)
    and a small labelled npz for the tiny model."""
    from edgekit.runtime.__main__ import TINY_X, tiny_expected
    root = tmp_path_factory.mktemp("bundle")
    (root / "edgekit").mkdir()
    shutil.copy2(str(REPO / "edgekit" / "__init__.py"), str(root / "edgekit" / "__init__.py"))
    shutil.copytree(str(REPO / "edgekit" / "runtime"), str(root / "edgekit" / "runtime"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    x = np.concatenate([TINY_X, -TINY_X, TINY_X[::-1] * 2])
    np.savez(str(root / "test.npz"), x=x, y=tiny_expected(x).argmax(1))
    return root


def run(python, bundle, *args):
    return subprocess.run([python, "-m", "edgekit.runtime"] + [str(a) for a in args],
                          cwd=str(bundle), env={"PYTHONPATH": str(bundle), "PATH": "/usr/bin:/bin",
                                                "HOME": str(bundle)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)


def test_py36_bundle_imports_every_runner_and_selftests(bundle):
    py = py36_python()
    out = subprocess.run([py, "-c", "import sys, edgekit.runtime.ort, edgekit.runtime.openvino, "
                          "edgekit.runtime.litert, edgekit.runtime.tensorrt, edgekit.runtime.bench;"
                          "print(sys.version_info[:2])"], cwd=str(bundle),
                         env={"PYTHONPATH": str(bundle)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 6)"
    r = run(py, bundle, "selftest", "--runtime", "onnxruntime")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Python 3.6.15" in r.stdout and "ok       onnxruntime  1.10.0" in r.stdout
    r = run(py, bundle, "selftest", "--runtime", "tensorrt")
    assert r.returncode == 2 and "JetPack" in r.stdout


def test_py36_bundle_benchmarks_with_accuracy(bundle):
    r = run(py36_python(), bundle, "bench", "edgekit/runtime/tiny.onnx", "--runtime",
            "onnxruntime", "--batch", "2", "--warmup", "5", "--iterations", "40", "--threads",
            "1", "--npz", "test.npz", "--target", "jetson-nano", "--json", "out/r.json")
    assert r.returncode == 0, r.stderr
    res = json.loads((bundle / "out" / "r.json").read_text())
    assert res["python"] == "3.6.15" and res["runtime_version"] == "1.10.0"
    assert res["iterations"] == 40 and res["batch"] == 2 and res["accuracy"] == 1.0
    assert res["target"] == "jetson-nano" and res["latency_ms"]["p50"] > 0
    for key in ("cold_start_ms", "throughput_ips", "peak_rss_mb", "host", "timestamp"):
        assert res[key] is not None
    bad = run(py36_python(), bundle, "bench", "edgekit/runtime/tiny.onnx", "--runtime",
              "onnxruntime", "--iterations", "0")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --iterations")


def test_ov2022_api_path_on_cpu(bundle):
    py = ov2022_python()
    r = run(py, bundle, "selftest", "--runtime", "openvino", "--device", "CPU")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok       openvino     2022.3" in r.stdout
    r = run(py, bundle, "bench", "edgekit/runtime/tiny.onnx", "--runtime", "openvino", "--device",
            "CPU", "--iterations", "30", "--npz", "test.npz", "--target", "ncs2", "--json", "ov.json")
    assert r.returncode == 0, r.stderr
    res = json.loads((bundle / "ov.json").read_text())
    assert res["runtime_version"].startswith("2022.3") and res["device"] == "CPU"
    assert res["accuracy"] == 1.0


def test_ov2022_without_stick_exits_2_saying_what_to_attach(bundle):
    r = run(ov2022_python(), bundle, "bench", "edgekit/runtime/tiny.onnx", "--runtime", "openvino",
            "--device", "MYRIAD", "--iterations", "5")
    assert r.returncode == 2
    assert r.stderr.startswith("error: OpenVINO device MYRIAD not available")
    assert "03e7" in r.stderr and "openvino/ubuntu20_runtime:2022.3.1" in r.stderr
