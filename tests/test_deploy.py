"""`edgekit deploy` against a REAL OpenSSH server on 127.0.0.1 (tests/sshd.py).

The "device" is this machine: its Python + onnxruntime (laptop-cpu) and, once, the Jetson
Nano's Python 3.6 venv. Remote bundles go to a temp --remote-dir, never ~/edgekit.
"""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from devices import py36_python
from sshd import SshServer, free_port, keygen, sshd  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
REMOTE_SCRIPT = REPO / "deploy" / "edgekit_remote.py"
FAST = ["--iterations", "20", "--warmup", "2"]


@pytest.fixture(scope="module")
def exported(tiny_artifact, tmp_path_factory):
    """tiny_artifact copied and exported to ONNX for laptop-cpu and jetson-nano."""
    from edgekit.export import export
    dst = tmp_path_factory.mktemp("deploy-art") / "tiny"
    shutil.copytree(tiny_artifact.path, dst)
    export(dst, ["onnx"], target="laptop-cpu", parity_samples=100)
    export(dst, ["onnx"], target="jetson-nano", parity_samples=100)
    return dst


@pytest.fixture
def kh(sshd, tmp_path):  # noqa: F811
    """A known_hosts file that knows the test server."""
    p = tmp_path / "known_hosts"
    p.write_text(sshd.known_hosts_line())
    return p


def ssh_args(sshd, kh, remote_dir):  # noqa: F811
    return ["--host", sshd.host, "--identity", sshd.user_key, "--known-hosts", kh,
            "--remote-dir", remote_dir, "--remote-python", sys.executable]


def host_fingerprint(sshd):  # noqa: F811
    out = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key) + ".pub"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


# -- bundle ---------------------------------------------------------------------------------------

def test_bundle_is_deterministic_and_holds_only_device_files(exported, run_cli):
    from edgekit.deploy import build_bundle
    a = build_bundle(exported, "laptop-cpu", test_samples=100)
    b = build_bundle(exported, "laptop-cpu", test_samples=100)
    assert a.sha256 == b.sha256 and a.data == b.data
    names = [n for n, _ in a.entries]
    assert names == sorted(names)
    assert "manifest.json" in names and "SHA256SUMS" in names and "data/test.npz" in names
    assert "edgekit/runtime/bench.py" in names and "deploy/edgekit_remote.py" in names
    assert [n for n in names if n.startswith("model/")] == ["model/model.opset17.onnx"]
    assert not any(n.endswith((".h5", ".keras")) or "compress" in n or n.startswith("edgekit/deploy/")
                   for n in names)
    with tarfile.open(fileobj=io.BytesIO(a.data)) as tf:
        assert all(m.mtime == 0 and m.uid == 0 for m in tf.getmembers())
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu", "--dry-run")
    assert code == 0, err
    assert "model/model.opset17.onnx" in out and "would send" in out
    nano = build_bundle(exported, "jetson-nano", test_samples=10)
    assert nano.meta["runtime"] == "tensorrt" and nano.meta["model"] == "model/model.opset13.onnx"


def test_unsafe_bundle_members_are_refused_on_extraction(tmp_path):
    for bad in ("../evil.txt", "/tmp/edgekit-abs-evil.txt", "ok/../../evil.txt", "link"):
        tar = tmp_path / "bad.tar"
        with tarfile.open(tar, "w") as tf:
            info = tarfile.TarInfo("SHA256SUMS")
            info.size = 0
            tf.addfile(info, io.BytesIO(b""))
            info = tarfile.TarInfo(bad)
            if bad == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = 4
                tf.addfile(info, io.BytesIO(b"evil"))
        import hashlib
        sha = hashlib.sha256(tar.read_bytes()).hexdigest()
        dest = tmp_path / "out" / "bundle"
        dest.parent.mkdir(exist_ok=True)
        r = subprocess.run([sys.executable, str(REMOTE_SCRIPT), "unpack", str(tar), "--sha256", sha,
                            "--dest", str(dest)], capture_output=True, text=True)
        assert r.returncode == 1, (bad, r.stdout)
        assert "refusing bundle member" in r.stderr and repr(bad) in r.stderr
        assert not dest.exists() and not (tmp_path / "evil.txt").exists()
        assert not Path("/tmp/edgekit-abs-evil.txt").exists()
        assert os.listdir(dest.parent) == []  # no half-extracted work dir left behind
    # a corrupted upload is refused before extraction
    r = subprocess.run([sys.executable, str(REMOTE_SCRIPT), "unpack", str(tar), "--sha256", "0" * 64,
                        "--dest", str(dest)], capture_output=True, text=True)
    assert r.returncode == 1 and "upload corrupted" in r.stderr


