"""The NCS2 path as the stick will run it, checked on OpenVINO 2022.3.1 for real (its CPU plugin,
``ov2022_python()``) wherever no stick is needed:

* the device comes from targets/ncs2.toml (MYRIAD) and a missing stick exits 2, never a CPU run;
* a model handed to a MYRIAD runner is static-shaped before ``compile_model`` (is_dynamic() is
  False on what compile_model receives), ``MYRIAD.<id>`` names are matched;
* Dockerfile.ncs2 appends to PYTHONPATH and its build check tells a MYRIAD-less OpenVINO apart;
* the docker line runs as the calling user (``-u $(id -u):$(id -g)``, expanded by the shell);
* NCS2 hosts are x86-64 (doctor and the device preflight refuse other machines).
"""
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from devices import ov2022_python
from sshd import sshd  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """What a deploy bundle ships (edgekit/__init__.py, edgekit/runtime, the remote script) plus
    a bundle.json for ncs2 whose device comes from targets/ncs2.toml."""
    from edgekit.runtime.__main__ import TINY_X, tiny_expected
    from edgekit.targets import load_target
    root = tmp_path_factory.mktemp("ncs2-bundle")
    (root / "edgekit").mkdir()
    shutil.copy2(str(REPO / "edgekit" / "__init__.py"), str(root / "edgekit" / "__init__.py"))
    shutil.copytree(str(REPO / "edgekit" / "runtime"), str(root / "edgekit" / "runtime"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "deploy").mkdir()
    shutil.copy2(str(REPO / "deploy" / "edgekit_remote.py"), str(root / "deploy"))
    x = np.concatenate([TINY_X, -TINY_X])
    np.savez(str(root / "test.npz"), x=x, y=tiny_expected(x).argmax(1))
    meta = {"runtime": "openvino", "target": "ncs2", "device": load_target("ncs2")["device"],
            "model": "edgekit/runtime/tiny.onnx", "npz": "test.npz", "test_samples": 4}
    (root / "bundle.json").write_text(json.dumps(meta))
    return root


def run(bundle, *args, script=None):
    cmd = [ov2022_python()] + (["-c", script] if script else ["-m", "edgekit.runtime"])
    return subprocess.run(cmd + [str(a) for a in args], cwd=str(bundle),
                          env={"PYTHONPATH": str(bundle), "PATH": "/usr/bin:/bin",
                               "HOME": str(bundle)},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)


def test_ncs2_device_comes_from_the_target_toml():
    from edgekit.targets import load_target
    assert load_target("ncs2")["device"] == "MYRIAD"
    assert load_target("ncs2")["host_arch"] == ["x86_64"]


def test_remote_bench_args_carry_the_targets_device():
    from edgekit.deploy import device_args
    from edgekit.errors import EdgekitError
    from edgekit.targets import load_target
    meta = {"runtime": "openvino", "target": "ncs2", "device": load_target("ncs2")["device"]}
    assert device_args(meta, ["--iterations", "5"]) == ["--iterations", "5", "--device", "MYRIAD"]
    # the user's explicit choice (e.g. one stick of several) wins; other runtimes get none
    assert device_args(meta, ["--device", "MYRIAD.2"]) == ["--device", "MYRIAD.2"]
    assert device_args({"runtime": "onnxruntime", "device": "CPU"}, []) == []
    with pytest.raises(EdgekitError, match="names no device"):
        device_args({"runtime": "openvino", "target": "x"}, [])


def test_remote_bench_in_an_ncs2_bundle_without_stick_exits_2_not_cpu(bundle):
    """Before the fix this ran on the host CPU and wrote results saying target ncs2."""
    out = bundle / "runs" / "r.json"
    r = run(bundle, "deploy/edgekit_remote.py", "bench", "--bundle", ".", "--json", out,
            "--iterations", "5", script="import runpy, sys; sys.argv = sys.argv[1:]; "
                                        "runpy.run_path(sys.argv[0], run_name='__main__')")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: OpenVINO device MYRIAD not available here (found: CPU)")
    assert not out.exists()
    # an explicit --device CPU is honoured, and the results say CPU
    r = run(bundle, "deploy/edgekit_remote.py", "bench", "--bundle", ".", "--json", out,
            "--iterations", "5", "--device", "CPU",
            script="import runpy, sys; sys.argv = sys.argv[1:]; "
                   "runpy.run_path(sys.argv[0], run_name='__main__')")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["device"] == "CPU" and res["target"] == "ncs2" and res["accuracy"] == 1.0


def test_runtime_bench_with_a_target_never_guesses_the_device(bundle):
    r = run(bundle, "bench", "edgekit/runtime/tiny.onnx", "--runtime", "openvino", "--target",
            "ncs2", "--iterations", "5", "--json", "guess.json")
    assert r.returncode == 1 and r.stderr.startswith("error: --target ncs2 with --runtime openvino "
                                                     "needs --device")
    assert len(r.stderr.strip().splitlines()) == 1 and not (bundle / "guess.json").exists()


# A Core whose available_devices lists sticks and whose compile_model records what it is handed,
# then compiles it on the real 2022.3.1 CPU plugin (no MYRIAD plugin exists in the pip wheel).
STICK_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from openvino.runtime import Core
    from edgekit.runtime.openvino import OvRunner
    from edgekit.runtime.errors import HardwareMissing
    from edgekit.runtime.__main__ import TINY_W, TINY_B

    class StickCore(object):
        def __init__(self, names):
            self.real, self.available_devices, self.seen = Core(), names, []
        def read_model(self, path):
            return self.real.read_model(path)
        def compile_model(self, model, device, config):
            self.seen.append({"device": device, "dynamic": model.is_dynamic(),
                              "shape": [str(i.get_partial_shape()) for i in model.inputs]})
            # f32: on a CPU with AMX 2022.3.1 defaults to bf16 and cannot compile this graph's
            # Add ("Primitive descriptor was not found"); the stick itself computes in FP16
            return self.real.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        def get_property(self, device, name):
            raise RuntimeError("no " + device)

    out = {}
    for names, want, batch in json.loads(sys.argv[1]):
        core = StickCore(names)
        try:
            with OvRunner("edgekit/runtime/tiny.onnx", device=want, batch=batch, core=core) as r:
                x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
                y = list(r.infer(x).values())[0]
                out[want + "@" + ",".join(names)] = {
                    "seen": core.seen, "device": r.describe()["device"], "ok":
                    bool(np.allclose(y, x.dot(TINY_W) + TINY_B, atol=1e-4)),
                    "input_shape": r.input_shape, "reshaped": r.describe().get("reshaped"),
                    "precision": r.precision}
        except HardwareMissing as exc:
            out[want + "@" + ",".join(names)] = {"missing": str(exc)}
    print(json.dumps(out))
""")


def test_myriad_runner_hands_compile_model_a_static_model_and_matches_stick_names(bundle):
    cases = [[["CPU", "MYRIAD"], "MYRIAD", 1],
             [["CPU", "MYRIAD.1.1-ma2480", "MYRIAD.1.2-ma2480"], "MYRIAD", 3],
             [["CPU", "MYRIAD.1.1-ma2480", "MYRIAD.1.2-ma2480"], "MYRIAD.1.2-ma2480", 2],
             [["CPU", "MYRIAD.1.1-ma2480"], "MYRIAD.9", 1],
             [["CPU", "MYRIADX"], "MYRIAD", 1],
             [["CPU"], "CPU", 2]]
    r = run(bundle, json.dumps(cases), script=STICK_SCRIPT)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    one = got["MYRIAD@CPU,MYRIAD"]
    assert one["seen"] == [{"device": "MYRIAD", "dynamic": False, "shape": ["[1,4]"]}]
    assert one["ok"] and one["device"] == "MYRIAD" and one["input_shape"] == [1, 4]
    assert one["reshaped"] == {"x": ["[?,4]", "[1,4]"]} and one["precision"] == "fp16"
    several = got["MYRIAD@CPU,MYRIAD.1.1-ma2480,MYRIAD.1.2-ma2480"]
    assert several["seen"] == [{"device": "MYRIAD", "dynamic": False, "shape": ["[3,4]"]}]
    assert several["ok"]
    picked = got["MYRIAD.1.2-ma2480@CPU,MYRIAD.1.1-ma2480,MYRIAD.1.2-ma2480"]
    assert picked["seen"][0]["device"] == "MYRIAD.1.2-ma2480" and not picked["seen"][0]["dynamic"]
    assert picked["device"] == "MYRIAD.1.2-ma2480"
    assert "MYRIAD.9 not available" in got["MYRIAD.9@CPU,MYRIAD.1.1-ma2480"]["missing"]
    assert "not available" in got["MYRIAD@CPU,MYRIADX"]["missing"]  # a prefix is not a stick
    cpu = got["CPU@CPU"]  # the CPU keeps the dynamic batch: no reshape there
    assert cpu["seen"] == [{"device": "CPU", "dynamic": True, "shape": ["[?,4]"]}]
    assert cpu["input_shape"] == [None, 4] and cpu["reshaped"] is None


def test_ov2022_has_no_execution_devices_property_so_the_compiled_device_is_recorded(bundle):
    """The fact behind _execution_devices(): 2022.3.1's compiled model has no EXECUTION_DEVICES
    (2023.0+ has it); the runner then records the one device it compiled for."""
    script = textwrap.dedent("""
        from openvino.runtime import Core
        from edgekit.runtime.openvino import OvRunner
        c = Core()
        m = c.compile_model(c.read_model("edgekit/runtime/tiny.onnx"), "CPU", {})
        props = m.get_property("SUPPORTED_PROPERTIES")
        with OvRunner("edgekit/runtime/tiny.onnx", device="CPU") as r:
            d = r.describe()
        print("EXECUTION_DEVICES" in props, d["device"], d.get("device_name") is not None)
    """)
    r = run(bundle, script=script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "CPU", "True"]


def test_myriad_dynamic_non_batch_dimension_is_refused():
    from edgekit.runtime.errors import EdgekitError
    from edgekit.runtime.openvino import match_device, static_shape
    assert static_shape([None, 28, 28, 1], 4) == [4, 28, 28, 1]
    assert static_shape([1, 4], 8) == [1, 4]  # already static: left alone
    with pytest.raises(EdgekitError, match="dynamic non-batch dimension"):
        static_shape([1, None, None, 3], 1)
    assert match_device("MYRIAD", ["MYRIAD.3.1-ma2480"]) == "MYRIAD"
    assert match_device("MYRIAD.3", ["MYRIAD.3.1-ma2480"]) is None  # ids match whole
    assert match_device("GPU", ["CPU"]) is None


# -- Dockerfile.ncs2 and the docker line ---------------------------------------------------------

def _dockerfile(name):
    from dockerfile_parse import DockerfileParser
    with open(str(REPO / name), "rb") as fh:
        return DockerfileParser(fileobj=io.BytesIO(fh.read()))


@pytest.mark.parametrize("name", ["Dockerfile.ncs2", "Dockerfile.jetson"])
def test_dockerfiles_append_to_pythonpath(name):
    envs = [i["value"] for i in _dockerfile(name).structure if i["instruction"] == "ENV"]
    paths = [e for e in envs if e.startswith("PYTHONPATH=")]
    assert paths, envs
    for e in paths:  # /opt/edgekit first, then whatever the base image had
        assert e == "PYTHONPATH=/opt/edgekit${PYTHONPATH:+:${PYTHONPATH}}"


def test_dockerfile_ncs2_build_check_refuses_an_openvino_without_myriad(bundle):
    """The image's build check, run as written on the pip wheel of 2022.3.1 (no MYRIAD plugin):
    it must fail; the same check for CPU passes (so it tells the two apart)."""
    runs = [i["value"] for i in _dockerfile("Dockerfile.ncs2").structure
            if i["instruction"] == "RUN" and "plugin_version" in i["value"]]
    assert len(runs) == 1
    code = runs[0].split('python3 -c "', 1)[1].rsplit('"', 1)[0]
    assert "plugin_version('MYRIAD')" in code
    r = run(bundle, script=code)
    assert r.returncode != 0 and "has no MYRIAD plugin" in r.stderr
    assert 'Device with "MYRIAD" name is not registered' in r.stderr
    r = run(bundle, script=code.replace("'MYRIAD'", "'CPU'"))
    assert r.returncode == 0 and "openvino_intel_cpu_plugin 2022.3.1" in r.stdout, r.stderr


def test_ncs2_docker_line_runs_as_the_calling_user():
    from edgekit.deploy import docker_command
    line = docker_command("ncs2", "/home/u/edgekit/abc", "/home/u/edgekit/runs", "r.json",
                          ["--device", "MYRIAD"])
    assert line.startswith('docker run --rm -u "$(id -u):$(id -g)" ')
    # what the device's shell makes of it: the uid:gid of whoever runs it
    argv = subprocess.run(["sh", "-c", "printf '%s\\n' " + line], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout.splitlines()
    assert argv[argv.index("-u") + 1] == "{}:{}".format(os.getuid(), os.getgid())
    assert "--device-cgroup-rule=c 189:* rmw" in argv and argv[-2:] == ["--device", "MYRIAD"]


# -- NCS2 hosts are x86-64 -----------------------------------------------------------------------

@pytest.mark.parametrize("machine", ["aarch64", "armv7l"])
def test_doctor_refuses_an_ncs2_host_that_is_not_x86_64(monkeypatch, machine):
    import platform
    from edgekit.doctor import check_target
    monkeypatch.setattr(platform, "machine", lambda: machine)
    rep = check_target("ncs2")
    assert not rep["ready"]
    first = rep["missing"][0]
    assert first["hardware"] and "x86_64 host" in first["what"] and machine in first["what"]
    assert "2023.1" in first["install"]


@pytest.mark.parametrize("machine,code", [("aarch64", 2), ("armv7l", 2)])
def test_device_preflight_refuses_an_ncs2_host_that_is_not_x86_64(monkeypatch, machine, code):
    import importlib.util
    import platform
    spec = importlib.util.spec_from_file_location("edgekit_remote_t",
                                                  str(REPO / "deploy" / "edgekit_remote.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    from edgekit.targets import remote_facts
    got, report = mod.preflight("ncs2", docker=True, facts=remote_facts("ncs2"))
    assert got == code
    arch = [c for c in report["checks"] if c["name"] == "arch"][0]
    assert not arch["ok"] and arch["value"] == machine and "x86-64" in arch["fix"]
    assert report["hardware"][0] == "ncs2 hosts are x86_64 (this one is {})".format(machine)


def test_setup_script_refuses_ncs2_on_arm(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "uname").write_text("#!/bin/sh\necho aarch64\n")
    (fake / "uname").chmod(0o755)
    r = subprocess.run(["sh", str(REPO / "deploy" / "setup_device.sh"), "ncs2", str(tmp_path / "v"),
                        sys.executable, "x86_64", "", "", "numpy<2"],
                       env={"PATH": "{}:/usr/bin:/bin".format(fake)},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 1 and r.stderr.startswith("error: ncs2 needs a host of type x86_64 "
                                                     "(this is aarch64)")
    assert not (tmp_path / "v").exists()


def test_fleet_example_puts_the_ncs2_on_an_x86_host():
    import tomllib
    data = tomllib.loads((REPO / "deploy" / "fleet.example.toml").read_text())
    ncs2 = [d for d in data["device"] if d.get("target") == "ncs2"]
    assert ncs2 and not any("pi" in d["host"].split("@")[0] for d in ncs2)


REBATCH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from openvino.runtime import Core, serialize
    from edgekit.runtime.openvino import OvRunner
    from edgekit.runtime.__main__ import TINY_W, TINY_B

    class StickCore(object):
        def __init__(self):
            self.real, self.available_devices, self.seen = Core(), ["CPU", "MYRIAD"], []
        def read_model(self, path):
            return self.real.read_model(path)
        def compile_model(self, model, device, config):
            self.seen.append({"device": device, "dynamic": model.is_dynamic(),
                              "shape": [str(i.get_partial_shape()) for i in model.inputs]})
            return self.real.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        def get_property(self, device, name):
            raise RuntimeError("no " + device)

    # a static batch-1 IR, as `edgekit export --target ncs2` writes (static_batch = 1)
    m = Core().read_model("edgekit/runtime/tiny.onnx")
    m.reshape({0: [1, 4]})
    serialize(m, "static1.xml", "static1.bin")
    out = {}
    for batch in (1, 8):
        core = StickCore()
        with OvRunner("static1.xml", device="MYRIAD", batch=batch, core=core) as r:
            x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
            y = list(r.infer(x).values())[0]
            out[str(batch)] = {"seen": core.seen, "input_shape": r.input_shape,
                               "reshaped": r.describe().get("reshaped"),
                               "ok": bool(np.allclose(y, x.dot(TINY_W) + TINY_B, atol=1e-4))}
    print(json.dumps(out))
""")


