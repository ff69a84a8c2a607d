"""Issue 35 items 2 and 3: a validation split sized so the guard can decide, and a default
fine-tune that goes on while still improving, bounded by ``--budget`` (parsed once, by
``optimize --budget``'s parser), saying how long it ran and why it stopped."""
import json

import numpy as np
import pytest


# -- the validation split, sized to the data ---------------------------------------------------

@pytest.mark.parametrize("n_train, fraction", [
    (60000, 0.1),          # MNIST: 6,000 validation images, as before
    (20000, 0.1),          # 10% is already 2,000 images
    (8000, 0.125),         # raised to reach 1,000 images
    (4000, 0.25),          # 1,000 is exactly a quarter
    (1437, 0.25),          # digits: capped at a quarter (359 images, not 144)
    (100, 0.25),
    (0, 0.1),
])
def test_validation_fraction_reaches_its_images_within_a_quarter(n_train, fraction):
    from edgekit.data import VAL_MAX_FRACTION, VAL_MIN_IMAGES, validation_fraction
    got = validation_fraction(n_train)
    assert got == pytest.approx(fraction)
    assert 0.1 <= got <= VAL_MAX_FRACTION
    if n_train and got < VAL_MAX_FRACTION:
        assert got * n_train >= VAL_MIN_IMAGES - 1e-6


def test_digits_split_is_stratified_disjoint_and_recorded(digits):
    from edgekit.data import SPLIT_SEED, load_data
    n_val, n_train = len(digits.y_val), len(digits.y_train)
    assert n_val == pytest.approx(0.25 * (n_val + n_train), abs=10)     # ~359 of 1,438
    assert set(np.unique(digits.y_val)) == set(range(10))
    counts = np.bincount(digits.y_val, minlength=10)
    assert counts.min() >= 30                                         # every class, ~36 each
    rows = {r.tobytes() for r in np.asarray(digits.x_train).reshape(n_train, -1)}
    dup = sum(r.tobytes() in rows for r in np.asarray(digits.x_val).reshape(n_val, -1))
    assert dup <= 2      # digits has a handful of identical 8x8 images; no index is shared
    assert digits.split == {"validation_images": n_val, "validation_fraction":
                            round(n_val / float(n_val + n_train), 4), "seed": SPLIT_SEED}
    again = load_data("digits", val_fraction=0.1)                     # the explicit old rule
    assert len(again.y_val) < n_val / 2


def test_guard_resolution_is_recorded_and_shrinks_with_the_split():
    """``resolution_pts``: one standard error of the paired drop; the same change rate on
    2.5x the images resolves ~1/sqrt(2.5) as finely."""
    from edgekit.compress.guard import Guard
    res = {}
    for n in (144, 359):
        rng = np.random.RandomState(0)
        y = rng.randint(0, 10, n)
        base = y.copy()
        res_pred = y.copy()
        flip = rng.choice(n, int(round(0.04 * n)), replace=False)   # 4% of predictions change
        res_pred[flip[: len(flip) // 2]] = (y[flip[: len(flip) // 2]] + 1) % 10
        rec = Guard(1.0, max_drop=5.0, samples=n, base_pred=base, y=y).check(
            np.mean(res_pred == y), "prune", pred=res_pred)
        lost = len(flip) // 2
        assert rec["resolution_pts"] == pytest.approx(
            100.0 * np.sqrt(lost - lost ** 2 / float(n)) / n, abs=1e-3)
        assert rec["drop_upper_pts"] == pytest.approx(rec["drop_pts"] + rec["resolution_pts"],
                                                      abs=2e-3)
        res[n] = rec["resolution_pts"]
    assert res[359] < res[144] * 0.75


def test_a_model_trained_on_another_split_gets_a_note(tiny_artifact, digits, tmp_path):
    """An artifact whose manifest records another validation split (or none: before the split
    was sized to the data) is compressed with a note that the guard may read optimistically."""
    import shutil
    from edgekit.compress._common import split_note
    assert split_note(tiny_artifact.path, digits) is None            # trained on this split
    old = tmp_path / "old"
    shutil.copytree(tiny_artifact.path, old)
    m = json.loads((old / "manifest.json").read_text())
    assert m["source"]["split"] == digits.split
    del m["source"]["split"]
    (old / "manifest.json").write_text(json.dumps(m))
    note = split_note(old, digits)
    assert note.startswith("note: ") and "10%" in note and "359" in note
    m["source"]["split"] = dict(digits.split, validation_images=144)
    (old / "manifest.json").write_text(json.dumps(m))
    assert "144" in split_note(old, digits)
    assert split_note(old, digits.__class__(  # another data spec: nothing to compare
        "npz:x.npz", digits.x_train, digits.y_train, digits.x_val, digits.y_val,
        digits.x_test, digits.y_test, digits.classes, digits.norm)) is None


# -- --budget ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("abc", "--budget 'abc' is not a duration"),
    ("0", "--budget must be a positive duration"),
    ("0s", "--budget must be a positive duration"),
    ("-5m", "is not a duration"),
    ("10x", "is not a duration"),
    ("nan", "is not a duration"),
    ("inf", "is not a duration"),
    ("", "is not a duration"),
    ("1e3", "is not a duration"),
])
@pytest.mark.parametrize("method", ["prune", "distill"])
def test_bad_budget_is_one_error_line(run_cli, tiny_artifact, tmp_path, value, message, method):
    out = tmp_path / "out"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", method, "--data", "digits",
                           "-o", out, "--budget", value)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("text, seconds", [("10m", 600.0), ("90s", 90.0), ("1.5h", 5400.0),
                                           ("600", 600.0), (45, 45.0)])
