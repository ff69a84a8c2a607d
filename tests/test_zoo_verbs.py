"""Every verb on the zoo (tests/zoo.py): models edgekit did not design, trained as users do.

Residual (Add), concat (Inception-style), depthwise-separable and Sequential nets, with
softmax and logits heads, saved as .h5 / .keras / SavedModel, each trained with plain Keras on
digits to a known accuracy. Assertions are real: a compression either stays within the
accuracy guard (checked again here on the test split, with slack for its 359 images) or is
refused with one line and nothing written; exports agree with Keras; bench measures the
accuracy Keras measured.
"""
import numpy as np
import pytest

from tests.zoo import build, save_all, train_plain

# name -> (head, the format the fixture hands to edgekit)
TRAINED = {"resnet": ("logits", "keras"), "inception": ("softmax", "h5"),
           "separable": ("softmax", "savedmodel"), "sequential": ("logits", "h5")}
SLACK = 0.03  # test-split slack on 359 images (~11 images) over the 1-pt validation guard


@pytest.fixture(scope="session")
def trained_zoo(tmp_path_factory, digits):
    """{name: (path, test accuracy)} for the zoo models trained on digits (8x8x1)."""
    from edgekit.models import keras_accuracy
    root = tmp_path_factory.mktemp("zoo")
    x = np.concatenate([digits.x_train, digits.x_val])
    y = np.concatenate([digits.y_train, digits.y_val])
    out = {}
    for name, (head, fmt) in TRAINED.items():
        model = train_plain(build(name, digits.input_shape, 10, head=head), x, y, epochs=25,
                            batch_size=32, lr=3e-3)
        paths = save_all(model, root / name, formats=(fmt,))
        out[name] = (paths[fmt], keras_accuracy(model, digits.x_test, digits.y_test))
    return out


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_zoo_fixture_trained(trained_zoo, name):
    assert trained_zoo[name][1] >= 0.85, trained_zoo[name]


def _outcome(fn, out):
    """Run a compression: its artifact, or None when the guard refused (nothing written)."""
    from edgekit.compress.guard import GuardFailed
    try:
        return fn()
    except GuardFailed as exc:
        msg = str(exc)
        assert "lost" in msg and "nothing written" in msg
        assert not out.exists() and not [p for p in out.parent.iterdir()
                                          if p.name.startswith("." + out.name)]
        return None


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_prune_default_on_zoo(trained_zoo, digits, tmp_path, name):
    from edgekit.compress import compress
    path, base = trained_zoo[name]
    out = tmp_path / "p"
    art = _outcome(lambda: compress(path, "prune", digits, out, sparsity=0.5, progress=False), out)
    if art is None:
        return
    m = art.manifest["metrics"]
    assert m["guard"]["passed"] and m["accuracy"] >= base - SLACK
    assert art.manifest["output"]["convention"] == TRAINED[name][0]
    assert m["nonzero_params"] < m["before"]["nonzero_params"]


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_quantize_onnx_on_zoo(trained_zoo, digits, tmp_path, name):
    from edgekit.compress import compress
    path, base = trained_zoo[name]
    out = tmp_path / "q"
    art = _outcome(lambda: compress(path, "quantize", digits, out, formats="onnx",
                                    calibration_samples=100, progress=False), out)
    if art is None:
        return
    entry = art.files["model.int8.onnx"]
    assert entry["guard"]["passed"] and entry["accuracy"] >= base - SLACK


@pytest.mark.parametrize("name", ["inception", "separable"])
def test_distill_functional_students(trained_zoo, digits, tmp_path, name):
    """Derived students of concat and depthwise graphs keep their graph; guard or refusal."""
    from edgekit.compress import compress
    from edgekit.models import load_model
    path, base = trained_zoo[name]
    out = tmp_path / "d"
    art = _outcome(lambda: compress(path, "distill", digits, out, width=0.5, epochs=30,
                                    progress=False), out)
    if art is None:
        return
    m = art.manifest["metrics"]
    assert m["params"] < m["before"]["params"] and m["accuracy"] >= base - SLACK
    kinds = {type(l).__name__ for l in load_model(art.path).layers}
    assert ("Concatenate" in kinds) if name == "inception" else ("SeparableConv2D" in kinds)


