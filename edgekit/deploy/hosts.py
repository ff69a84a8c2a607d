"""Where to deploy: ``[USER@]HOST[:PORT]`` specs resolved through ``~/.ssh/config``, and the
inventory TOML of a fleet (``[[device]]`` tables).

Example::

    resolve_host("nano:2222").port          # 2222
    read_inventory("deploy/fleet.example.toml")
"""
import os
import re
from pathlib import Path

from edgekit.errors import EdgekitError


_HOST_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
                      r"(?::(?P<port>[0-9]{1,5}))?$")



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
