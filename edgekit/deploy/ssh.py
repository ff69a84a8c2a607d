"""One SSH session to a device (paramiko): host keys checked against known_hosts (unknown ->
refused unless accepted, changed -> always refused), commands with timeouts and streamed
output, file transfer.

Example::

    with_remote = Remote(resolve_host("me@box"), identity="~/.ssh/id_ed25519")
    code, out, err = with_remote.run("uname -m", timeout=10)
"""
import base64
import hashlib
import io
import os
import posixpath
import shlex
import socket
import time
from pathlib import Path

from edgekit.errors import EdgekitError


def _q(s):
    return shlex.quote(str(s))



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
