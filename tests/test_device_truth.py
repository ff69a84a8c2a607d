"""Issue 30, "device truth": a Nano figure comes from a Nano, in a known state.

No Jetson / Pi / NCS2 is attached here, so the board's facts are made true the way the code reads
them on a board: files under a facts root (``EDGEKIT_FACTS_ROOT=DIR``: /proc/device-tree/model,
/etc/nv_tegra_release, cpufreq/devfreq and USB sysfs files as DIR/...) and the board's own tools
(``nvpmodel``, ``vcgencmd``, ``dpkg``, ``docker``) as small stand-in executables on PATH. Deploy
runs against the real sshd fixture with both set through sshd's ``SetEnv``, so the device-side
code runs as a remote session, and the bench runs for real (this machine's onnxruntime, and the
Nano's Python 3.6 for the device-side bench). No number here is a board's.
"""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from devices import py36_python
from sshd import SshServer

REPO = Path(__file__).resolve().parent.parent
NANO = "NVIDIA Jetson Nano Developer Kit"
TX2 = "NVIDIA Jetson TX2 Developer Kit"
XAVIER_NX = "NVIDIA Jetson Xavier NX Developer Kit"


def tegra_line(rev, board="t210ref"):
    """/etc/nv_tegra_release's first line as L4T r32 writes it."""
    return ("# R32 (release), REVISION: {}, GCID: 27863751, BOARD: {}, EABI: aarch64, "
            "DATE: Mon Jul 26 19:20:30 UTC 2021\n".format(rev, board))


def make_board(root, model=None, tegra=None, cpus=None, gpu=None, governor=None, usb=(),
               trt_dir=False, container=False):
    """A facts root: the files a board has, at the paths edgekit_remote.py reads."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def write(rel, text):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if model:
        write("proc/device-tree/model", model + "\x00")
    if tegra:
        write("etc/nv_tegra_release", tegra)
    for i, (lo, hi) in enumerate(cpus or []):
        write("sys/devices/system/cpu/cpu{}/cpufreq/scaling_min_freq".format(i), "{}\n".format(lo))
        write("sys/devices/system/cpu/cpu{}/cpufreq/scaling_max_freq".format(i), "{}\n".format(hi))
    if governor:
        write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", governor + "\n")
    if gpu:
        write("sys/devices/gpu.0/devfreq/57000000.gpu/min_freq", "{}\n".format(gpu[0]))
        write("sys/devices/gpu.0/devfreq/57000000.gpu/max_freq", "{}\n".format(gpu[1]))
    for i, (vendor, product, speed) in enumerate(usb):
        write("sys/bus/usb/devices/2-{}/idVendor".format(i + 1), vendor + "\n")
        write("sys/bus/usb/devices/2-{}/idProduct".format(i + 1), product + "\n")
        write("sys/bus/usb/devices/2-{}/speed".format(i + 1), "{}\n".format(speed))
    if trt_dir:
        (root / "usr/lib/python3.6/dist-packages/tensorrt").mkdir(parents=True)
    if container:
        write(".dockerenv", "")
    return root


def tool(bindir, name, out, code=0):
    """A stand-in for a board tool: prints ``out``, exits ``code``."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    p = bindir / name
    p.write_text("#!/bin/sh\nprintf '%s\\n' {}\nexit {}\n".format(shlex.quote(out), code))
    p.chmod(0o755)
    return p


NANO_MAXN = dict(model=NANO, tegra=tegra_line("6.1"), cpus=[(1479000, 1479000)] * 4,
                 gpu=(921600000, 921600000))


@pytest.fixture
def remote_mod(monkeypatch, tmp_path):
    """edgekit_remote.py loaded as the host loads it, with a facts root and a tool dir."""
    from edgekit.resources import remote_module
    root, bindir = tmp_path / "root", tmp_path / "bin"
    root.mkdir()
    bindir.mkdir()
    monkeypatch.setenv("EDGEKIT_FACTS_ROOT", str(root))
    monkeypatch.setenv("PATH", "{}:{}".format(bindir, os.environ["PATH"]))
    mod = remote_module()
    mod.root, mod.bindir = root, bindir
    return mod


