"""``doctor``: which packages are installed, and can this machine run a target?

Versions come from ``importlib.metadata`` (package metadata only), so the report is fast
and never imports tensorflow. A target check looks for what the target descriptor needs:

- ``laptop-cpu``: at least one of onnxruntime / openvino / LiteRT;
- ``jetson-nano``: a Jetson (``/etc/nv_tegra_release``) on an L4T release listed in
  targets/jetson-nano.toml (R32.6.1 = JetPack 4.6 / TensorRT 8.0.1, R32.7.x = JetPack 4.6.1+ /
  TensorRT 8.2.1) with TensorRT and pycuda;
- ``ncs2``: an x86-64 host (targets/ncs2.toml ``host_arch``: OpenVINO 2022.3 has no aarch64
  build) with OpenVINO 2022.3 (the last release with the MYRIAD plugin) that lists a MYRIAD
  device, i.e. a Neural Compute Stick 2 plugged in (USB vendor 03e7).

Each missing piece comes with the command that installs it. With an artifact, the target's
rules (formats, precisions, opset, ops) are checked too (:func:`edgekit.targets.check_artifact`).

Example::

    rep = doctor(target="ncs2")
    rep["target"]["ready"], [m["install"] for m in rep["target"]["missing"]]
"""
import glob
import importlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

# report name -> distribution names to try, in order (first installed wins)
PACKAGES = {
    "numpy": ["numpy"],
    "tensorflow": ["tensorflow", "tensorflow-cpu", "tensorflow-aarch64"],
    "tf_keras": ["tf-keras", "tf_keras"],
    "tfmot": ["tensorflow-model-optimization"],
    "tf2onnx": ["tf2onnx"],
    "onnx": ["onnx"],
    "onnxruntime": ["onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"],
    "openvino": ["openvino"],
    "litert": ["ai-edge-litert"],
    "tflite-runtime": ["tflite-runtime"],
    "tensorrt": ["tensorrt"],
    "pycuda": ["pycuda"],
    "nncf": ["nncf"],
    "paramiko": ["paramiko"],
    "cma": ["cma"],
    "deap": ["deap"],
    "dask": ["distributed", "dask"],
}

INSTALL = {
    "numpy": "pip install numpy",
    "tensorflow": "pip install 'edgekit[compress]'",
    "tf_keras": "pip install 'edgekit[compress]'",
    "tfmot": "pip install 'edgekit[compress]'",
    "tf2onnx": "pip install 'edgekit[compress]'",
    "onnx": "pip install onnx",
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install 'edgekit[openvino]'",
    "litert": "pip install 'edgekit[tflite]'",
    "tflite-runtime": "pip install tflite-runtime",
    "tensorrt": "on the Jetson: flash JetPack 4.6.x (4.6 has TensorRT 8.0.1, 4.6.1+ TensorRT "
                "8.2.1), then sudo apt-get install python3-libnvinfer",
    "pycuda": "on the Jetson: pip3 install pycuda (needs CUDA 10.2 from JetPack 4.6.x)",
    "nncf": "pip install 'edgekit[openvino]'",
    "paramiko": "pip install paramiko",
    "cma": "pip install 'edgekit[evolve]'",
    "deap": "pip install 'edgekit[evolve]'",
    "dask": "pip install 'edgekit[evolve]'",
}

TEGRA_RELEASE = "/etc/nv_tegra_release"
NCS2_USB_VENDOR = "03e7"  # Intel Movidius
OV_MYRIAD_RELEASE = "2022.3"
OV_MYRIAD_INSTALL = ("use OpenVINO 2022.3 LTS with the MYRIAD plugin: the "
                     "openvino/ubuntu20_runtime:2022.3.1 image (see Dockerfile.ncs2) or the "
                     "2022.3 archive; pip wheels carry no MYRIAD plugin")


