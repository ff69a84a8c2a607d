"""Lazy images (edgekit.images): 8-bit pixels kept as uint8 and normalised per batch give the
same values, fingerprints, predictions and k-NN slice as the float32 arrays; large data sets
load lazy, small ones and float sources stay plain arrays; Keras trains from lazy images."""
import numpy as np
import pytest

from edgekit import images
from edgekit.adapt import fit_data
from edgekit.data import load_data
from edgekit.images import LazyImages, batches, keras_predict_batches, take


@pytest.fixture(scope="module")
def lazy_digits():
    return load_data("digits", lazy=True)


def test_lazy_digits_hold_uint8_and_read_as_the_float32_arrays(digits, lazy_digits):
    assert lazy_digits.lazy and not digits.lazy
    for name in ("x_train", "x_val", "x_test"):
        eager, lazy = getattr(digits, name), getattr(lazy_digits, name)
        assert isinstance(lazy, LazyImages) and lazy.source.dtype == np.uint8
        assert lazy.shape == eager.shape and lazy.dtype == eager.dtype == np.float32
        assert lazy.held_bytes * 4 == eager.nbytes == lazy.nbytes
        np.testing.assert_array_equal(np.asarray(lazy), eager)
    assert lazy_digits.fingerprint() == digits.fingerprint()
    assert lazy_digits.input_shape == digits.input_shape
    assert lazy_digits.input_spec() == digits.input_spec()


@pytest.mark.parametrize("key", [
    slice(3, 40), slice(None, None, 7), slice(-5, None), 0, -1, 17,
    [5, 2, 9], np.array([0, 0, 4]), (slice(2, 9), 3), (slice(None), Ellipsis, 0),
    (Ellipsis, 0), (4, 1, 2),
])
def test_indexing_matches_numpy(digits, lazy_digits, key):
    got = lazy_digits.x_test[key]
    want = digits.x_test[key]
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_boolean_mask_subset_and_batches(digits, lazy_digits):
    mask = digits.y_test == 3
    np.testing.assert_array_equal(lazy_digits.x_test[mask], digits.x_test[mask])
    idx = np.array([7, 1, 30])
    sub = take(lazy_digits.x_test, idx)
    assert isinstance(sub, LazyImages) and len(sub) == 3
    np.testing.assert_array_equal(np.asarray(sub), digits.x_test[idx])
    assert isinstance(take(digits.x_test, idx), np.ndarray)
    got = np.concatenate([b for _, b in batches(lazy_digits.x_test, 50)])
    np.testing.assert_array_equal(got, digits.x_test)
    assert [s for s, _ in batches(lazy_digits.x_test, 100)] == [0, 100, 200, 300]


@pytest.mark.parametrize("shape,preprocess", [((32, 32, 3), "symmetric"), ((8, 8, 1), "raw"),
                                              ((16, 12, 3), "imagenet")])
def test_fit_data_on_lazy_images_is_per_batch_and_identical(digits, lazy_digits, shape,
                                                            preprocess):
    from edgekit.adapt import allow_resize
    with allow_resize():  # (16, 12) and back to (24, 24): other aspect ratios, asked for
        _lazy_fit_is_identical(digits, lazy_digits, shape, preprocess)


def _lazy_fit_is_identical(digits, lazy_digits, shape, preprocess):
    a, b = fit_data(digits, shape, preprocess), fit_data(lazy_digits, shape, preprocess)
    assert b.lazy and b.input_shape == a.input_shape == shape
    assert b.input_spec() == a.input_spec()
    for name in ("x_train", "x_val", "x_test"):
        np.testing.assert_array_equal(np.asarray(getattr(b, name)), getattr(a, name))
    np.testing.assert_array_equal(b.x_train[[4, 0, 99]], a.x_train[[4, 0, 99]])
    assert b.fingerprint() == a.fingerprint()
    # adapted twice (a manifest's data_for after fit_data): still lazy, still identical
    again = fit_data(b, (24, 24, 3), "unit")
    np.testing.assert_array_equal(np.asarray(again.x_val), fit_data(a, (24, 24, 3), "unit").x_val)


