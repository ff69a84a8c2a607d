"""The user's own model: output convention, the accuracy guard, budgeted fine-tuning, one voice.

The headline bug this guards against: a functional ResNet-style model with BatchNorm and a
softmax head, pruned or distilled by edgekit, came out at chance level with exit 0 (every loss
assumed logits). Here the same kind of model (tests/zoo.py), trained with plain Keras as a
user would, keeps its accuracy, and a result that cannot is refused with nothing written.
"""
import subprocess
import sys

import numpy as np
import pytest

from tests.zoo import HEADS, ZOO, build, mobilenetv2_flat, save_all, train_plain

REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("head", HEADS)
def test_output_convention_of_every_zoo_model(name, head):
    from edgekit.models import output_convention
    shape = (32, 32, 3) if name == "mobilenetv2" else (8, 8, 1)
    assert output_convention(build(name, shape, 10, head=head)) == head


def test_output_convention_keras_applications_top():
    from edgekit.models import output_convention
    assert output_convention(mobilenetv2_flat((32, 32, 3), 10, head="softmax")) == "softmax"
    assert output_convention(mobilenetv2_flat((32, 32, 3), 10, head="logits")) == "logits"


@pytest.mark.parametrize("head", HEADS)
def test_output_convention_through_tfmot_wrappers(head):
    """keras.applications' head is ``Dense(activation="softmax")``: once tfmot wraps it for
    pruning the last layer is a ``PruneLowMagnitude`` with no activation of its own, and the
    fine-tune's loss must still see a softmax (it once trained with from_logits=True)."""
    import tensorflow_model_optimization as tfmot
    from edgekit.models import loss_for, output_convention
    model = mobilenetv2_flat((32, 32, 3), 10, head=head)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert type(wrapped.layers[-1]).__name__ == "PruneLowMagnitude"
    assert output_convention(wrapped) == head
    assert loss_for(wrapped).get_config()["from_logits"] == (head == "logits")


def test_as_logits_is_softmax_invariant():
    from edgekit.models import as_logits
    z = np.random.RandomState(0).randn(5, 10).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    back = as_logits(p, "softmax")
    for T in (1.0, 4.0):
        a, b = np.exp(z / T), np.exp(back / T)
        np.testing.assert_allclose(a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True),
                                   atol=1e-5)
    assert as_logits(z, "logits") is z


@pytest.fixture(scope="session")
def user_resnet(tmp_path_factory, digits):
    """A ResNet-style functional net, BatchNorm + softmax head, trained with plain Keras on
    digits (8x8x1) and saved as .h5 — a model edgekit did not make."""
    model = build("resnet", digits.input_shape, 10, head="softmax")
    x = np.concatenate([digits.x_train, digits.x_val])
    y = np.concatenate([digits.y_train, digits.y_val])
    train_plain(model, x, y, epochs=30, batch_size=32, lr=3e-3)
    return save_all(model, tmp_path_factory.mktemp("user") / "resnet", formats=("h5", "onnx"))


def _acc(path, ds):
    from edgekit.models import keras_accuracy, load_model
    return keras_accuracy(load_model(path), ds.x_test, ds.y_test)


def test_user_resnet_fixture_is_good(user_resnet, digits):
    assert _acc(user_resnet["h5"], digits) >= 0.9


def test_prune_softmax_functional_keeps_accuracy(user_resnet, digits, tmp_path):
    """Was 10.58% with exit 0: the softmax head got a from_logits loss."""
    from edgekit.compress import compress
    art = compress(user_resnet["h5"], "prune", digits, tmp_path / "p", sparsity=0.5,
                   progress=False)
    m = art.manifest
    assert m["output"]["convention"] == "softmax"
    g = m["metrics"]["guard"]
    assert g["passed"] and g["drop_pts"] <= 1.0
    assert m["metrics"]["accuracy"] >= m["metrics"]["before"]["accuracy"] - 0.03
    assert m["metrics"]["nonzero_params"] < 0.65 * m["metrics"]["before"]["nonzero_params"]


def test_distill_softmax_functional_teacher(user_resnet, digits, tmp_path):
    """Was 8.56% with exit 0. The derived student keeps the residual graph and the softmax."""
    from edgekit.compress import compress
    from edgekit.compress.guard import GuardFailed
    from edgekit.models import load_model, output_convention
    try:
        art = compress(user_resnet["h5"], "distill", digits, tmp_path / "d", width=0.5,
                       progress=False)
    except GuardFailed as exc:  # allowed outcome: refused, nothing written, the drop named
        assert "lost" in str(exc) and not (tmp_path / "d").exists()
        return
    m = art.manifest["metrics"]
    assert m["guard"]["passed"] and m["params"] < m["before"]["params"]
    assert m["accuracy"] >= m["before"]["accuracy"] - 0.03
    student = load_model(art.path)
    assert output_convention(student) == "softmax"
    assert any(type(l).__name__ == "Add" for l in student.layers)