def test_myriad_batch_n_reshapes_a_static_ir_instead_of_refusing(bundle):
    """--batch 8 on the NCS2's static batch-1 IR: MYRIAD compiles any static batch, so the
    runner reshapes the IR to [8, ...] (checked on OpenVINO 2022.3.1) and --batch 1 leaves it."""
    r = run(bundle, script=REBATCH_SCRIPT)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["1"]["seen"] == [{"device": "MYRIAD", "dynamic": False, "shape": ["[1,4]"]}]
    assert got["1"]["reshaped"] is None and got["1"]["ok"]
    assert got["8"]["seen"] == [{"device": "MYRIAD", "dynamic": False, "shape": ["[8,4]"]}]
    assert got["8"]["input_shape"] == [8, 4] and got["8"]["ok"]
    assert got["8"]["reshaped"] == {"x": ["[1,4]", "[8,4]"]}


def _archive(tmp_path):
    """A stand-in for the OpenVINO 2022.3 archive: a bash setupvars.sh (it uses BASH_SOURCE,
    as the real one does) that puts the archive's python/ dir on PYTHONPATH."""
    ov = tmp_path / "openvino_2022"
    (ov / "python" / "python3").mkdir(parents=True)
    (ov / "python" / "python3" / "ov_archive_marker.py").write_text("WHERE = 'archive'\n")
    (ov / "setupvars.sh").write_text(
        'INTEL_OPENVINO_DIR="$( cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"\n'
        'export INTEL_OPENVINO_DIR\n'
        'export PYTHONPATH="$INTEL_OPENVINO_DIR/python/python3${PYTHONPATH:+:$PYTHONPATH}"\n'
        'echo "[setupvars.sh] OpenVINO environment initialized"\n')
    return ov