def package_version(name):
    """Installed version of report name ``name`` (see :data:`PACKAGES`), or None."""
    for dist in PACKAGES.get(name, [name]):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions():
    """``{name: version or None}`` for Python and every package edgekit can use."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        out[name] = package_version(name)
    return out


def _missing(what, install, hardware=False):
    return {"what": what, "install": install, "hardware": hardware}


def _check_laptop_cpu(v):
    runtimes = [r for r in ("onnxruntime", "openvino", "litert") if v.get(r)]
    missing = [] if runtimes else [_missing("an inference runtime (onnxruntime, openvino or LiteRT)",
                                            INSTALL["onnxruntime"])]
    notes = ["runtimes available: " + (", ".join(runtimes) or "none")]
    return runtimes, missing, notes


def _check_jetson_nano(v):
    missing, notes = [], []
    if os.path.exists(TEGRA_RELEASE):
        with open(TEGRA_RELEASE) as fh:
            notes.append("L4T: " + fh.readline().strip())
        from edgekit.errors import HardwareMissing
        from edgekit.targets import l4t_release_info
        rel = _l4t_release()
        try:
            info = l4t_release_info("jetson-nano", rel)
            notes.append("{} = {} (TensorRT {})".format(rel, info["jetpack"], info["tensorrt"]))
        except HardwareMissing as exc:
            missing.append(_missing("a supported L4T release ({})".format(rel), str(exc),
                                    hardware=True))
    else:
        missing.append(_missing("a Jetson Nano ({} not found: this is not a Jetson)".format(
            TEGRA_RELEASE), "run doctor on the Nano, or deploy to it: "
                            "edgekit deploy ARTIFACT --target jetson-nano --host USER@NANO --setup",
            hardware=True))
    for pkg in ("tensorrt", "pycuda"):
        if not v.get(pkg):
            missing.append(_missing(pkg, INSTALL[pkg]))
    runtimes = ["tensorrt"] if not missing else []
    if v.get("onnxruntime"):
        notes.append("onnxruntime {} (CPU fallback runtime) is installed".format(v["onnxruntime"]))
    return runtimes, missing, notes


def _ncs2_usb_present():
    for path in glob.glob("/sys/bus/usb/devices/*/idVendor"):
        try:
            with open(path) as fh:
                if fh.read().strip().lower() == NCS2_USB_VENDOR:
                    return True
        except OSError:
            continue
    return False


def _target_fact(target, key, notes):
    """``targets/<target>.toml[key]``, or None with a note when the TOML cannot be read here
    (Python 3.10 without tomli): doctor still reports everything else."""
    from edgekit.errors import MissingDependency
    from edgekit.targets import load_target
    try:
        return load_target(target).get(key)
    except MissingDependency as exc:
        notes.append("cannot check {} {}: {}".format(target, key, exc))
        return None


def _l4t_release():
    """'R32.7.1' from /etc/nv_tegra_release (the parser the device side uses)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "deploy" / "edgekit_remote.py"
    spec = importlib.util.spec_from_file_location("edgekit_remote", str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.l4t_release(TEGRA_RELEASE)


def _check_ncs2(v):
    missing, notes = [], []
    arch = _target_fact("ncs2", "host_arch", notes) or []
    machine = platform.machine()
    if arch and machine not in arch:
        missing.append(_missing(
            "an {} host for the NCS2 (this is {})".format("/".join(arch), machine),
            "plug the stick into an x86-64 Linux PC: OpenVINO 2022.3 (the last with MYRIAD) has "
            "no {} build (pip's first aarch64 wheel is 2023.1, without MYRIAD)".format(machine),
            hardware=True))
        return [], missing, notes
    ov = v.get("openvino")
    usb = _ncs2_usb_present()
    notes.append("USB device {} (Movidius) {}".format(NCS2_USB_VENDOR, "found" if usb else "not found"))
    if not ov:
        missing.append(_missing("openvino {}".format(OV_MYRIAD_RELEASE), OV_MYRIAD_INSTALL))
    elif not ov.startswith(OV_MYRIAD_RELEASE):
        missing.append(_missing("openvino {} (installed {} has no MYRIAD plugin: it was dropped "
                                "after 2022.3 LTS)".format(OV_MYRIAD_RELEASE, ov), OV_MYRIAD_INSTALL))
    else:
        devices = _openvino_devices()
        notes.append("OpenVINO devices: " + (", ".join(devices) or "none"))
        if not any(d.startswith("MYRIAD") for d in devices):
            missing.append(_missing(
                "a MYRIAD device (Neural Compute Stick 2)",
                "plug the stick in; install the udev rules for vendor 03e7 "
                "(install_NCS_udev_rules.sh); in Docker pass "
                "--device-cgroup-rule='c 189:* rmw' -v /dev/bus/usb:/dev/bus/usb", hardware=True))
    if not usb and not any(m["hardware"] for m in missing):
        missing.append(_missing("a Neural Compute Stick 2 on USB (vendor {})".format(NCS2_USB_VENDOR),
                                "plug the stick into a USB 3 port", hardware=True))
    return (["openvino"] if not missing else []), missing, notes


def _openvino_devices():
    """Devices OpenVINO (2022.3 API) sees; imports openvino, never tensorflow."""
    try:
        from openvino.runtime import Core
        return list(Core().available_devices)
    except Exception as exc:  # a broken install: report it as "no device" with the reason
        return ["(cannot query devices: {})".format(str(exc).splitlines()[0] if str(exc) else
                                                     type(exc).__name__)]


# target name -> check(versions) -> (usable runtimes, missing [{what, install}], notes)
TARGET_CHECKS = {
    "laptop-cpu": _check_laptop_cpu,
    "jetson-nano": _check_jetson_nano,
    "ncs2": _check_ncs2,
}


def check_target(target, v=None):
    """``{"name", "ready", "runtimes", "missing", "notes"}`` for running ``target`` here."""
    from edgekit.errors import EdgekitError
    if target not in TARGET_CHECKS:
        raise EdgekitError("unknown target {!r}; choose one of: {}".format(
            target, ", ".join(sorted(TARGET_CHECKS))))
    v = v if v is not None else versions()
    runtimes, missing, notes = TARGET_CHECKS[target](v)
    return {"name": target, "ready": not missing, "runtimes": runtimes, "missing": missing,
            "notes": notes}


def doctor(target=None, artifact=None):
    """The doctor report: versions, plus the target check and artifact problems if asked.

    With ``artifact`` but no ``target`` the artifact is checked against ``laptop-cpu``.
    """
    v = versions()
    report = {"python": {"version": v["python"], "executable": sys.executable,
                         "platform": platform.platform()},
              "packages": {k: val for k, val in v.items() if k != "python"}}
    if artifact is not None and target is None:
        target = "laptop-cpu"
    if target is not None:
        report["target"] = check_target(target, v)
    if artifact is not None:
        report["artifact"] = {"path": str(artifact), "problems": artifact_problems(artifact, target)}
    return report


def artifact_problems(artifact, target):
    """What stops ``artifact`` (an artifact dir or a bare ``.onnx`` file) from running on
    ``target`` (uses edgekit.targets if present)."""
    from edgekit.onnx_model import artifact_for, is_onnx_file
    if is_onnx_file(artifact):
        with artifact_for(artifact) as art_dir:
            from edgekit.onnx_model import MODEL_FILE
            name = Path(str(artifact)).name
            return [p.replace(str(art_dir), str(artifact)).replace(MODEL_FILE + ":", name + ":")
                    for p in artifact_problems(art_dir, target)]
    from edgekit.artifact import Artifact
    art = Artifact.open(artifact)
    try:
        targets = importlib.import_module("edgekit.targets")
    except ModuleNotFoundError as exc:
        if exc.name != "edgekit.targets":
            raise
        targets = None
    if targets is not None and hasattr(targets, "check_artifact"):
        return list(targets.check_artifact(art, target))
    return [] if art.files else ["{} lists no files".format(art.path)]