def test_guard_fails_closed_one_line(user_resnet, tmp_path, run_cli):
    """One epoch of a quarter-width student cannot stay within 0.1 pt: exit 1, nothing written."""
    out = tmp_path / "student"
    code, _, err = run_cli("compress", user_resnet["h5"], "--method", "distill", "--width",
                           "0.25", "--epochs", "1", "--max-drop", "0.1", "--data", "digits",
                           "-o", out)
    assert code == 1, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "lost" in errors[0] and "nothing written" in errors[0], err
    assert "--allow-drop" in errors[0] and "--epochs" in errors[0]
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".student")]


def test_allow_drop_writes_and_records(user_resnet, tmp_path):
    from edgekit.compress import compress
    art = compress(user_resnet["h5"], "distill", "digits", tmp_path / "d", width=0.25, epochs=1,
                   max_drop=0.1, allow_drop=True, progress=False)
    g = art.manifest["metrics"]["guard"]
    assert not g["passed"] and g["allowed_drop"] and g["max_drop_pts"] == 0.1


@pytest.mark.parametrize("method", ["prune", "distill"])
def test_training_methods_refuse_onnx(user_resnet, tmp_path, run_cli, method):
    out = tmp_path / "o"
    code, _, err = run_cli("compress", user_resnet["onnx"], "--method", method, "--data",
                           "digits", "-o", out)
    assert code == 1 and err.startswith("error:") and "ONNX" in err
    assert "quantize" in err and "knn-slice" in err and not out.exists()


@pytest.mark.parametrize("bad", ["-1", "101", "nan", "inf"])
def test_max_drop_validated(tiny_artifact, tmp_path, run_cli, bad):
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "prune", "--max-drop", bad,
                           "--data", "digits", "-o", tmp_path / "o")
    assert code == 1 and err.startswith("error: --max-drop"), err


@pytest.mark.parametrize("flag,value,match", [
    ("--lr", "nan", "--lr must be"),
    ("--lr", "0", "--lr must be"),
    ("--batch-size", "0", "--batch-size must be"),
    ("--epochs", "-2", "--epochs"),
])
def test_training_options_validated_before_work(tiny_artifact, tmp_path, run_cli, flag, value,
                                                match):
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "prune", flag, value,
                           "--data", "digits", "-o", tmp_path / "o")
    assert code == 1 and match in err.splitlines()[0], err


