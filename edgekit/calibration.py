"""Seeded samples of a data set: the calibration images of every int8 path (compress and
export alike) and the validation subsets the int8 search scores on.

One sampler, so the same ``--calibration-samples`` and seed pick the same images whether
``compress --method quantize`` or ``export --precision int8`` asks. Calibration images come
from the TRAINING split, never the test split.

Example::

    rep = calibration_images(ds, 200, model.input_shape[1:])          # (200, H, W, C) float32
    cal, rep = calibration_set(ds, "npz:other.npz", 200, ds.input_shape)
"""
import numpy as np

from edgekit.errors import EdgekitError


def seeded_rows(n, k, seed=0):
    """``min(k, n)`` sorted row indices of ``n`` rows, drawn without replacement (seeded)."""
    k = min(int(k), int(n))
    return np.sort(np.random.RandomState(seed).choice(int(n), k, replace=False))


def calibration_images(ds, samples, model_shape, seed=0):
    """``samples`` images drawn (seeded) from the TRAINING split; refuses a shape mismatch."""
    samples = int(samples)
    if samples < 1:
        raise EdgekitError("--calibration-samples must be >= 1")
    x = ds.x_train
    if tuple(x.shape[1:]) != tuple(model_shape):
        raise EdgekitError("calibration data {} has images of shape {} but the model expects {}"
                           .format(ds.spec, tuple(x.shape[1:]), tuple(model_shape)))
    return np.ascontiguousarray(x[seeded_rows(len(x), samples, seed)], dtype=np.float32)


def calibration_set(ds, calibration_data, samples, model_shape, seed=0):
    """``(data set, images)``: calibration images from ``ds``, or from ``calibration_data`` (a
    spec or Dataset) fitted to ``ds``'s input (size, channels, normalisation)."""
    cal = ds
    if calibration_data is not None:
        from edgekit.adapt import data_for
        from edgekit.data import load_data
        cal = calibration_data if hasattr(calibration_data, "x_train") \
            else load_data(calibration_data)
        cal = data_for(cal, ds.input_spec())
    return cal, calibration_images(cal, samples, model_shape, seed)
