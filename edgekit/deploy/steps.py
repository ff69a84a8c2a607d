"""The steps run on a device over one :class:`~edgekit.deploy.ssh.Remote`: ``--setup`` (the
target's venv), the preflight, the atomic upload of a bundle, ``docker build``/``run`` lines
from the target's ``[docker]`` table, and the remote bench whose results come back.

Example::

    report = preflight(remote, target_name, python="python3")   # a targets/*.toml name
    dest, sent = upload(remote, bundle)
"""
import json
import os
import posixpath
import time

from edgekit import __version__
from edgekit.errors import EdgekitError, HardwareMissing, MissingDependency
from edgekit.deploy.bundle import REMOTE_SCRIPT, SETUP_SCRIPT, _docker
from edgekit.deploy.ssh import _q


DEFAULT_REMOTE_DIR = "~/edgekit"
COMPLETE = ".edgekit-complete"



def remote_python_cmd(remote, python):
    """The remote Python, with ``~/`` expanded to the remote home (quoted for the shell)."""
    return _q(remote.abspath(python)) if python.startswith("~") else _q(python)


def preflight(remote, target, python="python3", remote_dir=DEFAULT_REMOTE_DIR, min_free_mb=50.0,
              docker=False, runtime=None, device=None, timeout=60.0):
    """Run the device checks; returns the report, raises with what is missing and the fix."""
    args = ["preflight", "--target", target, "--dir", remote.abspath(remote_dir),
            "--min-free-mb", str(float(min_free_mb))]
    if docker:
        args.append("--docker")
    if runtime:
        args += ["--runtime", runtime]
    if device:
        args += ["--device", device]
    from edgekit.targets import remote_facts
    # the target's facts (targets/T.toml) as JSON: the device has neither the TOML nor tomllib
    args += ["--facts", json.dumps(remote_facts(target), sort_keys=True)]
    cmd = "{} - {}".format(remote_python_cmd(remote, python), " ".join(_q(a) for a in args))
    code, out, err = remote.run(cmd, timeout=timeout, stdin=REMOTE_SCRIPT.read_bytes())
    line = [ln for ln in out.splitlines() if ln.startswith("EDGEKIT-PREFLIGHT ")]
    if not line:
        detail = (err.strip().splitlines() or ["exit code {}".format(code)])[-1]
        if code == 127 or "not found" in err:
            raise MissingDependency("{}: remote Python {!r} not found: install python3 on the device "
                                    "or pass --remote-python PATH".format(remote.host.hostname, python))
        raise EdgekitError("{}: preflight failed: {}".format(remote.host.hostname, detail))
    report = json.loads(line[-1][len("EDGEKIT-PREFLIGHT "):])
    if code:
        bad = [c for c in report["checks"] if not c["ok"]]
        what = "; ".join("{} ({}){}".format(c["name"], c["value"], " -> fix: " + c["fix"] if c["fix"]
                                            else "") for c in bad)
        if report.get("hardware"):
            msg = "{}: {}; {}".format(remote.host.hostname, "; ".join(report["hardware"]), what)
            raise HardwareMissing(msg)
        cls = MissingDependency if code == 2 else EdgekitError
        raise cls("{}: preflight: missing {}".format(remote.host.hostname, what))
    return report


def _stale_tmp_dirs(remote, base, stale_after, python):
    """``.tmp-*`` dirs in ``base`` older than ``stale_after`` s (leftovers of dropped uploads)."""
    now = time.time()
    if remote.sftp is not None:
        try:
            attrs = remote.sftp.listdir_attr(base)
        except IOError:
            return []
        return [a.filename for a in attrs
                if a.filename.startswith(".tmp-") and now - (a.st_mtime or 0) >= stale_after]
    code, out, _ = remote.run(
        "{} -c {}".format(remote_python_cmd(remote, python), _q(
            "import os,sys,time\nb=sys.argv[1]\nfor n in os.listdir(b):\n"
            " p=os.path.join(b,n)\n"
            " if n.startswith('.tmp-') and time.time()-os.lstat(p).st_mtime>={}: print(n)"
            .format(float(stale_after)))) + " " + _q(base), timeout=60)
    return out.split() if code == 0 else []


