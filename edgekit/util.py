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


def publish_dir(tmp, out, replace=True):
    """Rename the staged directory ``tmp`` to ``out`` (replacing an old ``out`` only now).

    ``replace=False``: an ``out`` that appeared while this run worked (another run on the same
    ``-o``) is never replaced -- the rename itself refuses it (:func:`rename_noreplace`), and
    this run's staging is left for the caller to remove.

    ``tempfile.mkdtemp`` makes 0700 directories; the published one gets the usual mode
    (0777 minus the umask), like any directory the user creates.
    """
    tmp, out = Path(tmp), Path(out)
    os.chmod(str(tmp), 0o777 & ~_umask())
    if not replace:
        rename_noreplace(tmp, out)
    elif out.exists():
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
    existed = out.exists()
    tmp = stage_dir_next_to(out)
    try:
        yield tmp
        publish_dir(tmp, out, replace=existed)
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:  # a write/close: name the file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` via a temp file + rename: never half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


# -- one output, one run -------------------------------------------------------------------------

_RENAME_NOREPLACE = 1  # linux/fs.h


def _renameat2():
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 / not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def rename_noreplace(src, dst):
    """Rename ``src`` to ``dst`` unless ``dst`` exists, atomically (Linux
    ``renameat2(RENAME_NOREPLACE)``; elsewhere a check then ``os.rename``, which still refuses
    a non-empty directory). An existing ``dst`` is an EdgekitError: another run published
    there first, and its result is kept whole."""
    from edgekit.errors import EdgekitError
    src, dst = str(src), str(dst)
    fn = _renameat2()
    if fn is not None:
        import ctypes
        at_fdcwd = -100
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: the filesystem cannot
            if err == errno.EEXIST:
                raise EdgekitError(_taken(dst))
            raise OSError(err, os.strerror(err), src, None, dst)
    if os.path.lexists(dst):
        raise EdgekitError(_taken(dst))
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise EdgekitError(_taken(dst)) from None
        raise


def _taken(dst):
    return ("output {} was written by another run while this one was working: its result is "
            "kept, this run's was discarded (choose another -o)".format(dst))


@contextlib.contextmanager
def output_lock(path, option="-o"):
    """Hold an advisory lock on output ``path`` for the block: ``.NAME.lock`` beside it,
    ``fcntl.flock``-ed. A second edgekit run on the same output is refused at once with one
    line (not after minutes of work, and never by silently replacing the first one's result).
    The lock file is removed on the way out; a run that finds the file it locked already
    unlinked (the holder just finished) takes a fresh one."""
    import fcntl
    from edgekit.errors import EdgekitError
    if str(path) == "-":  # --json - : stdout, nothing to hold
        yield
        return
    path = Path(os.path.abspath(str(path)))
    lock = path.parent / ".{}.lock".format(path.name)
    if not path.parent.is_dir():  # check_output / the command says what is wrong with it
        yield
        return
    while True:
        try:
            fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError:  # a read-only parent: check_output names that
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            raise EdgekitError("{} {} is being written by another edgekit run{}: wait for it "
                               "or choose another {}".format(
                                   option, path, " (pid {})".format(holder) if holder.isdigit()
                                   else "", option)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(str(lock)).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder had just removed: lock the current one
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        except OSError:  # a full disk: the lock holds without the pid
            pass
        yield
    finally:
        try:
            os.unlink(str(lock))
        except OSError:
            pass
        os.close(fd)


@contextlib.contextmanager
def dir_lock(path, shared=False):
    """``fcntl.flock`` on directory ``path`` itself (no lock file): an artifact's manifest is
    read-modified-written under the exclusive lock, read and verified under the shared one,
    so two in-place exports of one artifact both end up listed."""
    import fcntl
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- a full disk ---------------------------------------------------------------------------------

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
_DISK_TEXTS = (("no space left on device", errno.ENOSPC), ("database or disk is full", errno.ENOSPC),
               ("disk quota exceeded", errno.EDQUOT), ("read-only file system", errno.EROFS),
               ("readonly database", errno.EROFS), ("file too large", errno.EFBIG))
_STAGED = re.compile(r"/\.(?P<name>[^/]+?)\.(?:tmp|old|export|staging)-\d+-[^/]+")


def write_failure(exc, output=None):
    """One line for an exception that is the disk refusing a write (ENOSPC, EDQUOT, EROFS,
    EFBIG -- as an OSError anywhere in its chain, or a library's text for it: SQLite's
    "database or disk is full", HDF5's "No space left on device"), else None. Paths inside
    staging dirs are named by the output they were for; ``output`` names the output when
    the exception names no file (SQLite, HDF5). The CLI's error boundary
    (:func:`edgekit.cli.main`) prints it: every write path ends the same way, its staging
    already removed on the way out."""
    from edgekit.errors import EdgekitError
    if isinstance(exc, EdgekitError):  # already one line for the user (bench's, optimize's)
        return None
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code, where = None, None
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            code, where = e.errno, e.filename2 or e.filename
        else:
            low = str(e).lower()
            code = next((c for t, c in _DISK_TEXTS if t in low), None)
        if code is not None:
            where = where or output  # the library did not say which file: the output
            what = "cannot write {}".format(_STAGED.sub(r"/\g<name>", os.fsdecode(str(where)))) \
                if where else "cannot write the output"
            hint = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                    errno.EROFS: "the file system is read-only",
                    errno.EFBIG: "the file size limit was reached"}[code]
            return "{}: {} ({}); nothing partial was left and no existing output was " \
                   "changed".format(what, os.strerror(code), hint)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


def save_keras_h5(model, path):
    """``model.save(path)`` as HDF5, built in memory and written with one plain write: HDF5
    writing straight to a full disk ends in "Can't destroy cache" errors and a segfault at
    exit; this way a full disk is an ordinary ENOSPC OSError (:func:`write_failure`)."""
    import io
    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        model.save(fh, include_optimizer=False)
    with open(str(path), "wb") as out:
        out.write(buf.getbuffer())


# -- files that are not what they say ------------------------------------------------------------

def check_regular_file(path, what="file"):
    """Refuse, before opening it, a ``path`` that is not a regular file (after symlinks): a
    FIFO blocks ``open()`` forever, a character device reads forever, a socket cannot be
    opened. ``what`` names it in the one-line error (``model``, ``results file``)."""
    import stat
    from edgekit.errors import EdgekitError
    what = what + " " if what else ""
    try:
        st = os.stat(str(path))
    except FileNotFoundError:
        raise EdgekitError("{}{} does not exist".format(what, path)) from None
    except OSError as exc:
        raise EdgekitError("cannot read {}{}: {}".format(what, path, exc.strerror)) from None
    if stat.S_ISDIR(st.st_mode):
        raise EdgekitError("{}{} is a directory, not a file".format(what, path))
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise EdgekitError("{}{} is {}: edgekit reads regular files only".format(
            what, path, kind))
    return path