# -- end to end -----------------------------------------------------------------------------------

def test_deploy_bench_end_to_end_then_unchanged_redeploy_sends_nothing(
        exported, sshd, kh, tmp_path, run_cli, digits):  # noqa: F811
    rdir = tmp_path / "device"
    out = tmp_path / "laptop-remote.json"
    code, stdout, err = run_cli("deploy", exported, "--target", "laptop-cpu", *ssh_args(sshd, kh, rdir),
                                "--bench", "--json", out, *FAST)
    assert code == 0, err
    assert "preflight ok" in err and "bench:" in err and "p50" in err  # streamed progress
    res = json.loads(out.read_text())
    assert res["target"] == "laptop-cpu" and res["runtime"] == "onnxruntime"
    assert res["iterations"] >= 20 and res["latency_ms"]["p50"] > 0
    ident = res["device_identity"]
    assert ident["hostname"] and ident["python_executable"] == sys.executable
    assert "Linux" in ident["uname"] and ident["nv_tegra_release"] is None
    manifest = json.loads((exported / "manifest.json").read_text())
    # the device measured accuracy on the shipped test split (all of digits' test images)
    assert res["test_samples"] == len(digits.y_test)
    assert abs(res["accuracy"] - manifest["metrics"]["accuracy"]) < 0.01
    installed = [p for p in rdir.iterdir() if not p.name.startswith(".") and p.name != "runs"]
    assert len(installed) == 1 and (installed[0] / ".edgekit-complete").is_file()
    assert not [p for p in rdir.iterdir() if p.name.startswith(".tmp-")]
    from edgekit.bench import load_results
    assert load_results([out])[0]["deploy"]["remote_path"] == str(installed[0])
    # again: nothing sent, same bundle dir
    code, stdout, err = run_cli("deploy", exported, "--target", "laptop-cpu", *ssh_args(sshd, kh, rdir))
    assert code == 0, err
    assert "unchanged, nothing sent" in err
    from edgekit.deploy import deploy
    s = deploy(exported, "laptop-cpu", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(rdir), remote_python=sys.executable, log=lambda m: None)
    assert s["devices"][0]["ok"] and s["devices"][0]["bytes_sent"] == 0


def test_bundle_runs_on_the_jetson_nano_python36(exported, sshd, kh, tmp_path):  # noqa: F811
    from edgekit.deploy import deploy
    py36 = py36_python()
    lines = []
    s = deploy(exported, "laptop-cpu", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "nano"), remote_python=py36, bench=True, iterations=20,
               warmup=2, test_samples=200, log=lines.append, model_file="model.opset13.onnx")
    row = s["devices"][0]
    assert row["ok"], row["error"]
    res = row["results"]
    assert res["python"].startswith("3.6") and res["device_identity"]["python"].startswith("3.6")
    assert res["runtime_version"] == "1.10.0" and res["accuracy"] > 0.8
    assert any("numpy 1.19.5" in ln for ln in lines)
    assert res["file"] == "model/model.opset13.onnx"
    # the opset-17 file is refused by the Nano's onnxruntime 1.10: a clear one-line error
    s = deploy(exported, "laptop-cpu", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "nano"), remote_python=py36, bench=True, iterations=5,
               warmup=1, test_samples=10, log=lambda m: None)
    row = s["devices"][0]
    assert not row["ok"] and "remote bench failed" in row["error"] and "Opset 17" in row["error"]


# -- host keys and auth ------------------------------------------------------------------------------

def test_unknown_host_key_refused_then_accepted_and_recorded(exported, sshd, tmp_path, run_cli):  # noqa: F811
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    args = ["deploy", exported, "--target", "laptop-cpu", *ssh_args(sshd, kh, tmp_path / "d")]
    code, out, err = run_cli(*args)
    assert code == 1
    assert "unknown host key" in err and host_fingerprint(sshd) in err and "--accept-new-host-key" in err
    assert kh.read_text() == ""
    assert not (tmp_path / "d").exists()
    code, out, err = run_cli(*args, "--accept-new-host-key")
    assert code == 0, err
    recorded = kh.read_text().split()
    assert recorded[0] == "[127.0.0.1]:{}".format(sshd.port)
    assert recorded[1:3] == sshd.known_hosts_line().split()[1:3]
    code, out, err = run_cli(*args)  # now known: no flag needed
    assert code == 0, err