def _rm_tree(remote, path):
    code, _, err = remote.run("rm -rf -- {}".format(_q(path)), timeout=60)
    if code:
        raise EdgekitError("cannot remove {} on {}: {}".format(path, remote.host.hostname, err.strip()))


def _sftp_makedirs(remote, path):
    """``mkdir -p`` on the device (SFTP or exec)."""
    remote.makedirs(path)


def upload(remote, bundle, remote_dir=DEFAULT_REMOTE_DIR, python="python3", stale_after=3600.0,
           timeout=600.0, progress=None):
    """Install ``bundle`` at ``REMOTE/<sha>`` atomically; returns (path, bytes sent)."""
    base = remote.abspath(remote_dir)
    dest = posixpath.join(base, bundle.short)
    if remote.exists(posixpath.join(dest, COMPLETE)):
        return dest, 0  # already there, verified when it was installed
    remote.makedirs(base)
    for name in _stale_tmp_dirs(remote, base, stale_after, python):
        _rm_tree(remote, posixpath.join(base, name))
    tmp = posixpath.join(base, ".tmp-{}-{}".format(bundle.short[:8], os.urandom(4).hex()))
    remote.makedirs(tmp)
    tar = posixpath.join(tmp, "bundle.tar")
    try:
        remote.put(bundle.data, tar, progress=progress, timeout=timeout)
    except (OSError, EOFError) as exc:
        raise EdgekitError("connection to {} lost during upload ({}): nothing was installed; "
                           "re-run to resume".format(remote.host.hostname,
                                                     str(exc) or type(exc).__name__)) from None
    except Exception as exc:  # paramiko.SSHException when the transport drops
        if type(exc).__module__.startswith("paramiko"):
            raise EdgekitError("connection to {} lost during upload ({}): nothing was installed; "
                               "re-run to resume".format(remote.host.hostname, exc)) from None
        raise
    cmd = "{} -S - unpack {} --sha256 {} --dest {} --cleanup {}".format(
        remote_python_cmd(remote, python), _q(tar), bundle.sha256, _q(dest), _q(tmp))
    code, out, err = remote.run(cmd, timeout=timeout, stdin=REMOTE_SCRIPT.read_bytes())
    if code:
        raise EdgekitError("{}: bundle refused on the device: {}".format(
            remote.host.hostname, (err.strip().splitlines() or ["exit {}".format(code)])[-1]))
    return dest, bundle.size


def docker_image(target, l4t=None):
    """The image tag for ``target`` (``[docker] image`` + the edgekit version). A target with an
    ``[l4t]`` table names the L4T base it was built on (``edgekit/jetson:0.1.0-r32.7.1``, from
    the device's ``l4t``): an r32.7.1 image does not run on R32.6.1, so a reflashed board
    needs ``--setup`` again instead of running an image made for another JetPack."""
    from edgekit.targets import as_target, l4t_release_info
    tag = "{}:{}".format(_docker(target)["image"], __version__)
    if as_target(target).get("l4t") and l4t:
        return "{}-{}".format(tag, l4t_release_info(target, l4t)["base_image"].rsplit(":", 1)[1])
    return tag


def docker_command(target, bundle_dir, runs_dir, json_name, bench_args=(), l4t=None):
    """The ``docker run`` line that benches the bundle inside the target's image.

    The flags are the target's ``[docker] run_flags`` ({home}: the parent of runs/, plus any
    key of the target such as {trt_python_dir}) and ``shell_flags``, left unquoted on
    purpose so the device's shell expands them (e.g. ``-u "$(id -u):$(id -g)"``: results
    written to runs/ belong to the SSH user)."""
    from edgekit.targets import as_target
    t = as_target(target)
    dk = _docker(t)
    image = docker_image(target, l4t)
    fill = {k: v for k, v in t.items() if isinstance(v, str)}
    fill["home"] = posixpath.dirname(runs_dir)
    cmd = ["docker", "run", "--rm"] + [f.format(**fill) for f in dk.get("run_flags", [])]
    cmd += ["-v", "{}:/bundle:ro".format(bundle_dir), "-v", "{}:/runs".format(runs_dir),
            "-w", "/bundle", image, "python3", "deploy/edgekit_remote.py", "bench",
            "--bundle", "/bundle", "--json", "/runs/" + json_name]
    cmd += list(bench_args)
    line = " ".join(_q(c) for c in cmd)
    if dk.get("shell_flags"):  # unquoted on purpose: the device's shell expands it
        line = line.replace("docker run --rm", "docker run --rm " + dk["shell_flags"], 1)
    return line