# -- 1. board identity ------------------------------------------------------------------------------

@pytest.mark.parametrize("model,board,ok,needle", [
    (NANO, "t210ref", True, None),
    ("NVIDIA Jetson Nano 2GB Developer Kit", "t210ref", True, None),
    (TX2, "t186ref", False, "not a Jetson Nano (/proc/device-tree/model says"),
    (XAVIER_NX, "t186ref", False, "Xavier NX"),
    (NANO, "t186ref", False, "BOARD t186ref, not t210ref"),   # a Nano model string, TX2 L4T
    (None, "t210ref", False, "no /proc/device-tree/model"),
])
def test_only_a_jetson_nano_passes_for_jetson_nano(remote_mod, model, board, ok, needle):
    from edgekit.targets import remote_facts
    make_board(remote_mod.root, model=model, tegra=tegra_line("7.1", board))
    checks = remote_mod.hardware_checks(remote_facts("jetson-nano"))
    bad = [c for c in checks if not c["ok"]]
    assert (not bad) == ok, checks
    if not ok:
        assert needle in bad[0]["value"] and "deploy" in bad[0]["fix"]


@pytest.mark.parametrize("model,ok", [
    ("Raspberry Pi 4 Model B Rev 1.4", True), ("Raspberry Pi 5 Model B Rev 1.0", True),
    ("Raspberry Pi 400 Rev 1.0", True), ("Raspberry Pi Compute Module 4 Rev 1.0", True),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", False), ("Raspberry Pi Zero 2 W Rev 1.0", False),
])
def test_only_a_pi_4_or_5_passes_for_raspberry_pi(remote_mod, monkeypatch, model, ok):
    import platform
    from edgekit.targets import remote_facts
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    tool(remote_mod.bindir, "dpkg", "arm64")
    make_board(remote_mod.root, model=model)
    bad = [c for c in remote_mod.hardware_checks(remote_facts("raspberry-pi")) if not c["ok"]]
    assert (not bad) == ok, bad
    if not ok:
        assert "not a Raspberry Pi 4/5" in bad[0]["value"]


# -- 7. 32-bit userland on a 64-bit kernel ------------------------------------------------------------

@pytest.mark.parametrize("dpkg,ok", [("arm64", True), ("armhf", False), (None, True)])
def test_a_32_bit_userland_on_a_64_bit_pi_kernel_is_refused(remote_mod, monkeypatch, dpkg, ok):
    import platform
    from edgekit.targets import machine_check, load_target
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    if dpkg:
        tool(remote_mod.bindir, "dpkg", dpkg)
    else:  # no dpkg at all (not Debian-based): Python's pointer size alone decides
        monkeypatch.setenv("PATH", str(remote_mod.bindir))
    make_board(remote_mod.root, model="Raspberry Pi 4 Model B Rev 1.4")
    rep = machine_check(load_target("raspberry-pi"), runtimes=["onnxruntime"])
    assert rep["ready"] == ok, rep
    if not ok:
        what = rep["missing"][0]["what"]
        assert "aarch64 kernel with a 32-bit userland (dpkg armhf)" in what
        assert "64-bit Raspberry Pi OS" in rep["missing"][0]["install"]


@pytest.mark.parametrize("machine,dpkg,ok", [("aarch64", "arm64", True), ("aarch64", "armhf", False),
                                             ("x86_64", "amd64", False)])
