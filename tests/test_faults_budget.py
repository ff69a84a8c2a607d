"""``--budget`` is a promise (issue 34, class 8): a wall-clock deadline cuts training inside
``fit`` (the callback every edgekit fit carries), and optimize writes the best candidate
measured so far with a note that the budget ended the search."""
import json
import time



def test_training_stops_at_the_deadline(digits):
    from edgekit.deadline import until, was_cut
    from edgekit.models import build, fit
    model = build("tiny", digits.input_shape, digits.num_classes)
    t0 = time.time()
    with until(t0 + 3.0):
        fit(model, digits, epochs=10000, batch_size=32, progress=False)
        cut = was_cut()
    took = time.time() - t0
    assert cut and took < 3.0 + 30.0, took  # 10000 epochs would take hours
    with until(None):
        assert not was_cut()


def test_optimize_budget_is_a_deadline(tiny_artifact, tmp_path, run_cli):
    """--epochs 5000 would train its first candidate for many minutes; --budget 20s ends it
    at the deadline, and the result says the budget ended the search."""
    out = tmp_path / "opt"
    t0 = time.time()
    code, _, err = run_cli("optimize", tiny_artifact.path, "--data", "digits", "--max-bytes",
                           "40000", "--budget", "20s", "--epochs", "5000", "--iterations", "2",
                           "--methods", "distill", "-o", out)
    took = time.time() - t0
    assert "Traceback" not in err, err[-3000:]
    assert took < 20 + 150, took
    assert "--budget 20 s reached" in err, err[-2000:]
    assert "needs about" in err and "will be cut at the deadline" in err, err[-2000:]
    front = json.loads((out / "front.json").read_text())
    assert front["note"].startswith("the --budget ended the search"), front.get("note")
    assert code == 0 or "error: " in err
