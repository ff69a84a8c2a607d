"""Tiny host-side helpers with no better home: atomic text writes, publishing a staged dir."""
import os
import shutil
import tempfile
from pathlib import Path


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask() can only be read by setting it


def _umask():
    return _UMASK


def stage_dir_next_to(out, kind="tmp"):
    """A new temp dir beside ``out`` (same filesystem, so it can be renamed onto ``out``).

    Creates ``out``'s parent; a parent that cannot be created is an EdgekitError.
    """
    from edgekit.errors import EdgekitError
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgekitError("cannot create {}: {}".format(parent, exc.strerror)) from None
    return Path(tempfile.mkdtemp(prefix=".{}.{}-".format(out.name, kind), dir=str(parent)))


def publish_dir(tmp, out):
    """Rename the staged directory ``tmp`` to ``out`` (replacing an old ``out`` only now).

    ``tempfile.mkdtemp`` makes 0700 directories; the published one gets the usual mode
    (0777 minus the umask), like any directory the user creates.
    """
    tmp, out = Path(tmp), Path(out)
    os.chmod(str(tmp), 0o777 & ~_umask())
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=".{}.old-".format(out.name), dir=str(tmp.parent)))
        os.rename(str(out), str(old / "x"))
        os.rename(str(tmp), str(out))
        shutil.rmtree(str(old), ignore_errors=True)
    else:
        os.rename(str(tmp), str(out))


def atomic_write_bytes(path, data, fsync=False):
    """Write ``data`` to ``path`` via a temp file + rename: never half a file.

    ``fsync``: flush to disk before the rename (checkpoints that must survive a crash).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
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