def test_setup_script_refuses_a_32_bit_userland(tmp_path, machine, dpkg, ok):
    from edgekit.deploy import setup_command
    bindir = tmp_path / "bin"
    tool(bindir, "uname", machine)
    tool(bindir, "dpkg", dpkg)
    log = tmp_path / "pip.log"
    fake = bindir / "python"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = -m ] && [ \"$2\" = venv ]; then\n  d=\"$4\"; "
                    "mkdir -p \"$d/bin\"\n  printf '#!/bin/sh\\necho \"$*\" >> {}\\n' > "
                    "\"$d/bin/python\"\n  chmod +x \"$d/bin/python\"; fi\n".format(log))
    fake.chmod(0o755)
    cmd = setup_command("raspberry-pi", str(tmp_path / "venv"), str(fake))
    r = subprocess.run(cmd, shell=True, input=(REPO / "deploy" / "setup_device.sh").read_text(),
                       env={"PATH": "{}:/usr/bin:/bin".format(bindir)}, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True)
    assert (r.returncode == 0) == ok, r.stderr
    if not ok and machine == "aarch64":
        assert "32-bit userland (dpkg armhf)" in r.stderr and "64-bit" in r.stderr
        assert not (tmp_path / "venv").exists()


# -- 4. board state: recorded, warned about, compared ------------------------------------------------