def test_large_8bit_sets_load_lazy_small_and_float_ones_do_not(tmp_path, monkeypatch):
    rs = np.random.RandomState(0)
    x8 = rs.randint(0, 256, size=(60, 10, 10, 3)).astype(np.uint8)
    y = np.arange(60) % 3
    np.savez(tmp_path / "u8.npz", x=x8, y=y)
    np.savez(tmp_path / "f32.npz", x=x8.astype(np.float32), y=y)
    small = load_data("npz:{}".format(tmp_path / "u8.npz"))
    assert not small.lazy and isinstance(small.x_train, np.ndarray)
    monkeypatch.setattr(images, "LAZY_BYTES", 1000)           # "large" = over 1,000 B
    big = load_data("npz:{}".format(tmp_path / "u8.npz"))
    assert big.lazy and big.x_train.source.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(big.x_test), small.x_test)
    assert big.fingerprint() == small.fingerprint()
    flt = load_data("npz:{}".format(tmp_path / "f32.npz"))    # float pixels: kept as they are
    assert not flt.lazy
    np.testing.assert_array_equal(flt.x_test, small.x_test)
    assert not load_data("npz:{}".format(tmp_path / "u8.npz"), lazy=False).lazy
    # an eager set adapted to a large input becomes lazy (the resize happens per batch)
    grown = fit_data(small, (40, 40, 3))
    assert grown.lazy and grown.x_train.source is small.x_train
    monkeypatch.setattr(images, "LAZY_BYTES", 256 << 20)
    np.testing.assert_array_equal(np.asarray(grown.x_test), fit_data(small, (40, 40, 3)).x_test)


def test_keras_predicts_and_trains_from_lazy_images(tiny_artifact, digits, lazy_digits):
    from edgekit.models import fit, keras_accuracy, load_model
    model = load_model(tiny_artifact.path)
    want = model.predict(digits.x_test, batch_size=64, verbose=0)
    got = keras_predict_batches(model, lazy_digits.x_test, batch_size=64, chunk=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert keras_accuracy(model, lazy_digits.x_test, lazy_digits.y_test) == \
        keras_accuracy(model, digits.x_test, digits.y_test)
    # training from lazy images (a shuffled batch sequence) learns like training from arrays
    from edgekit.models import build
    net = build("tiny", digits.input_shape, 10)
    fit(net, lazy_digits, epochs=8, batch_size=32, lr=3e-3, progress=False)
    assert keras_accuracy(net, lazy_digits.x_val, lazy_digits.y_val) > 0.8


def test_knn_slice_on_lazy_images_matches_float_arrays(tiny_artifact, digits, lazy_digits,
                                                       tmp_path):
    from edgekit.compress.knn.slice import knn_slice
    kw = dict(cut="pool1", int8=True, k=3, progress=False, allow_drop=True)  # not a guard test
    a = knn_slice(tiny_artifact.path, digits, tmp_path / "a", **kw).manifest
    b = knn_slice(tiny_artifact.path, lazy_digits, tmp_path / "b", **kw).manifest
    for key in ("accuracy", "val_accuracy", "agreement", "prototypes", "dims"):
        assert a["metrics"][key] == b["metrics"][key], key
    pa, pb = a["metrics"]["bytes_parts"], b["metrics"]["bytes_parts"]
    # the graph's node names carry Keras' per-process name counters (a second eager run
    # differs by a few bytes as well); every stored array is the same size
    assert {k: v for k, v in pa.items() if k != "graph_overhead"} == \
        {k: v for k, v in pb.items() if k != "graph_overhead"}
    assert a["method"]["params"] == b["method"]["params"]
    assert a["source"]["data_sha256"] == b["source"]["data_sha256"]
