"""Signals for real: a subprocess ``edgekit train`` on digits gets SIGINT (exit 130, one
``error: interrupted`` line, no half output) or SIGKILL mid-save (the staging dir stays; the
next run removes it because its owner pid is gone, and never touches a live run's)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = "import sys; from edgekit.cli import main; main(sys.argv[1:])"


def _train(out, epochs):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               TF_USE_LEGACY_KERAS="1")
    return subprocess.Popen([sys.executable, "-c", CODE, "train", "--arch", "tiny", "--data",
                             "digits", "-o", str(out), "--epochs", str(epochs), "--batch-size", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _read_until(proc, marker, timeout=240, stream="stdout"):
    buf, end = b"", time.time() + timeout
    pipe = getattr(proc, stream)
    while marker not in buf:
        assert time.time() < end, "no {!r} from train: {!r}".format(marker, buf[-300:])
        chunk = pipe.read1(4096)
        assert chunk, "train ended early: {!r}".format(buf[-300:])
        buf += chunk
    return buf


def test_sigint_during_training_exits_130_and_writes_nothing(tmp_path):
    out = tmp_path / "model"
    proc = _train(out, epochs=500)
    try:
        # edgekit's own per-epoch line on stderr: inside Keras's fit
        _read_until(proc, b"training epoch 2/", stream="stderr")
        # ONE SIGINT: it must not be lost inside TensorFlow (Python's default handler can raise
        # it in a TF object's __del__, where it is swallowed; edgekit.models.ctrl_c_at_batch_end
        # raises it at the next batch end instead)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    errors = [ln for ln in err.decode().splitlines() if ln.startswith("error")]
    assert proc.returncode == 130, err.decode()[-2000:]
    assert errors == ["error: interrupted"] and "Traceback" not in err.decode()
    assert sorted(os.listdir(tmp_path)) == []  # no artifact, no staging left behind


def test_sigkill_mid_save_leaves_staging_that_the_next_run_removes(tmp_path, run_cli):
    out = tmp_path / "model"
    proc = _train(out, epochs=1)
    try:
        staged = []
        end = time.time() + 240
        while not staged and proc.poll() is None and time.time() < end:
            staged = [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # while the artifact is being written
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert staged, "the staging dir never appeared (train exited {})".format(proc.returncode)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and staged[0].is_dir()  # the crash leftover
    assert staged[0].name.startswith(".model.tmp-{}-".format(proc.pid))  # owner pid in the name
    live = tmp_path / ".model.tmp-{}-live".format(os.getpid())  # a run still going: ours
    live.mkdir()
    code, _, err = run_cli("train", "--arch", "tiny", "--data", "digits", "-o", out,
                           "--epochs", "1", "--force")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "model"]


def test_clean_stale_spares_live_owners_and_foreign_names(tmp_path):
    from edgekit.util import clean_stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [".out.tmp-{}-abc".format(dead.pid), ".out.old-{}-x".format(dead.pid),  # removed
             ".out.tmp-{}-abc".format(os.getpid()), ".out.tmp-1-init",  # live owners: kept
             ".other.tmp-{}-abc".format(dead.pid),  # another output's: kept when name= given
             ".out.tmp-abc", ".out.backup-{}-x".format(dead.pid), "out"]  # not edgekit's
    for n in names:
        (tmp_path / n).mkdir()
    removed = clean_stale(tmp_path, "out")
    assert sorted(p.name for p in removed) == sorted(names[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


@pytest.mark.slow
def test_sigint_during_compress_exits_130_and_writes_nothing(tiny_artifact, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               TF_USE_LEGACY_KERAS="1")
    proc = subprocess.Popen([sys.executable, "-c", CODE, "compress", str(tiny_artifact.path),
                             "--method", "prune", "--data", "digits", "--epochs", "300",
                             "-o", str(tmp_path / "pruned")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _read_until(proc, b"Epoch 2/")  # fine-tuning under the pruning schedule
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert [ln for ln in err.decode().splitlines() if ln.startswith("error")] == ["error: interrupted"]
    assert sorted(os.listdir(tmp_path)) == []
