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
    identity                                     # JSON: hostname, uname, board, L4T, state, python
    doctor [--bundle DIR] [--docker]             # the device's first check: preflight + selftest

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
# Every fact about the board is read from a file (or a command on PATH), so a test can make
# them true elsewhere: with EDGEKIT_FACTS_ROOT=DIR set, an absolute path /x/y is read as DIR/x/y
# (e.g. DIR/proc/device-tree/model, DIR/etc/nv_tegra_release). Unset on a real board.
FACTS_ROOT_ENV = "EDGEKIT_FACTS_ROOT"
DT_MODEL = "/proc/device-tree/model"
CPUFREQ = "/sys/devices/system/cpu"
GPU_DEVFREQ = "/sys/devices/gpu.0/devfreq"      # the Nano's GPU (57000000.gpu) under L4T r32
USB_DEVICES = "/sys/bus/usb/devices"
NCS2_VENDOR = "03e7"                             # Intel Movidius (the NCS2, both USB ids)
JETSON_MAXN = "MAXN"                             # nvpmodel mode 0 on the Nano (10 W)


def host_path(path):
    """``path`` on this board, or under $EDGEKIT_FACTS_ROOT when that is set (tests)."""
    root = os.environ.get(FACTS_ROOT_ENV)
    if root and os.path.isabs(path):
        return os.path.join(root, path.lstrip("/"))
    return path


def l4t_release(path=None):
    """'R32.7.1' from /etc/nv_tegra_release ('# R32 (release), REVISION: 7.1, ...'), or None."""
    try:
        with open(path or host_path(TEGRA_RELEASE)) as fh:
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


def l4t_board(text):
    """'t210ref' from the BOARD field of /etc/nv_tegra_release's first line (the Nano and the TX1
    say t210ref, TX2 / Xavier t186ref, Orin t234ref), or None."""
    first = (text or "").splitlines()[:1]
    for part in (first[0] if first else "").split(","):
        part = part.strip()
        if part.upper().startswith("BOARD:"):
            return part.split(":", 1)[1].strip() or None
    return None


def _run_cmd(argv, timeout=10):
    """(exit code, stdout) of a command on PATH; (None, reason) when it cannot run."""
    import subprocess
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    except (IOError, OSError) as exc:
        return None, "{}: {}".format(argv[0], exc.strerror or exc)
    try:
        out, _ = p.communicate(timeout=timeout)
    except Exception:  # subprocess.TimeoutExpired
        p.kill()
        p.communicate()
        return None, "{} timed out".format(argv[0])
    return p.returncode, out


