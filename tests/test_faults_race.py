"""Two runs on the same output, for real (issue 34, class 2): real processes started together.

* two ``report`` (a small, fast verb) into one new ``-o``, several rounds: exactly one wins,
  the other exits 1 with one ``error:`` line (``being written by another edgekit run`` or
  ``already exists``), and the winner's directory is whole;
* two in-place ``export``s of one artifact (two opsets: two files): both exit 0 and the
  manifest lists both files (the read-modify-write is done under a lock on the artifact);
* two ``optimize`` on one ``-o``: the second is refused at once with one line (no sqlalchemy
  IntegrityError), the first is interrupted and leaves no half study.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = "import sys; from edgekit.cli import main; main(sys.argv[1:])"
ENV = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1",
           PYTHONUNBUFFERED="1")


def _start(*args):
    return subprocess.Popen([sys.executable, "-c", CODE] + [str(a) for a in args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def _lines(err):
    return [ln for ln in err.splitlines() if ln.startswith("error")]


@pytest.fixture
def results_files(tmp_path):
    from test_bad_input import GOOD_RESULT
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        (d / "r{}.json".format(i)).write_text(json.dumps(GOOD_RESULT))
    return [d / "r0.json", d / "r1.json"]


def test_two_reports_on_one_output_one_wins_whole(tmp_path, results_files):
    for round_ in range(4):
        out = tmp_path / "rep{}".format(round_)
        procs = [_start("report", results_files[i], "-o", out) for i in range(2)]
        got = [_finish(p) for p in procs]
        codes = sorted(c for c, _, _ in got)
        assert codes == [0, 1], got
        loser = next(err for c, _, err in got if c == 1)
        assert "Traceback" not in loser and len(_lines(loser)) == 1, loser
        assert "being written by another edgekit run" in loser or "already exists" in loser \
            or "written by another run" in loser, loser
        text = (out / "report.md").read_text()
        winner = next(i for i, (c, _, _) in enumerate(got) if c == 0)
        assert "r{}.json".format(winner) in text and "r{}.json".format(1 - winner) not in text
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], \
            "lock or staging left beside the output"


def test_two_in_place_exports_are_both_listed(tiny_artifact, artifact_copy):
    from edgekit.artifact import Artifact
    art = artifact_copy(tiny_artifact)
    procs = [_start("export", art, "--format", "onnx", "--opset", str(o), "--parity-samples", "5",
                    "--target", "laptop-cpu") for o in (12, 13)]
    got = [_finish(p) for p in procs]
    assert [c for c, _, _ in got] == [0, 0], got
    files = Artifact.open(art).files  # also verifies every listed file's sha256
    onnx = sorted(n for n, e in files.items() if e["format"] == "onnx")
    assert len(onnx) == 2, onnx
    on_disk = sorted(p.name for p in Path(art).iterdir() if p.suffix == ".onnx")
    assert on_disk == onnx


def test_two_optimize_on_one_output(tiny_artifact, tmp_path):
    out = tmp_path / "opt"
    first = _start("optimize", tiny_artifact.path, "--data", "digits", "--max-bytes", "40000",
                   "--trials", "2", "--iterations", "2", "-o", out)
    lock = tmp_path / ".opt.lock"
    end = time.time() + 120
    while not lock.exists():
        assert first.poll() is None, _finish(first)
        assert time.time() < end, "the first optimize never took its lock"
        time.sleep(0.2)
    code, _, err = _finish(_start("optimize", tiny_artifact.path, "--data", "digits",
                                  "--max-bytes", "40000", "--trials", "2", "-o", out))
    assert code == 1 and "Traceback" not in err and len(_lines(err)) == 1, err
    assert "being written by another edgekit run (pid {})".format(first.pid) in err, err
    first.send_signal(signal.SIGINT)
    code, _, err = _finish(first)
    assert code in (0, 130), err[-2000:]
    if code == 130:  # interrupted before any trial finished: nothing of it is left
        assert not out.exists() or (out / "study.db").exists()
    assert not lock.exists()


def test_publish_never_replaces_an_output_that_appeared_meanwhile(tmp_path):
    """The library's own guard (no CLI lock): a staged dir is published with a no-replace
    rename unless the output existed at the start (--force)."""
    from edgekit.errors import EdgekitError
    from edgekit.util import staged_dir
    out = tmp_path / "o"
    with pytest.raises(EdgekitError, match="written by another run"):
        with staged_dir(out) as first:
            (first / "a").write_text("first")
            with staged_dir(out) as second:
                (second / "a").write_text("second")
    assert (out / "a").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # the loser's staging removed
    with staged_dir(out, force=True) as third:  # --force: replaced at the end, as asked
        (third / "a").write_text("third")
    assert (out / "a").read_text() == "third"
