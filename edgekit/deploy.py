"""``deploy``: bundle an exported artifact, push it over SSH atomically, check the device,
run the benchmark there and pull the results home.

Steps per device (in parallel over devices, one failure never stops the others):

1. connect with paramiko: ``~/.ssh/config`` aliases (HostName/User/Port/IdentityFile), the
   SSH agent, ``identity``; the host key is checked against ``known_hosts``: unknown ->
   refused unless ``accept_new_host_key`` (then recorded), changed -> always refused;
2. ``setup`` (optional): ``deploy/setup_device.sh`` makes a venv with numpy + the runtime;
3. preflight: ``deploy/edgekit_remote.py preflight`` fed to the remote Python on stdin;
4. upload: skipped when ``REMOTE/<sha>/.edgekit-complete`` exists; else the bundle tar goes
   by SFTP into ``REMOTE/.tmp-XXXX/``, is verified (sha256) and extracted there (members with
   ``..``/absolute paths/links refused), SHA256SUMS checked, then renamed to ``REMOTE/<sha>``;
   stale ``.tmp-*`` dirs from dropped connections are removed;
5. bench (optional): ``python -m edgekit.runtime bench`` (the protocol of ``edgekit bench``)
   inside the bundle, progress streamed, results JSON pulled back and stamped with the
   device identity. ``docker=True`` runs it in the target's image (targets/T.toml [docker]).

The bundle is a deterministic tar (sorted entries, mtime 0, uid/gid 0): the model file the
target runs, manifest.json, edgekit/__init__.py + edgekit/runtime, deploy/edgekit_remote.py,
a test subset as data/test.npz (in the model's input layout, e.g. NCHW for a PyTorch-style
ONNX), bundle.json and SHA256SUMS. ``<sha>`` is its sha256. A bare ``.onnx`` file deploys as
it is (wrapped as an imported artifact while the bundle is built).

Example::

    results = deploy("out/seed", target_name, hosts=["me@192.168.1.50"], bench=True,
                     remote_python="~/edgekit/venv/bin/python")
"""
import base64
import concurrent.futures
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import socket
import tarfile
import time
from pathlib import Path

from edgekit import __version__
from edgekit.errors import EdgekitError, HardwareMissing, MissingDependency

from edgekit.resources import data_file

REMOTE_SCRIPT = data_file("deploy", "edgekit_remote.py")   # packaged: found in any install
SETUP_SCRIPT = data_file("deploy", "setup_device.sh")
DEFAULT_REMOTE_DIR = "~/edgekit"
COMPLETE = ".edgekit-complete"
_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
                      r"(?::(?P<port>[0-9]{1,5}))?$")


# -- host specs ---------------------------------------------------------------------------------

class HostSpec:
    """Where to connect: resolved from ``[USER@]HOST[:PORT]`` and ``~/.ssh/config``."""

    def __init__(self, spec, hostname, user, port, identities, options=None):
        self.spec, self.hostname, self.user, self.port = spec, hostname, user, port
        self.identities = list(identities)
        self.options = dict(options or {})   # per-device overrides from an inventory

    @property
    def key_name(self):
        """The known_hosts name: ``host`` on port 22, else ``[host]:port``."""
        return self.hostname if self.port == 22 else "[{}]:{}".format(self.hostname, self.port)

    def __str__(self):
        return "{}@{}:{}".format(self.user, self.hostname, self.port)


def parse_host(spec):
    """``[USER@]HOST[:PORT]`` -> (user or None, host, port or None); refuses anything else."""
    m = _HOST_RE.match(str(spec or "").strip())
    port = m and m.group("port")
    if not m or (port is not None and not 1 <= int(port) <= 65535):
        raise EdgekitError("malformed --host {!r}: use [USER@]HOST[:PORT], e.g. nano@192.168.1.50 "
                           "or nano:2222 (a ~/.ssh/config alias works too)".format(spec))
    return m.group("user"), m.group("host").strip("[]"), int(port) if port else None


