"""Reference CNNs: the seed's Keras MNIST CNN exactly, input size follows the data, tiny, MACs."""
import numpy as np
import pytest

from edgekit.errors import EdgekitError


def test_seed_mnist_cnn_is_the_keras_example():
    from edgekit.models import build
    m = build("seed-mnist-cnn", (28, 28, 1), 10)
    assert m.count_params() == 1199882
    convs = [l for l in m.layers if type(l).__name__ == "Conv2D"]
    assert sum(l.count_params() for l in convs) == 18816
    kinds = [(type(l).__name__, getattr(l, "filters", None) or getattr(l, "units", None)
              or getattr(l, "rate", None) or getattr(l, "pool_size", None)) for l in m.layers]
    assert kinds == [("Conv2D", 32), ("Conv2D", 64), ("MaxPooling2D", (2, 2)), ("Dropout", 0.25),
                     ("Flatten", None), ("Dense", 128), ("Dropout", 0.5), ("Dense", 10)]
    assert convs[0].kernel_size == (3, 3) and convs[0].activation.__name__ == "relu"
    assert m.layers[-1].activation.__name__ == "linear"  # logits; loss uses from_logits


def test_seed_cnn_on_8x8_digits():
    from edgekit.models import build, count_params
    m = build("seed-mnist-cnn", (8, 8, 1), 10)
    # 8x8 -> conv 6x6x32 -> conv 4x4x64 -> pool 2x2x64 = 256 -> 128 -> 10
    assert m.output_shape == (None, 10)
    assert count_params(m) == 320 + 18496 + (256 * 128 + 128) + (128 * 10 + 10) == 53002


def test_tiny_builds_for_small_and_mnist_inputs():
    from edgekit.models import build
    small, big = build("tiny", (8, 8, 1), 10), build("tiny", (28, 28, 3), 5)
    assert small.output_shape == (None, 10) and big.output_shape == (None, 5)
    assert small.count_params() < 5000
    x = np.zeros((2, 8, 8, 1), np.float32)
    assert small.predict(x, verbose=0).shape == (2, 10)


def test_macs_counted_by_hand():
    from edgekit.models import build, count_macs
    m = build("seed-mnist-cnn", (28, 28, 1), 10)
    conv1 = 26 * 26 * 32 * (3 * 3 * 1)
    conv2 = 24 * 24 * 64 * (3 * 3 * 32)
    fc1 = 12 * 12 * 64 * 128
    logits = 128 * 10
    assert count_macs(m) == conv1 + conv2 + fc1 + logits == 11992448


def test_unknown_arch():
    from edgekit.models import build
    with pytest.raises(EdgekitError, match="unknown architecture 'resnet'.*seed-mnist-cnn"):
        build("resnet", (8, 8, 1), 10)


def test_tiny_trains_on_digits(tiny_artifact):
    m = tiny_artifact.manifest
    assert m["kind"] == "model" and m["method"]["name"] == "train"
    assert m["metrics"]["accuracy"] > 0.85


def test_trained_seed_on_digits(seed_digits_artifact, digits):
    m = seed_digits_artifact.manifest
    assert m["metrics"]["params"] == 53002
    assert m["metrics"]["accuracy"] > 0.9
    assert m["input"]["shape"] == [None, 8, 8, 1]
    from edgekit.models import evaluate
    assert evaluate(seed_digits_artifact.path, digits)["keras"] == pytest.approx(m["metrics"]["accuracy"])


def test_load_model_refuses_non_models(tmp_path):
    from edgekit.models import load_model
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(EdgekitError, match="cannot load model"):
        load_model(junk)
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(EdgekitError, match="ONNX model"):
        load_model(tmp_path / "m.onnx")
    with pytest.raises(EdgekitError, match="does not exist"):
        load_model(tmp_path / "nope.h5")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(EdgekitError, match="neither an edgekit artifact nor a SavedModel"):
        load_model(tmp_path / "emptydir")


