"""`report` is staged like an artifact: a new dir appears whole or not at all, an existing
one is refused without --force and replaced whole (only on success) with it."""
import json


def _result(path, p50=1.0):
    r = {"target": "laptop-cpu", "runtime": "onnxruntime", "runtime_version": "1", "device": "CPU",
         "batch": 1, "iterations": 5, "warmup": 1, "cold_start_ms": 2.0,
         "latency_ms": {"mean": p50, "std": 0.1, "min": p50 / 2, "p50": p50, "p90": p50 * 1.1,
                        "p95": p50 * 1.2, "p99": p50 * 1.3, "max": p50 * 2},
         "throughput_ips": 1000 / p50, "peak_rss_mb": 50.0, "accuracy": 0.9, "bytes": 1000,
         "host": "h", "timestamp": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps(r))
    return path


def test_report_refuses_existing_dir_and_force_replaces_it_whole(tmp_path, run_cli):
    good, out = _result(tmp_path / "a.json"), tmp_path / "rep"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run_cli("report", good, "-o", out)
    assert code == 1 and "already exists" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"target": "x"}))
    code, _, err = run_cli("report", good, bad, "-o", out, "--force")  # fails: old dir intact
    assert code == 1 and "not an edgekit results file" in err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    code, _, err = run_cli("report", good, _result(tmp_path / "b.json", 2.0), "-o", out, "--force")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_bytes.png", "latency.png", "report.html", "report.md"]
    assert "../a.json" in (out / "report.md").read_text()  # results listed relative to the report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json", "bad.json", "rep"]