def resolve_host(spec, ssh_config=None, options=None):
    """A :class:`HostSpec` with ``~/.ssh/config`` (or ``ssh_config``) applied: HostName, User,
    Port and IdentityFile of a matching ``Host`` block; explicit user/port in ``spec`` win."""
    import paramiko
    user, host, port = parse_host(spec)
    cfg_path = Path(ssh_config).expanduser() if ssh_config else Path("~/.ssh/config").expanduser()
    found = {}
    if cfg_path.is_file():
        try:
            found = paramiko.SSHConfig.from_path(str(cfg_path)).lookup(host)
        except Exception as exc:  # paramiko raises ConfigParseError / ValueError for junk
            raise EdgekitError("cannot read SSH config {}: {}".format(cfg_path, exc)) from None
    elif ssh_config:
        raise EdgekitError("SSH config {} does not exist".format(cfg_path))
    try:
        cfg_port = int(found.get("port", 22))
    except ValueError:
        raise EdgekitError("{}: Port for {} is not a number".format(cfg_path, host)) from None
    hostname = found.get("hostname", host)
    user = user or found.get("user") or os.environ.get("USER") or "root"
    idents = [str(Path(p).expanduser()) for p in found.get("identityfile", [])]
    return HostSpec(spec, hostname, user, port or cfg_port, idents, options)


