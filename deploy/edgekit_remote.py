#!/usr/bin/env python3
"""edgekit's device-side entry point (Python 3.6 syntax, standard library + the bundle).

``edgekit deploy`` feeds this file to the device's Python on stdin (``python3 - preflight``)
before anything is uploaded, runs ``unpack`` to install an uploaded bundle atomically, and
runs ``bench`` inside the installed bundle. It is shipped in every bundle as
``deploy/edgekit_remote.py`` so the same commands can be run by hand on the device.

Subcommands::

    preflight --target T [--dir D] [--min-free-mb N] [--docker]   # JSON report, exit 0/1/2
    unpack TAR --sha256 HEX --dest DIR/NAME [--cleanup UPLOAD_DIR]  # verify, safe-extract, rename
    bench --bundle DIR --json OUT [bench options]                 # edgekit.runtime bench + identity
    identity                                                      # JSON: hostname, uname, L4T, python

Exit codes: 0 ok, 1 error, 2 a missing runtime/hardware (preflight says what to install).
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tarfile
import tempfile

TEGRA_RELEASE = "/etc/nv_tegra_release"
BUNDLE_META = "bundle.json"
SUMS = "SHA256SUMS"
COMPLETE = ".edgekit-complete"


# -- identity ---------------------------------------------------------------------------------

def l4t_release(path=TEGRA_RELEASE):
    """'R32.7.1' from /etc/nv_tegra_release ('# R32 (release), REVISION: 7.1, ...'), or None."""
    try:
        with open(path) as fh:
            line = fh.readline()
    except (IOError, OSError):
        return None
    major = rev = None
    for part in line.replace("#", "").split(","):
        part = part.strip()
        if part.startswith("R") and "(release)" in part:
            major = part.split()[0]
        elif part.upper().startswith("REVISION:"):
            rev = part.split(":", 1)[1].strip()
    if major is None:
        return line.strip() or None
    return major + ("." + rev if rev else "")


def identity():
    """Who this device is: stamped into every results JSON pulled back."""
    u = platform.uname()
    tegra = None
    if os.path.exists(TEGRA_RELEASE):
        with open(TEGRA_RELEASE) as fh:
            tegra = fh.read().strip()
    return {"hostname": socket.gethostname(),
            "uname": " ".join([u[0], u[1], u[2], u[3], u[4]]),
            "machine": platform.machine(),
            "nv_tegra_release": tegra,
            "l4t": l4t_release(),
            "python": platform.python_version(),
            "python_executable": sys.executable}


# -- preflight --------------------------------------------------------------------------------

def _version(module):
    try:
        mod = __import__(module, fromlist=["__version__"])
    except Exception as exc:  # ImportError, or a broken install raising anything
        return None, "{}: {}".format(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return getattr(mod, "__version__", "unknown"), None


def _cuda_gpu():
    """(GPU name, None) when pycuda can initialise CUDA here, else (None, the reason)."""
    try:
        import pycuda.driver as cuda
        cuda.init()
        if cuda.Device.count() < 1:
            return None, "no CUDA device"
        return cuda.Device(0).name(), None
    except Exception as exc:  # ImportError (no libcuda), pycuda._driver.RuntimeError (cuInit)
        return None, "{}: {}".format(type(exc).__name__, str(exc).strip().splitlines()[0]
                                     if str(exc).strip() else "")


def _fix(what, py):
    pip = "{} -m pip install --user".format(py)
    return {
        "python": "install Python >= 3.6 (JetPack 4.6 ships 3.6), then pass --remote-python",
        "numpy": "{} 'numpy<1.20'".format(pip) if sys.version_info < (3, 7) else "{} numpy".format(pip),
        "onnxruntime": "{} onnxruntime".format(pip),
        "tensorrt": "sudo apt-get install python3-libnvinfer (JetPack 4.6 ships TensorRT 8.0.1, "
                    "JetPack 4.6.1+ TensorRT 8.2.1), or deploy with --docker",
        "pycuda": "{} pycuda (needs /usr/local/cuda/bin on PATH)".format(pip),
        "cuda": "run on the Jetson's own OS with JetPack's CUDA 10.2 (libcuda from the L4T driver); "
                "in Docker add --runtime nvidia; check `ls -l /dev/nvhost-ctrl-gpu` and that the "
                "user is in group video",
        "openvino": "OpenVINO 2022.3 with the MYRIAD plugin: deploy with --docker "
                    "(openvino/ubuntu20_runtime:2022.3.1) or install the 2022.3 archive",
        "MYRIAD": "plug in the NCS2 and add the udev rule for vendor 03e7 "
                  "(97-myriad-usbboot.rules from OpenVINO's install_dependencies), then replug",
        "docker": "install Docker (sudo apt-get install docker.io) and add the user to group docker",
        "jetson": "run on the Jetson itself",
        "disk": "free space on the device (or choose another --remote-dir)",
        "arch:ncs2": "plug the stick into an x86-64 Linux host: OpenVINO 2022.3 (the last with "
                     "MYRIAD) has no aarch64 build (pip's first aarch64 wheel is 2023.1, which "
                     "has no MYRIAD) and openvino/ubuntu20_runtime is amd64 only",
    }.get(what, "the target's host architecture")


def preflight(target, directory="~", min_free_mb=50.0, docker=False, runtime=None, device=None,
              host_arch=None):
    """(exit code, report dict). Checks are listed in ``report['checks']`` as
    {"name", "ok", "value", "fix"}; ``missing`` names what failed. ``host_arch``: the machine
    types the target runs on (targets/T.toml ``host_arch``, e.g. x86_64 for the NCS2)."""
    py = sys.executable or "python3"
    checks = []

    def add(name, ok, value, fix_key=None):
        checks.append({"name": name, "ok": bool(ok), "value": value,
                       "fix": None if ok else _fix(fix_key or name, py)})

    hardware = []
    add("python", sys.version_info >= (3, 6), platform.python_version())
    if host_arch:
        machine = platform.machine()
        ok = machine in host_arch
        add("arch", ok, machine, "arch:" + target)
        if not ok:
            hardware.append("{} hosts are {} (this one is {})".format(
                target, "/".join(host_arch), machine))
    if target == "jetson-nano":
        rel = l4t_release()
        if rel is None:
            hardware.append("not a Jetson (no {})".format(TEGRA_RELEASE))
        add("jetpack/l4t", rel is not None, rel or "not a Jetson (no {})".format(TEGRA_RELEASE),
            "jetson")
    if docker:
        add("docker", shutil.which("docker") is not None, shutil.which("docker") or "not found")
        if target == "ncs2":
            add("usb", os.path.isdir("/dev/bus/usb"), "/dev/bus/usb", "MYRIAD")
    else:
        v, err = _version("numpy")
        add("numpy", v is not None, v or err)
        runtime = runtime or {"jetson-nano": "tensorrt", "ncs2": "openvino"}.get(target, "onnxruntime")
        if runtime == "tensorrt":
            v, err = _version("tensorrt")
            add("tensorrt", v is not None, v or err)
            cv, cerr = _version("pycuda")
            if cv is None and target != "jetson-nano":  # cuda-python needs CUDA >= 11: not the Nano
                cv2, cerr2 = _version("cuda")
                add("pycuda", cv2 is not None, "cuda-python " + cv2 if cv2 else cerr)
            else:
                add("pycuda", cv is not None, cv or cerr)
            if cv is not None:
                gpu, gerr = _cuda_gpu()
                add("cuda", gpu is not None, gpu or gerr, "cuda")
                if gpu is None:
                    hardware.append("CUDA cannot start here ({})".format(gerr))
        elif runtime == "openvino":
            v, err = _version("openvino")
            ov = None
            if v is not None:
                try:
                    from openvino.runtime import Core, get_version
                    v = get_version()
                    ov = Core().available_devices
                except Exception as exc:
                    err, v = "{}: {}".format(type(exc).__name__, exc), None
            add("openvino", v is not None, v or err)
            want = device or "MYRIAD"
            if v is not None:  # MYRIAD matches MYRIAD or MYRIAD.<id> (several sticks)
                found = any(d == want or d.startswith(want + ".") for d in (ov or []))
                myriad = want.split(".")[0] == "MYRIAD"
                add("device " + want, found, ", ".join(ov or []) or "no devices",
                    "MYRIAD" if myriad else "openvino")
                if not found and myriad:
                    hardware.append("no {} device (NCS2) visible to OpenVINO".format(want))
        else:
            v, err = _version(runtime)
            add(runtime, v is not None, v or err, runtime)
    d = os.path.expanduser(directory)
    probe = d
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        free_mb = shutil.disk_usage(probe or "/").free / 1048576.0
    except OSError as exc:
        free_mb = None
        add("disk", False, str(exc))
    if free_mb is not None:
        add("disk", free_mb >= min_free_mb,
            "{:.0f} MB free in {} (need {:.0f} MB)".format(free_mb, probe, min_free_mb))
    missing = [c["name"] for c in checks if not c["ok"]]
    report = {"target": target, "docker": bool(docker), "checks": checks, "missing": missing,
              "hardware": hardware, "identity": identity(), "free_mb": free_mb}
    if hardware:
        code = 2
    elif missing:
        code = 2 if any(m not in ("disk", "python") for m in missing) else 1
    else:
        code = 0
    report["ok"] = code == 0
    return code, report


# -- unpack -----------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UnsafeBundle(Exception):
    pass


def check_member(member):
    """Refuse anything but plain files/dirs with relative paths staying inside the bundle."""
    name = member.name
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeBundle("refusing bundle member with an absolute path: {!r}".format(name))
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeBundle("refusing bundle member with '..' in its path: {!r}".format(name))
    if not (member.isfile() or member.isdir()):
        raise UnsafeBundle("refusing bundle member that is not a plain file or directory "
                           "(link/device): {!r}".format(name))


def safe_extract(tar_path, dest):
    """Extract after checking EVERY member first (nothing is written if one is unsafe)."""
    with tarfile.open(tar_path, "r:*") as tf:
        members = tf.getmembers()
        for m in members:
            check_member(m)
        for m in members:
            target = os.path.join(dest, m.name)
            if m.isdir():
                if not os.path.isdir(target):
                    os.makedirs(target)
                continue
            parent = os.path.dirname(target)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent)
            src = tf.extractfile(m)
            with open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, 0o755 if m.mode & 0o100 else 0o644)


def verify_sums(directory):
    """Check every line of SHA256SUMS; returns the number of files checked."""
    path = os.path.join(directory, SUMS)
    if not os.path.isfile(path):
        raise UnsafeBundle("bundle has no {}".format(SUMS))
    n = 0
    with open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            digest, name = line.split("  ", 1)
            p = os.path.join(directory, name)
            if not os.path.isfile(p) or sha256_file(p) != digest:
                raise UnsafeBundle("checksum mismatch for {} after upload".format(name))
            n += 1
    return n


def unpack(tar_path, sha256, dest):
    """Verify the uploaded tar, extract it next to ``dest``, check SHA256SUMS, mark it
    complete and rename it to ``dest`` (atomic: ``dest`` either is whole or absent)."""
    got = sha256_file(tar_path)
    if got != sha256:
        raise UnsafeBundle("upload corrupted: sha256 {} != expected {}".format(got, sha256))
    parent = os.path.dirname(os.path.abspath(dest))
    if os.path.isdir(dest) and os.path.exists(os.path.join(dest, COMPLETE)):
        return 0
    work = tempfile.mkdtemp(prefix=".tmp-unpack-", dir=parent)
    try:
        safe_extract(tar_path, work)
        n = verify_sums(work)
        with open(os.path.join(work, COMPLETE), "w") as fh:
            fh.write(sha256 + "\n")
        if os.path.isdir(dest):  # an incomplete leftover with this name: replace it
            shutil.rmtree(dest)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return n


# -- bench ------------------------------------------------------------------------------------

def bench(bundle_dir, json_out, argv_extra):
    """Run ``python -m edgekit.runtime bench`` (the one protocol) on the bundle's model and
    stamp the results with this device's identity and the bundle."""
    bundle_dir = os.path.abspath(bundle_dir)
    with open(os.path.join(bundle_dir, BUNDLE_META)) as fh:
        meta = json.load(fh)
    sys.path.insert(0, bundle_dir)
    from edgekit.runtime.__main__ import main as runtime_main
    args = ["bench", os.path.join(bundle_dir, meta["model"]), "--runtime", meta["runtime"],
            "--target", meta["target"], "--json", json_out]
    if meta.get("npz"):
        args += ["--npz", os.path.join(bundle_dir, meta["npz"])]
    args += list(argv_extra)
    if meta["runtime"] == "openvino" and "--device" not in args and meta.get("device"):
        args += ["--device", meta["device"]]  # the target's device (MYRIAD for ncs2): no fallback
    print("bench: {} on {} with {} ({} test samples)".format(
        meta["model"], meta["target"], meta["runtime"], meta.get("test_samples", 0)))
    sys.stdout.flush()
    code = runtime_main(args)
    if code:
        return code
    with open(json_out) as fh:
        res = json.load(fh)
    res["device_identity"] = identity()
    res["bundle"] = {"sha256": meta.get("sha256"), "artifact": meta.get("artifact"),
                     "method": meta.get("method"), "file": meta["model"],
                     "test_samples": meta.get("test_samples")}
    res["file"] = meta["model"]
    res["method"] = meta.get("method")
    res["format"] = meta.get("format")
    res["bytes"] = meta.get("bytes")
    if res.get("accuracy") is not None:
        res["test_samples"] = meta.get("test_samples")
    tmp = json_out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=2)
        fh.write("\n")
    os.rename(tmp, json_out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="edgekit_remote.py", description="edgekit device side")
    sub = p.add_subparsers(dest="command")
    pf = sub.add_parser("preflight")
    pf.add_argument("--target", required=True)
    pf.add_argument("--dir", default="~")
    pf.add_argument("--min-free-mb", type=float, default=50.0)
    pf.add_argument("--docker", action="store_true")
    pf.add_argument("--runtime")
    pf.add_argument("--device")
    pf.add_argument("--host-arch", help="comma-separated machine types, e.g. x86_64")
    up = sub.add_parser("unpack")
    up.add_argument("tar")
    up.add_argument("--sha256", required=True)
    up.add_argument("--dest", required=True)
    up.add_argument("--cleanup", help="remove this upload dir afterwards (success or not)")
    b = sub.add_parser("bench")
    b.add_argument("--bundle", required=True)
    b.add_argument("--json", required=True)
    sub.add_parser("identity")
    args, extra = p.parse_known_args(argv)
    if args.command == "preflight":
        code, report = preflight(args.target, args.dir, args.min_free_mb, args.docker,
                                 args.runtime, args.device,
                                 args.host_arch.split(",") if args.host_arch else None)
        print("EDGEKIT-PREFLIGHT " + json.dumps(report))
        return code
    if args.command == "unpack":
        try:
            n = unpack(args.tar, args.sha256, args.dest)
        except UnsafeBundle as exc:
            sys.stderr.write("error: {}\n".format(exc))
            return 1
        finally:
            if args.cleanup:
                shutil.rmtree(args.cleanup, ignore_errors=True)
        print("unpacked {} files into {}".format(n, args.dest))
        return 0
    if args.command == "bench":
        return bench(args.bundle, args.json, extra)
    if args.command == "identity":
        print(json.dumps(identity()))
        return 0
    p.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
