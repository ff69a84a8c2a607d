"""docs/hardware.md's device checks are runnable as written: every ``sh`` block parses
(``bash -n``), every file it names is in a real deploy bundle (jetson-nano and ncs2, built with
--docker), its image tags / build args / USB flags are the ones deploy uses, and the commands
that need no board run here as printed (the Nano's ``doctor`` under the Nano's Python 3.6 on a
board made of files, see tests/test_device_truth.py)."""
import io
import os
import re
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from devices import py36_python
from test_device_truth import NANO_MAXN, make_board

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "hardware.md"


def blocks(lang):
    return re.findall(r"```{}\n(.*?)```".format(lang), DOC.read_text(), re.S)


def commands():
    """Every command line of the ``sh`` blocks (``\\`` continuations joined)."""
    out = []
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                out.append(line.strip())
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Real bundles (build_bundle, --docker) extracted as deploy installs them:
    HOME/edgekit/<sha>/ with .edgekit-complete."""
    from edgekit.deploy import build_bundle
    from edgekit.onnx_model import artifact_for
    from edgekit.runtime.__main__ import TINY_ONNX
    home = tmp_path_factory.mktemp("home")
    out = {}
    with artifact_for(TINY_ONNX) as art:
        for target in ("jetson-nano", "ncs2"):
            b = build_bundle(art, target, test_samples=0, docker=True)
            dest = home / "edgekit" / b.short
            with tarfile.open(fileobj=io.BytesIO(b.data)) as tf:
                tf.extractall(str(dest))
            (dest / ".edgekit-complete").write_text(b.sha256 + "\n")
            out[target] = dest
    os.utime(str(out["jetson-nano"] / ".edgekit-complete"), (2e9, 2e9))  # the newest
    return home, out


def test_every_command_parses():
    cmds = commands()
    assert len(cmds) >= 20
    for c in cmds:
        r = subprocess.run(["bash", "-n", "-c", c], stderr=subprocess.PIPE, universal_newlines=True)
        assert r.returncode == 0, (c, r.stderr)


def test_every_file_named_is_in_a_real_bundle(bundles):
    _, dirs = bundles
    named = set()
    for c in commands():
        for tok in shlex.split(c, posix=True):
            for m in re.finditer(r"(?<![\w/.~:=-])(deploy/[\w.-]+|Dockerfile\.\w+|bundle\.json)",
                                 tok):
                named.add(m.group(1))
    assert {"deploy/edgekit_remote.py", "deploy/openvino2022_python.sh", "Dockerfile.jetson",
            "Dockerfile.ncs2", "bundle.json"} <= named
    for name in named:
        where = [t for t, d in dirs.items() if (d / name).is_file()]
        assert where, "{} is named in docs/hardware.md but is in no bundle".format(name)
    assert (dirs["jetson-nano"] / "Dockerfile.jetson").is_file()
    assert (dirs["ncs2"] / "Dockerfile.ncs2").is_file()
    # the Dockerfiles' COPY sources are plain files in the bundle (no symlink for BuildKit)
    for target, df in (("jetson-nano", "Dockerfile.jetson"), ("ncs2", "Dockerfile.ncs2")):
        for src in re.findall(r"^COPY (\S+) ", (dirs[target] / df).read_text(), re.M):
            p = dirs[target] / src
            assert p.exists() and not p.is_symlink(), src


def test_image_tags_build_args_and_usb_flags_are_deploys():
    from edgekit.deploy import docker_build_command, docker_command, docker_image
    from edgekit.targets import l4t_release_info, load_target
    builds = [shlex.split(c) for c in commands() if " build " in " " + c + " "]
    jetson = [b for b in builds if "Dockerfile.jetson" in b]
    assert len(jetson) == 2
    for b in jetson:
        tag = b[b.index("-t") + 1]
        base = [a.split("=", 1)[1] for a in b if a.startswith("L4T_BASE=")][0]
        rel = "R" + base.rsplit(":r", 1)[1].upper()
        assert tag == docker_image("jetson-nano", rel)
        assert base == l4t_release_info("jetson-nano", rel)["base_image"]
        want = [os.path.normpath(a) if a.endswith("Dockerfile.jetson") else a
                for a in shlex.split(docker_build_command("jetson-nano", ".", rel))]
        assert sorted(want) == sorted(b), (want, b)
    ncs2 = [b for b in builds if "Dockerfile.ncs2" in b]
    assert ncs2 and all(b[b.index("-t") + 1] == docker_image("ncs2") for b in ncs2)
    assert any(c.startswith("DOCKER_BUILDKIT=0 docker build") for c in commands())
    flags = load_target("ncs2")["docker"]["run_flags"]
    runs = [shlex.split(c) for c in commands() if c.startswith("docker run") and "ncs2" in c]
    assert len(runs) == 2
    for r in runs:
        assert all(f in r for f in flags), (flags, r)
    line = docker_command("ncs2", "/b", "/r", "x.json")
    assert line.startswith('docker run --rm -u "$(id -u):$(id -g)"') and "-u" in runs[0]
    trt = [shlex.split(c) for c in commands() if c.startswith("docker run") and "jetson" in c]
    t = load_target("jetson-nano")
    assert trt and "--runtime" in trt[0] and "nvidia" in trt[0]
    assert "type=bind,source={0},target={0},readonly".format(t["trt_python_dir"]) in trt[0]


def _shim(tmp_path):
    """python3 = the Nano's Python 3.6, first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text('#!/bin/sh\nexec {} "$@"\n'.format(py36_python()))
    (bindir / "python3").chmod(0o755)
    return bindir