@pytest.mark.parametrize("name", ["resnet", "inception"])
def test_distill_refit_on_functional_teachers(trained_zoo, digits, tmp_path, name):
    """``--refit`` on residual (logits head) and concat (softmax head) teachers: the derived
    student trains again from its teacher-derived start on every training image for the
    epochs the selection chose, and ``--refit-epochs`` (optimize's refit) gives that same
    model without the selection run."""
    from edgekit.compress import compress
    from edgekit.models import load_model
    path, _ = trained_zoo[name]

    def run(sub, **kw):
        art = compress(path, "distill", digits, tmp_path / sub, width=0.5, epochs=4,
                       settle=False, allow_drop=True, seed=2, progress=False, **kw)
        return art, load_model(art.path)
    art, net = run("r", refit=True)
    p = art.manifest["method"]["params"]
    assert p["refit"] == {"epochs": p["best_epoch"], "images": len(digits.y_train)}
    assert art.manifest["metrics"]["guard"]["split"] == "validation"
    kinds = {type(l).__name__ for l in net.layers}
    assert ("Add" in kinds) if name == "resnet" else ("Concatenate" in kinds)
    again, net2 = run("given", refit_epochs=p["refit"]["epochs"])
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), net2.get_weights()))
    assert again.manifest["metrics"]["accuracy"] == art.manifest["metrics"]["accuracy"]


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_export_and_bench_on_zoo(trained_zoo, digits, tmp_path, name):
    """The user's model made an artifact (prune --allow-drop keeps it cheap), exported to ONNX
    with parity, and benchmarked: bench's accuracy is the exported file's."""
    from edgekit.bench import bench
    from edgekit.compress import compress
    from edgekit.export import export
    path, _ = trained_zoo[name]
    art = compress(path, "prune", digits, tmp_path / "a", sparsity=0.3, epochs=1,
                   allow_drop=True, progress=False)
    ex = export(art.path, ["onnx"], target="laptop-cpu", data="digits")
    onnx = [e for n, e in ex.files.items() if e.get("format") == "onnx"][0]
    assert onnx["parity"]["agreement"] >= 0.99
    rows = bench(art.path, "laptop-cpu", runtime="onnxruntime", data="digits", iterations=20,
                 warmup=2)
    assert abs(rows[0]["accuracy"] - art.manifest["metrics"]["accuracy"]) < 0.01


@pytest.mark.slow  # ~90 s: the int8 calibration search on a 150-layer graph
def test_mobilenetv2_resized_digits_export_and_int8(digits, tmp_path):
    """keras.applications.MobileNetV2 at 32x32x3: digits are resized + channel-repeated by the
    loader, the manifest says so, the ONNX export agrees with Keras on those inputs, and its
    int8 ONNX runs on the same fitted data (untrained: --allow-drop)."""
    from edgekit.compress import compress
    from edgekit.data import Dataset
    from edgekit.export import export
    d = digits  # a slice keeps this in the default run (MobileNetV2 at 32x32 is ~100x tiny's cost)
    small = Dataset("digits", d.x_train[:192], d.y_train[:192], d.x_val[:64], d.y_val[:64],
                    d.x_test[:64], d.y_test[:64], d.classes, dict(d.norm))
    model = build("mobilenetv2", (32, 32, 3), 10, head="softmax")
    h5 = save_all(model, tmp_path / "mnv2", formats=("h5",))["h5"]
    art = compress(h5, "quantize", small, tmp_path / "q", formats="onnx",
                   calibration_samples=32, allow_drop=True, progress=False)
    inp = art.manifest["input"]
    assert inp["shape"] == [None, 32, 32, 3] and inp["resize"] == [32, 32]
    assert inp["channels"] == "repeat" and art.manifest["output"]["convention"] == "softmax"
    p = compress(h5, "prune", small, tmp_path / "p", sparsity=0.2, epochs=1, allow_drop=True,
                 progress=False)
    assert p.manifest["metrics"]["layer_sparsity"]["Conv1"] > 0.15  # pruned inside the nested model
    ex = export(p.path, ["onnx"], target="laptop-cpu", data="digits")
    onnx = [e for n, e in ex.files.items() if e.get("format") == "onnx"][0]
    assert onnx["parity"]["max_abs_diff"] < 1e-3