def test_epoch_cap_scales_with_data():
    from edgekit.compress.guard import FINE_TUNE_STEPS, default_batch_size, epoch_cap
    small, big = 1295, 54000
    bs_small, bs_big = default_batch_size(small), default_batch_size(big)
    assert (bs_small, bs_big) == (32, 128)
    cap_small, cap_big = epoch_cap(small, bs_small), epoch_cap(big, bs_big)
    # both get at least the step budget, neither far more than an epoch over it
    for n, bs, cap in ((small, bs_small, cap_small), (big, bs_big, cap_big)):
        per_epoch = -(-n // bs)
        assert FINE_TUNE_STEPS <= cap * per_epoch < FINE_TUNE_STEPS + max(per_epoch, 2 * per_epoch)
    assert epoch_cap(small, bs_small, epochs=3) == 3


def test_guard_record_and_failure():
    from edgekit.compress.guard import Guard, GuardFailed
    g = Guard(0.95, max_drop=1.0)
    assert g.check(0.941, "x")["passed"]
    with pytest.raises(GuardFailed, match=r"lost 2\.00 pt .*95\.00% -> 93\.00%"):
        g.check(0.93, "prune", ["a lower --sparsity"])
    assert Guard(0.95, 1.0, allow_drop=True).check(0.5, "x")["allowed_drop"]


def test_bn_momentum_is_lowered_then_restored():
    from edgekit.compress.guard import batchnorm_layers, bn_momentum
    model = build("mobilenetv2", (32, 32, 3), 10)
    before = {l.name: l.momentum for l in batchnorm_layers(model)}
    assert set(before.values()) == {0.999}
    with bn_momentum(model) as n:
        assert n == len(before)
        assert {l.momentum for l in batchnorm_layers(model)} == {0.9}
    assert {l.name: l.momentum for l in batchnorm_layers(model)} == before


def test_progress_is_edgekits_not_keras(digits, capfd):
    from edgekit.models import build as build_arch, fit
    model = build_arch("tiny", digits.input_shape, 10)
    fit(model, digits, 2, batch_size=64, progress=True)
    _, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert [ln.split(":")[0] for ln in lines] == ["training epoch 1/2", "training epoch 2/2"], err
    assert "val " in lines[-1] and "loss " in lines[-1]
    assert "\b" not in err and "step" not in err


def test_error_is_first_stderr_line_after_tensorflow_import(tmp_path):
    """tensorflow's C++ start-up lines (absl, cudart_stub) must not come before `error:`."""
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file")
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    p = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", "compress",
                        str(bad), "--method", "prune", "--data", "digits", "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1
    assert p.stderr.splitlines()[0].startswith("error: cannot load model"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# -- the paired upper bound ------------------------------------------------------------------

def _preds(n, base_wrong, lost, won, seed=0):
    """Labels, base predictions with ``base_wrong`` errors, and a result that loses ``lost``
    of the base's right answers and wins ``won`` of its wrong ones."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 10, n)
    base = y.copy()
    wrong = rng.choice(n, base_wrong, replace=False)
    base[wrong] = (y[wrong] + 1) % 10
    res = base.copy()
    right = np.setdiff1d(np.arange(n), wrong)
    lost_idx = rng.choice(right, lost, replace=False)
    res[lost_idx] = (y[lost_idx] + 2) % 10
    res[wrong[:won]] = y[wrong[:won]]
    return y, base, res


@pytest.mark.parametrize("n, base_wrong, lost, won, max_drop, passes", [
    (143, 5, 0, 0, 1.0, True),        # identical predictions (int8 on digits): bound = drop = 0
    (143, 5, 1, 0, 1.0, False),       # 0.70 pt lost, but one image is +-0.70 pt: bound 1.40
    (143, 5, 1, 0, 1.5, True),
    (143, 10, 6, 6, 1.0, False),      # no net change, 12 changed predictions: bound 2.4 pt
    (143, 10, 2, 8, 1.0, True),       # a better model: -4.2 pt drop, bound -2.4 pt
    (6000, 60, 40, 20, 1.0, True),    # MNIST-sized: 0.33 pt lost, bound 0.43 pt
    (6000, 60, 80, 0, 1.0, False),    # 1.33 pt lost: over the limit itself
])
def test_paired_bound_holds_what_the_split_can_show(n, base_wrong, lost, won, max_drop, passes):
    from edgekit.compress.guard import Guard, GuardFailed
    y, base, res = _preds(n, base_wrong, lost, won)
    g = Guard(np.mean(base == y), max_drop=max_drop, samples=n, base_pred=base, y=y)
    acc = np.mean(res == y)
    drop, upper, changed = g.paired(res)
    assert changed == lost + won
    assert drop == pytest.approx(100.0 * (lost - won) / n)
    se = 100.0 * np.sqrt(lost + won - (lost - won) ** 2 / n) / n
    assert upper == pytest.approx(drop + se)
    if passes:
        rec = g.check(acc, "prune", pred=res)
        assert rec["passed"] and rec["drop_upper_pts"] == pytest.approx(upper, abs=1e-3)
    else:
        with pytest.raises(GuardFailed, match="nothing written") as e:
            g.check(acc, "prune", pred=res)
        if 100.0 * (lost - won) / n <= max_drop:    # within the limit, not shown to be
            assert "cannot show" in str(e.value) and "changed" in str(e.value)
    if 100.0 * (lost - won) / n <= max_drop:   # without predictions: the measured drop alone
        assert g.check(acc, "prune")["passed"]


def test_fine_tuning_selects_epochs_on_a_slice_held_out_of_training(user_resnet, digits, tmp_path):
    """Early stopping and restore-best watch a stratified slice of the training split; the
    validation split the guard reads is never shown to the fine-tune."""
    from edgekit.compress._common import Job
    from edgekit.compress.guard import SELECTION_MAX_FRACTION
    job = Job(user_resnet["h5"], digits, tmp_path / "out", force=False, method="prune")
    tune, guard = job.selection()
    n_train, n_val = len(digits.y_train), len(digits.y_val)
    assert len(tune.y_val) + len(tune.y_train) == n_train
    assert abs(len(tune.y_val) - min(n_val, SELECTION_MAX_FRACTION * n_train)) <= 10
    assert tune.x_val is not digits.x_val and guard.split == "selection"
    rows = {r.tobytes() for r in np.asarray(digits.x_train).reshape(n_train, -1)}
    assert all(r.tobytes() in rows for r in np.asarray(tune.x_val).reshape(len(tune.y_val), -1))
    assert np.array_equal(job.ds.x_val, digits.x_val)            # the guard's split, untouched
    assert set(np.unique(tune.y_val)) == set(np.unique(digits.y_train))   # every class in it
    assert job.guard.samples == n_val and guard.samples == len(tune.y_val)


@pytest.mark.parametrize("n_train, n_val, frac", [
    (54000, 6000, 6000 / 54000.0), (1295, 143, 143 / 1295.0), (1000, 900, 0.2),
    (100, 10, None), (0, 10, None), (149, 40, None), (150, 40, 0.2)])
def test_selection_fraction(n_train, n_val, frac):
    from edgekit.compress.guard import selection_fraction
    got = selection_fraction(n_train, n_val)
    assert got == (pytest.approx(frac) if frac is not None else None)


def test_softmax_student_logits_keep_their_gradient():
    """Distillation reads a softmax model's logits as the softmax's own input (what Keras'
    crossentropy does), not log(clip(p)): a confidently wrong prediction — p of the true class
    underflows to 0 — still has a gradient, so the student can learn that image."""
    import tensorflow as tf
    from edgekit._tf import keras
    from edgekit.models import as_logits
    k = keras()
    inp = k.Input((2,))
    out = k.layers.Dense(2, activation="softmax", use_bias=False, kernel_initializer=k.initializers
                         .Constant([[50.0, -50.0], [50.0, -50.0]]))(inp)
    m = k.Model(inp, out)
    x = np.ones((1, 2), np.float32)           # logits (100, -100): p(class 1) = 0 in float32

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            logits = as_logits(m(x), "softmax")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits([1], logits))
        return tape.gradient(loss, m.trainable_variables)[0]
    assert float(tf.reduce_max(tf.abs(grad()))) > 0.5


@pytest.mark.parametrize("vals,settle,stopped_after,best_epoch", [
    # reaches the target (0.90) at epoch 2, epoch 3 is no better: settle stops there
    ([0.80, 0.91, 0.90, 0.95, 0.96], True, 3, 2),
    # settle=False (optimize's distillation) trains on and keeps the later, better epoch
    ([0.80, 0.91, 0.90, 0.95, 0.96], False, None, 5),
    # never reaches the target: only the patience (2) stops it, either way
    ([0.50, 0.60, 0.55, 0.58, 0.70], True, 4, 2),
    ([0.50, 0.60, 0.55, 0.58, 0.70], False, 4, 2),
])
def test_guard_stop_settles_only_when_asked(vals, settle, stopped_after, best_epoch):
    """guard_stop's early stop on reaching the guard is what compress wants (the first
    good-enough epoch) and what a search does not (the best within the cap)."""
    from types import SimpleNamespace

    from edgekit.compress.guard import guard_stop
    guard = SimpleNamespace(target=0.90, split="selection", base_val=0.91, max_drop=1.0)
    cb = guard_stop(guard, patience=2, settle=settle)
    model = SimpleNamespace(stop_training=False, weights=None)
    model.get_weights = lambda: model.weights
    model.set_weights = lambda w: setattr(model, "weights", w)
    cb.set_model(model)
    stopped = None
    for epoch, v in enumerate(vals):
        model.weights = ["epoch", epoch + 1]
        cb.on_epoch_end(epoch, {"val_accuracy": v})
        if model.stop_training:
            stopped = epoch + 1
            break
    cb.on_train_end()
    assert stopped == stopped_after
    assert cb.summary()["best_epoch"] == best_epoch and model.weights == ["epoch", best_epoch]


@pytest.mark.parametrize("extend, rounds", [(False, 1), (True, 3)])
def test_default_fine_tune_goes_on_while_still_improving_at_the_cap(tiny_artifact, digits,
                                                                   tmp_path, extend, rounds):
    """A default cap reached short of the guard while selection accuracy still improves is
    extended (at most EXTEND_ROUNDS more caps, best kept); a user's --epochs is not (issue 35)."""
    from edgekit.compress._common import EXTEND_ROUNDS, Job, fine_tune
    from edgekit.models import build
    job = Job(tiny_artifact.path, digits, tmp_path / "out", force=False, method="prune")
    fresh = build("tiny", digits.input_shape, digits.num_classes)  # far below the guard
    ran = fine_tune(fresh, job, 1, 1e-3, 32, False, extend=extend)
    assert ran["epochs_run"] == rounds and (not extend or ran["rounds"] == 1 + EXTEND_ROUNDS)
    assert ran["best_epoch"] == rounds                    # every round still improved
    if extend:
        assert "limit" in ran["stopped"]