def docker_build_command(target, bundle_dir, l4t=None):
    """``docker build`` of the target's image from the Dockerfile shipped in the bundle.
    With an ``[l4t]`` table the base image follows the device's L4T release (``l4t``, from
    the preflight): an r32.7.1 base runs on R32.7.x only."""
    from edgekit.targets import as_target, l4t_release_info
    cmd = "docker build -t {} -f {}".format(
        _q(docker_image(target, l4t)), _q(posixpath.join(bundle_dir, _docker(target)["dockerfile"])))
    if as_target(target).get("l4t") and l4t:
        cmd += " --build-arg L4T_BASE={}".format(_q(l4t_release_info(target, l4t)["base_image"]))
    return cmd + " " + _q(bundle_dir)


DAEMON_JSON_FIX = ('set "default-runtime": "nvidia" in /etc/docker/daemon.json ({"runtimes": '
                   '{"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}, '
                   '"default-runtime": "nvidia"}), then sudo systemctl restart docker')


def check_docker_default_runtime(remote, docker="docker", want="nvidia"):
    """On L4T r32 ``docker build`` sees CUDA (which pycuda compiles against) only when the
    daemon's default runtime is nvidia (``[docker] default_runtime``): refuse before
    building otherwise (exit 2)."""
    code, out, err = remote.run("{} info --format '{{{{.DefaultRuntime}}}}'".format(_q(docker)),
                                timeout=60)
    got = out.strip()
    if code or got != want:
        raise MissingDependency("{}: docker's default runtime is {} but building the Jetson image "
                                "needs nvidia (L4T r32 mounts CUDA from the host): {}".format(
                                    remote.host.hostname,
                                    got or (err.strip().splitlines() or ["unknown"])[-1],
                                    DAEMON_JSON_FIX))
    return got


def device_args(meta, bench_args):
    """``bench_args`` plus ``--device`` from the bundle's target (targets/T.toml ``device``)
    for OpenVINO, unless the user chose one: the remote runner never picks a device itself,
    so a stick's bench times the stick, not the host CPU."""
    args = list(bench_args)
    if meta.get("runtime") == "openvino" and "--device" not in args:
        if not meta.get("device"):
            raise EdgekitError("target {} names no device in targets/{}.toml: pass --device".format(
                meta.get("target"), meta.get("target")))
        args += ["--device", meta["device"]]
    return args


def remote_bench(remote, dest, bundle, python="python3", remote_dir=DEFAULT_REMOTE_DIR,
                 bench_args=(), docker=False, timeout=1800.0, log=print, l4t=None):
    """Run the benchmark in the installed bundle, stream its output, pull the results back.
    ``l4t``: the Jetson's L4T release (names the image to run, see :func:`docker_image`)."""
    runs = posixpath.join(remote.abspath(remote_dir), "runs")
    _sftp_makedirs(remote, runs)
    name = "{}-{}-{}.json".format(bundle.short, time.strftime("%Y%m%dT%H%M%S", time.gmtime()),
                                  os.urandom(3).hex())
    out_path = posixpath.join(runs, name)
    bench_args = device_args(bundle.meta, bench_args)
    if docker:
        for d in _docker(bundle.meta["target"]).get("make_dirs", []):  # e.g. an engine cache
            _sftp_makedirs(remote, posixpath.join(posixpath.dirname(runs), d))
        cmd = docker_command(bundle.meta["target"], dest, runs, name, bench_args, l4t=l4t)
    else:
        cmd = "cd {} && {} deploy/edgekit_remote.py bench --bundle . --json {} {}".format(
            _q(dest), remote_python_cmd(remote, python), _q(out_path),
            " ".join(_q(a) for a in bench_args))
    code, out, err = remote.run(cmd, timeout=timeout, on_line=lambda ln: log(ln) if ln else None)
    if code:
        last = (err.strip().splitlines() or ["exit code {}".format(code)])[-1]
        cls = MissingDependency if code == 2 else EdgekitError
        raise cls("{}: remote bench failed: {}".format(remote.host.hostname, last))
    try:
        return json.loads(remote.get(out_path).decode("utf-8"))
    except ValueError as exc:
        raise EdgekitError("{}: the device's results {} are not JSON ({})".format(
            remote.host.hostname, out_path, exc)) from None