def test_changed_host_key_always_refused_with_fingerprint(exported, sshd, tmp_path, run_cli):  # noqa: F811
    other = keygen(tmp_path / "other_host_key")
    kind, blob = Path(str(other) + ".pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:{} {} {}\n".format(sshd.port, kind, blob))
    before = kh.read_text()
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu",
                             *ssh_args(sshd, kh, tmp_path / "d"), "--accept-new-host-key")
    assert code == 1
    assert "HOST KEY CHANGED" in err and host_fingerprint(sshd) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert kh.read_text() == before


def test_wrong_user_key_is_a_clear_auth_error(exported, sshd, kh, tmp_path, run_cli, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    wrong = keygen(tmp_path / "wrong_key")
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu", "--host", sshd.host,
                             "--identity", wrong, "--known-hosts", kh, "--remote-dir", tmp_path / "d")
    assert code == 1
    assert "authentication failed for root@127.0.0.1:{}".format(sshd.port) in err
    assert str(wrong) in err and "BEGIN" not in err  # names the key file, never its contents


# -- dropped connection ------------------------------------------------------------------------------

def test_connection_killed_mid_upload_leaves_nothing_and_rerun_recovers(exported, tmp_path):
    from edgekit.deploy import deploy
    server = SshServer(tmp_path / "sshd2").start()
    kh = tmp_path / "kh"
    kh.write_text(server.known_hosts_line())
    rdir = tmp_path / "device"
    killed = []

    def kill_once(sent, total):
        if not killed and 0 < sent < total:
            killed.append(sent)
            server.kill()
    kw = dict(hosts=[server.host], identity=server.user_key, known_hosts=kh, remote_dir=str(rdir),
              remote_python=sys.executable, log=lambda m: None, connect_timeout=5)
    try:
        s = deploy(exported, "laptop-cpu", upload_callback=kill_once, **kw)
        row = s["devices"][0]
        assert killed and not row["ok"]
        assert "lost during upload" in row["error"] and "re-run" in row["error"]
        left = sorted(p.name for p in rdir.iterdir())
        assert left and all(n.startswith(".tmp-") for n in left)  # no bundle in place
        server.start()
        s = deploy(exported, "laptop-cpu", stale_after=0, **kw)
        row = s["devices"][0]
        assert row["ok"], row["error"]
        assert row["bytes_sent"] > killed[0]
        assert [p.name for p in rdir.iterdir()] == [Path(row["remote_path"]).name]
        assert (Path(row["remote_path"]) / ".edgekit-complete").is_file()
    finally:
        server.kill()


# -- preflight and bad input ------------------------------------------------------------------------

def test_jetson_preflight_on_this_host_says_not_a_jetson(exported, sshd, kh, tmp_path, run_cli):  # noqa: F811
    assert not os.path.exists("/etc/nv_tegra_release")
    code, out, err = run_cli("deploy", exported, "--target", "jetson-nano", *ssh_args(sshd, kh, tmp_path / "d"),
                             "--bench")
    assert code == 2
    assert "not a Jetson Nano (no /proc/device-tree/model)" in err
    assert err.strip().splitlines()[-1].startswith("error:")
    assert not (tmp_path / "d").exists()  # nothing uploaded after a failed preflight


def test_no_free_disk_is_refused_with_the_fix(exported, sshd, kh, tmp_path, run_cli):  # noqa: F811
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu", *ssh_args(sshd, kh, tmp_path / "d"),
                             "--min-free-mb", "1e12")
    assert code == 1
    assert "disk" in err and "need 1000000000000 MB" in err and "free space on the device" in err
    assert not (tmp_path / "d").exists()