def test_openvino2022_wrapper_is_a_remote_python_with_the_archives_environment(tmp_path):
    wrapper = REPO / "deploy" / "openvino2022_python.sh"
    ov = _archive(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "INTEL_OPENVINO_DIR": str(ov), "EDGEKIT_PYTHON": ov2022_python()}
    r = subprocess.run([str(wrapper), "-", "a b"], input="import sys, ov_archive_marker, openvino."
                       "runtime as o\nprint(ov_archive_marker.WHERE, sys.argv[1:], o.get_version())",
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("archive ['a b'] 2022.3.1")   # stdout: the Python's only
    assert "OpenVINO environment initialized" in r.stderr
    r = subprocess.run([str(wrapper), "-c", "print(1)"], env=dict(env, INTEL_OPENVINO_DIR=str(
        tmp_path / "none")), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 2 and r.stderr.startswith("error: no OpenVINO 2022.3 archive at ")
    from edgekit.deploy import build_bundle  # shipped with every bundle that runs OpenVINO
    from edgekit.onnx_model import artifact_for
    from edgekit.runtime.__main__ import TINY_ONNX
    with artifact_for(TINY_ONNX) as art:
        names = dict(build_bundle(art, "ncs2", test_samples=0).entries)
        assert names["deploy/openvino2022_python.sh"] == wrapper.stat().st_size
        assert "deploy/openvino2022_python.sh" not in dict(
            build_bundle(art, "jetson-nano", test_samples=0).entries)


def test_openvino2022_wrapper_drives_the_ncs2_preflight_over_real_ssh(tmp_path, sshd):  # noqa: F811
    """The wrapper as --remote-python: the preflight runs in the archive's environment and asks
    OpenVINO 2022.3.1 for the stick (none here: exit 2 naming MYRIAD, not a missing openvino)."""
    from edgekit.deploy import deploy
    from edgekit.runtime.__main__ import TINY_ONNX
    ov = _archive(tmp_path)
    py = tmp_path / "ovpython"
    py.write_text("#!/bin/sh\nINTEL_OPENVINO_DIR={} EDGEKIT_PYTHON={} exec {} \"$@\"\n".format(
        ov, ov2022_python(), REPO / "deploy" / "openvino2022_python.sh"))
    py.chmod(0o755)
    kh = tmp_path / "kh"
    kh.write_text(sshd.known_hosts_line())
    s = deploy(TINY_ONNX, "ncs2", hosts=[sshd.host], identity=sshd.user_key, known_hosts=kh,
               remote_dir=str(tmp_path / "d"), remote_python=str(py), test_samples=0,
               log=lambda m: None)
    row = s["devices"][0]
    assert row["exit_code"] == 2 and "no MYRIAD device" in row["error"], row["error"]
    assert "openvino (" not in row["error"]  # openvino itself was found: 2022.3.1
