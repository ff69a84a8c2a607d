"""`edgekit doctor`: real versions from package metadata, per-target readiness and exit codes,
the artifact check, and OpenVINO 2022.3 (the NCS2-era API) for real."""
import importlib.metadata
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from devices import ov2022_python


def doctor_json(run_cli, *args):
    code, out, err = run_cli("doctor", "--json", *args)
    return code, json.loads(out), err


def test_versions_match_installed_metadata(run_cli):
    code, rep, err = doctor_json(run_cli)
    assert code == 0, err
    pk = rep["packages"]
    assert pk["numpy"] == importlib.metadata.version("numpy")
    assert pk["tensorflow"] == importlib.metadata.version("tensorflow")
    assert pk["tf_keras"] == importlib.metadata.version("tf-keras")
    assert pk["tfmot"] == importlib.metadata.version("tensorflow-model-optimization")
    assert pk["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert pk["openvino"] == importlib.metadata.version("openvino")
    assert pk["litert"] == importlib.metadata.version("ai-edge-litert")
    assert rep["python"]["version"] == "{}.{}.{}".format(*sys.version_info[:3])
    for name in ("onnx", "tensorrt", "pycuda", "tflite-runtime"):
        assert name in pk


def test_missing_package_reported(monkeypatch):
    from edgekit import doctor
    monkeypatch.setitem(doctor.PACKAGES, "nonexistent", ["edgekit-no-such-dist"])
    assert doctor.versions()["nonexistent"] is None


def test_table_output_and_speed():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main(['doctor'])"],
                       capture_output=True, text=True, timeout=60, cwd=str(REPO))
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "tensorrt" in r.stdout and "missing" in r.stdout and "onnxruntime" in r.stdout
    assert elapsed < 10, elapsed  # no tensorflow import: ~0.7 s on the CI VM


def test_laptop_cpu_ready(run_cli):
    code, rep, err = doctor_json(run_cli, "--target", "laptop-cpu")
    assert code == 0, err
    assert rep["target"]["ready"] and "onnxruntime" in rep["target"]["runtimes"]


@pytest.mark.skipif(os.path.exists("/etc/nv_tegra_release"), reason="this is a Jetson")
def test_jetson_nano_not_here(run_cli):
    code, rep, err = doctor_json(run_cli, "--target", "jetson-nano")
    assert code == 2
    whats = " ".join(m["what"] for m in rep["target"]["missing"])
    assert "not a Jetson Nano: no /proc/device-tree/model" in whats
    assert "tensorrt" in whats or rep["packages"]["tensorrt"]
    assert all(m["install"] for m in rep["target"]["missing"])
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "jetson-nano cannot run here" in lines[0]


def test_ncs2_with_new_openvino_says_why(run_cli):
    code, rep, err = doctor_json(run_cli, "--target", "ncs2")
    assert code == 2
    assert not rep["target"]["ready"]
    whats = " ".join(m["what"] for m in rep["target"]["missing"])
    if not rep["packages"]["openvino"].startswith("2022.3"):
        assert "no MYRIAD plugin" in whats
    assert any("2022.3" in m["install"] for m in rep["target"]["missing"])


def test_ncs2_check_under_real_openvino_2022_3():
    """Run the check in the OpenVINO 2022.3.1 interpreter: it sees CPU only, no MYRIAD."""
    code = ("import json; from edgekit.doctor import check_target, versions; "
            "print(json.dumps([versions()['openvino'], check_target('ncs2')]))")
    r = subprocess.run([ov2022_python(), "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    version, t = json.loads(r.stdout.strip().splitlines()[-1])
    assert version.startswith("2022.3")
    assert not t["ready"]
    assert any("CPU" in n for n in t["notes"])          # the real Core().available_devices
    assert any("MYRIAD" in m["what"] and m["hardware"] for m in t["missing"])


def test_unknown_target(run_cli):
    code, out, err = run_cli("doctor", "--target", "tpu")
    assert code == 1 and "unknown target 'tpu'" in err


def test_artifact_check(run_cli, tiny_artifact, artifact_copy):
    """Keras-only artifact: no ONNX for laptop-cpu (exit 1, says which export to run);
    after exporting ONNX it passes."""
    path = artifact_copy(tiny_artifact)
    code, rep, err = doctor_json(run_cli, path, "--target", "laptop-cpu")
    assert code == 1
    assert rep["artifact"]["problems"] and "edgekit export" in rep["artifact"]["problems"][0]
    from edgekit.demo import _export_onnx_direct
    from edgekit.artifact import Artifact
    _export_onnx_direct(Artifact.open(path))
    code, rep, err = doctor_json(run_cli, path, "--target", "laptop-cpu")
    assert code == 0, err
    assert rep["artifact"]["problems"] == []