def board_identity(remote, python="python3", timeout=60.0):
    """The board's own identity and state (``edgekit_remote.py identity`` run by the board's
    Python, outside any container): what a ``--docker`` result is stamped with, since inside
    the container ``hostname`` is the container id and nvpmodel / sysfs firmware are absent."""
    code, out, err = remote.run("{} - identity".format(remote_python_cmd(remote, python)),
                                timeout=timeout, stdin=REMOTE_SCRIPT.read_bytes())
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise EdgekitError("{}: cannot read the board's identity: {}".format(
            remote.host.hostname, (err.strip().splitlines() or ["exit {}".format(code)])[-1]))


def stamp_board(res, board):
    """Put the board's identity (``board``, from :func:`board_identity`) into a ``--docker``
    result: ``host`` and ``device_identity`` name the board, the container's own identity is
    kept as ``container_identity``, and the board-state warnings are the board's."""
    from edgekit.resources import remote_module
    res["container_identity"] = res.get("device_identity")
    res["device_identity"] = board
    res["host"] = board.get("hostname") or res.get("host")
    res["warnings"] = list(res.get("warnings") or []) + remote_module().board_warnings(board)
    return res


def check_device_ops(bundle, target, l4t, host="device"):
    """Refuse (before upload) an ONNX the device's TensorRT cannot parse: the op list of the
    TensorRT that the device's L4T release ships (``[l4t]``: JetPack 4.6 = 8.0.1, which lacks
    Einsum, Round, ScatterND... that 8.2 reads). Returns the TensorRT version checked, or None
    for bundles that do not run TensorRT."""
    from edgekit.targets import check_onnx_model, l4t_release_info, load_target
    t = load_target(target)
    if bundle.meta.get("runtime") != "tensorrt" or not t.get("check_trt82_ops") or not l4t:
        return None
    version = l4t_release_info(t, l4t)["tensorrt"]
    data = bundle.files.get(bundle.meta["model"]) if bundle.files else None
    if data is None:
        return None
    problems = check_onnx_model(data, t, tensorrt=version)
    if problems:
        raise EdgekitError("{}: L4T {} ships TensorRT {}, which cannot run {}: {}; export a "
                           "model without them or flash JetPack 4.6.1+".format(
                               host, l4t, version, bundle.meta["model"], "; ".join(problems)))
    return version


def setup_command(target, venv_abs, python_cmd):
    """The ``sh -s`` line that runs deploy/setup_device.sh for ``target``: its arguments are
    the target's ``[setup]`` (packages, a pip pin, a PATH prefix) and ``host_arch``."""
    from edgekit.targets import as_target
    t = as_target(target)
    setup = t.get("setup") or {}
    if not setup.get("packages"):
        raise EdgekitError("target {} has no [setup] packages in targets/{}.toml: --setup cannot "
                           "prepare its device".format(t["name"], t["name"]))
    args = [_q(t["name"]), _q(venv_abs), python_cmd] + [_q(a) for a in [
        ",".join(t["host_arch"]), setup.get("pip", ""), setup.get("path", "")] + setup["packages"]]
    return "sh -s -- " + " ".join(args)


def setup_device(remote, target, venv="~/edgekit/venv", python="python3", timeout=1800.0, log=print):
    """Pipe ``deploy/setup_device.sh`` to the device: a venv with numpy + the runtime
    (the target's ``[setup]``). Returns the venv's python path (to use as the remote Python)."""
    venv_abs = remote.abspath(venv)
    cmd = setup_command(target, venv_abs, remote_python_cmd(remote, python))
    code, out, err = remote.run(cmd, timeout=timeout, stdin=SETUP_SCRIPT.read_bytes(),
                                on_line=lambda ln: log(ln) if ln else None)
    if code:
        raise EdgekitError("{}: setup failed: {}".format(
            remote.host.hostname, (err.strip().splitlines() or ["exit {}".format(code)])[-1]))
    return posixpath.join(venv_abs, "bin", "python")
