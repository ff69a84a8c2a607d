"""CLI tables survive a log: piped stdout prints every cell whole, a terminal keeps its width."""
import io
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run_piped(args, columns="40"):
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS=columns)
    return subprocess.run([sys.executable, "-c", "import sys; from edgekit.cli import main; "
                           "main(sys.argv[1:])"] + list(args),
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO))


def test_doctor_table_is_whole_when_piped_even_with_narrow_columns():
    r = _run_piped(["doctor"])
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    # the interpreter's path is the widest cell: printed whole, on one line
    assert any(sys.executable in line for line in r.stdout.splitlines()), r.stdout
    widest = max(len(line) for line in r.stdout.splitlines())
    assert widest > 40  # laid out at its natural width, not at COLUMNS


def test_table_keeps_long_cells_whole_when_not_a_terminal():
    from edgekit.cli.common import LogSafeConsole, table
    buf = io.StringIO()
    con = LogSafeConsole(file=buf, highlight=False)
    assert not con.is_terminal
    cells = ("openvino 2024.4.0-16579-c3152d32c9c-releases/2024/4", "1.9234567e-05",
             "x" * 150)
    con.print(table("wide", ["runtime", "value", "note"], [cells]))
    text = buf.getvalue()
    assert "…" not in text
    for cell in cells:
        assert cell in text


def test_terminal_still_uses_its_width():
    from edgekit.cli.common import LogSafeConsole, table
    buf = io.StringIO()
    con = LogSafeConsole(file=buf, force_terminal=True, width=60, color_system=None)
    con.print(table("wide", ["runtime", "note"], [("openvino " * 5, "x" * 150)]))
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 60


def test_progress_goes_to_stderr_results_to_stdout(tmp_path):
    r = _run_piped(["train", "--arch", "tiny", "--data", "digits", "-o", str(tmp_path / "t"),
                    "--epochs", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith("trained tiny")]
    assert len(r.stdout.splitlines()) == 1
    assert "epoch 2/2" in r.stderr