def test_train_refuses_existing_output_and_bad_epochs(tmp_path, digits):
    from edgekit.models import train
    (tmp_path / "out").mkdir()
    with pytest.raises(EdgekitError, match="already exists"):
        train("tiny", digits, tmp_path / "out", epochs=1)
    with pytest.raises(EdgekitError, match="epochs"):
        train("tiny", digits, tmp_path / "new", epochs=0)
    assert not (tmp_path / "new").exists()


def test_gap_cnn_builds_for_8x8_and_28x28():
    from edgekit.models import build, count_params
    for shape in ((8, 8, 1), (28, 28, 1)):
        m = build("gap-cnn", shape, 10)
        assert count_params(m) == 35994  # params do not depend on the input size (GAP)
        assert m.get_layer("gap").output.shape[-1] == 64


def test_micro_cnn_is_gap_cnns_layout_and_its_int8_file_fits_16_kb(tmp_path):
    """micro-cnn is the student for ~16 KB budgets (optimize's space): same layer layout as
    gap-cnn, exact params, and its real int8 TFLite file (BN folded) under 16,000 bytes."""
    from edgekit.export.tflite import to_tflite
    from edgekit.models import build, count_params
    gap, micro = build("gap-cnn", (28, 28, 1), 10), build("micro-cnn", (28, 28, 1), 10)
    assert [type(l).__name__ for l in gap.layers] == [type(l).__name__ for l in micro.layers]
    # 3x3 convs 1-8-12-16-16-24, batch-norm gamma/beta/mean/variance, the 24->10 dense
    weights = 9 * (1 * 8 + 8 * 12 + 12 * 16 + 16 * 16 + 16 * 24) + 4 * (8 + 12 + 16 + 16 + 24)
    assert count_params(micro) == weights + 24 * 10 + 10
    assert count_params(build("micro-cnn", (8, 8, 1), 10)) == count_params(micro)
    rep = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "micro.tflite"
    to_tflite(micro, path, precision="int8", representative=rep)
    assert 8000 < path.stat().st_size < 16000


def test_wide_gap_cnn_is_gap_cnns_layout_and_its_int8_file_fits_74_kb(tmp_path):
    """wide-gap-cnn: gap-cnn's layout with the width late (16-24-32-40-80), more MACs than
    gap-cnn, and its int8 TFLite file under the seed talk's 74 KB."""
    from edgekit.export.tflite import to_tflite
    from edgekit.models import build, count_macs, count_params
    gap, wide = build("gap-cnn", (28, 28, 1), 10), build("wide-gap-cnn", (28, 28, 1), 10)
    assert [type(l).__name__ for l in gap.layers] == [type(l).__name__ for l in wide.layers]
    weights = 9 * (1 * 16 + 16 * 24 + 24 * 32 + 32 * 40 + 40 * 80) + 4 * (16 + 24 + 32 + 40 + 80)
    assert count_params(wide) == weights + 80 * 10 + 10
    assert count_macs(wide) > 1.3 * count_macs(gap)
    rep = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "wide.tflite"
    to_tflite(wide, path, precision="int8", representative=rep)
    assert count_params(wide) < path.stat().st_size < 74000


def test_cosine_schedule_decays_the_learning_rate(digits, tmp_path):
    from edgekit._tf import keras
    from edgekit.models import build, fit, train
    seen = []

    class Record(keras().callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(keras().backend.get_value(self.model.optimizer.learning_rate)))

    model = build("tiny", digits.input_shape, digits.num_classes)
    fit(model, digits, 4, batch_size=64, lr=1e-3, progress=False, callbacks=[Record()],
        schedule="cosine")
    assert seen[0] == pytest.approx(1e-3) and seen == sorted(seen, reverse=True)
    assert seen[-1] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 4)), rel=1e-4)
    with pytest.raises(EdgekitError, match="unknown --schedule 'linear'"):
        train("tiny", digits, tmp_path / "x", epochs=1, schedule="linear")
    assert not (tmp_path / "x").exists()
