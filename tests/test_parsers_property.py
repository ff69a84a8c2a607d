"""Property tests (hypothesis): whatever bytes a data file, manifest or results file holds,
the loader returns a valid result or raises EdgekitError -- never another exception.

The generators start from valid files and damage them (truncate, flip bytes, change header
fields, shapes, dtypes, JSON values), so most examples reach deep into the parsers rather
than failing at the first magic number.
"""
import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError

SETTINGS = settings(max_examples=60, deadline=None, database=None,  # no .hypothesis/ in the repo
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _valid_or_edgekit_error(fn, *args):
    try:
        value = fn(*args)
    except EdgekitError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        event("EdgekitError")  # --hypothesis-show-statistics: how often each outcome occurs
        return None
    event("valid result")
    return value


# -- IDX -------------------------------------------------------------------------------------

@st.composite
def idx_files(draw):
    """A well-formed IDX file (small dims, exact payload), then maybe one damage: truncated,
    a header byte changed, dims that overflow, a bogus ndim."""
    ndim = draw(st.integers(1, 3))
    dims = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    payload = draw(st.binary(min_size=int(np.prod(dims)), max_size=int(np.prod(dims))))
    data = b"\0\0\x08" + bytes([ndim]) + struct.pack(">" + "I" * ndim, *dims) + payload
    damage = draw(st.sampled_from(["none", "none", "truncate", "byte", "overflow", "ndim"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "byte":
        i = draw(st.integers(0, 4 + 4 * ndim - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif damage == "overflow":
        data = data[:4] + struct.pack(">I", 2**32 - 1) + data[8:]
    elif damage == "ndim":
        data = data[:3] + bytes([draw(st.sampled_from([0, 5, 255]))]) + data[4:]
    return data


@SETTINGS
@given(data=idx_files(), gz=st.booleans())
def test_read_idx_returns_an_array_or_one_error(tmp_path, data, gz):
    import gzip
    from edgekit.data import read_idx
    path = tmp_path / ("f.idx" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz and data[:1] != b"\x1f" else data)
    arr = _valid_or_edgekit_error(read_idx, path)
    if arr is not None:
        assert arr.dtype == np.uint8 and arr.ndim == data[3]
        assert arr.size == int(np.prod(struct.unpack(">" + "I" * data[3], data[4:4 + 4 * data[3]])))


# -- npz ---------------------------------------------------------------------------------------

DTYPES = ["uint8", "float32", "float64", "int64", "bool", "U3", "complex64", "float16"]


MUTATIONS = ["none", "none", "drop", "dtype", "nonfinite", "y_length", "x_test_only",
             "negative", "shape", "truncate", "flip"]


@st.composite
def npz_files(draw):
    """A valid npz data set (x (N,8,8), y in 0..C-1), then maybe one damage."""
    n = draw(st.integers(8, 30))
    c = draw(st.integers(2, 4))
    arrays = {"x": (np.arange(n * 64) % 17).reshape(n, 8, 8).astype(draw(st.sampled_from(
                  ["uint8", "float32", "float64", "int64"]))),
              "y": (np.arange(n) % c).astype(draw(st.sampled_from(["int64", "uint8", "float32"])))}
    if draw(st.booleans()):
        arrays["x_test"], arrays["y_test"] = arrays["x"][:c + 1].copy(), arrays["y"][:c + 1].copy()
    mutation = draw(st.sampled_from(MUTATIONS))
    key = draw(st.sampled_from(sorted(arrays)))
    if mutation == "drop":
        del arrays[key]
    elif mutation == "dtype":
        arrays[key] = np.full(arrays[key].shape, "ab", dtype=draw(st.sampled_from(["U3", "S2"])))
    elif mutation == "nonfinite":
        a = arrays[key].astype(np.float32)
        a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arrays[key] = a
    elif mutation == "y_length":
        arrays["y"] = np.resize(arrays["y"], n + draw(st.sampled_from([-3, -1, 1, 5])))
    elif mutation == "x_test_only":
        arrays.pop("y_test", None)
        arrays["x_test"] = arrays["x"][:3]
    elif mutation == "negative":
        arrays["y"] = arrays["y"].astype(np.int64) - draw(st.integers(1, 3))
    elif mutation == "shape":
        shape = draw(st.lists(st.integers(0, 9), min_size=0, max_size=5))
        arrays[key] = np.zeros(shape, dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    if mutation == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return data


@SETTINGS
@given(data=npz_files())
def test_npz_loader_returns_a_dataset_or_one_error(tmp_path, data):
    from edgekit.data import load_data
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    ds = _valid_or_edgekit_error(load_data, "npz:{}".format(path))
    if ds is not None:
        for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
            assert len(x) == len(y) and len(x) > 0 and np.isfinite(x).all()
            assert y.min() >= 0 and y.max() < ds.num_classes


# -- image folders ---------------------------------------------------------------------------------

def _png(size, mode="L"):
    from PIL import Image
    buf = io.BytesIO()
    Image.new(mode, size, 7).save(buf, "PNG")
    return buf.getvalue()


@st.composite
def image_files(draw):
    kind = draw(st.sampled_from(["ok", "ok", "rgb", "size", "truncated", "flipped", "junk"]))
    if kind == "ok":
        return _png((8, 8))
    if kind == "rgb":
        return _png((8, 8), "RGB")
    if kind == "size":
        return _png((draw(st.integers(1, 12)), draw(st.integers(1, 12))))
    data = _png((8, 8))
    if kind == "truncated":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "flipped":
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    return draw(st.binary(max_size=200))


@st.composite
def image_folders(draw):
    """2-3 classes of 3 good 8x8 PNGs each, then maybe one file replaced by a damaged one,
    one class emptied or a class added with arbitrary files."""
    classes = [[_png((8, 8))] * 3 for _ in range(draw(st.integers(2, 3)))]
    damage = draw(st.sampled_from(["none", "none", "file", "file", "empty", "extra"]))
    if damage == "file":
        c = draw(st.integers(0, len(classes) - 1))
        classes[c][draw(st.integers(0, 2))] = draw(image_files())
    elif damage == "empty":
        classes[draw(st.integers(0, len(classes) - 1))] = []
    elif damage == "extra":
        classes.append(draw(st.lists(image_files(), max_size=3)))
    return classes


@SETTINGS
@given(classes=image_folders())
def test_folder_loader_returns_a_dataset_or_one_error(tmp_path_factory, classes):
    from edgekit.data import load_data
    root = tmp_path_factory.mktemp("folder")
    for c, files in enumerate(classes):
        (root / "c{}".format(c)).mkdir()
        for i, data in enumerate(files):
            (root / "c{}".format(c) / "{}.png".format(i)).write_bytes(data)
    ds = _valid_or_edgekit_error(load_data, "folder:{}".format(root))
    if ds is not None:
        assert ds.num_classes == len(classes) and len(ds.x_test) > 0


# -- manifest and results JSON ----------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                      st.sampled_from(["../x", "/etc/passwd", "model.h5", "~", "a/../../b", ""]))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=10), kids, max_size=5)),
    max_leaves=20)


@st.composite
def damaged(draw, valid):
    """``valid`` with one field (at any depth) replaced or removed, or raw junk text."""
    doc = json.loads(json.dumps(valid))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))
    node, path = doc, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append((node, key))
        node = node[key]
    if path:
        parent, key = path[-1]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(JSON)
    else:
        doc = draw(JSON)
    return json.dumps(doc)


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    """A valid artifact dir (one small file) to damage the manifest of."""
    from edgekit.artifact import describe_file, new_manifest, write_manifest
    d = tmp_path_factory.mktemp("art")
    (d / "model.onnx").write_bytes(b"onnx bytes")
    m = new_manifest("model", "train", {"epochs": 1}, {"data": "digits"},
                     {"shape": [None, 8, 8, 1], "dtype": "float32", "layout": "NHWC",
                      "scale": 0.0625, "mean": [0.0], "std": [1.0]},
                     [str(i) for i in range(10)], {"accuracy": 0.9, "params": 10, "bytes": 10})
    m["files"]["model.onnx"] = describe_file(d / "model.onnx", "onnx", "fp32", inference=True)
    write_manifest(d, m)
    return d, m


VALID_MANIFEST = {"edgekit_version": "0.1.0", "kind": "model", "method": {"name": "train",
                  "params": {}}, "source": {"data": "digits"},
                  "input": {"shape": [None, 8, 8, 1], "dtype": "float32", "layout": "NHWC",
                            "scale": 0.0625, "mean": [0.0], "std": [1.0]},
                  "classes": ["0", "1"], "metrics": {"accuracy": 0.9, "params": 10, "bytes": 10},
                  "files": {"model.onnx": {"format": "onnx", "precision": "fp32", "bytes": 10,
                                           "sha256": "0" * 64}}}


@SETTINGS
@given(text=damaged(VALID_MANIFEST))
def test_manifest_opens_or_one_error_and_names_stay_inside(manifest_dir, text):
    import os
    from edgekit.artifact import Artifact
    d, good = manifest_dir
    (d / "manifest.json").write_text(text)
    try:
        art = _valid_or_edgekit_error(Artifact.open, d, False)
    finally:
        (d / "manifest.json").write_text(json.dumps(good))
    if art is not None:
        for name in art.files:
            real = os.path.realpath(str(d / name))
            assert real.startswith(os.path.realpath(str(d)) + os.sep)


VALID_RESULT = {"target": "laptop-cpu", "runtime": "onnxruntime", "runtime_version": "1.2",
                "device": "CPU", "batch": 1, "iterations": 10, "warmup": 1, "cold_start_ms": 3.0,
                "latency_ms": {"mean": 1.0, "std": 0.1, "min": 0.5, "p50": 1.0, "p90": 1.1,
                               "p95": 1.2, "p99": 1.3, "max": 2.0},
                "throughput_ips": 10.0, "peak_rss_mb": 5.0, "accuracy": 0.5, "host": "h",
                "timestamp": "t"}


@SETTINGS
@given(text=st.one_of(damaged(VALID_RESULT), damaged([VALID_RESULT, VALID_RESULT])))
def test_results_load_and_render_or_one_error(tmp_path, text):
    from edgekit.bench import load_results
    from edgekit.report import markdown
    path = tmp_path / "r.json"
    path.write_text(text)
    results = _valid_or_edgekit_error(load_results, [path])
    if results is not None:
        md = markdown(results)  # a valid file always renders
        assert "x fastest" in md
        for r in results:
            assert all(r["latency_ms"][k] >= 0 for k in ("min", "p50", "max"))
