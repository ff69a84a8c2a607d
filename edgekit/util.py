"""Tiny host-side helpers with no better home: staging and publishing dirs, atomic writes,
checking an output can be written before any work starts.

Every temp path edgekit makes beside an output carries the owner's pid
(``.NAME.tmp-PID-xxxx``), so a later run can tell a crash leftover (pid gone: removed by
:func:`clean_stale`) from the staging dir of a run still going (pid alive: never touched).

Example::

    check_output("out/model", "dir")           # before training: parent writable, out free
    tmp = stage_dir_next_to("out/model")       # .model.tmp-4242-k3j1/ (cleans dead runs' ones)
    publish_dir(tmp, "out/model")
"""
import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path

_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|export|staging)-(?P<pid>\d+)-[^/]+$")


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask() can only be read by setting it


def _umask():
    return _UMASK


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _prefix(name, kind):
    return ".{}.{}-{}-".format(name, kind, os.getpid())


def clean_stale(parent, name=None):
    """Remove temp paths in ``parent`` left by edgekit runs that died (SIGKILL, power loss):
    ``.NAME.KIND-PID-*`` whose PID is no longer running. Only ``name``'s when given. A live
    run's staging is never touched. Returns the removed paths."""
    removed = []
    try:
        entries = list(os.scandir(str(parent)))
    except OSError:
        return removed
    for e in entries:
        m = _OWNED.match(e.name)
        if not m or (name is not None and m.group("name") != name):
            continue
        if _pid_alive(int(m.group("pid"))):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:  # another run cleaning the same leftover, or not ours to remove
            pass
    return removed


def stage_dir_next_to(out, kind="tmp"):
    """A new temp dir beside ``out`` (same filesystem, so it can be renamed onto ``out``).

    Creates ``out``'s parent; a parent that cannot be created is an EdgekitError. Leftover
    staging of ``out`` from runs that died is removed first (:func:`clean_stale`).
    """
    from edgekit.errors import EdgekitError
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent, out.name)
        return Path(tempfile.mkdtemp(prefix=_prefix(out.name, kind), dir=str(parent)))
    except OSError as exc:
        raise EdgekitError("cannot write in {}: {}".format(parent, exc.strerror)) from None


def _nearest_existing(path):
    p = Path(os.path.abspath(str(path)))
    while not os.path.lexists(str(p)):
        p = p.parent
    return p


def check_output(path, kind="dir", force=False, option="-o"):
    """Refuse, before any work starts, an output that cannot be written: ``kind`` "dir" (an
    artifact/report dir: must not exist unless ``force``) or "file" (``--json FILE``: must not
    be a directory). The nearest existing ancestor must be a directory where a temp dir can
    really be created (a probe: catches read-only mounts, /proc, immutable dirs, full disks,
    which permission bits alone do not). Nothing is left behind."""
    from edgekit.errors import EdgekitError
    path = Path(path)
    if str(path) in ("", ".") or path.name in ("", ".", ".."):
        raise EdgekitError("{} {}: give a new directory or file name".format(option, path))
    if os.path.lexists(str(path)):
        if kind == "dir":
            if not path.is_dir():
                raise EdgekitError("output {} exists and is not a directory".format(path))
            if not force:
                raise EdgekitError("output {} already exists: choose another {} or pass --force"
                                   .format(path, option))
        elif path.is_dir():
            raise EdgekitError("{} {} is a directory: give a file name".format(option, path))
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise EdgekitError("cannot write {}: {} is not a directory".format(path, base))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=_prefix("probe", "tmp"), dir=str(base)))
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno, str(exc))
        raise EdgekitError("cannot write {}: {} is not writable ({})".format(
            path, base, reason)) from None


def publish_dir(tmp, out):
    """Rename the staged directory ``tmp`` to ``out`` (replacing an old ``out`` only now).

    ``tempfile.mkdtemp`` makes 0700 directories; the published one gets the usual mode
    (0777 minus the umask), like any directory the user creates.
    """
    tmp, out = Path(tmp), Path(out)
    os.chmod(str(tmp), 0o777 & ~_umask())
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=_prefix(out.name, "old"), dir=str(tmp.parent)))
        os.rename(str(out), str(old / "x"))
        os.rename(str(tmp), str(out))
        shutil.rmtree(str(old), ignore_errors=True)
    else:
        os.rename(str(tmp), str(out))


@contextlib.contextmanager
def staged_dir(out, force=False):
    """Yield a new staging dir beside ``out``; when the block completes it is renamed onto
    ``out`` (:func:`publish_dir`), when anything is raised it is removed: never half a
    directory. An existing ``out`` is refused unless ``force`` (then replaced only at the end).

    Example::

        with staged_dir("out/report") as tmp:
            (tmp / "report.md").write_text(text)
    """
    from edgekit.errors import EdgekitError
    out = Path(out)
    if out.exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    tmp = stage_dir_next_to(out)
    try:
        yield tmp
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(str(tmp), ignore_errors=True)
        raise


def atomic_write_bytes(path, data, fsync=False):
    """Write ``data`` to ``path`` via a temp file + rename: never half a file.

    ``fsync``: flush to disk before the rename (checkpoints that must survive a crash).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name, "tmp"), dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` via a temp file + rename: never half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))