def test_missing_runtime_on_device_names_the_fix(exported, sshd, kh, tmp_path):  # noqa: F811
    from edgekit.deploy import deploy
    s = deploy(exported, "laptop-cpu", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "d"), remote_python="/usr/bin/python3", log=lambda m: None)
    row = s["devices"][0]
    probe = subprocess.run(["/usr/bin/python3", "-c", "import numpy, onnxruntime"], capture_output=True)
    if probe.returncode == 0:
        assert row["ok"], row["error"]
    else:
        assert not row["ok"] and row["exit_code"] == 2
        assert "fix:" in row["error"] and "pip install" in row["error"]


def test_unreachable_host_fails_fast_in_one_line(exported, tmp_path, run_cli):
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu", "--host",
                             "root@127.0.0.1:{}".format(port), "--known-hosts", tmp_path / "kh",
                             "--connect-timeout", "3")
    assert code == 1 and time.monotonic() - t0 < 10
    assert err.strip() == "error: cannot reach 127.0.0.1:{}: connection refused (is sshd running there?)".format(port)


@pytest.mark.parametrize("bad", ["nano@@x", "host:99999", "a b", "nano@", ":22", "x;rm -rf"])
def test_malformed_host_refused(exported, run_cli, bad):
    code, out, err = run_cli("deploy", exported, "--target", "laptop-cpu", "--host", bad)
    assert code == 1 and "malformed --host" in err and len(err.strip().splitlines()) == 1


def test_target_not_exported_for_names_the_export_command(exported, run_cli):
    code, out, err = run_cli("deploy", exported, "--target", "ncs2", "--host", "root@127.0.0.1:1",
                             "--dry-run")
    assert code == 1
    assert "run `edgekit export {} --format openvino --target ncs2`".format(exported) in err


def test_many_hosts_in_parallel_via_ssh_config_alias_one_failure_does_not_stop_the_rest(
        exported, sshd, kh, tmp_path, run_cli, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host dev1\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n".format(
        sshd.port, sshd.user_key))
    dead = free_port()
    out = tmp_path / "fleet.json"
    code, stdout, err = run_cli("deploy", exported, "--target", "laptop-cpu", "--host", "dev1",
                                "--host", "root@127.0.0.1:{}".format(dead), "--ssh-config", cfg,
                                "--known-hosts", kh, "--remote-dir", tmp_path / "d",
                                "--remote-python", sys.executable, "--bench", "--json", out, *FAST)
    assert code == 1
    assert "1 of 2 devices failed: root@127.0.0.1:{}".format(dead) in err
    assert "dev1" in stdout and "FAILED" in stdout and "ok" in stdout
    res = json.loads(out.read_text())  # the one device that worked
    assert res["deploy"]["ssh_host"] == "dev1" and res["latency_ms"]["p50"] > 0


def test_inventory_file(exported, tmp_path):
    from edgekit.deploy import read_inventory
    from edgekit.errors import EdgekitError
    devs = read_inventory(REPO / "deploy" / "fleet.example.toml")
    assert [d["target"] for d in devs] == ["jetson-nano", "jetson-nano", "ncs2"]
    bad = tmp_path / "inv.toml"
    bad.write_text("[[device]]\nhost = 'x'\nflavour = 1\n")
    with pytest.raises(EdgekitError, match="unknown keys flavour"):
        read_inventory(bad)
    bad.write_text("[[device]]\ntarget = 'ncs2'\n")
    with pytest.raises(EdgekitError, match="has no host"):
        read_inventory(bad)


# -- docker ---------------------------------------------------------------------------------------

