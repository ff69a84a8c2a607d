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
