"""The Raspberry Pi target is one TOML file (targets/raspberry-pi.toml) and no Python: every
verb short of real hardware works for it. This machine is an x86-64 VM, so doctor and bench
refuse it (exit 2, saying where to run it); with the Pi's facts made true (an aarch64 machine
type and a device-tree model file that says "Raspberry Pi") the same checks pass and bench
times the real onnxruntime / LiteRT runners. Deploy builds its bundle, the device preflight
over a real sshd refuses this x86-64 host, and the setup script installs the TOML's packages."""
import json
import platform
import subprocess
import sys
import tarfile
import io

import pytest

from conftest import REPO
from sshd import sshd  # noqa: F401  (fixture)

PI = "raspberry-pi"


@pytest.fixture(scope="module")
def pi_export(tiny_artifact, tmp_path_factory):
    """tiny artifact exported for the Pi: ONNX + TFLite fp32 (targets/raspberry-pi.toml)."""
    import shutil
    from edgekit.export import export
    dst = tmp_path_factory.mktemp("pi") / "tiny"
    shutil.copytree(str(tiny_artifact.path), str(dst))
    export(dst, ["onnx", "tflite"], target=PI, parity_samples=100)
    return dst


@pytest.fixture
def on_a_pi(monkeypatch, tmp_path):
    """The Pi target with its hardware facts true here: aarch64 + a device-tree model file."""
    from edgekit.targets import load_target
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    t = load_target(PI)
    t["hardware"] = dict(t["hardware"], marker_file=str(model))
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    return t


def test_the_pi_is_only_a_toml_file():
    from edgekit.targets import load_target, target_names
    assert PI in target_names()
    t = load_target(PI)
    assert t["runtimes"] == ["onnxruntime", "litert"] and t["host_arch"] == ["aarch64"]
    # no Python file names the target (tests and the TOML aside)
    hits = subprocess.run(["grep", "-rl", PI, "--include=*.py", str(REPO / "edgekit")],
                          stdout=subprocess.PIPE, universal_newlines=True).stdout.split()
    assert hits == []


def test_doctor_refuses_this_x86_host_and_says_why(run_cli):
    code, out, err = run_cli("doctor", "--json", "--target", PI)
    rep = json.loads(out)["target"]
    assert code == 2 and not rep["ready"]
    first = rep["missing"][0]
    if platform.machine() != "aarch64":
        assert first["hardware"] and "aarch64 host" in first["what"]
        assert platform.machine() in first["what"] and "64-bit Raspberry Pi OS" in first["install"]
    assert err.startswith("error: raspberry-pi cannot run here")


def test_doctor_passes_on_a_pi(on_a_pi):
    from edgekit.targets import machine_check
    rep = machine_check(on_a_pi)
    assert rep["ready"], rep["missing"]
    assert rep["runtimes"] == ["onnxruntime", "litert"]  # both installed in this venv
    # the marker must say Raspberry Pi: another aarch64 board is refused
    with open(on_a_pi["hardware"]["marker_file"], "w") as fh:
        fh.write("NVIDIA Jetson Nano Developer Kit")
    rep = machine_check(on_a_pi)
    assert not rep["ready"] and rep["missing"][0]["hardware"]
    assert "not a Raspberry Pi" in rep["missing"][0]["what"]


@pytest.mark.parametrize("argv,needle", [
    (["--format", "onnx", "--precision", "fp16"], "refuses fp16: the Pi's Cortex-A72/A76"),
    (["--format", "openvino"], "does not run openvino"),
])
def test_export_refusals_come_from_the_toml(tiny_artifact, run_cli, argv, needle):
    code, _, err = run_cli("export", tiny_artifact.path, "--target", PI, *argv)
    assert code == 1 and needle in err, err


def test_export_tags_files_for_the_pi(pi_export):
    from edgekit.artifact import Artifact
    a = Artifact.open(pi_export)
    fmts = {e["format"] for e in a.files.values() if PI in (e.get("targets") or [])}
    assert fmts == {"onnx", "tflite"}
    onnx = [e for e in a.files.values() if e["format"] == "onnx" and e.get("parity")][0]
    assert onnx["parity"]["agreement"] > 0.95 and onnx["opset"] <= 17