def test_budget_is_parsed_once_into_seconds(text, seconds):
    from edgekit.compress.options import resolve
    from edgekit.deadline import parse_budget
    from edgekit.optimize import parse_budget as optimize_parser
    assert optimize_parser is parse_budget                       # one parser for both commands
    assert resolve("prune", {"budget": text})["budget"] == seconds == parse_budget(text)
    assert resolve("distill", {"budget": text})["budget"] == seconds


def test_budget_is_prunes_alone(run_cli, tiny_artifact, tmp_path):
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "quantize", "--data",
                           "digits", "-o", tmp_path / "q", "--budget", "10m")
    assert code == 1 and err.strip().startswith("error: --budget is not an option of --method "
                                                 "quantize"), err


@pytest.mark.parametrize("cap, extend, budget, reason, epochs", [
    # the user's --epochs: the cap is the cap, even while still improving
    (1, False, None, "cap reached, still improving", 1),
    # edgekit's default cap: two more rounds while still improving, then the limit
    (1, True, None, "rounds limit", 3),
    # a budget spent in the first batch: cut there, no further round
    (3, True, 1e-3, "budget spent", 1),
])
def test_fine_tune_says_how_long_and_why_it_stopped(tiny_artifact, digits, tmp_path, cap, extend,
                                                   budget, reason, epochs):
    from edgekit.compress._common import STOP_REASONS, Job, fine_tune, stop_sentence
    from edgekit.models import build
    job = Job(tiny_artifact.path, digits, tmp_path / "out", force=False, method="prune")
    fresh = build("tiny", digits.input_shape, digits.num_classes)    # far below the guard
    ran = fine_tune(fresh, job, cap, 1e-3, 32, False, extend=extend, budget=budget)
    assert ran["stop_reason"] == reason and reason in STOP_REASONS
    assert ran["epochs_run"] == epochs and ran["seconds"] >= 0
    assert ("budget_s" in ran) == (budget is not None) and ("rounds" in ran) == extend
    said = stop_sentence(ran)
    assert said.startswith("fine-tuning ran {} epoch".format(epochs)) and ran["stopped"] in said
    if budget is not None:
        assert ran["budget_s"] == budget and "--budget" in ran["stopped"]
        assert ran["seconds"] < 60


def test_budget_spent_in_the_pruning_ramp_writes_nothing(run_cli, tiny_artifact, tmp_path):
    """A budget that ends the fine-tune before the sparsity ramp reached --sparsity would write
    a model less pruned than asked: refused, one line."""
    out = tmp_path / "p"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "prune", "--data",
                           "digits", "-o", out, "--sparsity", "0.5", "--budget", "0.01s")
    lines = [ln for ln in err.splitlines() if ln.startswith("error")]
    assert code == 1 and len(lines) == 1, err
    assert "--budget 0.01 s ended the fine-tune in the pruning ramp" in lines[0]
    assert not out.exists()


def test_prune_manifest_and_message_say_how_long_it_ran(run_cli, tiny_artifact, tmp_path):
    """A written prune records seconds, stop_reason and the budget, and the success output
    says it in one line."""
    out = tmp_path / "s"
    code, stdout, err = run_cli("compress", tiny_artifact.path, "--method", "prune", "--data", "digits", "-o", out,
                                "--structured", "--ratio", "0.25", "--epochs", "2",
                                "--budget", "5m", "--allow-drop")
    assert code == 0, err
    params = json.loads((out / "manifest.json").read_text())["method"]["params"]
    assert params["budget_s"] == 300.0 and params["stop_reason"] in (
        "guard met", "patience", "cap reached, not improving", "cap reached, still improving")
    assert 0 < params["seconds"] < 300 and params["epochs_run"] <= 2
    assert "fine-tuning ran {} epoch".format(params["epochs_run"]) in stdout
    guard = json.loads((out / "manifest.json").read_text())["metrics"]["guard"]
    assert guard["samples"] == 359 and "resolution_pts" in guard


def test_distill_budget_bounds_the_students_training(run_cli, tiny_artifact, tmp_path):
    """Distillation shares the loop: a budget spent in the first batch stops it there, and the
    manifest and the output say so."""
    out = tmp_path / "d"
    code, stdout, err = run_cli("compress", tiny_artifact.path, "--method", "distill", "--data",
                                "digits", "-o", out, "--width", "0.5", "--budget", "0.01s",
                                "--allow-drop")
    assert code == 0, err
    params = json.loads((out / "manifest.json").read_text())["method"]["params"]
    assert params["stop_reason"] == "budget spent" and params["budget_s"] == 0.01
    assert params["epochs_run"] == 1 and params["rounds"] == 1 and params["seconds"] < 60
    assert "distillation ran 1 epoch in " in stdout and "stopped, --budget 0.01 s spent" in stdout


def test_budget_inside_an_enclosing_deadline_takes_the_earlier(tiny_artifact, digits, tmp_path):
    """Under optimize's deadline (edgekit.deadline.until) a --budget cannot outlast it, and the
    enclosing deadline still learns that it cut the training."""
    import time
    from edgekit.compress._common import Job, fine_tune
    from edgekit.deadline import until, was_cut
    from edgekit.models import build
    job = Job(tiny_artifact.path, digits, tmp_path / "out", force=False, method="prune")
    fresh = build("tiny", digits.input_shape, digits.num_classes)
    with until(time.time() + 1e-3):
        ran = fine_tune(fresh, job, 3, 1e-3, 32, False, extend=True, budget=600)
        assert was_cut()
    assert ran["stop_reason"] == "budget spent" and ran["epochs_run"] == 1