@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """What a deploy bundle ships (edgekit/__init__.py, edgekit/runtime, the remote script), a
    bundle.json for the Nano's onnxruntime runtime and a labelled test set."""
    import shutil
    from edgekit.runtime.__main__ import TINY_X, tiny_expected
    root = tmp_path_factory.mktemp("nano-bundle")
    (root / "edgekit").mkdir()
    shutil.copy2(str(REPO / "edgekit" / "__init__.py"), str(root / "edgekit" / "__init__.py"))
    shutil.copytree(str(REPO / "edgekit" / "runtime"), str(root / "edgekit" / "runtime"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "deploy").mkdir()
    shutil.copy2(str(REPO / "deploy" / "edgekit_remote.py"), str(root / "deploy"))
    x = np.concatenate([TINY_X, -TINY_X])
    np.savez(str(root / "test.npz"), x=x, y=tiny_expected(x).argmax(1))
    meta = {"runtime": "onnxruntime", "target": "jetson-nano", "device": "GPU",
            "model": "edgekit/runtime/tiny.onnx", "npz": "test.npz", "test_samples": 4}
    (root / "bundle.json").write_text(json.dumps(meta))
    return root


def device_bench(bundle_dir, tmp_path, name, board, tools, python=None):
    """``deploy/edgekit_remote.py bench`` run by the device's Python (the Nano's 3.6 by
    default) on a board made of ``board`` files and ``tools`` ({name: output})."""
    root = make_board(tmp_path / (name + "-root"), **board)
    bindir = tmp_path / (name + "-bin")
    for t, out in tools.items():
        tool(bindir, t, out)
    out = tmp_path / (name + ".json")
    r = subprocess.run([python or py36_python(), "deploy/edgekit_remote.py", "bench", "--bundle",
                        ".", "--json", str(out), "--iterations", "5", "--warmup", "1"],
                       cwd=str(bundle_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=300,
                       env={"PATH": "{}:/usr/bin:/bin".format(bindir), "HOME": str(tmp_path),
                            "EDGEKIT_FACTS_ROOT": str(root)})
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r.stderr, out


def test_nano_state_is_recorded_and_warned_about_on_the_nanos_python(bundle_dir, tmp_path):
    maxn, err, _ = device_bench(bundle_dir, tmp_path, "maxn", NANO_MAXN,
                                {"nvpmodel": "NV Power Mode: MAXN\n0"})
    state = maxn["device_identity"]["board_state"]["jetson"]
    assert state["power_mode"] == "MAXN" and state["clocks_locked"] is True
    assert maxn["device_identity"]["board_model"] == NANO
    assert maxn["device_identity"]["l4t_board"] == "t210ref"
    assert maxn["warnings"] == [] and "warning:" not in err
    assert maxn["python"].startswith("3.6")
    five_w = dict(NANO_MAXN, cpus=[(102000, 918000)] * 2, gpu=(76800000, 640000000))
    slow, err, _ = device_bench(bundle_dir, tmp_path, "5w", five_w,
                                {"nvpmodel": "NV Power Mode: 5W\n1"})
    state = slow["device_identity"]["board_state"]["jetson"]
    assert state["power_mode"] == "5W" and state["clocks_locked"] is False
    assert any("power mode is 5W, not MAXN" in w for w in slow["warnings"])
    assert any("sudo jetson_clocks" in w for w in slow["warnings"])
    assert "warning: Jetson power mode is 5W, not MAXN: run `sudo nvpmodel -m 0`" in err
    # no nvpmodel at all: the mode is unknown, and said so
    unknown, err, _ = device_bench(bundle_dir, tmp_path, "unknown", NANO_MAXN, {})
    assert unknown["device_identity"]["board_state"]["jetson"]["power_mode"] is None
    assert any("power mode is unknown" in w for w in unknown["warnings"])


@pytest.mark.parametrize("throttled,warn", [("0x0", None), ("0x50005", "throttled now"),
                                            ("0x50000", "throttled since boot")])
def test_pi_throttling_is_recorded_and_warned_about(bundle_dir, tmp_path, throttled, warn):
    res, err, _ = device_bench(bundle_dir, tmp_path, "pi", dict(
        model="Raspberry Pi 4 Model B Rev 1.4", governor="ondemand"),
        {"vcgencmd": "throttled={}".format(throttled)}, python=sys.executable)
    pi = res["device_identity"]["board_state"]["pi"]
    assert pi == {"throttled": hex(int(throttled, 16)), "governor": "ondemand"}
    if warn:
        assert any(warn in w for w in res["warnings"]) and "warning: Raspberry Pi" in err
    else:
        assert res["warnings"] == []


def test_ncs2_usb_link_speed_is_recorded_and_usb2_warned_about(bundle_dir, tmp_path):
    res, err, _ = device_bench(bundle_dir, tmp_path, "sticks", dict(
        usb=[("03e7", "f63b", 5000), ("03e7", "2485", 480), ("8087", "0024", 480)]), {},
        python=sys.executable)
    usb = res["device_identity"]["board_state"]["ncs2_usb"]
    assert [(s["product"], s["speed_mbps"]) for s in usb] == [("f63b", 5000.0), ("2485", 480.0)]
    assert res["warnings"] == ["NCS2 2-2 is on a USB 2 link (480 Mbit/s): plug it into a USB 3 "
                               "port"]


def test_report_flags_results_in_different_board_states(bundle_dir, tmp_path, run_cli):
    _, _, a = device_bench(bundle_dir, tmp_path, "a", NANO_MAXN,
                           {"nvpmodel": "NV Power Mode: MAXN\n0"}, python=sys.executable)
    _, _, b = device_bench(bundle_dir, tmp_path, "b", dict(NANO_MAXN, cpus=[(102000, 918000)]),
                           {"nvpmodel": "NV Power Mode: 5W\n1"}, python=sys.executable)
    _, _, c = device_bench(bundle_dir, tmp_path, "c", NANO_MAXN,
                           {"nvpmodel": "NV Power Mode: MAXN\n0"}, python=sys.executable)
    code, _, err = run_cli("report", a, c, "-o", tmp_path / "same")
    assert code == 0, err
    md = (tmp_path / "same" / "report.md").read_text()
    assert "Not comparable" not in md and "(!)" not in md
    code, _, err = run_cli("report", a, b, "-o", tmp_path / "diff")
    assert code == 0, err
    md = (tmp_path / "diff" / "report.md").read_text()
    assert "**Not comparable**" in md
    assert "power mode MAXN, clocks locked True" in md and "power mode 5W, clocks locked False" in md
    assert sum("(!)" in line for line in md.splitlines() if line.startswith("| jetson-nano")) == 2
    assert "Jetson power mode is 5W, not MAXN" in md


def test_report_shows_the_engine_build_beside_the_cold_start(tmp_path, run_cli):
    from edgekit.runtime.bench import latency_stats
    base = {"target": "jetson-nano", "runtime": "tensorrt", "runtime_version": "8.2.1.8",
            "device": "GPU", "batch": 1, "iterations": 10, "latency_ms": latency_stats([1, 2, 3])}
    files = []
    for name, cached, build in (("first", False, 95000.0), ("second", True, None)):
        p = tmp_path / (name + ".json")
        p.write_text(json.dumps(dict(base, cold_start_ms=40.0, engine_cached=cached,
                                     engine_build_ms=build, file=name)))
        files.append(p)
    code, _, err = run_cli("report", *files, "-o", tmp_path / "rep")
    assert code == 0, err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "40.0 (+ engine build 95.0 s)" in md and "40.0 (cached engine)" in md


# -- deploy over the real sshd: board identity, L4T -> image, docker preflight, --docker identity ---

FAKE_DOCKER = r'''#!{python}
"""Stand-in for the docker CLI on a Jetson: answers `info`, logs `build`, and for `run` runs the
container's command with this machine's Python, paths mapped through the -v mounts and a
container facts root (a /.dockerenv, the host's mounted nv_tegra_release, no device tree)."""
import json, os, subprocess, sys
BIN = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(BIN, "docker.log"), "a") as fh:
    fh.write(json.dumps(args) + "\n")
conf = json.load(open(os.path.join(BIN, "docker.json")))
if args[:3] == ["info", "--format", "{{{{json .Runtimes}}}}"]:
    print(json.dumps({{r: {{"path": r}} for r in conf["runtimes"]}}))
    sys.exit(0)
if args[:3] == ["info", "--format", "{{{{.DefaultRuntime}}}}"]:
    print(conf["default_runtime"])
    sys.exit(0)
if args[:1] == ["build"]:
    print("Successfully tagged " + args[args.index("-t") + 1])
    sys.exit(0)
if args[:1] == ["run"]:
    mounts, i = {{}}, 1
    while i < len(args):
        if args[i] == "-v":
            src, dst = args[i + 1].split(":")[:2]
            mounts[dst] = src
            i += 2
        elif args[i] in ("-w", "-e", "--runtime", "--mount", "-u"):
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            break
    cmd = args[i + 1:]

    def host(p):
        for dst, src in mounts.items():
            if p == dst or p.startswith(dst + "/"):
                return src + p[len(dst):]
        return p
    env = dict(os.environ, EDGEKIT_FACTS_ROOT=conf["container_root"])
    sys.exit(subprocess.call([{python!r}] + [host(c) for c in cmd[1:]],
                             cwd=mounts["/bundle"], env=env))
sys.exit(1)
'''


class Board(object):
    """One sshd whose sessions see ``bin/`` first on PATH and ``current`` as the facts root;
    ``use(...)`` makes ``current`` a new board and sets the stand-in docker's answers."""

    def __init__(self, tmp):
        self.tmp, self.bin, self.current = Path(tmp), Path(tmp) / "bin", Path(tmp) / "current"
        self.bin.mkdir()
        self.n = 0
        self.sshd = SshServer(self.tmp / "sshd", setenv={
            "PATH": "{}:/usr/bin:/bin".format(self.bin), "EDGEKIT_FACTS_ROOT": str(self.current)})
        docker = self.bin / "docker"
        docker.write_text(FAKE_DOCKER.format(python=sys.executable))
        docker.chmod(0o755)
        self.kh = self.tmp / "known_hosts"

    def use(self, runtimes=("nvidia", "runc"), default_runtime="nvidia", tools=None, **board):
        self.n += 1
        root = make_board(self.tmp / "board{}".format(self.n), **board)
        croot = make_board(self.tmp / "container{}".format(self.n), tegra=board.get("tegra"),
                           container=True)
        if self.current.is_symlink():
            self.current.unlink()
        self.current.symlink_to(root)
        (self.bin / "docker.json").write_text(json.dumps({
            "runtimes": list(runtimes), "default_runtime": default_runtime,
            "container_root": str(croot)}))
        for name in ("nvpmodel", "dpkg"):
            if (self.bin / name).exists():
                (self.bin / name).unlink()
        for name, out in (tools or {}).items():
            tool(self.bin, name, out)
        if (self.bin / "docker.log").exists():
            (self.bin / "docker.log").unlink()
        return root

    def docker_calls(self):
        log = self.bin / "docker.log"
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    def deploy(self, model, target="jetson-nano", **kw):
        from edgekit.deploy import deploy
        kw.setdefault("log", lambda m: None)
        return deploy(model, target, hosts=[self.sshd.host], identity=self.sshd.user_key,
                      known_hosts=self.kh, remote_dir=str(self.tmp / "remote"),
                      remote_python=sys.executable, **kw)["devices"][0]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = Board(tmp_path_factory.mktemp("board"))
    b.sshd.start()
    b.kh.write_text(b.sshd.known_hosts_line())
    try:
        yield b
    finally:
        b.sshd.kill()


def _onnx(path, op=None):
    """A tiny opset-13 ONNX for the Nano: x (N,4) @ W + b, then ``op`` (e.g. Round) if given."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 4.0
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"])]
    last = "xw"
    if op:
        nodes.append(helper.make_node(op, ["xw"], ["r"]))
        last = "r"
    nodes.append(helper.make_node("Softmax", [last], ["scores"], axis=1))
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 4])], [helper.make_tensor_value_info(
            "scores", TensorProto.FLOAT, ["N", 3])], initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


NANO_DOCKER = dict(NANO_MAXN, trt_dir=True)


def test_deploy_refuses_another_jetson_and_an_old_l4t(board, tmp_path):
    model = _onnx(tmp_path / "m.onnx")
    board.use(**dict(NANO_DOCKER, model=TX2, tegra=tegra_line("6.1", "t186ref")))
    row = board.deploy(model, docker=True, setup=True, test_samples=0)
    assert not row["ok"] and row["exit_code"] == 2
    assert "not a Jetson Nano (/proc/device-tree/model says 'NVIDIA Jetson TX2" in row["error"]
    board.use(**dict(NANO_DOCKER, tegra=tegra_line("5.1")))
    row = board.deploy(model, docker=True, setup=True, test_samples=0)
    assert not row["ok"] and row["exit_code"] == 2 and "this device reports L4T R32.5.1" in row["error"]
    assert board.docker_calls() == [["info", "--format", "{{json .Runtimes}}"]]  # nothing built
    assert not (board.tmp / "remote").exists() or not any(
        p.name != ".tmp" for p in (board.tmp / "remote").iterdir())


@pytest.mark.parametrize("rev,base", [("6.1", "r32.6.1"), ("7.1", "r32.7.1"), ("7.4", "r32.7.1")])
def test_the_devices_l4t_picks_the_image_base(board, tmp_path, rev, base):
    model = _onnx(tmp_path / "m.onnx")
    board.use(**dict(NANO_DOCKER, tegra=tegra_line(rev)))
    row = board.deploy(model, docker=True, setup=True, test_samples=0)
    assert row["ok"], row["error"]
    builds = [c for c in board.docker_calls() if c[0] == "build"]
    assert len(builds) == 1 and "L4T_BASE=nvcr.io/nvidia/l4t-base:" + base in builds[0]
    assert builds[0][builds[0].index("-t") + 1].endswith("-" + base)


@pytest.mark.parametrize("runtimes,trt_dir,needle", [
    (("runc",), True, "docker runtime nvidia (runc)"),
    (("nvidia", "runc"), False, "tensorrt bindings (/usr/lib/python3.6/dist-packages/tensorrt)"),
])
def test_docker_preflight_checks_the_nvidia_runtime_and_the_tensorrt_bindings(
        board, tmp_path, runtimes, trt_dir, needle):
    model = _onnx(tmp_path / "m.onnx")
    board.use(runtimes=runtimes, **dict(NANO_DOCKER, trt_dir=trt_dir))
    row = board.deploy(model, docker=True, setup=True, test_samples=0)
    assert not row["ok"] and row["exit_code"] == 2 and needle in row["error"], row["error"]
    assert not [c for c in board.docker_calls() if c[0] == "build"]


@pytest.mark.parametrize("rev,ok", [("6.1", False), ("7.1", True)])
def test_ops_are_checked_against_the_devices_tensorrt(board, tmp_path, rev, ok):
    """Round is in TensorRT 8.2's parser, not 8.0.1's (JetPack 4.6 = L4T R32.6.1)."""
    model = _onnx(tmp_path / "round.onnx", op="Round")
    board.use(**dict(NANO_DOCKER, tegra=tegra_line(rev)))
    lines = []
    row = board.deploy(model, docker=True, test_samples=0, log=lines.append)
    assert row["ok"] == ok, row["error"]
    if ok:
        assert any("ops checked against the device's TensorRT 8.2.1" in ln for ln in lines)
    else:
        assert row["exit_code"] == 1 and row["bytes_sent"] == 0
        assert "L4T R32.6.1 ships TensorRT 8.0.1" in row["error"]
        assert "op Round is outside TensorRT 8.0's ONNX parser (added in TensorRT 8.2" in row["error"]


def test_docker_results_name_the_board_not_the_container(board, tmp_path):
    model = _onnx(tmp_path / "m.onnx")
    five_w = dict(NANO_DOCKER, cpus=[(102000, 918000)] * 2)
    board.use(tools={"nvpmodel": "NV Power Mode: 5W\n1"}, **five_w)
    lines = []
    row = board.deploy(model, docker=True, setup=True, bench=True, runtime="onnxruntime",
                       test_samples=0, iterations=5, warmup=1, log=lines.append)
    assert row["ok"], row["error"]
    assert [c[0] for c in board.docker_calls()][-2:] == ["build", "run"]
    res = row["results"]
    assert res["container_identity"]["container"] is True     # what ran inside the container
    ident = res["device_identity"]
    assert ident["container"] is False and ident["board_model"] == NANO
    assert ident["board_state"]["jetson"]["power_mode"] == "5W"
    assert res["host"] == ident["hostname"]
    assert any("power mode is 5W, not MAXN" in w for w in res["warnings"])
    assert any(ln.endswith("warning: Jetson power mode is 5W, not MAXN: run `sudo nvpmodel -m 0`")
               for ln in lines)


def test_ncs2_preflight_over_ssh_refuses_a_32_bit_userland(board, tmp_path):
    import platform
    if platform.machine() != "x86_64":
        pytest.skip("an x86-64 machine")
    model = _onnx(tmp_path / "m.onnx")
    board.use(tools={"dpkg": "i386"})
    row = board.deploy(model, target="ncs2", docker=True, test_samples=0)
    assert not row["ok"] and row["exit_code"] == 2
    assert "ncs2 hosts are x86_64 (this one is x86_64 kernel with a 32-bit userland (dpkg i386))" \
        in row["error"]


def test_host_bench_on_the_board_is_stamped_with_its_state(remote_mod, monkeypatch, capfd):
    """`edgekit bench` run on the board itself (a Pi runs edgekit) records the same identity and
    board state as a deployed bench, and warns on stderr."""
    import platform
    from edgekit.bench import bench
    from edgekit.targets import load_target
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    tool(remote_mod.bindir, "dpkg", "arm64")
    tool(remote_mod.bindir, "vcgencmd", "throttled=0x50005")
    make_board(remote_mod.root, model="Raspberry Pi 5 Model B Rev 1.0", governor="powersave")
    from edgekit.onnx_model import artifact_for
    from edgekit.runtime.__main__ import TINY_ONNX
    with artifact_for(TINY_ONNX) as art:
        res = bench(art, load_target("raspberry-pi"), runtime="onnxruntime", iterations=5,
                    warmup=1)[0]
    assert res["device_identity"]["board_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert res["device_identity"]["board_state"]["pi"] == {"throttled": "0x50005",
                                                           "governor": "powersave"}
    assert any("throttled now" in w for w in res["warnings"])
    assert "warning: Raspberry Pi is throttled now" in capfd.readouterr().err