def test_bench_refuses_off_the_pi_then_runs_on_it(pi_export, run_cli, on_a_pi):
    from edgekit.bench import bench
    from edgekit.errors import HardwareMissing
    off = dict(on_a_pi, hardware=dict(on_a_pi["hardware"], marker_file="/nonexistent/model"))
    with pytest.raises(HardwareMissing, match="deploy ART --target raspberry-pi"):
        bench(pi_export, off, iterations=3)
    res = bench(pi_export, on_a_pi, runtime="all", iterations=10, warmup=2, eval_samples=100)
    assert {r["runtime"] for r in res} == {"onnxruntime", "litert"}
    for r in res:
        assert r["target"] == PI and r["accuracy"] > 0.8 and r["latency_ms"]["p50"] > 0


def test_bench_cli_exits_2_on_this_vm(pi_export, run_cli):
    if platform.machine() == "aarch64":
        pytest.skip("an aarch64 machine")
    code, _, err = run_cli("bench", pi_export, "--target", PI, "--iterations", "3")
    assert code == 2 and err.startswith("error: raspberry-pi cannot run here") and "Traceback" not in err


def test_deploy_dry_run_bundles_the_onnx_for_onnxruntime(pi_export, run_cli):
    from edgekit.deploy import build_bundle
    b = build_bundle(pi_export, PI, test_samples=20)
    assert b.meta["runtime"] == "onnxruntime" and b.meta["format"] == "onnx"
    assert b.meta["device"] == "CPU" and b.meta["target"] == PI
    names = tarfile.open(fileobj=io.BytesIO(b.data)).getnames()
    assert "deploy/edgekit_remote.py" in names and b.meta["model"] in names
    lite = build_bundle(pi_export, PI, runtime="litert", test_samples=0)
    assert lite.meta["format"] == "tflite"
    code, out, err = run_cli("deploy", pi_export, "--target", PI, "--dry-run")
    assert code == 0, err
    with pytest.raises(Exception, match="no image for target raspberry-pi"):
        build_bundle(pi_export, PI, docker=True)


def test_device_preflight_over_real_ssh_refuses_an_x86_host(pi_export, sshd, tmp_path):  # noqa: F811
    if platform.machine() == "aarch64":
        pytest.skip("an aarch64 machine")
    from edgekit.deploy import deploy
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line())
    s = deploy(pi_export, PI, hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "d"), remote_python=sys.executable, log=lambda m: None)
    row = s["devices"][0]
    assert not row["ok"] and row["exit_code"] == 2
    assert "raspberry-pi hosts are aarch64 (this one is {})".format(platform.machine()) in row["error"]
    assert "64-bit Raspberry Pi OS" in row["error"]


def _fake_python(tmp_path):
    """A `python` that makes a venv whose python logs its argv (no network, no real pip)."""
    log = tmp_path / "pip.log"
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = -m ] && [ \"$2\" = venv ]; then\n"
                    "  d=\"$4\"; mkdir -p \"$d/bin\"\n"
                    "  printf '#!/bin/sh\\necho \"$*\" >> {}\\n' > \"$d/bin/python\"\n"
                    "  chmod +x \"$d/bin/python\"; fi\n".format(log))
    fake.chmod(0o755)
    return fake, log


@pytest.mark.parametrize("machine,ok", [("aarch64", True), ("x86_64", False), ("armv7l", False)])
def test_setup_installs_the_tomls_packages_on_aarch64_only(tmp_path, machine, ok):
    from edgekit.deploy import setup_command
    fake, log = _fake_python(tmp_path)
    (tmp_path / "uname").write_text("#!/bin/sh\necho {}\n".format(machine))
    (tmp_path / "uname").chmod(0o755)
    venv = tmp_path / "venv"
    cmd = setup_command(PI, str(venv), str(fake))
    assert cmd.startswith("sh -s -- raspberry-pi ")
    r = subprocess.run(cmd, shell=True, input=(REPO / "deploy" / "setup_device.sh").read_text(),
                       env={"PATH": "{}:/usr/bin:/bin".format(tmp_path)}, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    if ok:
        assert r.returncode == 0, r.stderr
        assert log.read_text().splitlines()[0] == "-m pip install -q numpy onnxruntime ai-edge-litert"
    else:
        assert r.returncode == 1 and r.stderr.startswith(
            "error: raspberry-pi needs a host of type aarch64 (this is {})".format(machine))
        assert not venv.exists()