def _read_int(path):
    text = _read_marker(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def userland():
    """The userland's word size: this Python's pointer size and, on Debian-based systems,
    ``dpkg --print-architecture`` (armhf on a 64-bit kernel = 32-bit Raspberry Pi OS)."""
    import struct
    code, out = _run_cmd(["dpkg", "--print-architecture"])
    return {"python_bits": struct.calcsize("P") * 8,
            "dpkg_arch": out.strip() if code == 0 and out.strip() else None}


USERLAND_32 = ("armhf", "armel", "i386")


def userland_problem(machine, info=None):
    """Why a 64-bit kernel (aarch64 / x86_64) runs a 32-bit userland here, or None: the wheels
    for ``machine`` (onnxruntime, ai-edge-litert, OpenVINO) would not install."""
    if machine not in ("aarch64", "x86_64", "arm64", "amd64"):
        return None
    info = info or userland()
    why = []
    if info.get("dpkg_arch") in USERLAND_32:
        why.append("dpkg {}".format(info["dpkg_arch"]))
    if info.get("python_bits") and info["python_bits"] < 64:
        why.append("{}-bit Python".format(info["python_bits"]))
    return "{} kernel with a 32-bit userland ({})".format(machine, ", ".join(why)) if why else None


def jetson_state():
    """The Jetson's power mode (``nvpmodel -q``) and whether its clocks are locked at the maximum
    (what ``sudo jetson_clocks`` does: every online CPU's scaling_min_freq = scaling_max_freq and
    the GPU devfreq min_freq = max_freq; read from sysfs, no root needed)."""
    code, out = _run_cmd(["nvpmodel", "-q"])
    mode = None
    if code == 0:
        for line in out.splitlines():
            if "Power Mode" in line and ":" in line:
                mode = line.split(":", 1)[1].strip()
                break
    cpus = []
    import glob
    for d in sorted(glob.glob(host_path(CPUFREQ) + "/cpu[0-9]*/cpufreq")):
        lo, hi = _read_int(d + "/scaling_min_freq"), _read_int(d + "/scaling_max_freq")
        if lo is not None and hi is not None:
            cpus.append((lo, hi))
    gpus = []
    for d in sorted(glob.glob(host_path(GPU_DEVFREQ) + "/*")):
        lo, hi = _read_int(d + "/min_freq"), _read_int(d + "/max_freq")
        if lo is not None and hi is not None:
            gpus.append((lo, hi))
    locked = None
    if cpus and gpus:
        locked = all(lo == hi for lo, hi in cpus + gpus)
    return {"power_mode": mode,
            "power_mode_source": "nvpmodel -q" if code == 0 else (out if code is None else
                                                                  "nvpmodel -q exit {}".format(code)),
            "clocks_locked": locked,
            "cpu_khz_min_max": [list(c) for c in cpus], "gpu_hz_min_max": [list(g) for g in gpus]}


def pi_state():
    """The Pi's throttling (``vcgencmd get_throttled``: bits 0-3 now, 16-19 since boot) and its
    CPU frequency governor (cpufreq ``scaling_governor``)."""
    code, out = _run_cmd(["vcgencmd", "get_throttled"])
    throttled = None
    if code == 0 and "=" in out:
        try:
            throttled = int(out.strip().split("=", 1)[1], 16)
        except ValueError:
            throttled = None
    return {"throttled": None if throttled is None else hex(throttled),
            "governor": _read_marker(host_path(CPUFREQ) + "/cpu0/cpufreq/scaling_governor")}


def ncs2_usb():
    """Every NCS2 on USB (vendor 03e7): product id and link speed in Mbit/s (5000 = USB 3,
    480 = USB 2, where the stick is slower)."""
    import glob
    out = []
    for d in sorted(glob.glob(host_path(USB_DEVICES) + "/*")):
        if (_read_marker(d + "/idVendor") or "").lower() != NCS2_VENDOR:
            continue
        speed = _read_marker(d + "/speed")
        try:
            speed = float(speed) if speed else None
        except ValueError:
            speed = None
        out.append({"usb": os.path.basename(d), "product": _read_marker(d + "/idProduct"),
                    "speed_mbps": speed})
    return out


def board_state(model=None, tegra=None):
    """What changes a measurement on the same board: the Jetson's power mode and clocks, the
    Pi's throttling and governor, each NCS2's USB link speed (only what this board has)."""
    state = {}
    if tegra:
        state["jetson"] = jetson_state()
    if model and "Raspberry Pi" in model:
        state["pi"] = pi_state()
    sticks = ncs2_usb()
    if sticks:
        state["ncs2_usb"] = sticks
    return state


def board_warnings(ident):
    """Why a result from a board in this state should not be compared with the headline
    figures (a list of one-line strings): a Jetson not in MAXN or without locked clocks, a Pi
    throttled now or since boot, an NCS2 on a USB 2 link. Used on the device and by the host
    (``--docker`` results get the board's identity from outside the container)."""
    state = (ident or {}).get("board_state") or {}
    out = []
    j = state.get("jetson")
    if j is not None:
        if j.get("power_mode") != JETSON_MAXN:
            out.append("Jetson power mode is {}, not MAXN: run `sudo nvpmodel -m 0`".format(
                j.get("power_mode") or "unknown ({})".format(j.get("power_mode_source"))))
        if j.get("clocks_locked") is not True:
            out.append("Jetson clocks are {}: run `sudo jetson_clocks` before benchmarking".format(
                "not locked" if j.get("clocks_locked") is False else "unknown (no cpufreq/devfreq)"))
    p = state.get("pi")
    if p is not None:
        t = int(p["throttled"], 16) if p.get("throttled") else None
        if t is None:
            out.append("Raspberry Pi throttling unknown (`vcgencmd get_throttled` did not answer)")
        elif t & 0xF:
            out.append("Raspberry Pi is throttled now (get_throttled={}: under-voltage, capped "
                       "or hot): fix the power supply / cooling".format(p["throttled"]))
        elif t & 0xF0000:
            out.append("Raspberry Pi was throttled since boot (get_throttled={}): the run may "
                       "have been slowed".format(p["throttled"]))
    for s in state.get("ncs2_usb") or []:
        if s.get("speed_mbps") is not None and s["speed_mbps"] < 5000:
            out.append("NCS2 {} is on a USB 2 link ({:g} Mbit/s): plug it into a USB 3 port".format(
                s["usb"], s["speed_mbps"]))
    return out


def identity():
    """Who this device is and its state: stamped into every results JSON pulled back."""
    u = platform.uname()
    tegra = _read_marker(host_path(TEGRA_RELEASE))
    model = _read_marker(host_path(DT_MODEL))
    container = any(os.path.exists(host_path(p)) for p in ("/.dockerenv", "/run/.containerenv"))
    return {"hostname": socket.gethostname(),
            "container": container,
            "uname": " ".join([u[0], u[1], u[2], u[3], u[4]]),
            "machine": platform.machine(),
            "userland": userland(),
            "board_model": model,
            "nv_tegra_release": tegra,
            "l4t": l4t_release(),
            "l4t_board": l4t_board(tegra),
            "board_state": {} if container else board_state(model, tegra),
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


# runtime name -> the modules that provide it (first importable wins)
RUNTIME_MODULES = {"onnxruntime": ["onnxruntime"], "openvino": ["openvino"],
                   "litert": ["ai_edge_litert", "tflite_runtime"], "tensorrt": ["tensorrt"]}


def _fix(what, py, facts=None):
    """What to do about a failed check: the target's own hint (targets/T.toml ``[install]``,
    shipped as ``facts``) first, then generic ones."""
    hints = (facts or {}).get("install") or {}
    if what in hints:
        return hints[what]
    if what == "openvino" and "remote_openvino" in hints:
        return hints["remote_openvino"]
    pip = "{} -m pip install --user".format(py)
    return {
        "python": "install Python >= 3.6, then pass --remote-python",
        "numpy": "{} 'numpy<1.20'".format(pip) if sys.version_info < (3, 7) else "{} numpy".format(pip),
        "onnxruntime": "{} onnxruntime".format(pip),
        "litert": "{} ai-edge-litert".format(pip),
        "openvino": "{} openvino".format(pip),
        "tensorrt": "install the vendor's TensorRT Python bindings (python3-libnvinfer), "
                    "or deploy with --docker",
        "pycuda": "{} pycuda (needs /usr/local/cuda/bin on PATH)".format(pip),
        "cuda": "run on the device's own OS with its CUDA driver; in Docker add --runtime nvidia; "
                "check `ls -l /dev/nvhost-ctrl-gpu` and that the user is in group video",
        "device": "attach the device and check its udev rules, then replug",
        "docker": "install Docker (sudo apt-get install docker.io) and add the user to group docker",
        "docker_runtime": "install the NVIDIA container runtime (JetPack's nvidia-docker2 / "
                          "nvidia-container-runtime) so `docker info` lists it, then restart docker",
        "disk": "free space on the device (or choose another --remote-dir)",
    }.get(what, "the target's host architecture" if what == "arch" else "see targets/T.toml")


def usb_vendor_present(vendor):
    """True when a USB device of ``vendor`` (hex id, e.g. '03e7') is attached (sysfs)."""
    import glob
    for path in glob.glob(host_path(USB_DEVICES) + "/*/idVendor"):
        try:
            with open(path) as fh:
                if fh.read().strip().lower() == vendor.lower():
                    return True
        except (IOError, OSError):
            continue
    return False


def _read_marker(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode("utf-8", "replace").replace("\x00", "").strip()
    except (IOError, OSError):
        return None


def hardware_checks(facts, usb=True):
    """Can this machine be the target's hardware? One check per fact of targets/T.toml, in
    order: ``host_arch`` (machine type, and a 64-bit userland on a 64-bit kernel),
    ``[hardware] marker_file`` (+ ``marker_text``: text, or a list of texts one of which the
    file must contain: the board's model), ``l4t_board`` (the BOARD of /etc/nv_tegra_release),
    ``usb_vendor`` (a USB device that must be attached). Each check is
    {"name", "ok", "value", "what", "fix"}; ``fix`` comes from the target's ``[install]``.
    Used by the device preflight and, loaded from this same file, by the host's doctor/bench.
    Files are read under $EDGEKIT_FACTS_ROOT when set (:func:`host_path`).

    Example: ``hardware_checks({"name": "stick", "host_arch": ["x86_64"]})[0]["ok"]``."""
    py = sys.executable or "python3"
    name = facts.get("name", "this target")
    out = []

    def add(check, ok, value, what, fix_key):
        out.append({"name": check, "ok": bool(ok), "value": value, "what": what,
                    "fix": None if ok else _fix(fix_key, py, facts)})
    arch = facts.get("host_arch") or []
    if arch:
        machine = platform.machine()
        bad_userland = userland_problem(machine) if machine in arch else None
        shown = bad_userland or machine
        add("arch", machine in arch and not bad_userland, shown,
            "an {} host for {} (this is {})".format("/".join(arch), name, shown), "arch")
    marker = facts.get("marker_file")
    if marker:
        text = _read_marker(host_path(marker))
        want = facts.get("marker_text")
        wants = [want] if isinstance(want, str) else list(want or [])
        ok = text is not None and (not wants or any(w in text for w in wants))
        not_here = facts.get("not_here") or "not " + name
        why = "no {}".format(marker) if text is None else "{} says {!r}".format(marker, text[:60])
        value = (text.splitlines() or [""])[0] if ok else "{} ({})".format(not_here, why)
        add("hardware", ok, value, "{} ({})".format(
            facts.get("what") or name, marker if ok else "{}: {}".format(not_here, why)),
            "hardware")
    board = facts.get("l4t_board")
    if board and (not out or out[-1]["ok"]):
        text = _read_marker(host_path(TEGRA_RELEASE))
        got = l4t_board(text)
        ok = got == board
        value = "BOARD {}".format(got) if ok else "{} ({} says BOARD {}, not {})".format(
            facts.get("not_here") or "not " + name, TEGRA_RELEASE,
            got or "nothing" if text is not None else "(missing)", board)
        add("board", ok, value, "{} ({} BOARD {})".format(facts.get("what") or name,
                                                        TEGRA_RELEASE, board), "hardware")
    vendor = facts.get("usb_vendor")
    if vendor and usb:
        ok = usb_vendor_present(vendor)
        add("usb", ok, "USB vendor {} {}".format(vendor, "found" if ok else "not found"),
            "{} on USB (vendor {})".format(facts.get("what") or name, vendor), "hardware")
    return out


def _runtime_version(runtime):
    mods = RUNTIME_MODULES.get(runtime, [runtime])
    err = None
    for m in mods:
        v, err = _version(m)
        if v is not None:
            return v, None
    return None, err


def preflight(target, directory="~", min_free_mb=50.0, docker=False, runtime=None, device=None,
              host_arch=None, facts=None):
    """(exit code, report dict). Checks are listed in ``report['checks']`` as
    {"name", "ok", "value", "fix"}; ``missing`` names what failed. ``facts``: the target's
    facts from targets/T.toml (host arch, hardware marker, runtimes, device, install hints),
    passed by the host as JSON (this file runs without the TOML and without tomllib)."""
    facts = dict(facts or {})
    facts.setdefault("name", target)
    if host_arch is not None:
        facts["host_arch"] = host_arch
    py = sys.executable or "python3"
    checks = []

    def add(name, ok, value, fix_key=None):
        checks.append({"name": name, "ok": bool(ok), "value": value,
                       "fix": None if ok else _fix(fix_key or name, py, facts)})

    hardware = []
    add("python", sys.version_info >= (3, 6), platform.python_version())
    for c in hardware_checks(facts, usb=False):
        checks.append({k: c[k] for k in ("name", "ok", "value", "fix")})
        if not c["ok"]:
            hardware.append("{} hosts are {} (this one is {})".format(
                target, "/".join(facts["host_arch"]), c["value"]) if c["name"] == "arch"
                else c["value"])
    if docker:
        docker_bin = shutil.which("docker")
        add("docker", docker_bin is not None, docker_bin or "not found")
        want_rt = facts.get("docker_runtime")
        if want_rt and docker_bin:  # e.g. nvidia: L4T r32 mounts CUDA/TensorRT through it
            rc, out = _run_cmd([docker_bin, "info", "--format", "{{json .Runtimes}}"], timeout=60)
            try:
                runtimes = sorted(json.loads(out)) if rc == 0 else []
            except ValueError:
                runtimes = []
            add("docker runtime " + want_rt, want_rt in runtimes,
                ", ".join(runtimes) or "docker info: {}".format(
                    (out or "exit {}".format(rc)).strip().splitlines()[-1:] or ""),
                "docker_runtime")
        trt_dir = facts.get("trt_python_dir")
        if trt_dir:  # mounted read-only into the container: must exist on the host
            add("tensorrt bindings", os.path.isdir(host_path(trt_dir)), trt_dir, "tensorrt")
        if facts.get("usb_vendor"):
            add("usb", os.path.isdir(host_path("/dev/bus/usb")), "/dev/bus/usb", "device")
    else:
        v, err = _version("numpy")
        add("numpy", v is not None, v or err)
        runtime = runtime or (facts.get("runtimes") or ["onnxruntime"])[0]
        if runtime == "tensorrt":
            v, err = _version("tensorrt")
            add("tensorrt", v is not None, v or err)
            bindings = facts.get("cuda_bindings") or ["pycuda", "cuda"]
            cv, cerr = _version("pycuda")
            if cv is None and "cuda" in bindings:  # cuda-python: CUDA >= 11 only
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
            want = device or facts.get("device") or "CPU"
            if v is not None:  # a device matches itself or <device>.<id> (several of them)
                found = any(d == want or d.startswith(want + ".") for d in (ov or []))
                special = want.split(".")[0] not in ("CPU", "GPU", "AUTO")
                add("device " + want, found, ", ".join(ov or []) or "no devices",
                    "device" if special else "openvino")
                if not found and special:
                    hardware.append("no {} device ({}) visible to OpenVINO".format(
                        want, facts.get("what") or target))
        else:
            v, err = _runtime_version(runtime)
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
        args += ["--device", meta["device"]]  # the target's device (targets/T.toml): no fallback
    print("bench: {} on {} with {} ({} test samples)".format(
        meta["model"], meta["target"], meta["runtime"], meta.get("test_samples", 0)))
    sys.stdout.flush()
    code = runtime_main(args)
    if code:
        return code
    with open(json_out) as fh:
        res = json.load(fh)
    ident = identity()
    res["device_identity"] = ident
    if ident.get("container"):  # --docker: deploy stamps the board's identity from the host
        res["warnings"] = list(res.get("warnings") or [])
    else:
        res["warnings"] = list(res.get("warnings") or []) + board_warnings(ident)
    for w in res["warnings"]:
        sys.stderr.write("warning: {}\n".format(w))
    res["bundle"] = {"sha256": meta.get("sha256"), "artifact": meta.get("artifact"),
                     "method": meta.get("method"), "file": meta["model"],
                     "test_samples": meta.get("test_samples")}
    res["file"] = meta["model"]
    res["method"] = meta.get("method")
    res["format"] = meta.get("format")
    res["bytes"] = meta.get("bytes")
    res["model_sha256"] = meta.get("model_sha256")
    if res.get("accuracy") is not None:
        res["test_samples"] = meta.get("test_samples")
    tmp = json_out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=2)
        fh.write("\n")
    os.rename(tmp, json_out)
    return 0


def doctor(bundle_dir, docker=False, out=None):
    """The device's own first check, run where ``edgekit doctor`` cannot (a Nano's Python 3.6):
    the target's preflight from the facts shipped in bundle.json (board model, L4T, packages,
    CUDA), the board's state and its warnings, then ``python -m edgekit.runtime selftest`` of
    the bundle's runtime (a tiny model checked against numpy). Exit 0 only when all pass."""
    out = out or sys.stdout
    bundle_dir = os.path.abspath(bundle_dir)
    with open(os.path.join(bundle_dir, BUNDLE_META)) as fh:
        meta = json.load(fh)
    code, report = preflight(meta["target"], bundle_dir, 1.0, docker, meta["runtime"],
                             meta.get("device"), facts=meta.get("facts"))
    out.write("edgekit device doctor: target {}, runtime {}\n".format(meta["target"],
                                                                    meta["runtime"]))
    for c in report["checks"]:
        out.write("  {:<8} {:<18} {}{}\n".format("ok" if c["ok"] else "MISSING", c["name"],
                                                 c["value"], "" if c["ok"] else
                                                 "  -> " + str(c["fix"])))
    ident = report["identity"]
    out.write("  board    {} (L4T {}, BOARD {}); state {}\n".format(
        ident.get("board_model") or "no device-tree model", ident.get("l4t") or "-",
        ident.get("l4t_board") or "-", json.dumps(ident.get("board_state") or {},
                                                  sort_keys=True)))
    for w in board_warnings(ident):
        out.write("  warning  {}\n".format(w))
    if code == 0 and not docker:
        sys.path.insert(0, bundle_dir)
        from edgekit.runtime.__main__ import selftest
        device = meta.get("device") if meta["runtime"] == "openvino" else None
        code, _ = selftest([meta["runtime"]], device=device, out=out)
    out.write("doctor: {}\n".format("ok" if code == 0 else "NOT READY (exit {})".format(code)))
    return code


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
    pf.add_argument("--facts", help="the target's facts (JSON, from targets/T.toml)")
    up = sub.add_parser("unpack")
    up.add_argument("tar")
    up.add_argument("--sha256", required=True)
    up.add_argument("--dest", required=True)
    up.add_argument("--cleanup", help="remove this upload dir afterwards (success or not)")
    b = sub.add_parser("bench")
    b.add_argument("--bundle", required=True)
    b.add_argument("--json", required=True)
    sub.add_parser("identity")
    dr = sub.add_parser("doctor", help="this device's first check, from an installed bundle")
    dr.add_argument("--bundle", default=".")
    dr.add_argument("--docker", action="store_true", help="the board side of a --docker run")
    args, extra = p.parse_known_args(argv)
    if args.command == "preflight":
        code, report = preflight(args.target, args.dir, args.min_free_mb, args.docker,
                                 args.runtime, args.device,
                                 args.host_arch.split(",") if args.host_arch else None,
                                 json.loads(args.facts) if args.facts else None)
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
    if args.command == "doctor":
        return doctor(args.bundle, args.docker)
    if args.command == "identity":
        print(json.dumps(identity()))
        return 0
    p.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
