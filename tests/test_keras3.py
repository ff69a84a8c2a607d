"""Keras 3 model files in, everywhere a Keras model goes in (issue 33, part 1).

The zoo's architectures built with Keras 3 itself (``import keras``) and saved as a Keras 3
user saves them -- ``model.save("m.keras")``, ``model.save("m.h5")``, ``model.export(dir)``
(tests/zoo.py ``build(..., keras3=True)``, ``save_keras3``). Translation tests compare
edgekit's tf_keras model against Keras 3's own outputs on perturbed weights (BatchNorm
statistics included); the table runs every verb through the CLI in-process on two models
trained with plain ``model.fit`` on digits: an artifact within the guard, or one ``error:``
line and nothing written. Artifacts made from a Keras 3 model hold a ``.keras3.keras`` copy
that Keras 3's own ``load_model`` reads with the same predictions.
"""
import json
import zipfile

import numpy as np
import pytest

from tests.zoo import KERAS3_FORMATS, KERAS3_ZOO, build, save_keras3, train_plain

SLACK = 0.03  # test-split slack on digits' 359 images over the 1-pt validation guard


def _perturbed(model, seed=0):
    """Random weights everywhere (variances positive): a misplaced weight shows."""
    rng = np.random.default_rng(seed)
    ws = []
    for v in model.weights:
        shape = tuple(v.shape)
        if "variance" in v.path if hasattr(v, "path") else "variance" in v.name:
            ws.append(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            ws.append((rng.normal(size=shape) * 0.3).astype(np.float32))
    model.set_weights(ws)
    return model


@pytest.mark.parametrize("name", KERAS3_ZOO)
def test_keras3_files_read_as_the_same_tf_keras_model(name, tmp_path, digits):
    """Each zoo net, each way Keras 3 saves it: a tf_keras model with Keras 3's outputs; the
    way back (tf_keras -> Keras 3) gives them too."""
    from edgekit.modelio import describe
    from edgekit.modelio.keras3 import to_keras3
    from edgekit.models import load_model
    head = "logits" if name == "resnet" else "softmax"
    m3 = _perturbed(build(name, digits.input_shape, 10, head=head, keras3=True))
    paths = save_keras3(m3, tmp_path / name)
    x = digits.x_test[:64]
    ref = np.asarray(m3(x, training=False))
    for fmt, path in paths.items():
        net = load_model(path)
        assert type(net).__module__.startswith("tf_keras"), fmt
        out = net.predict(x, verbose=0)
        assert np.max(np.abs(out - ref)) < 1e-4 * max(1.0, np.max(np.abs(ref))), fmt
        info = describe(path)
        assert info["keras3"] is True
        if fmt != "export":
            assert info["keras_version"].startswith("3.") and "translated" in info["loaded_as"]
            kinds = {type(l).__name__ for l in net.layers}
            assert "BatchNormalization" in kinds and net.count_params() == m3.count_params()
        else:
            assert info["keras_version"] is None and "serving function" in info["loaded_as"]
    back = to_keras3(load_model(paths["keras3"]))
    assert type(back).__module__.startswith("keras.")
    assert np.max(np.abs(np.asarray(back(x, training=False)) - ref)) < 1e-4 * max(
        1.0, np.max(np.abs(ref)))


def test_detect_tells_which_keras_wrote_a_file(tmp_path, digits):
    """metadata.json / h5 attrs / keras_metadata.pb decide, not the suffix."""
    from edgekit.modelio.detect import detect
    from tests.zoo import save_all
    m2 = build("sequential", digits.input_shape, 10)
    k2 = save_all(m2, tmp_path / "k2", formats=("h5", "keras", "savedmodel"))
    k3 = save_keras3(build("sequential", digits.input_shape, 10, keras3=True), tmp_path / "k3")
    assert detect(k2["h5"])["keras"] == 2 and detect(k2["keras"])["keras"] == 2
    assert detect(k2["savedmodel"])["keras"] == 2
    assert detect(k3["keras3"])["keras"] == 3 and detect(k3["h5_keras3"])["keras"] == 3
    assert detect(k3["export"])["keras"] is None
    with zipfile.ZipFile(str(k3["keras3"])) as z:
        version = json.loads(z.read("metadata.json"))["keras_version"]
    assert detect(k3["keras3"])["keras_version"] == version


def _k3():
    from edgekit.modelio.keras3 import keras3
    return keras3()


def _custom_layer_model():
    k = _k3()

    @k.saving.register_keras_serializable(package="userpkg")
    class Doubler(k.layers.Layer):
        def call(self, x):
            return 2 * x

    inp = k.Input((8, 8, 1))
    x = Doubler(name="my_doubler")(inp)
    x = k.layers.Flatten()(x)
    return k.Model(inp, k.layers.Dense(10, activation="softmax")(x))


def _lora_model():
    k = _k3()
    inp = k.Input((8, 8, 1))
    x = k.layers.Flatten()(inp)
    return k.Model(inp, k.layers.Dense(10, lora_rank=2, name="adapted")(x))


def _lambda_model():
    k = _k3()
    inp = k.Input((8, 8, 1))
    x = k.layers.Lambda(lambda t: t * 2.0, name="times_two")(inp)
    return k.Model(inp, k.layers.Dense(10)(k.layers.Flatten()(x)))


@pytest.mark.parametrize("make,needle", [
    (_custom_layer_model, "layer 'my_doubler' is a custom layer (userpkg>Doubler)"),
    (_lora_model, "layer 'adapted' (Dense) sets lora_rank=2"),
    (_lambda_model, "layer 'times_two' is a Lambda layer"),
])
def test_untranslatable_layers_refused_naming_the_layer(make, needle, run_cli, tmp_path):
    path = tmp_path / "m.keras"
    make().save(str(path))
    out = tmp_path / "o"
    for argv in (("eval", path, "--data", "digits"),
                 ("compress", path, "--method", "prune", "--data", "digits", "-o", out)):
        code, _, err = run_cli(*argv)
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert needle in lines[0] and "Traceback" not in err
        assert not out.exists()


def test_a_translation_that_changes_outputs_is_refused(monkeypatch, tmp_path, digits):
    """The outputs check is what makes a translation trusted: a weight left behind fails it."""
    from edgekit.errors import EdgekitError
    from edgekit.modelio import keras3 as k3mod
    from edgekit.models import load_model
    m3 = _perturbed(build("resnet", digits.input_shape, 10, keras3=True))
    path = save_keras3(m3, tmp_path / "r", formats=("keras3",))["keras3"]
    real = k3mod.copy_weights

    def skip_one(src, dst, what):
        real(src, dst, what)
        layer = dst.get_layer("b1_c2_bn")
        layer.set_weights([w * 0 + 1 for w in layer.get_weights()])
    monkeypatch.setattr(k3mod, "copy_weights", skip_one)
    with pytest.raises(EdgekitError, match="does not give the same outputs"):
        load_model(path)


# -- model file x verb, through the CLI ---------------------------------------------------------

# name -> head of the two trained models (Sequential softmax with BatchNorm; residual logits)
TRAINED = {"sequential": "softmax", "resnet": "logits"}


@pytest.fixture(scope="module")
def keras3_trained(tmp_path_factory, digits):
    """{name: ({format: path}, Keras 3's own test accuracy)}, trained with plain model.fit."""
    root = tmp_path_factory.mktemp("k3zoo")
    x = np.concatenate([digits.x_train, digits.x_val])
    y = np.concatenate([digits.y_train, digits.y_val])
    out = {}
    for name, head in TRAINED.items():
        m = train_plain(build(name, digits.input_shape, 10, head=head, keras3=True), x, y,
                        epochs=15, batch_size=32, lr=3e-3)
        acc = float(np.mean(np.argmax(np.asarray(m.predict(digits.x_test, verbose=0)), 1)
                            == digits.y_test))
        out[name] = (save_keras3(m, root / name), acc)
    return out


def test_keras3_trained_fixture(keras3_trained):
    for name, (_, acc) in keras3_trained.items():
        assert acc >= 0.9, (name, acc)


GRAPH_VERBS = ("prune", "distill", "optimize")   # refused on an export() SavedModel
VERBS = {
    "eval": lambda p, o: ("eval", p, "--data", "digits"),
    "quantize": lambda p, o: ("compress", p, "--method", "quantize", "--formats", "onnx,tflite",
                              "--calibration-samples", "100", "--data", "digits", "-o", o),
    "knn-slice": lambda p, o: ("compress", p, "--method", "knn-slice", "--data", "digits",
                               "-o", o),
    "prune": lambda p, o: ("compress", p, "--method", "prune", "--sparsity", "0.3", "--epochs",
                           "3", "--data", "digits", "-o", o),
    "distill": lambda p, o: ("compress", p, "--method", "distill", "--width", "0.75",
                             "--epochs", "4", "--data", "digits", "-o", o),
    "optimize": lambda p, o: ("optimize", p, "--data", "digits", "-o", o, "--trials", "1",
                              "--methods", "none", "--formats", "onnx", "--iterations", "5",
                              "--batch", "1"),
}
# (model, file) x verb; training verbs on the residual net in its .keras file only (CPU time)
TABLE = [("sequential", fmt, verb) for fmt in KERAS3_FORMATS for verb in VERBS] + \
        [("resnet", "keras3", verb) for verb in ("eval", "quantize", "knn-slice", "prune")]


def _one_error_line(err):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("name,fmt,verb", TABLE)
def test_keras3_file_x_verb(keras3_trained, digits, run_cli, tmp_path, name, fmt, verb):
    """An artifact within the guard (Keras 3 copy loadable by Keras 3 where the output is a
    Keras model), or one ``error:`` line and nothing written."""
    from edgekit.artifact import Artifact
    paths, base = keras3_trained[name]
    path, out = paths[fmt], tmp_path / "out"
    code, stdout, err = run_cli(*VERBS[verb](path, out))
    print("outcome {} {} {}: exit {} {}".format(name, fmt, verb, code, (err.strip().splitlines()
                                                                        or [""])[-1][:160]))
    if fmt == "export" and verb in GRAPH_VERBS:          # no Keras graph in the SavedModel
        line = _one_error_line(err)
        assert code == 1 and "model.save" in line and "without a Keras graph" in line
        assert not out.exists()
        return
    if verb == "eval":
        assert code == 0, err
        acc = float(stdout.split("test accuracy ")[1].split("%")[0]) / 100
        assert abs(acc - base) < 1e-9 + 1 / len(digits.y_test)   # Keras 3's own accuracy
        return
    if code != 0:                                         # the guard's honest refusal
        line = _one_error_line(err)
        assert code == 1 and "lost" in line and "nothing written" in line, err
        assert not out.exists()
        return
    art = Artifact.open(out / "best" if verb == "optimize" else out)
    src = art.manifest["source"]
    assert src["keras3"] is True
    if fmt == "export":   # export() stores no Keras version: edgekit says how it read the file
        assert src["keras_version"] is None and "serving function" in src["loaded_as"]
    else:
        assert src["keras_version"].startswith("3.")
    m = art.manifest["metrics"]
    if verb == "optimize":
        assert art.manifest["metrics"]["accuracy"] >= base - SLACK
        return
    if verb == "quantize":
        for fname in ("model.int8.onnx", "model.int8.tflite"):
            entry = art.files[fname]
            assert entry["guard"]["passed"] and entry["accuracy"] >= base - SLACK, entry
        return
    assert m["guard"]["passed"] and m["accuracy"] >= base - SLACK
    if fmt == "export":   # knn-slice: the SavedModel's ONNX conversion sliced, no Keras trunk
        assert verb == "knn-slice" and src["loaded_as"].startswith("ONNX (tf2onnx)")
        assert src["model"] == str(path) and not art.find("keras3")
        return
    assert src["loaded_as"] == "tf_keras (translated from Keras 3)"
    stem = "trunk" if verb == "knn-slice" else "model"
    _same_in_keras3(art, stem, digits)


def _same_in_keras3(art, stem, digits):
    """The artifact's Keras 3 copy loads in Keras 3 and predicts what edgekit's model does."""
    from edgekit.models import load_model
    name = stem + ".keras3.keras"
    assert art.files[name]["format"] == "keras3"
    m3 = _k3().models.load_model(str(art.file(name)))
    assert type(m3).__module__.startswith("keras.")
    ref = load_model(art.file(stem + ".h5")) if stem == "trunk" else load_model(art.path)
    x = digits.x_test[:128]
    a, b = np.asarray(m3.predict(x, verbose=0)), ref.predict(x, verbose=0)
    assert np.max(np.abs(a - b)) < 1e-4 * max(1.0, np.max(np.abs(b)))
    if stem == "model":
        assert np.mean(np.argmax(a, 1) == np.argmax(b, 1)) == 1.0


def test_export_and_bench_an_artifact_made_from_a_keras3_file(keras3_trained, digits, run_cli,
                                                             tmp_path):
    """prune --allow-drop makes the artifact cheaply; export (ONNX + TFLite, parity checked)
    and bench run on it as on any artifact; a bare Keras 3 file gets one error line."""
    from edgekit.artifact import Artifact
    path = keras3_trained["sequential"][0]["keras3"]
    out = tmp_path / "a"
    code, _, err = run_cli("compress", path, "--method", "prune", "--sparsity", "0.3",
                           "--epochs", "1", "--allow-drop", "--data", "digits", "-o", out)
    assert code == 0, err
    code, _, err = run_cli("export", out, "--format", "onnx,tflite", "--target", "laptop-cpu")
    assert code == 0, err
    art = Artifact.open(out)
    for fmt in ("onnx", "tflite"):
        entry = art.files[art.find(fmt)[0]]
        assert entry["parity"]["agreement"] >= 0.99, entry
    js = tmp_path / "b.json"
    code, _, err = run_cli("bench", out, "--target", "laptop-cpu", "--runtime", "onnxruntime",
                           "--iterations", "10", "--warmup", "2", "--json", js)
    assert code == 0, err
    rows = json.loads(js.read_text())
    rows = [rows] if isinstance(rows, dict) else rows      # one result: one object
    assert abs(rows[0]["accuracy"] - art.manifest["metrics"]["accuracy"]) < 0.01
    for verb in ("export", "bench"):   # a bare model file: one line saying what to give
        code, _, err = run_cli(verb, path, "--target", "laptop-cpu")
        _one_error_line(err)
        assert code == 1


def test_nested_functional_and_sequential_keras3_models(tmp_path, digits):
    """A Keras 3 Functional and a Sequential used as layers of a Functional (as
    ``keras.applications`` bases are) translate, weights and outputs included."""
    from edgekit.models import load_model
    k = _k3()
    L = k.layers
    i = k.Input((8, 8, 1))
    block = k.Model(i, L.ReLU()(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same",
                                                                             name="conv")(i))),
                    name="block")
    head = k.Sequential([k.Input((8,)), L.Dense(16, activation="relu", name="fc"),
                         L.Dense(10, activation="softmax", name="probs")], name="head")
    inp = k.Input((8, 8, 1), name="image")
    model = _perturbed(k.Model(inp, head(L.GlobalAveragePooling2D()(block(inp))), name="outer"))
    path = save_keras3(model, tmp_path / "nested", formats=("keras3",))["keras3"]
    net = load_model(path)
    assert [type(l).__name__ for l in net.layers][1:] == ["Functional", "GlobalAveragePooling2D",
                                                          "Sequential"]
    x = digits.x_test[:32]
    ref = np.asarray(model(x, training=False))
    assert np.max(np.abs(net.predict(x, verbose=0) - ref)) < 1e-5
    from edgekit.modelio.keras3 import to_keras3
    back = to_keras3(net)   # and back (node numbering of nested models differs)
    assert np.max(np.abs(np.asarray(back(x, training=False)) - ref)) < 1e-5