def test_nano_first_check_runs_as_written_on_the_nanos_python(bundles, tmp_path):
    home, dirs = bundles
    root = make_board(tmp_path / "nano", **NANO_MAXN)
    env = {"HOME": str(home), "PATH": "{}:/usr/bin:/bin".format(_shim(tmp_path)),
           "EDGEKIT_FACTS_ROOT": str(root)}
    cd = [c for c in commands() if c.startswith("cd ")][0]
    doctor = [c for c in commands() if c.endswith("edgekit_remote.py doctor")][0]
    model = [c for c in commands() if c.startswith("MODEL=")][0]
    r = subprocess.run(["bash", "-c", "{} && pwd && {} && test -f \"$MODEL\" && echo model ok; {}"
                        .format(cd, model, doctor)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    lines = r.stdout.splitlines()
    assert lines[0] == str(dirs["jetson-nano"]), r.stderr
    assert lines[1] == "model ok"
    expected = blocks("text")[0].splitlines()
    assert lines[2] == expected[0]  # "edgekit device doctor: target jetson-nano, runtime tensorrt"
    for want in ("  ok       hardware           NVIDIA Jetson Nano Developer Kit",
                 "  ok       board              BOARD t210ref"):
        assert want in expected and want in lines, r.stdout
    assert any(ln.startswith("  ok       python             3.6.") for ln in lines)
    # no TensorRT here: said so with the fix, exit 2, and no selftest claimed
    assert any(ln.startswith("  MISSING  tensorrt") and "python3-libnvinfer" in ln for ln in lines)
    assert r.returncode == 2 and lines[-1] == "doctor: NOT READY (exit 2)"
    # a TX2 is refused by the same command
    tx2 = make_board(tmp_path / "tx2", model="NVIDIA Jetson TX2 Developer Kit",
                     tegra=NANO_MAXN["tegra"].replace("t210ref", "t186ref"))
    r = subprocess.run(["bash", "-c", "{} && {}".format(cd, doctor)],
                       env=dict(env, EDGEKIT_FACTS_ROOT=str(tx2)), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert r.returncode == 2 and "MISSING  hardware           not a Jetson Nano" in r.stdout


def test_doctor_selftests_the_bundles_runtime_when_the_preflight_passes(bundles, tmp_path):
    """The same doctor on a bundle whose runtime is here (onnxruntime 1.10 in the Nano's
    Python 3.6): the preflight passes, then the tiny model runs and matches numpy."""
    import json
    home, dirs = bundles
    d = dirs["jetson-nano"]
    meta = json.loads((d / "bundle.json").read_text())
    meta["runtime"] = "onnxruntime"
    (d / "bundle.json").write_text(json.dumps(meta))
    root = make_board(tmp_path / "nano", **NANO_MAXN)
    try:
        r = subprocess.run(["python3", "deploy/edgekit_remote.py", "doctor"], cwd=str(d),
                           env={"HOME": str(home), "EDGEKIT_FACTS_ROOT": str(root),
                                "PATH": "{}:/usr/bin:/bin".format(_shim(tmp_path))},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=300)
    finally:
        meta["runtime"] = "tensorrt"
        (d / "bundle.json").write_text(json.dumps(meta))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  ok       onnxruntime  1.10.0" in r.stdout and r.stdout.endswith("doctor: ok\n")
    assert "warning  Jetson power mode is unknown" in r.stdout  # no nvpmodel on PATH here
