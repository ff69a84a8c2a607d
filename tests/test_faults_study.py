"""A damaged or foreign study, a bad executor (issue 34, class 4).

``optimize -o DIR`` whose ``study.db`` is random bytes, truncated, another program's SQLite
database or another Optuna study: one line saying what is wrong and that ``--force`` starts
anew, the file untouched. ``--executor dask://HOST:PORT`` is parsed, its port range and
reachability checked (a short TCP connect) before any work; a start that fails after the
study was created (a port that answers but is no Dask scheduler) leaves no ``-o`` behind.
"""
import socket
import sqlite3

import pytest

from test_bad_input import assert_one_error_line, listing

OPT = ["optimize", "{model}", "--data", "digits", "--max-bytes", "40000", "--trials", "1",
       "--iterations", "2"]


def _random(path):
    path.write_bytes(bytes(range(256)) * 20)


def _truncated(path):
    con = sqlite3.connect(str(path))
    con.execute("create table studies(study_name)")
    con.execute("create table trials(x)")
    con.executemany("insert into trials values (?)", [("x" * 200,)] * 500)
    con.commit()
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


def _foreign(path):
    con = sqlite3.connect(str(path))
    con.execute("create table notes(a)")
    con.commit()
    con.close()


def _other_optuna(path):
    import optuna
    optuna.create_study(study_name="someone-else", storage="sqlite:///{}".format(path))


def _empty(path):
    path.write_bytes(b"")


STUDIES = {
    "random_bytes": (_random, r"not a SQLite database"),
    "truncated": (_truncated, r"damaged or truncated"),
    "foreign_sqlite": (_foreign, r"another program"),
    "other_optuna_study": (_other_optuna, r"other Optuna studies \(someone-else\)"),
    "empty": (_empty, r"not a SQLite database \(empty\)"),
}


@pytest.mark.parametrize("name", list(STUDIES))
def test_damaged_or_foreign_study_is_one_line(name, tmp_path, tiny_artifact, run_cli):
    make, pattern = STUDIES[name]
    out = tmp_path / "opt"
    out.mkdir()
    make(out / "study.db")
    before = listing(tmp_path)
    argv = [a.replace("{model}", str(tiny_artifact.path)) for a in OPT] + ["-o", out]
    code, _, err = run_cli(*argv)
    assert_one_error_line(code, err, 1, pattern + r".*--force starts anew")
    assert listing(tmp_path) == before


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


EXECUTORS = [
    ("port_range", lambda: "dask://127.0.0.1:99999", r"not in 1\.\.65535"),
    ("port_zero", lambda: "dask://127.0.0.1:0", r"not in 1\.\.65535"),
    ("no_host", lambda: "dask://:8786", r"is not valid"),
    ("no_port", lambda: "dask://h:port", r"is not valid"),
    ("unresolvable", lambda: "dask://nohost.invalid:8786", r"cannot resolve host"),
    ("closed_port", lambda: "dask://127.0.0.1:{}".format(_closed_port()), r"nothing answers"),
]


@pytest.mark.parametrize("make, pattern", [e[1:] for e in EXECUTORS], ids=[e[0] for e in EXECUTORS])
def test_bad_executor_is_refused_before_any_work(make, pattern, tmp_path, tiny_artifact,
                                                  run_cli):
    before = listing(tmp_path)
    argv = [a.replace("{model}", str(tiny_artifact.path)) for a in OPT] + [
        "-o", tmp_path / "opt", "--executor", make()]
    code, _, err = run_cli(*argv)
    assert_one_error_line(code, err, 1, pattern)
    assert listing(tmp_path) == before  # no -o, no study.db


def test_a_port_that_is_no_scheduler_leaves_no_study(tmp_path, tiny_artifact, run_cli):
    """Reachable (a plain TCP listener) but no Dask scheduler: the failure comes after the
    study was created; the -o this run made is removed. (distributed.Client alone waited
    forever on such a port, whatever its timeout.)"""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        argv = [a.replace("{model}", str(tiny_artifact.path)) for a in OPT] + [
            "-o", tmp_path / "opt", "--executor", "dask://127.0.0.1:{}".format(
                srv.getsockname()[1])]
        code, _, err = run_cli(*argv)
    finally:
        srv.close()
    assert code == 1 and "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: no Dask scheduler answered at"), \
        err[-1000:]  # not a hang: distributed.Client alone waits forever on such a port
    assert not (tmp_path / "opt").exists()
