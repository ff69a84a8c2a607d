"""The Jetson Nano facts the code relies on, each as a test that fails if the code drifts:

* JetPack 4.6 = L4T R32.6.1 = TensorRT 8.0.1; JetPack 4.6.1..4.6.x = L4T R32.7.x = TensorRT 8.2.1
  (targets/jetson-nano.toml ``[l4t]``), older releases refused, the image's base follows the L4T;
* Dockerfile.jetson builds on l4t-base (host CUDA/TensorRT mounted by the NVIDIA runtime), which
  needs docker's default runtime to be nvidia while building: checked over a real sshd;
* the device preflight turns a CUDA that cannot start into "hardware missing" (exit 2).
"""
import importlib.util
import io
import sys
import types
from pathlib import Path

import pytest

from sshd import sshd  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("l4t,jetpack,tensorrt,base", [
    ("R32.6.1", "JetPack 4.6", "8.0.1", "nvcr.io/nvidia/l4t-base:r32.6.1"),
    ("R32.7.1", "JetPack 4.6.1+", "8.2.1", "nvcr.io/nvidia/l4t-base:r32.7.1"),
    ("R32.7.6", "JetPack 4.6.1+", "8.2.1", "nvcr.io/nvidia/l4t-base:r32.7.1"),
])
def test_l4t_release_table(l4t, jetpack, tensorrt, base):
    from edgekit.targets import l4t_release_info
    assert l4t_release_info("jetson-nano", l4t) == {"jetpack": jetpack, "tensorrt": tensorrt,
                                                    "base_image": base}


@pytest.mark.parametrize("l4t", ["R32.5.1", "R32.6", "R32.70.1", "R35.4.1", "R28.2.1", "", None])
def test_unsupported_l4t_releases_are_refused_naming_the_supported_ones(l4t):
    from edgekit.errors import HardwareMissing
    from edgekit.targets import l4t_release_info
    with pytest.raises(HardwareMissing) as e:
        l4t_release_info("jetson-nano", l4t)
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert "L4T R32.6.1 = JetPack 4.6 (TensorRT 8.0.1)" in msg
    assert "L4T R32.7 = JetPack 4.6.1+ (TensorRT 8.2.1)" in msg


def test_the_l4t_parser_feeds_the_table(tmp_path):
    """/etc/nv_tegra_release lines as L4T writes them -> the release the table is keyed by."""
    spec = importlib.util.spec_from_file_location("edgekit_remote_j",
                                                  str(REPO / "deploy" / "edgekit_remote.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from edgekit.targets import l4t_release_info
    lines = {"# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64": "8.0.1",
             "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64": "8.2.1",
             "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64": "8.2.1"}
    for line, trt in lines.items():
        p = tmp_path / "nv_tegra_release"
        p.write_text(line + "\n")
        assert l4t_release_info("jetson-nano", mod.l4t_release(str(p)))["tensorrt"] == trt


def test_jetson_dockerfile_matches_the_target_descriptor():
    from dockerfile_parse import DockerfileParser
    from edgekit.targets import load_target
    t = load_target("jetson-nano")
    text = (REPO / "Dockerfile.jetson").read_text()
    df = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    assert df.baseimage == t["container_image"] == t["l4t"]["R32.7"]["base_image"]
    for base in (v["base_image"] for v in t["l4t"].values()):  # every table row builds
        df = DockerfileParser(fileobj=io.BytesIO(text.encode()), build_args={"L4T_BASE": base})
        assert df.baseimage == base
    runs = " ".join(i["value"] for i in df.structure if i["instruction"] == "RUN")
    assert "cuda-nvcc" not in runs and "l4t-tensorrt" not in text.split("FROM", 1)[1]
    assert "default-runtime" in runs and "/usr/local/cuda/include/cuda.h" in runs
    assert "python3.8" not in text  # Ubuntu 18.04's Python 3.6 = the host's TensorRT bindings
    assert t["trt_python_dir"] == "/usr/lib/python3.6/dist-packages/tensorrt"


def test_docker_default_runtime_is_checked_before_building_over_real_ssh(sshd, tmp_path):  # noqa: F811
    from edgekit.deploy import Remote, check_docker_default_runtime, resolve_host
    from edgekit.errors import MissingDependency
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line())
    r = Remote(resolve_host(sshd.host), identity=sshd.user_key, known_hosts=kh, log=lambda m: None)
    try:
        for runtime, ok in (("runc", False), ("nvidia", True)):
            docker = tmp_path / "docker-{}".format(runtime)  # answers like `docker info --format`
            docker.write_text("#!/bin/sh\n[ \"$1\" = info ] && [ \"$2\" = --format ] && "
                              "[ \"$3\" = '{{.DefaultRuntime}}' ] && echo %s\n" % runtime)
            docker.chmod(0o755)
            if ok:
                assert check_docker_default_runtime(r, str(docker)) == "nvidia"
            else:
                with pytest.raises(MissingDependency) as e:
                    check_docker_default_runtime(r, str(docker))
                assert "default runtime is runc" in str(e.value)
                assert '"default-runtime": "nvidia"' in str(e.value)
        with pytest.raises(MissingDependency, match="default runtime is"):
            check_docker_default_runtime(r, str(tmp_path / "no-docker-here"))
    finally:
        r.close()


def _fake_pycuda(monkeypatch, init_error):
    """A 'pycuda' package whose driver behaves like pycuda.driver on a machine where cuInit
    fails (the way the real one raises pycuda._driver.RuntimeError) or succeeds."""
    pkg = types.ModuleType("pycuda")
    pkg.__path__, pkg.__version__ = [], "2021.1"
    drv = types.ModuleType("pycuda.driver")

    def init(flags=0):
        if init_error:
            raise RuntimeError(init_error)

    class Device(object):
        @staticmethod
        def count():
            return 1

        def __init__(self, n):
            pass

        def name(self):
            return "NVIDIA Tegra X1"

    drv.init, drv.Device = init, Device
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)


@pytest.mark.parametrize("init_error", ["cuInit failed: no CUDA-capable device is detected", None])
def test_device_preflight_checks_that_cuda_starts(monkeypatch, init_error):
    spec = importlib.util.spec_from_file_location("edgekit_remote_c",
                                                  str(REPO / "deploy" / "edgekit_remote.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _fake_pycuda(monkeypatch, init_error)
    from edgekit.targets import remote_facts
    code, report = mod.preflight("jetson-nano", facts=remote_facts("jetson-nano"))
    cuda = [c for c in report["checks"] if c["name"] == "cuda"][0]
    assert code == 2  # not a Jetson here either way
    if init_error:
        assert not cuda["ok"] and "cuInit failed" in cuda["value"]
        assert "--runtime nvidia" in cuda["fix"]
        assert any(h.startswith("CUDA cannot start here") for h in report["hardware"])
    else:
        assert cuda["ok"] and cuda["value"] == "NVIDIA Tegra X1"
    # the Nano never gets cuda-python offered in place of pycuda
    assert "cuda-python" not in str(report["checks"])