def read_inventory(path):
    """Devices from an inventory TOML: ``[[device]]`` tables with ``host`` (required) and
    optional ``target``, ``remote_python``, ``remote_dir``, ``identity``, ``docker``."""
    import tomllib
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise EdgekitError("inventory {} does not exist".format(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EdgekitError("inventory {} is not valid TOML: {}".format(p, exc)) from None
    devices = data.get("device")
    if not isinstance(devices, list) or not devices:
        raise EdgekitError("inventory {} has no [[device]] entries (see deploy/fleet.example.toml)"
                           .format(p))
    allowed = {"host", "target", "remote_python", "remote_dir", "identity", "docker", "name"}
    out = []
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or not isinstance(d.get("host"), str):
            raise EdgekitError("inventory {}: device #{} has no host = \"[USER@]HOST[:PORT]\""
                               .format(p, i + 1))
        extra = set(d) - allowed
        if extra:
            raise EdgekitError("inventory {}: device {} has unknown keys {} (allowed: {})".format(
                p, d["host"], ", ".join(sorted(extra)), ", ".join(sorted(allowed))))
        out.append(dict(d))
    return out


# -- bundle -------------------------------------------------------------------------------------

class Bundle:
    """A deterministic tar of what runs on the device, plus its listing."""

    def __init__(self, data, entries, meta):
        self.data = data                  # the tar bytes
        self.entries = entries            # [(name, size)] sorted
        self.meta = meta
        self.sha256 = hashlib.sha256(data).hexdigest()

    @property
    def size(self):
        return len(self.data)

    @property
    def short(self):
        return self.sha256[:16]


def _tar_add(tf, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tf.addfile(info, io.BytesIO(data))


def _test_npz(spec, samples, art=None):
    """The test subset shipped with a bundle, in the model's input layout (the manifest's)."""
    import numpy as np
    from edgekit.data import load_data
    from edgekit.onnx_model import check_artifact_data, manifest_layout, to_model_layout
    ds = load_data(spec)
    if art is not None:
        check_artifact_data(art, ds)  # an imported ONNX: names the user's file
        art.check_data_fits(ds)
    n = min(int(samples), len(ds.x_test))
    x = ds.x_test[:n].astype(np.float32)
    if art is not None:
        x = to_model_layout(x, manifest_layout(art.manifest))
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=ds.y_test[:n].astype(np.int64))
    return buf.getvalue(), n


def build_bundle(artifact, target, runtime=None, test_samples=1000, data=None, docker=False,
                 model_file=None):
    """Build the bundle for ``target`` (deterministic: same inputs -> same bytes/sha256)."""
    from edgekit.artifact import Artifact
    from edgekit.targets import load_target, pick_file
    t = load_target(target)
    runtime = runtime or t["runtimes"][0]
    if runtime not in t["runtimes"]:
        raise EdgekitError("target {} has no runtime {!r} (it has: {})".format(
            t["name"], runtime, ", ".join(t["runtimes"])))
    if int(test_samples) < 0:
        raise EdgekitError("--test-samples must be >= 0")
    art = Artifact.open(artifact)
    name, entry = pick_file(art, t, runtime, model_file)
    files = {}
    src = art.file(name)
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                files["model/" + name + "/" + p.relative_to(src).as_posix()] = p.read_bytes()
        model_rel = "model/" + name + ("/" + entry["entry"] if entry.get("entry") else "")
    else:
        files["model/" + name] = src.read_bytes()
        model_rel = "model/" + name
    if entry.get("format") == "openvino" and src.suffix == ".xml":
        bin_name = entry.get("weights") or name[:-4] + ".bin"
        if bin_name in art.files and art.file(bin_name).is_file():
            files["model/" + bin_name] = art.file(bin_name).read_bytes()
    files["manifest.json"] = (art.path / "manifest.json").read_bytes()
    from edgekit.resources import runtime_sources
    files.update(runtime_sources())
    files["deploy/edgekit_remote.py"] = REMOTE_SCRIPT.read_bytes()
    files["deploy/setup_device.sh"] = SETUP_SCRIPT.read_bytes()
    if docker:
        dockerfile = _docker(t)["dockerfile"]
        files[dockerfile] = data_file("docker", dockerfile).read_bytes()
    n = 0
    spec = data or art.manifest.get("source", {}).get("data")
    if int(test_samples) > 0 and spec:
        files["data/test.npz"], n = _test_npz(spec, test_samples, art)
    meta = {"edgekit_version": __version__, "target": t["name"], "runtime": runtime,
            "model": model_rel, "format": entry.get("format"), "precision": entry.get("precision"),
            "device": t.get("device"),  # the target's device (targets/T.toml)
            "bytes": art.run_bytes(name), "model_sha256": entry.get("sha256"),  # IR: +.bin
            "artifact": art.path.name, "method": art.method,
            "npz": "data/test.npz" if n else None, "test_samples": n, "data": spec if n else None}
    files["bundle.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    sums = "".join("{}  {}\n".format(hashlib.sha256(files[k]).hexdigest(), k) for k in sorted(files))
    files["SHA256SUMS"] = sums.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({posixpath.dirname(k) for k in files} - {""})
        all_dirs = sorted({"/".join(d.split("/")[:i + 1]) for d in dirs for i in range(d.count("/") + 1)})
        for d in all_dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            info.uname = info.gname = "root"
            tf.addfile(info)
        for k in sorted(files):
            _tar_add(tf, k, files[k], 0o755 if k.endswith((".sh", "edgekit_remote.py")) else 0o644)
    b = Bundle(buf.getvalue(), [(k, len(files[k])) for k in sorted(files)], meta)
    b.meta["sha256"] = b.sha256
    return b


# -- SSH ----------------------------------------------------------------------------------------

def fingerprint(key):
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def check_known_hosts(path):
    """Refuse a known_hosts file SSH could not use: a directory, unreadable, not text, or a line
    that is not a host key entry (paramiko would skip it silently and every host would then be
    "unknown"). A missing file is fine: nothing is known yet. Returns the path."""
    import paramiko
    p = Path(path or "~/.ssh/known_hosts").expanduser()
    if not os.path.lexists(str(p)):
        return p
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise EdgekitError("known_hosts {} is not a text file".format(p)) from None
    except OSError as exc:
        raise EdgekitError("cannot read known_hosts {}: {}".format(p, exc.strerror or exc)) from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            ok = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno) is not None
        except Exception:  # InvalidHostKey, binascii / struct errors on garbage
            ok = False
        if not ok:
            raise EdgekitError("known_hosts {} line {} is not a host key entry (HOST KEYTYPE "
                               "BASE64): fix or remove it".format(p, lineno))
    return p


class _HostKeyPolicy:
    """paramiko policy for keys not in known_hosts: refuse, or record with accept_new."""

    def __init__(self, known_hosts, accept_new, log):
        self.known_hosts, self.accept_new, self.log = Path(known_hosts), accept_new, log

    def missing_host_key(self, client, hostname, key):
        fp = "{} {}".format(key.get_name(), fingerprint(key))
        if not self.accept_new:
            raise EdgekitError("unknown host key for {} ({}) not in {}: check the fingerprint on the "
                               "device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then re-run "
                               "with --accept-new-host-key".format(hostname, fp, self.known_hosts))
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with open(self.known_hosts, "a") as fh:
            fh.write("{} {} {}\n".format(hostname, key.get_name(), key.get_base64()))
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.log("accepted new host key {} for {} (recorded in {})".format(fp, hostname,
                                                                          self.known_hosts))


class Remote:
    """One SSH connection to a device: commands with timeouts, file transfer over SFTP or,
    when the server has no SFTP subsystem, streamed over exec channels."""

    def __init__(self, host, identity=None, known_hosts=None, accept_new_host_key=False,
                 connect_timeout=10.0, log=print):
        import paramiko
        self.host, self.log = host, log
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser()
        client = paramiko.SSHClient()
        check_known_hosts(self.known_hosts)
        if self.known_hosts.is_file():
            try:
                client.load_host_keys(str(self.known_hosts))
            except (OSError, ValueError) as exc:
                raise EdgekitError("cannot read known_hosts {}: {}".format(self.known_hosts, exc)) \
                    from None
        client.set_missing_host_key_policy(_HostKeyPolicy(self.known_hosts, accept_new_host_key, log))
        keys = [str(Path(identity).expanduser())] if identity else list(host.identities)
        keys = [k for k in keys if identity or os.path.exists(k)]
        if identity and not os.path.isfile(keys[0]):
            raise EdgekitError("identity file {} does not exist".format(identity))
        where = "{}:{}".format(host.hostname, host.port)
        try:
            client.connect(host.hostname, port=host.port, username=host.user,
                           key_filename=keys or None, timeout=connect_timeout,
                           banner_timeout=connect_timeout, auth_timeout=connect_timeout,
                           allow_agent=True, look_for_keys=not keys)
        except EdgekitError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise EdgekitError(
                "WARNING: HOST KEY CHANGED for {}: the server offers {} {} but {} has {} {}; "
                "refusing to connect (possible man-in-the-middle). If the device was reinstalled, "
                "remove the old key: ssh-keygen -R '{}' -f {}".format(
                    host.key_name, exc.key.get_name(), fingerprint(exc.key), self.known_hosts,
                    exc.expected_key.get_name(), fingerprint(exc.expected_key), host.key_name,
                    self.known_hosts)) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise EdgekitError("the key for {} is passphrase-protected: load it into ssh-agent "
                               "(ssh-add KEY) and re-run".format(where)) from None
        except paramiko.AuthenticationException:
            client.close()
            tried = ", ".join(keys) if keys else "~/.ssh/id_* keys"
            raise EdgekitError("authentication failed for {}@{} (tried {}{}): pass --identity KEY "
                               "whose public key is in the device's ~/.ssh/authorized_keys".format(
                                   host.user, where, tried,
                                   " and the SSH agent" if os.environ.get("SSH_AUTH_SOCK") else ""
                               )) from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise EdgekitError("cannot reach {}: connection timed out after {:g}s".format(
                where, connect_timeout)) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            client.close()
            raise EdgekitError("cannot reach {}: connection refused (is sshd running there?)"
                               .format(where)) from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EdgekitError("cannot connect to {}: {}".format(where, msg)) from None
        self.client = client
        self._sftp = None
        self.home = None
        self.transport = None  # "sftp", or "exec" on devices without an SFTP subsystem

    @property
    def sftp(self):
        """The SFTP session, or None when the server has no ``sftp`` subsystem (dropbear,
        minimal Yocto, hardened sshd): files then go over the exec channel instead."""
        import paramiko
        if self.transport is None:
            try:
                self._sftp = self.client.open_sftp()
                self.home = self._sftp.normalize(".")
                self.transport = "sftp"
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._sftp = None
                self.transport = "exec"
                self.log("no SFTP on {} ({}): files go over the exec channel (like scp -O), "
                         "sha256-checked".format(self.host.hostname, exc or type(exc).__name__))
                code, out, err = self.run("pwd", timeout=30)
                if code or not out.strip().startswith("/"):
                    raise EdgekitError("{}: cannot find the home directory ({})".format(
                        self.host.hostname, (err or out).strip()[:200])) from None
                self.home = out.strip().splitlines()[-1]
        return self._sftp

    def abspath(self, path):
        """Resolve ``~``/relative remote paths against the remote home directory."""
        self.sftp  # noqa: B018 - sets self.home
        if path == "~":
            return self.home
        if path.startswith("~/"):
            return posixpath.join(self.home, path[2:])
        return path if path.startswith("/") else posixpath.join(self.home, path)

    def exists(self, path):
        if self.sftp is not None:
            try:
                self.sftp.stat(path)
                return True
            except IOError:
                return False
        return self.run("test -e {}".format(_q(path)), timeout=30)[0] == 0

    def makedirs(self, path):
        """``mkdir -p``: over SFTP (no shell round trip) or one exec."""
        if self.sftp is None:
            code, _, err = self.run("mkdir -p -- {}".format(_q(path)), timeout=30)
            if code:
                raise EdgekitError("cannot create {} on {}: {}".format(
                    path, self.host.hostname, err.strip()[:200]))
            return
        cur = ""
        for part in path.strip("/").split("/"):
            cur += "/" + part
            try:
                self.sftp.stat(cur)
            except IOError:
                try:
                    self.sftp.mkdir(cur)
                except IOError as exc:
                    raise EdgekitError("cannot create {} on {}: {}".format(
                        cur, self.host.hostname, exc.strerror or exc)) from None

    def put(self, data, path, progress=None, timeout=600.0):
        """Write ``data`` (bytes) to the remote ``path``: SFTP, or streamed into ``cat`` over
        an exec channel. Integrity is checked by the caller (sha256 on the device)."""
        if self.sftp is not None:
            self.sftp.putfo(io.BytesIO(data), path, file_size=len(data), callback=progress,
                            confirm=True)
            return
        chan = self.client.get_transport().open_session()
        chan.settimeout(timeout)
        chan.exec_command("cat > {}".format(_q(path)))
        view, step = memoryview(data), 1 << 16
        for i in range(0, len(data), step):
            chan.sendall(view[i:i + step])
            if progress:
                progress(min(i + step, len(data)), len(data))
        if not data and progress:
            progress(0, 0)
        chan.shutdown_write()
        err = b""
        while not chan.exit_status_ready() or chan.recv_stderr_ready():
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            else:
                time.sleep(0.02)
        code = chan.recv_exit_status()
        chan.close()
        if code:
            raise EdgekitError("{}: cannot write {}: {}".format(
                self.host.hostname, path, err.decode("utf-8", "replace").strip()[:200]))

    def get(self, path, timeout=120.0):
        """The bytes of the remote file ``path`` (SFTP, or ``cat`` over an exec channel)."""
        if self.sftp is not None:
            buf = io.BytesIO()
            self.sftp.getfo(path, buf)
            return buf.getvalue()
        code, out, err = self.run("cat {}".format(_q(path)), timeout=timeout)
        if code:
            raise EdgekitError("{}: cannot read {}: {}".format(self.host.hostname, path,
                                                             err.strip()[:200]))
        return out.encode("utf-8")

    def run(self, command, timeout=60.0, stdin=None, on_line=None):
        """Run ``command`` (a shell string); returns (exit code, stdout, stderr) as text.
        ``on_line(line)`` gets stdout lines as they arrive; over ``timeout`` -> EdgekitError."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise EdgekitError("connection to {} lost".format(self.host.hostname))
        chan = transport.open_session()
        chan.settimeout(1.0)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
            chan.shutdown_write()
        out, err, pending = [], [], ""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                chan.close()
                raise EdgekitError("remote command timed out after {:g}s on {}: {}".format(
                    timeout, self.host.hostname, command.split(" ", 3)[:3]))
            got = False
            if chan.recv_ready():
                chunk = chan.recv(65536).decode("utf-8", "replace")
                out.append(chunk)
                got = True
                if on_line:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        on_line(line)
            if chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536).decode("utf-8", "replace"))
                got = True
            if not got:
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed or not transport.is_active():
                    raise EdgekitError("connection to {} lost during a remote command".format(
                        self.host.hostname))
                time.sleep(0.02)
        if on_line and pending:
            on_line(pending)
        code = chan.recv_exit_status()
        chan.close()
        return code, "".join(out), "".join(err)

    def close(self):
        try:
            if self._sftp is not None:
                self._sftp.close()
        except Exception:  # closing a dead connection: nothing to clean up
            pass
        self.client.close()


# -- the remote steps ---------------------------------------------------------------------------

def _q(s):
    return shlex.quote(str(s))


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


def _docker(target):
    """The target's ``[docker]`` table (targets/T.toml); refuses a target without an image."""
    from edgekit.targets import load_target, target_names
    t = load_target(target)
    if not t.get("docker"):
        have = [n for n in target_names() if load_target(n).get("docker")]
        raise EdgekitError("--docker has no image for target {} (images: {})".format(
            t["name"], ", ".join(have)))
    return t["docker"]


def docker_image(target, l4t=None):
    """The image tag for ``target`` (``[docker] image`` + the edgekit version). A target with an
    ``[l4t]`` table names the L4T base it was built on (``edgekit/jetson:0.1.0-r32.7.1``, from
    the device's ``l4t``): an r32.7.1 image does not run on R32.6.1, so a reflashed board
    needs ``--setup`` again instead of running an image made for another JetPack."""
    from edgekit.targets import l4t_release_info, load_target
    tag = "{}:{}".format(_docker(target)["image"], __version__)
    if load_target(target).get("l4t") and l4t:
        return "{}-{}".format(tag, l4t_release_info(target, l4t)["base_image"].rsplit(":", 1)[1])
    return tag


def docker_command(target, bundle_dir, runs_dir, json_name, bench_args=(), l4t=None):
    """The ``docker run`` line that benches the bundle inside the target's image.

    The flags are the target's ``[docker] run_flags`` ({home}: the parent of runs/, plus any
    key of the target such as {trt_python_dir}) and ``shell_flags``, left unquoted on
    purpose so the device's shell expands them (e.g. ``-u "$(id -u):$(id -g)"``: results
    written to runs/ belong to the SSH user)."""
    from edgekit.targets import load_target
    t = load_target(target)
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
    from edgekit.targets import l4t_release_info, load_target
    cmd = "docker build -t {} -f {}".format(
        _q(docker_image(target, l4t)), _q(posixpath.join(bundle_dir, _docker(target)["dockerfile"])))
    if load_target(target).get("l4t") and l4t:
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


def setup_command(target, venv_abs, python_cmd):
    """The ``sh -s`` line that runs deploy/setup_device.sh for ``target``: its arguments are
    the target's ``[setup]`` (packages, a pip pin, a PATH prefix) and ``host_arch``."""
    from edgekit.targets import load_target
    t = load_target(target)
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


# -- the verb -----------------------------------------------------------------------------------

def _network_error(exc):
    """True for what a flaky network or a foreign SSH server raises (paramiko's exceptions,
    socket errors, EOF on a dropped channel), as opposed to a bug in edgekit."""
    return (type(exc).__module__.split(".")[0] == "paramiko"
            or isinstance(exc, (OSError, EOFError, socket.timeout)))


def _describe(exc):
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return "{} ({})".format(text, type(exc).__name__) if text else type(exc).__name__


def _one(host, bundles, opts, log):
    """Deploy to one device; returns its summary dict (never raises EdgekitError)."""
    o = dict(opts)
    o.update(host.options)
    target = o["target"]
    say = (lambda msg: log("[{}] {}".format(host.spec, msg)))
    row = {"host": host.spec, "address": str(host), "target": target, "ok": False,
           "exit_code": 1, "bytes_sent": 0, "bundle": None, "results": None, "error": None}
    remote = None
    t0 = time.monotonic()
    try:
        bundle = bundles[target]
        row["bundle"] = bundle.sha256
        remote = Remote(host, identity=o.get("identity"), known_hosts=o["known_hosts"],
                        accept_new_host_key=o["accept_new_host_key"],
                        connect_timeout=o["connect_timeout"], log=say)
        python = o["remote_python"]
        if o["setup"]:
            say("setup: venv with numpy + {} runtime".format(target))
            if o["docker"]:
                pass  # the image is built after the upload (the Dockerfile is in the bundle)
            else:
                python = setup_device(remote, target, posixpath.join(o["remote_dir"], "venv"),
                                      python, timeout=o["command_timeout"] * 10, log=say)
        report = preflight(remote, target, python, o["remote_dir"], o["min_free_mb"], o["docker"],
                           o.get("runtime"), o.get("device"), timeout=o["command_timeout"])
        row["identity"] = report["identity"]
        from edgekit.targets import l4t_release_info, load_target
        if load_target(target).get("l4t"):  # refuses an L4T release the runner/image isn't for
            say("L4T {l4t}: {jetpack}, TensorRT {tensorrt}".format(
                l4t=report["identity"].get("l4t"),
                **l4t_release_info(target, report["identity"].get("l4t"))))
        say("preflight ok: " + ", ".join("{} {}".format(c["name"], c["value"])
                                         for c in report["checks"]))
        last = [0]

        def progress(sent, total):
            if sent - last[0] >= 1 << 20 or sent == total:
                last[0] = sent
                say("upload {:,}/{:,} bytes".format(sent, total))
            if o.get("upload_callback"):
                o["upload_callback"](sent, total)
        dest, sent = upload(remote, bundle, o["remote_dir"], python, stale_after=o["stale_after"],
                            timeout=o["command_timeout"] * 5, progress=progress)
        row["bytes_sent"], row["remote_path"] = sent, dest
        row["transport"] = remote.transport
        say("bundle {} at {} ({})".format(bundle.short, dest,
                                          "{:,} bytes sent over {}".format(sent, remote.transport)
                                          if sent else "unchanged, nothing sent"))
        if o["docker"] and o["setup"]:
            want = _docker(target).get("default_runtime")
            if want:
                check_docker_default_runtime(remote, want=want)
            cmd = docker_build_command(target, dest, report["identity"].get("l4t"))
            say("setup: " + cmd)
            code, _, err = remote.run(cmd, timeout=o["command_timeout"] * 30,
                                      on_line=lambda ln: say(ln) if ln else None)
            if code:
                raise EdgekitError("{}: docker build failed: {}".format(
                    host.hostname, (err.strip().splitlines() or ["exit {}".format(code)])[-1]))
        if o["bench"]:
            res = remote_bench(remote, dest, bundle, python, o["remote_dir"], o["bench_args"],
                               o["docker"], timeout=o["command_timeout"] * 30, log=say,
                               l4t=report["identity"].get("l4t"))
            res["deploy"] = {"ssh_host": host.spec, "address": str(host), "remote_path": dest,
                             "docker": bool(o["docker"]), "remote_python": python,
                             "transport": remote.transport}
            res.setdefault("artifact", str(o["artifact"]))
            row["results"] = res
        row["ok"], row["exit_code"] = True, 0
    except EdgekitError as exc:
        row["error"], row["exit_code"] = str(exc), exc.exit_code
    except Exception as exc:  # the network's failures, one line each; bugs keep tracebacks
        if not _network_error(exc):
            raise
        row["error"] = "{}: {}".format(host.hostname, _describe(exc))
    finally:
        if remote is not None:
            remote.close()
        row["seconds"] = round(time.monotonic() - t0, 2)
    return row


def deploy(artifact, target=None, hosts=(), inventory=None, identity=None, known_hosts=None,
           accept_new_host_key=False, remote_python="python3", remote_dir=DEFAULT_REMOTE_DIR,
           setup=False, bench=False, json_path=None, docker=False, dry_run=False, runtime=None,
           device=None, test_samples=1000, data=None, ssh_config=None, connect_timeout=10.0,
           command_timeout=120.0, min_free_mb=50.0, stale_after=3600.0, iterations=100, warmup=10,
           batch=1, model_file=None, workers=8, log=print, upload_callback=None):
    """Deploy ``artifact`` to every host (``hosts`` + ``inventory``) in parallel.

    Returns ``{"bundles": {target: info}, "devices": [row per host], "results": [...]}``; each
    row says ok/exit_code/error/bytes_sent/results. ``dry_run`` builds the bundle(s) and
    returns without connecting. Raises only for bad input found before connecting.
    ``target``: the default for devices that name none (default: the default target).
    """
    from edgekit.targets import default_target, load_target
    target = load_target(target or default_target())["name"]
    devices = [{"host": h} for h in hosts or ()]
    if inventory:
        devices += read_inventory(inventory)
    if not devices and not dry_run:
        raise EdgekitError("no device: give --host [USER@]HOST[:PORT] (repeatable) or --inventory FILE")
    for d in devices:
        parse_host(d["host"])  # refuse malformed hosts before any work
        load_target(d.get("target", target))
    if int(iterations) < 1:
        raise EdgekitError("--iterations must be >= 1")
    if int(batch) < 1:
        raise EdgekitError("--batch must be >= 1")
    targets = sorted({d.get("target", target) for d in devices} or {target})
    bundles = {}
    from edgekit.onnx_model import artifact_for
    with artifact_for(artifact) as art_dir:  # a bare .onnx file: wrapped as an artifact
        for t in targets:
            dk = docker or any(d.get("docker") for d in devices if d.get("target", target) == t)
            bundles[t] = build_bundle(art_dir, t, runtime=runtime, test_samples=test_samples,
                                      data=data, docker=dk, model_file=model_file)
    summary = {"bundles": {t: {"sha256": b.sha256, "bytes": b.size, "files": b.entries,
                               "model": b.meta["model"], "runtime": b.meta["runtime"]}
                           for t, b in bundles.items()},
               "devices": [], "results": []}
    specs = []  # SSH config and known_hosts are read (and refused) in --dry-run too
    for d in devices:
        o = {k: v for k, v in d.items() if k not in ("host", "name")}
        specs.append(resolve_host(d["host"], ssh_config, o))
    if ssh_config and not devices:
        resolve_host("localhost", ssh_config)
    check_known_hosts(known_hosts)
    if dry_run:
        return summary
    opts = {"target": target, "identity": identity, "known_hosts": known_hosts,
            "accept_new_host_key": accept_new_host_key, "remote_python": remote_python,
            "remote_dir": remote_dir, "setup": setup, "bench": bench, "docker": docker,
            "runtime": runtime, "device": device, "connect_timeout": float(connect_timeout),
            "command_timeout": float(command_timeout), "min_free_mb": float(min_free_mb),
            "stale_after": float(stale_after), "artifact": artifact, "upload_callback": upload_callback,
            "bench_args": ["--iterations", str(int(iterations)), "--warmup", str(int(warmup)),
                           "--batch", str(int(batch))] + (["--device", device] if device else [])}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(int(workers), len(specs)))) as ex:
        rows = list(ex.map(lambda h: _one(h, bundles, opts, log), specs))
    summary["devices"] = rows
    summary["results"] = [r["results"] for r in rows if r.get("results")]
    if json_path and summary["results"]:
        from edgekit.util import atomic_write_text
        res = summary["results"]
        atomic_write_text(json_path, json.dumps(res[0] if len(res) == 1 else res, indent=2) + "\n")
    return summary
