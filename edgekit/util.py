"""Tiny host-side helpers with no better home: atomic text writes."""
import os
import tempfile
from pathlib import Path


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` via a temp file + rename: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
