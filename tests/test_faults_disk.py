"""A full disk, for real (issue 34, class 1): every verb that writes, run with its output on a
tmpfs of a few hundred KB, filled to leave a few KB free.

The fault is real: the test mounts a small tmpfs (root) -- the disk refuses the write with
ENOSPC as a full disk does. Without permission to mount, the same cases run in a child process
with ``RLIMIT_FSIZE`` (writes past the limit fail with EFBIG, SIGXFSZ ignored), which the
error boundary treats like a full disk; the module docstring of the run says which was used.

Each case checks: exit 1, exactly one ``error:`` line naming the disk, no traceback (and no
segfault: h5py used to crash at exit), no staging left on the small disk, and an artifact that
was there before is byte-for-byte unchanged.
"""
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = "import sys; from edgekit.cli import main; main(sys.argv[1:])"
DISK = r"(No space left on device|File too large)"


class SmallDisk(object):
    """A directory where writes fail after ``free`` KiB: a tmpfs (``mode == "tmpfs"``) or,
    where mounting is not permitted, a normal dir whose commands run with RLIMIT_FSIZE."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir()
        self.mode = "tmpfs"
        rc = subprocess.call(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(self.root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
            if shutil.which("mount") and os.geteuid() == 0 else 1
        if rc != 0:
            self.mode = "rlimit"

    def fill(self, free_kib):
        """Leave ``free_kib`` KiB free (tmpfs) / allow files of that size (rlimit)."""
        self.free = free_kib
        if self.mode == "tmpfs":
            st = os.statvfs(str(self.root))
            avail = st.f_bavail * st.f_frsize
            with open(str(self.root / "filler"), "wb") as fh:
                fh.write(b"\0" * max(0, avail - free_kib * 1024))

    def close(self):
        if self.mode == "tmpfs":
            subprocess.call(["umount", "-l", str(self.root)])

    def listing(self):
        out = {}
        for dirpath, dirnames, filenames in os.walk(str(self.root)):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if n == "filler":
                    continue
                data = b"" if os.path.isdir(p) else open(p, "rb").read()
                out[os.path.relpath(p, str(self.root))] = hashlib.sha256(data).hexdigest()
        return out


@pytest.fixture
def disk(tmp_path):
    d = SmallDisk(tmp_path / "disk")
    yield d
    d.close()


def _cli(disk, run_cli, *args):
    """The CLI on ``args``: in-process on a tmpfs; in a child with RLIMIT_FSIZE otherwise."""
    if disk.mode == "tmpfs":
        return run_cli(*args)
    limit = disk.free * 1024

    def _limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    p = subprocess.run([sys.executable, "-c", CODE] + [str(a) for a in args], env=env,
                       preexec_fn=_limit, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _one_error(code, err, pattern=DISK):
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert code == 1, "exit {}: {}".format(code, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, err[-2000:]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


# (id, free KiB, args) -- {D}: the small disk, {K}: a Keras artifact, {O}: an exported one,
# {R}: a results file; {K@D} / {O@D}: a copy of that artifact made on the small disk first
CASES = [
    ("train", 12, ["train", "--arch", "tiny", "--data", "digits", "--epochs", "1", "-o", "{D}/t"]),
    ("train_force_keeps_old", 12, ["train", "--arch", "tiny", "--data", "digits", "--epochs", "1",
                                   "-o", "{K@D}", "--force"]),
    ("compress_quantize", 12, ["compress", "{K}", "--method", "quantize", "--data", "digits",
                               "-o", "{D}/q"]),
    ("compress_prune", 12, ["compress", "{K}", "--method", "prune", "--data", "digits",
                            "--epochs", "1", "--allow-drop", "-o", "{D}/p"]),
    ("export_o", 12, ["export", "{K}", "--format", "onnx", "--parity-samples", "5",
                      "-o", "{D}/e"]),
    ("export_in_place", 4, ["export", "{K@D}", "--format", "onnx", "--parity-samples", "5"]),
    ("report", 12, ["report", "{R}", "-o", "{D}/rep"]),
    ("demo", 12, ["demo", "--data", "digits", "--epochs", "1", "--iterations", "2",
                  "-o", "{D}/d"]),
    ("optimize", 12, ["optimize", "{K}", "--data", "digits", "--max-bytes", "40000",
                      "--trials", "1", "--iterations", "2", "-o", "{D}/opt"]),
]


def _expand(args, disk, tiny_artifact, tiny_onnx, tmp_path):
    out = []
    for a in args:
        if a == "{K@D}":
            dst = disk.root / "art"
            shutil.copytree(str(tiny_artifact.path), str(dst))
            a = str(dst)
        a = a.replace("{D}", str(disk.root)).replace("{K}", str(tiny_artifact.path))
        a = a.replace("{O}", str(tiny_onnx.path))
        if a == "{R}":
            from test_bad_input import GOOD_RESULT
            r = tmp_path / "r.json"
            r.write_text(json.dumps(GOOD_RESULT))
            a = str(r)
        out.append(a)
    return out


@pytest.mark.parametrize("cid, free, args", CASES, ids=[c[0] for c in CASES])
def test_full_disk_is_one_line_and_leaves_nothing(cid, free, args, disk, tiny_artifact,
                                                   tiny_onnx, tmp_path, run_cli):
    argv = _expand(args, disk, tiny_artifact, tiny_onnx, tmp_path)
    disk.fill(free)
    before = disk.listing()
    code, out, err = _cli(disk, run_cli, *argv)
    _one_error(code, err)
    assert disk.listing() == before, "the small disk changed (staging left, or an artifact " \
                                     "that was there before was touched)"


def test_bench_prints_results_it_cannot_save(disk, tiny_onnx, run_cli):
    disk.fill(0)
    code, out, err = _cli(disk, run_cli, "bench", tiny_onnx.path, "--runtime", "onnxruntime",
                          "--iterations", "3", "--warmup", "1", "--json", disk.root / "b.json")
    line = _one_error(code, err)
    assert "printed above" in line
    res = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert res["latency_ms"]["p50"] > 0 and res["runtime"] == "onnxruntime"
    assert disk.listing() == {}


def test_write_failure_names_the_output_not_its_staging(tmp_path):
    import errno
    from edgekit.util import write_failure
    exc = OSError(errno.ENOSPC, "No space left on device",
                  str(tmp_path / ".model.tmp-123-abc" / "model.h5"))
    msg = write_failure(exc)
    assert str(tmp_path / "model" / "model.h5") in msg and ".tmp-" not in msg
    chained = RuntimeError("wrapper")
    chained.__cause__ = Exception("(sqlite3.OperationalError) database or disk is full")
    assert "No space left" in write_failure(chained)
    assert write_failure(OSError(errno.ENOENT, "No such file")) is None
    assert write_failure(ValueError("a bug")) is None
