"""Fitting data to the user's model: preprocessing conventions, resize, channels, and the
manifest round trip every later step (eval, bench, export, deploy) relies on."""
import numpy as np
import pytest

from edgekit.adapt import PREPROCESS, data_for, fit_data, model_preprocess, parse_preprocess
from edgekit.errors import EdgekitError

# preprocessing -> (min, max) of the model input for pixels spanning 0..255
RANGES = {"unit": (0.0, 1.0), "raw": (0.0, 255.0), "symmetric": (-1.0, 1.0),
          "imagenet": (-0.485 / 0.229, (1 - 0.406) / 0.225)}


@pytest.fixture(scope="module")
def small(digits):
    from edgekit.data import Dataset
    d = digits
    return Dataset("digits", d.x_train[:64], d.y_train[:64], d.x_val[:16], d.y_val[:16],
                   d.x_test[:32], d.y_test[:32], d.classes, dict(d.norm))


@pytest.mark.parametrize("name", sorted(PREPROCESS))
def test_named_preprocessing_ranges(small, name):
    ds = fit_data(small, (8, 8, 3), preprocess=name)
    lo, hi = RANGES[name]
    assert ds.x_train.min() == pytest.approx(lo, abs=1e-4)
    assert ds.x_train.max() == pytest.approx(hi, abs=1e-3)
    assert ds.input_spec()["preprocess"] == name


def test_explicit_scale_mean_std_equals_symmetric(small):
    a = fit_data(small, (8, 8, 1), preprocess="symmetric")
    b = fit_data(small, (8, 8, 1), preprocess={"scale": 1 / 127.5, "mean": 1.0, "std": 1.0})
    np.testing.assert_allclose(a.x_test, b.x_test, atol=1e-5)
    assert b.input_spec()["preprocess"] == "custom"


@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 16, 1), (32, 32, 3), (12, 20, 3)])
def test_resize_and_channels(small, shape):
    from edgekit.adapt import allow_resize
    with allow_resize(shape == (12, 20, 3)):  # another aspect ratio: only when asked (--resize)
        ds = fit_data(small, shape)
    assert ds.x_train.shape[1:] == shape and ds.x_test.shape[1:] == shape
    assert ds.input_shape == shape
    if shape[-1] == 3:  # repeated channels are equal
        np.testing.assert_array_equal(ds.x_test[..., 0], ds.x_test[..., 2])
    spec = ds.input_spec()
    assert spec["shape"] == [None, *shape]
    if shape[:2] != (8, 8):
        assert spec["resize"] == list(shape[:2]) and spec["source_size"] == [8, 8]
    # a resize keeps the picture: mean brightness within a few percent
    assert abs(ds.x_test.mean() - small.x_test.mean()) < 0.03


def test_luminance_from_rgb():
    from edgekit.data import Dataset
    x = np.zeros((4, 4, 4, 3), np.float32)
    x[..., 0] = 1.0  # pure red
    ds = Dataset("npz:x", x, np.arange(4) % 2, x[:2], np.arange(2), x[:2], np.arange(2),
                 ["a", "b"], {"scale": 1.0, "mean": [0.0], "std": [1.0]})
    from edgekit.adapt import allow_resize
    from edgekit.errors import EdgekitError
    with pytest.raises(EdgekitError, match="colour to luminance.*--resize"):
        fit_data(ds, (4, 4, 1))  # colour to grey changes what the channels mean: asked for only
    with allow_resize():
        out = fit_data(ds, (4, 4, 1))
    np.testing.assert_allclose(out.x_train, 0.299, atol=1e-6)
    assert out.input_spec()["channels"] == "luminance"


@pytest.mark.parametrize("pre,shape", [("unit", (8, 8, 1)), ("symmetric", (32, 32, 3)),
                                       ("imagenet", (16, 16, 3)), ("raw", (10, 10, 1))])
def test_manifest_round_trip(digits, pre, shape):
    """What eval / bench / export / deploy load equals what compress trained on."""
    from edgekit.data import load_data
    fitted = fit_data(digits, shape, preprocess=pre)
    again = data_for(load_data("digits"), fitted.input_spec())
    np.testing.assert_allclose(again.x_test, fitted.x_test, atol=1e-5)
    np.testing.assert_allclose(again.x_val, fitted.x_val, atol=1e-5)


def test_old_manifest_without_preprocess_is_unit(digits):
    spec = {"shape": [None, 8, 8, 1], "dtype": "float32", "layout": "NHWC",
            "scale": 1.0 / 16.0, "mean": [0.0], "std": [1.0]}
    np.testing.assert_array_equal(data_for(digits, spec).x_test, digits.x_test)


@pytest.mark.parametrize("kwargs,match", [
    ({"preprocess": "bgr"}, "unknown --preprocess"),
    ({"preprocess": "unit", "scale": 1.0}, "not both"),
    ({"scale": 0.0}, "--scale must be > 0"),
    ({"scale": float("nan")}, "--scale must be finite"),
    ({"std": "1,0,1"}, "--std values must be > 0"),
    ({"mean": "a,b"}, "--mean must be a number"),
    ({"mean": ""}, "--mean needs at least one"),
])
def test_bad_preprocessing_refused(kwargs, match):
    with pytest.raises(EdgekitError, match=match):
        parse_preprocess(kwargs.pop("preprocess", None), **kwargs)


def test_channel_and_vector_mismatch_refused(small):
    with pytest.raises(EdgekitError, match="only 1 -> 3"):
        fit_data(small, (8, 8, 2))
    with pytest.raises(EdgekitError, match="--mean has 2 values"):
        fit_data(small, (8, 8, 3), preprocess={"mean": [0.5, 0.5]})


def test_rescaling_model_gets_raw_pixels(small):
    from tests.zoo import build
    inside = build("sequential", (8, 8, 1), 10, rescaling=True)
    plain = build("sequential", (8, 8, 1), 10)
    assert model_preprocess(inside) == "raw" and model_preprocess(plain) == "unit"
    ds = fit_data(small, inside)
    assert ds.x_train.max() == pytest.approx(255.0) and ds.input_spec()["preprocess"] == "raw"
