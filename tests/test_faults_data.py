"""Data that only looks like it fits (issue 34, class 3): one rule for every verb.

A fit that keeps the picture (shrinking at most 2x, enlarging at most 4x, same aspect, grey to
RGB) is made and announced once on stderr (and recorded: bench results' ``data_fit``); one
that does not (28x28 data for an 8x8 model, another aspect ratio, 1x1 images) is refused
unless ``--resize``. Also: 16-bit PNGs scaled, float64 beyond float32 refused, images below an
architecture's minimum refused, normalisations outside float32 refused, the imagenet preset on
a 1-channel model named as such.
"""
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from test_bad_input import World, assert_one_error_line, listing


def _npz(tmp, name, h, w, n=60, dtype=np.uint8, value=None, c=None):
    rng = np.random.RandomState(0)
    shape = (n, h, w) if c is None else (n, h, w, c)
    x = (rng.rand(*shape) * 255).astype(dtype) if value is None else np.full(shape, value, dtype)
    path = tmp / (name + ".npz")
    np.savez(str(path), x=x, y=np.arange(n) % 10)
    return "npz:" + str(path)


DATA = {
    "d28": lambda t: _npz(t, "d28", 28, 28),
    "d16": lambda t: _npz(t, "d16", 16, 16),
    "d8x12": lambda t: _npz(t, "d8x12", 8, 12),
    "d1": lambda t: _npz(t, "d1", 1, 1),
    "f64": lambda t: _npz(t, "f64", 8, 8, dtype=np.float64, value=1e300),
}
REFUSED = r"pass --resize"
VERBS = {
    "eval": ["eval", "{onnx}", "--data", "{D}"],
    "bench": ["bench", "{onnx}", "--iterations", "1", "--warmup", "0", "--data", "{D}"],
    "export": ["export", "{onnx}", "--format", "onnx", "--data", "{D}", "-o", "{tmp}/e"],
    "quantize": ["compress", "{keras}", "--method", "quantize", "--data", "{D}", "-o", "{tmp}/q"],
    "quantize_calibration": ["compress", "{keras}", "--method", "quantize", "--data", "digits",
                             "--calibration-data", "{D}", "-o", "{tmp}/q"],
}
CASES = []
for verb, args in VERBS.items():
    CASES.append(("{}-shrink-3.5x".format(verb), args, "d28", r"shrinking them 3\.5x.*" + REFUSED))
CASES += [
    ("eval-aspect", VERBS["eval"], "d8x12", r"changes their aspect ratio.*" + REFUSED),
    ("eval-1x1", VERBS["eval"], "d1", r"enlarging them 8x.*" + REFUSED),
    ("train-1x1-below-minimum", ["train", "--arch", "seed-mnist-cnn", "--data", "{D}", "-o",
                                 "{tmp}/t", "--epochs", "1"], "d1",
     r"1x1 images are too small for --arch seed-mnist-cnn: .* at least \d+x\d+"),
    ("train-float64-overflow", ["train", "--arch", "tiny", "--data", "{D}", "-o", "{tmp}/t",
                                "--epochs", "1"], "f64", r"beyond float32"),
]
for flag, value in (("--scale", "1e300"), ("--std", "1e-45"), ("--mean", "1e39")):
    CASES.append(("quantize{}-{}".format(flag, value),
                  ["compress", "{keras}", "--method", "quantize", "--data", "digits", "-o",
                   "{tmp}/q", flag, value], None, r"outside float32"))
CASES.append(("quantize-imagenet-1-channel",
              ["compress", "{keras}", "--method", "quantize", "--data", "digits", "-o", "{tmp}/q",
               "--preprocess", "imagenet"], None, r"--preprocess imagenet normalises 3 channels"))


def _argv(args, world, data):
    spec = DATA[data](world.tmp) if data else None
    return [a.format_map(world).replace("{D}", spec or "") if "{D}" not in a else spec
            for a in args]


@pytest.mark.parametrize("args, data, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_data_that_does_not_fit_is_refused(args, data, pattern, tmp_path, request, run_cli,
                                           monkeypatch):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    argv = _argv(args, world, data)
    monkeypatch.chdir(world.tmp)
    before = listing(world.tmp)
    code, out, err = run_cli(*argv)
    assert_one_error_line(code, err, 1, pattern, progress=True)
    assert listing(world.tmp) == before


def _notes(err):
    return [ln for ln in err.splitlines() if ln.startswith("note: data")]


def test_resize_when_asked_is_announced_once_and_recorded(tmp_path, request, run_cli, tiny_onnx):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    spec = DATA["d28"](world.tmp)
    code, out, err = run_cli("bench", tiny_onnx.path, "--iterations", "2", "--warmup", "0",
                             "--data", spec, "--resize", "--json", world.tmp / "b.json")
    assert code == 0, err
    assert _notes(err) == ["note: data {} fitted to the model: resized 28x28 -> 8x8".format(spec)]
    res = json.loads((world.tmp / "b.json").read_text())
    for r in res if isinstance(res, list) else [res]:
        assert r["data_fit"] == {"resize": [8, 8], "source_size": [28, 28]}


def test_a_small_shrink_is_made_and_announced(tmp_path, request, run_cli, tiny_onnx):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    spec = DATA["d16"](world.tmp)
    code, out, err = run_cli("eval", tiny_onnx.path, "--data", spec)
    assert code == 0, err
    assert len(_notes(err)) == 1 and "resized 16x16 -> 8x8" in err


def _png16(values):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(values, np.uint16).reshape(8, 8)).save(buf, "PNG")
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode.startswith("I")  # really a 16-bit PNG
    return data


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    from edgekit.data import load_data
    levels = [0, 1000, 16384, 32768, 65535]
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i, v in enumerate(levels * 2):
            (tmp_path / cls / "{}.png".format(i)).write_bytes(_png16([v] * 64))
    ds = load_data("folder:{}".format(tmp_path))
    seen = sorted({round(float(v), 2) for v in np.concatenate(
        [np.asarray(ds.x_train).ravel(), np.asarray(ds.x_test).ravel()])})
    want = sorted({round(round(v * 255.0 / 65535) / 255.0, 2) for v in levels})
    assert seen == want, seen  # clipped, they would all be 1.0 but the 0


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(min_value=1e-45, max_value=1e308, allow_nan=False),
       mean=st.floats(min_value=-1e40, max_value=1e40, allow_nan=False),
       std=st.floats(min_value=1e-46, max_value=1e40, allow_nan=False))
def test_normalisation_is_finite_in_float32_or_refused(scale, mean, std):
    from edgekit.adapt import parse_preprocess
    from edgekit.errors import EdgekitError
    try:
        name, factor, m, sd = parse_preprocess(scale=scale, mean=[mean], std=[std])
    except EdgekitError:
        return
    with np.errstate(all="ignore"):
        u = np.float32([0.0, 0.5, 1.0])
        x = (u * np.float32(factor) - np.float32(m[0])) / np.float32(sd[0])
    assert np.isfinite(x).all(), (scale, mean, std, x)
    assert math.isfinite(factor)
