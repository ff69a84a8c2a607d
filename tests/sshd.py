"""A real OpenSSH server on 127.0.0.1 for deploy tests (no mocks).

``SshServer`` writes a throw-away host key and user key (ssh-keygen), a minimal
``sshd_config`` (key auth only, root by key only, AuthorizedKeysFile in the temp dir,
StrictModes/PAM off, PidFile in the temp dir) and runs ``/usr/sbin/sshd -D -e -f CONFIG`` on
a free port, so ``kill()`` (which also kills the forked sessions) drops live connections and ``start()``
brings the same server (same host key, same port) back.

Use the ``sshd`` fixture via ``from sshd import sshd  # noqa: F401`` in a test module.
"""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path, kind="ed25519"):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "edgekit-test", "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Path(path)


class SshServer:
    def __init__(self, root, sftp=True, setenv=None):
        """``sftp=False``: no ``Subsystem sftp`` line, like dropbear or a minimal Yocto image.
        ``setenv``: {name: value} every session gets (sshd's ``SetEnv``; it overrides the
        login PATH), e.g. a PATH with stand-in board tools and EDGEKIT_FACTS_ROOT."""
        if not os.path.exists(SSHD):
            pytest.fail("{} not found: run `make system-deps` (apt-get install openssh-server)"
                        .format(SSHD))
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.root / "ssh_host_ed25519_key")
        self.user_key = keygen(self.root / "id_user")
        self.authorized = self.root / "authorized_keys"
        self.authorized.write_text((self.root / "id_user.pub").read_text())
        os.chmod(str(self.authorized), 0o600)
        self.port = free_port()
        self.user = "root"
        self.log = self.root / "sshd.log"
        self.config = self.root / "sshd_config"
        self.config.write_text("\n".join([
            "Port {}".format(self.port),
            "ListenAddress 127.0.0.1",
            "HostKey {}".format(self.host_key),
            "PidFile {}".format(self.root / "sshd.pid"),
            "AuthorizedKeysFile {}".format(self.authorized),
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp" if sftp else "",
            "LogLevel ERROR",
            "MaxStartups 50",
            "MaxSessions 50",
            "SetEnv " + " ".join("{}={}".format(k, v) for k, v in sorted(setenv.items()))
            if setenv else "",
            "",
        ]))
        self.proc = None

    @property
    def host(self):
        return "{}@127.0.0.1:{}".format(self.user, self.port)

    def known_hosts_line(self):
        """The known_hosts line for this server's real host key."""
        kind, blob = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return "[127.0.0.1]:{} {} {}\n".format(self.port, kind, blob)

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir sshd requires
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(str(self.log), "ab"),
                                     start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("sshd exited with {}: {}".format(self.proc.returncode,
                                                             self.log.read_text()[-2000:]))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        pytest.fail("sshd did not listen on port {}".format(self.port))

    def kill(self):
        """SIGKILL the server and every session it forked (drops live connections).
        Sessions call setsid(), so they are found as descendants via /proc, not by group."""
        if self.proc is not None and self.proc.poll() is None:
            for pid in [self.proc.pid] + descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)
        self.proc = None


def descendants(pid):
    """PIDs of every descendant of ``pid`` (from /proc/*/stat parent links)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/{}/stat".format(d)) as fh:
                    stat = fh.read()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd")).start()
    try:
        yield server
    finally:
        server.kill()