def test_dockerfiles_parse_copy_sources_exist_and_runtime_is_python36():
    from dockerfile_parse import DockerfileParser
    from edgekit.targets import load_target
    want = {"Dockerfile.jetson": load_target("jetson-nano")["container_image"],
            "Dockerfile.ncs2": load_target("ncs2")["container_image"]}
    assert want["Dockerfile.ncs2"] == "openvino/ubuntu20_runtime:2022.3.1"
    for name, base in want.items():
        with open(REPO / name, "rb") as fh:
            df = DockerfileParser(fileobj=io.BytesIO(fh.read()))
        assert df.baseimage == base
        copies = [i["value"].split() for i in df.structure if i["instruction"] == "COPY"]
        assert copies
        for parts in copies:
            for src in parts[:-1]:
                assert (REPO / src).exists(), (name, src)
        assert any("edgekit/runtime" in p for p in copies)
    # what they copy imports on the Nano's Python 3.6
    r = subprocess.run([py36_python(), "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "import edgekit.runtime, edgekit.runtime.__main__, edgekit.runtime.tensorrt; "
                        "import py_compile; py_compile.compile(sys.argv[2], doraise=True); print('ok')",
                        str(REPO), str(REMOTE_SCRIPT)], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_docker_command_construction():
    from edgekit.deploy import docker_build_command, docker_command
    ncs2 = docker_command("ncs2", "/home/pi/edgekit/abc", "/home/pi/edgekit/runs", "r.json",
                          ["--iterations", "50"])
    assert "'--device-cgroup-rule=c 189:* rmw'" in ncs2 and "-v /dev/bus/usb:/dev/bus/usb" in ncs2
    assert "edgekit/ncs2:" in ncs2 and ncs2.endswith("--json /runs/r.json --iterations 50")
    nano = docker_command("jetson-nano", "/home/nano/edgekit/abc", "/r", "r.json")
    assert "--runtime nvidia" in nano and "/home/nano/edgekit/abc:/bundle:ro" in nano
    nano = docker_command("jetson-nano", "/home/nano/edgekit/abc", "/home/nano/edgekit/runs", "r.json")
    assert "-v /home/nano/edgekit/trt-cache:/trt-cache -e EDGEKIT_TRT_CACHE=/trt-cache" in nano
    # the host's TensorRT bindings (python3-libnvinfer, Python 3.6) go in read-only
    trt_py = "/usr/lib/python3.6/dist-packages/tensorrt"
    assert "--mount type=bind,source={0},target={0},readonly".format(trt_py) in nano
    assert docker_build_command("jetson-nano", "/b") == \
        "docker build -t edgekit/jetson:0.1.0 -f /b/Dockerfile.jetson /b"
    # the base image follows the device's L4T: r32.7.1 runs on any R32.7.x, R32.6.1 needs its own
    assert docker_build_command("jetson-nano", "/b", "R32.7.3") == (
        "docker build -t edgekit/jetson:0.1.0-r32.7.1 -f /b/Dockerfile.jetson "
        "--build-arg L4T_BASE=nvcr.io/nvidia/l4t-base:r32.7.1 /b")
    r326 = docker_build_command("jetson-nano", "/b", "R32.6.1")
    assert "-t edgekit/jetson:0.1.0-r32.6.1 " in r326
    assert "L4T_BASE=nvcr.io/nvidia/l4t-base:r32.6.1 " in r326
    # the run line uses the image built for this device's L4T
    assert " edgekit/jetson:0.1.0-r32.6.1 python3 " in docker_command(
        "jetson-nano", "/b", "/r", "r.json", l4t="R32.6.1")
    from edgekit.errors import EdgekitError
    with pytest.raises(EdgekitError, match="no image for target laptop-cpu"):
        docker_command("laptop-cpu", "/b", "/r", "x.json")


def test_docker_preflight_without_docker_engine_reports_it(exported, sshd, kh, tmp_path):  # noqa: F811
    """No docker engine on this machine: --docker preflight says so and how to install it."""
    from edgekit.deploy import deploy
    s = deploy(exported, "jetson-nano", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "d"), remote_python=sys.executable, docker=True, bench=True,
               log=lambda m: None)
    row = s["devices"][0]
    assert not row["ok"] and row["exit_code"] == 2
    assert "not a Jetson" in row["error"]
    if shutil.which("docker") is None:
        assert "docker (not found)" in row["error"] and "apt-get install docker.io" in row["error"]


def test_remote_command_timeout_and_setup_script_errors(sshd, kh):  # noqa: F811
    from edgekit.deploy import Remote, resolve_host, setup_device
    from edgekit.errors import EdgekitError
    r = Remote(resolve_host(sshd.host), identity=sshd.user_key, known_hosts=kh, log=lambda m: None)
    try:
        t0 = time.monotonic()
        with pytest.raises(EdgekitError, match="timed out after 1s"):
            r.run("sleep 20", timeout=1)
        assert time.monotonic() - t0 < 5
        lines = []
        assert r.run("echo one; echo two", on_line=lines.append)[0] == 0 and lines == ["one", "two"]
        # an unknown target is refused before anything runs on the device
        with pytest.raises(EdgekitError, match="unknown target 'bogus'"):
            setup_device(r, "bogus", "/nonexistent/venv", python=sys.executable, timeout=30)
    finally:
        r.close()
