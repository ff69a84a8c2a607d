"""The bad-input catalogue: every verb x every class of hostile or clumsy input (issue 12).

Each case runs the CLI in-process and checks the promise of docs/contract.md: the expected exit
code, exactly one ``error:`` line and it comes first on stderr, no traceback, the message
names the problem (a regex), and nothing new or changed on disk (a listing of the test's
directory, sizes and mtimes, before and after).

A case is ``(id, args, code, pattern)``; ``{name}`` in args is a path built on first use by
``BUILDERS[name]`` in the test's tmp dir (copies of the session's tiny artifacts, hostile
manifests, malformed data files), so a case that needs no model never trains one.
"""
import hashlib
import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

# -- building blocks ------------------------------------------------------------------------


class World(dict):
    """``{placeholder}`` -> path, each built on first use by ``BUILDERS``."""

    def __init__(self, tmp, request):
        super().__init__()
        self.tmp, self.request = Path(tmp), request

    def __missing__(self, key):
        value = str(BUILDERS[key](self))
        self[key] = value
        return value

    def fixture(self, name):
        return self.request.getfixturevalue(name)

    def copy(self, fixture, name):
        dst = self.tmp / name
        if not dst.exists():
            shutil.copytree(str(self.fixture(fixture).path), str(dst))
        return dst


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _rewrite(art, mutate):
    path = art / "manifest.json"
    m = json.loads(path.read_text())
    out = mutate(m, art)
    path.write_text(out if isinstance(out, str) else json.dumps(m))
    return art


def onnx(m):
    """Name of the manifest's ONNX file."""
    return next(n for n, e in m["files"].items() if e["format"] == "onnx")


def _move_out(m, art, name=None, new=None, where=None):
    """Move a listed file outside the artifact and list it as ``new`` (matching sha256)."""
    name = name or onnx(m)
    outside = where or art.parent / "outside.onnx"
    shutil.move(str(art / name), str(outside))
    m["files"][new if new is not None else str(outside)] = m["files"].pop(name)
    return m


def _symlink_out(m, art):
    outside = art.parent / "outside.onnx"
    shutil.move(str(art / onnx(m)), str(outside))
    (art / "link.onnx").symlink_to(outside)
    m["files"]["link.onnx"] = m["files"].pop(onnx(m))
    return m


def _victim(m, art):
    victim = art.parent / "victim.txt"
    victim.write_bytes(b"precious data\n")
    m["files"]["../victim.txt"] = {"format": "onnx", "precision": "fp32", "bytes": 14,
                                   "sha256": _sha(b"precious data\n")}
    return m


def _onnx_hostile(mutate):
    return lambda w: _rewrite(w.copy("tiny_onnx", "art"), mutate)


def _keras_hostile(mutate):
    return lambda w: _rewrite(w.copy("tiny_artifact", "art"), mutate)


MANIFEST_NAMES = {  # class 1: names that leave the artifact
    "dotdot": _onnx_hostile(lambda m, a: _move_out(m, a, new="../outside.onnx")),
    "nested_dotdot": _onnx_hostile(lambda m, a: _move_out(m, a, new="sub/../../outside.onnx")),
    "absolute": _onnx_hostile(lambda m, a: _move_out(m, a)),
    "symlink_out": _onnx_hostile(_symlink_out),
    "victim": _onnx_hostile(_victim),
    "home": _onnx_hostile(lambda m, a: m["files"].update({"~/x.onnx": m["files"][onnx(m)]})),
    "manifest_itself": _onnx_hostile(
        lambda m, a: m["files"].update({"manifest.json": m["files"][onnx(m)]})),
    "weights_out": _onnx_hostile(
        lambda m, a: m["files"][onnx(m)].update({"format": "openvino", "weights": "../x.bin"})),
    "keras_dotdot": _keras_hostile(lambda m, a: _move_out(m, a, "model.h5", "../outside.h5",
                                                          a.parent / "outside.h5")),
}

MANIFEST_SCHEMA = {  # class 1: a manifest whose fields are not what docs/contract.md says
    "files_list": lambda m, a: m.update({"files": [onnx(m)]}),
    "entry_not_object": lambda m, a: m["files"].update({onnx(m): "model.onnx"}),
    "sha_not_hex": lambda m, a: m["files"][onnx(m)].update({"sha256": "../../etc"}),
    "bytes_string": lambda m, a: m["metrics"].update({"bytes": "12"}),
    "accuracy_nan": lambda m, a: json.dumps(m).replace('"accuracy": 0.', '"accuracy": NaN, "x": 0.', 1),
    "accuracy_2": lambda m, a: m["metrics"].update({"accuracy": 2.0}),
    "kind_bogus": lambda m, a: m.update({"kind": "rootkit"}),
    "method_missing": lambda m, a: m.pop("method"),
    "input_shape_str": lambda m, a: m["input"].update({"shape": "28x28"}),
    "input_std_zero": lambda m, a: m["input"].update({"std": [0.0]}),
    "classes_dict": lambda m, a: m.update({"classes": {"0": "a"}}),
    "truncated": lambda m, a: json.dumps(m)[:40],
    "not_utf8": lambda m, a: "\udcff",
    "top_list": lambda m, a: "[]",
    "deep": lambda m, a: "[" * 100000 + "]" * 100000,
    "huge_number": lambda m, a: json.dumps(m).replace('"bytes": ', '"bytes": 1e999, "b": ', 1),
}


def _write_manifest_text(w, mutate):
    art = w.copy("tiny_onnx", "art")
    path = art / "manifest.json"
    m = json.loads(path.read_text())
    out = mutate(m, art)
    if out == "\udcff":
        path.write_bytes(b"\xff\xfe{}")
    else:
        path.write_text(out if isinstance(out, str) else json.dumps(m))
    return art


BUILDERS = {"tmp": lambda w: w.tmp}
BUILDERS.update({"evil_" + k: v for k, v in MANIFEST_NAMES.items()})
BUILDERS.update({"schema_" + k: (lambda mut: lambda w: _write_manifest_text(w, mut))(v)
                 for k, v in MANIFEST_SCHEMA.items()})

# Every verb that opens an artifact, with a placeholder for it.
ARTIFACT_VERBS = {
    "eval": ["eval", "{A}", "--data", "digits"],
    "bench": ["bench", "{A}", "--target", "laptop-cpu", "--iterations", "1", "--warmup", "0"],
    "doctor": ["doctor", "{A}", "--target", "laptop-cpu"],
    "export": ["export", "{A}", "--format", "onnx", "--parity-samples", "5"],
    "export_o": ["export", "{A}", "--format", "onnx", "--parity-samples", "5", "-o", "{tmp}/out"],
    "deploy": ["deploy", "{A}", "--target", "laptop-cpu", "--host", "nobody@127.0.0.1", "--dry-run"],
    "compress": ["compress", "{A}", "--method", "prune", "--data", "digits", "--epochs", "1",
                 "-o", "{tmp}/c"],
    "demo": ["demo", "--model", "{A}", "-o", "{tmp}/d", "--iterations", "2"],
}

CASES = []


def case(cid, args, code=1, pattern="", progress=False):
    """``progress``: the verb may log progress on stderr before failing (then the error line
    must be the last one instead of the first)."""
    CASES.append(pytest.param(args, code, pattern, progress, id=cid))


for verb, args in ARTIFACT_VERBS.items():
    for name in MANIFEST_NAMES:
        case("names-{}-{}".format(verb, name),
             [a.replace("{A}", "{evil_%s}" % name) for a in args], 1,
             r"must stay inside the artifact|is not a file of the artifact")
for verb in ("eval", "bench", "doctor", "export", "deploy"):
    for name in MANIFEST_SCHEMA:
        case("manifest-{}-{}".format(verb, name),
             [a.replace("{A}", "{schema_%s}" % name) for a in ARTIFACT_VERBS[verb]], 1,
             r"manifest")


# -- class 5: data content ---------------------------------------------------------------------

def _npz(w, name, **arrays):
    path = w.tmp / (name + ".npz")
    np.savez(str(path), **arrays)
    return path


def _imgs(n=40, h=8, dtype=np.uint8):
    rng = np.random.RandomState(0)
    return (rng.rand(n, h, h) * 255).astype(dtype)


def _labels(n=40, c=4):
    return np.arange(n) % c


def _with_nan(value):
    x = _imgs(dtype=np.float32)
    x[3, 2, 2] = value
    return x


def _npz_bomb(w):
    """An npz whose x.npy header announces 400 GB (the data itself is 64 bytes)."""
    import zipfile
    path = w.tmp / "bomb.npz"
    with zipfile.ZipFile(str(path), "w") as zf:
        zf.writestr("x.npy", _npy_header((100000, 1000, 1000)) + b"\0" * 64)
        zf.writestr("y.npy", _npy_header((100000,), "<i8"))
    return path


def _npy_header(shape, descr="<f4"):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()  # magic string + header dict


def _idx(dims, payload=b""):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims) + payload


def _mnist(w, name, **override):
    """A four-file MNIST folder (20 train / 10 test 8x8 images), with files replaced."""
    d = w.tmp / name
    d.mkdir()
    files = {"train-images-idx3-ubyte": _idx((20, 8, 8), bytes(20 * 64)),
             "train-labels-idx1-ubyte": _idx((20,), bytes(i % 10 for i in range(20))),
             "t10k-images-idx3-ubyte": _idx((10, 8, 8), bytes(10 * 64)),
             "t10k-labels-idx1-ubyte": _idx((10,), bytes(range(10)))}
    files.update(override)
    for fname, data in files.items():
        if data is not None:
            (d / fname).write_bytes(data)
    return d


def _png(size=(8, 8), color=0):
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", size, color).save(buf, "PNG")
    return buf.getvalue()


def _png_claiming(width, height):
    """A valid small PNG whose IHDR (CRC fixed up) claims width x height pixels."""
    import zlib
    data = bytearray(_png())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12:ihdr + 13])))
    return bytes(data)


def _folder(w, name, classes):
    """folder:DIR with ``classes`` = {class: {file: bytes}}."""
    d = w.tmp / name
    for cls, files in classes.items():
        (d / cls).mkdir(parents=True)
        for fname, data in files.items():
            (d / cls / fname).write_bytes(data)
    return d


def _good_class(n=5, color=0):
    return {"{}.png".format(i): _png(color=color + i) for i in range(n)}


DATA = {  # name -> (builder returning the --data spec, message pattern)
    "unknown_spec": (lambda w: "imagenet", r"unknown data spec"),
    "npz_missing": (lambda w: "npz:{}/nope.npz".format(w.tmp), r"does not exist"),
    "npz_text": (lambda w: "npz:{}".format(_write(w, "t.npz", b"x,y\n1,2\n")),
                 r"not a readable \.npz file \(not a zip"),
    "npz_empty": (lambda w: "npz:" + str(_npz(w, "e", x=np.zeros((0, 8, 8)), y=np.zeros(0))),
                  r"empty"),
    "npz_nan": (lambda w: "npz:" + str(_npz(w, "n", x=_with_nan(np.nan), y=_labels())), r"NaN"),
    "npz_inf": (lambda w: "npz:" + str(_npz(w, "i", x=_with_nan(np.inf), y=_labels())), r"infinite"),
    "npz_y_longer": (lambda w: "npz:" + str(_npz(w, "l", x=_imgs(), y=_labels(45))),
                     r"45 labels for 40 images"),
    "npz_y_shorter": (lambda w: "npz:" + str(_npz(w, "s", x=_imgs(), y=_labels(30))),
                      r"30 labels for 40 images"),
    "npz_labels_negative": (lambda w: "npz:" + str(_npz(w, "ng", x=_imgs(), y=_labels() - 1)),
                            r"must be in 0\.\.C-1"),
    "npz_labels_huge": (lambda w: "npz:" + str(_npz(w, "h", x=_imgs(), y=_labels() * 10**9)),
                        r"must be in 0\.\.C-1"),
    "npz_labels_fraction": (lambda w: "npz:" + str(_npz(w, "f", x=_imgs(), y=_labels() + 0.5)),
                            r"whole class numbers"),
    "npz_labels_vs_classes": (lambda w: "npz:" + str(_npz(w, "c", x=_imgs(), y=_labels(c=4),
                                                          classes=np.array(["a", "b"]))),
                              r"labels must be in 0\.\.1"),
    "npz_x_strings": (lambda w: "npz:" + str(_npz(w, "xs", x=np.full((40, 8, 8), "a"),
                                                  y=_labels())), r"not numbers"),
    "npz_y_strings": (lambda w: "npz:" + str(_npz(w, "ys", x=_imgs(),
                                                  y=np.array(["cat"] * 40))), r"not class numbers"),
    "npz_object": (lambda w: "npz:" + str(_npz(w, "o", x=np.array([None] * 40, dtype=object),
                                               y=_labels())), r"Python objects"),
    "npz_no_y": (lambda w: "npz:" + str(_npz(w, "noy", x=_imgs())), r"no array 'y'"),
    "npz_x_2d": (lambda w: "npz:" + str(_npz(w, "x2", x=_imgs().reshape(40, 64), y=_labels())),
                 r"x must be"),
    "npz_zero_width": (lambda w: "npz:" + str(_npz(w, "zw", x=np.zeros((40, 8, 0)), y=_labels())),
                       r"empty dimension"),
    "npz_no_validation": (lambda w: "npz:" + str(_npz(w, "nv", x=_imgs(8), y=_labels(8, 4))),
                          r"too few training images .* validation split"),
    "npz_one_class": (lambda w: "npz:" + str(_npz(w, "oc", x=_imgs(), y=np.zeros(40, int))),
                      r"at least 2 classes"),
    "npz_x_test_only": (lambda w: "npz:" + str(_npz(w, "xt", x=_imgs(), y=_labels(),
                                                    x_test=_imgs(10))), r"x_test .*y_test"),
    "npz_test_nan": (lambda w: "npz:" + str(_npz(w, "tn", x=_imgs(), y=_labels(),
                                                 x_test=_with_nan(np.nan), y_test=_labels())),
                     r"x_test .*NaN"),
    "npz_bomb": (lambda w: "npz:" + str(_npz_bomb(w)), r"over the .*-byte limit"),
    "mnist_missing_dir": (lambda w: "mnist:{}/nope".format(w.tmp), r"does not exist"),
    "mnist_missing_file": (lambda w: "mnist:" + str(_mnist(w, "m1", **{"t10k-labels-idx1-ubyte": None})),
                           r"missing the t10k-labels"),
    "idx_bad_magic": (lambda w: "mnist:" + str(_mnist(w, "m2", **{"train-images-idx3-ubyte": b"PK\3\4junk"})),
                      r"bad magic"),
    "idx_dims_overflow": (lambda w: "mnist:" + str(_mnist(w, "m3", **{
        "train-images-idx3-ubyte": _idx((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))})), r"limit"),
    "idx_truncated": (lambda w: "mnist:" + str(_mnist(w, "m4", **{
        "train-images-idx3-ubyte": _idx((20, 8, 8), bytes(100))})), r"truncated"),
    "idx_gz_garbage": (lambda w: "mnist:" + str(_mnist(w, "m5", **{
        "train-images-idx3-ubyte": None, "train-images-idx3-ubyte.gz": b"\x1f\x8bnot gzip"})),
        r"cannot read IDX"),
    "idx_labels_3d": (lambda w: "mnist:" + str(_mnist(w, "m6", **{
        "train-labels-idx1-ubyte": _idx((20, 1, 1), bytes(20))})), r"labels \(1 dim\)"),
    "idx_label_count": (lambda w: "mnist:" + str(_mnist(w, "m7", **{
        "train-labels-idx1-ubyte": _idx((15,), bytes(15))})), r"15 labels for 20 images"),
    "idx_no_images": (lambda w: "mnist:" + str(_mnist(w, "m8", **{
        "t10k-images-idx3-ubyte": _idx((0, 8, 8)), "t10k-labels-idx1-ubyte": _idx((0,))})),
        r"empty"),
    "folder_missing": (lambda w: "folder:{}/nope".format(w.tmp), r"does not exist"),
    "folder_one_class": (lambda w: "folder:" + str(_folder(w, "f1", {"a": _good_class()})),
                         r"at least 2 classes"),
    "folder_bomb": (lambda w: "folder:" + str(_folder(w, "f2", {
        "a": _good_class(), "b": {"big.png": _png_claiming(30000, 30000)}})), r"too many pixels"),
    "folder_text_as_png": (lambda w: "folder:" + str(_folder(w, "f3", {
        "a": _good_class(), "b": {"x.png": b"hello"}})), r"cannot read image"),
    "folder_truncated_png": (lambda w: "folder:" + str(_folder(w, "f4", {
        "a": _good_class(), "b": {"x.png": _png()[:30]}})), r"cannot read image"),
    "folder_empty_class": (lambda w: "folder:" + str(_folder(w, "f6", {
        "a": _good_class(), "b": {}})), r"has no images"),
    "folder_not_image": (lambda w: "folder:" + str(_folder(w, "f7", {
        "a": _good_class(), "b": {"notes.txt": b"x"}})), r"not an image file"),
}


def _write(w, name, data):
    (w.tmp / name).write_bytes(data)
    return w.tmp / name


BUILDERS.update({"data_" + k: (lambda b: b)(v[0]) for k, v in DATA.items()})

DATA_VERBS = {
    "train": ["train", "--arch", "tiny", "--data", "{D}", "-o", "{tmp}/o", "--epochs", "1"],
    "eval": ["eval", "{onnx}", "--data", "{D}"],
    "compress": ["compress", "{keras}", "--method", "prune", "--data", "{D}", "-o", "{tmp}/c"],
    "export": ["export", "{onnx}", "--format", "onnx", "--data", "{D}", "-o", "{tmp}/e"],
    "bench": ["bench", "{onnx}", "--iterations", "1", "--warmup", "0", "--data", "{D}"],
    "demo": ["demo", "--data", "{D}", "-o", "{tmp}/d", "--epochs", "1"],
}
BUILDERS["onnx"] = lambda w: w.copy("tiny_onnx", "art")
BUILDERS["keras"] = lambda w: w.copy("tiny_artifact", "art")
SAMPLED = ("npz_nan", "npz_y_longer", "npz_x_strings", "idx_dims_overflow", "folder_bomb",
           "npz_text")  # the verbs after train/eval: each class, not every case again
for verb, args in DATA_VERBS.items():
    for name, (_, pattern) in DATA.items():
        if verb in ("train", "eval") or name in SAMPLED:
            case("data-{}-{}".format(verb, name),
                 [a.replace("{D}", "{data_%s}" % name) for a in args], 1, pattern)

# -- class 5: hyperparameters that reach Keras ----------------------------------------------------
for flag, value, pattern in (("--lr", "nan", r"--lr must be"), ("--lr", "inf", r"--lr must be"),
                             ("--lr", "-0.1", r"--lr must be"), ("--lr", "0", r"--lr must be"),
                             ("--batch-size", "0", r"--batch-size must be >= 1"),
                             ("--batch-size", "-5", r"--batch-size must be >= 1"),
                             ("--epochs", "0", r"--epochs must be >= 1")):
    case("params-train{}-{}".format(flag, value),
         ["train", "--arch", "tiny", "--data", "digits", "-o", "{tmp}/o", flag, value], 1, pattern)
    if flag != "--epochs":
        case("params-compress{}-{}".format(flag, value),
             ["compress", "{keras}", "--method", "prune", "--data", "digits", "-o", "{tmp}/c",
              flag, value], 1, pattern)
        case("params-demo{}-{}".format(flag, value) if flag == "--batch-size" else
             "params-distill{}-{}".format(flag, value),
             ["demo", "--data", "digits", "-o", "{tmp}/d", flag, value] if flag == "--batch-size"
             else ["compress", "{keras}", "--method", "distill", "--data", "digits", "-o",
                   "{tmp}/c", flag, value], 1, pattern)

for value in ("flip", "", "SHIFT ", "none,shift"):
    case("params-distill--augment-{!r}".format(value),
         ["compress", "{keras}", "--method", "distill", "--data", "digits", "-o", "{tmp}/c",
          "--augment", value], 1, r"--augment must be one of")

for value, pattern in (("0", r"--round-to must be an integer >= 1"), ("-16", r"--round-to must be an"),
                       ("1.5", r"--round-to"), ("sixteen", r"--round-to")):
    case("params-prune--round-to-{!r}".format(value),
         ["compress", "{keras}", "--method", "prune", "--structured", "--data", "digits", "-o",
          "{tmp}/c", "--round-to", value], 1, pattern)

# -- class 4: outputs that cannot be written, found before any work ------------------------------
BUILDERS["file"] = lambda w: _write(w, "afile", b"x")
BUILDERS["dir"] = lambda w: (w.tmp / "adir").mkdir() or w.tmp / "adir"
OUTPUT_VERBS = {
    "train": ["train", "--arch", "tiny", "--data", "digits", "--epochs", "1", "-o", "{O}"],
    "compress": ["compress", "{keras}", "--method", "prune", "--data", "digits", "-o", "{O}"],
    "export": ["export", "{onnx}", "--format", "onnx", "-o", "{O}"],
    "demo": ["demo", "-o", "{O}", "--epochs", "1"],
    "report": ["report", "{results}", "-o", "{O}"],
}
for verb, args in OUTPUT_VERBS.items():
    for oid, out, pattern in (("proc", "/proc/edgekit-out", r"is not writable"),
                              ("under_file", "{file}/sub", r"is not a directory"),
                              ("is_file", "{file}", r"exists and is not a directory"),
                              ("exists", "{dir}", r"already exists: .*--force")):
        case("output-{}-{}".format(verb, oid), [a.replace("{O}", out) for a in args], 1, pattern)
for verb, args in {"bench": ["bench", "{onnx}", "--iterations", "1", "--json", "{O}"],
                   "deploy": ["deploy", "{onnx}", "--host", "u@127.0.0.1", "--dry-run",
                              "--json", "{O}"]}.items():
    for oid, out, pattern in (("proc", "/proc/edgekit.json", r"is not writable"),
                              ("under_file", "{file}/r.json", r"is not a directory"),
                              ("is_dir", "{dir}", r"is a directory")):
        case("output-{}-{}".format(verb, oid), [a.replace("{O}", out) for a in args], 1, pattern)

# -- class 7: results files that are not edgekit results ----------------------------------------
GOOD_RESULT = {"target": "laptop-cpu", "runtime": "onnxruntime", "runtime_version": "1.20",
               "device": "CPU", "batch": 1, "iterations": 10, "warmup": 2, "cold_start_ms": 5.0,
               "latency_ms": {"mean": 1.0, "std": 0.1, "min": 0.8, "p50": 1.0, "p90": 1.1,
                              "p95": 1.2, "p99": 1.3, "max": 1.5},
               "throughput_ips": 1000.0, "peak_rss_mb": 100.0, "accuracy": 0.9,
               "host": "h", "timestamp": "2026-01-01T00:00:00Z"}


def _result(w, name, edit=None, text=None):
    r = json.loads(json.dumps(GOOD_RESULT))
    if edit:
        edit(r)
    path = w.tmp / (name + ".json")
    path.write_text(text if text is not None else json.dumps(r))
    return path


BUILDERS["results"] = lambda w: _result(w, "good")
RESULTS = {
    "p50_nan": (dict(text=json.dumps(GOOD_RESULT).replace('"p50": 1.0', '"p50": NaN')), r"not valid JSON"),
    "p50_negative": (dict(edit=lambda r: r["latency_ms"].update(p50=-1.0, min=-2.0)), r"less than the minimum"),
    "p50_string": (dict(edit=lambda r: r["latency_ms"].update(p50="fast")), r"p50"),
    "p99_infinity": (dict(text=json.dumps(GOOD_RESULT).replace('"p99": 1.3', '"p99": Infinity')), r"not valid JSON"),
    "p99_overflow": (dict(text=json.dumps(GOOD_RESULT).replace('"p99": 1.3', '"p99": 1e999')), r"overflows"),
    "order": (dict(edit=lambda r: r["latency_ms"].update(p50=9.0)), r"min <= p50"),
    "no_latency": (dict(edit=lambda r: r.pop("latency_ms")), r"latency_ms"),
    "latency_list": (dict(edit=lambda r: r.update(latency_ms=[1, 2])), r"latency_ms"),
    "accuracy_2": (dict(edit=lambda r: r.update(accuracy=2)), r"accuracy"),
    "batch_0": (dict(edit=lambda r: r.update(batch=0)), r"batch"),
    "bytes_string": (dict(edit=lambda r: r.update(bytes="1 MB")), r"bytes"),
    "empty_list": (dict(text="[]"), r"not an edgekit results file"),
    "list_of_str": (dict(text='["a"]'), r"not an edgekit results file"),
    "not_json": (dict(text="latency,3\n"), r"not valid JSON"),
    "empty_file": (dict(text=""), r"not valid JSON"),
    "deep": (dict(text="[" * 50000 + "]" * 50000), r"not an edgekit results file"),
}
BUILDERS.update({"res_" + k: (lambda kw, k: lambda w: _result(w, k, **kw))(v[0], k)
                 for k, v in RESULTS.items()})
for name, (_, pattern) in RESULTS.items():
    case("results-report-" + name, ["report", "{results}", "{res_%s}" % name, "-o", "{tmp}/rep"],
         1, pattern)
case("results-report-missing", ["report", "{tmp}/nope.json", "-o", "{tmp}/rep"], 1, r"does not exist")
case("results-report-dir", ["report", "{dir}", "-o", "{tmp}/rep"], 1, r"is a directory")
case("results-report-artifact", ["report", "{results}", "-o", "{onnx}"], 1, r"already exists")


# -- class 9: messages that name the real problem ------------------------------------------------
case("messages-export-opset5", ["export", "{onnx}", "--format", "onnx", "--opset", "5"], 1,
     r"--opset 5 is below 9")
case("messages-knn-dims", ["compress", "{keras}", "--method", "knn-slice", "--data", "digits",
                           "-o", "{tmp}/k", "--cut", "auto", "--dims", "100000",
                           "--prototypes", "5"], 1, r"--dims 100000 is larger than the features",
     progress=True)
case("messages-npz-text-no-pickle", ["eval", "{onnx}", "--data", "{data_npz_text}"], 1,
     r"^(?!.*pickle).*not a zip")
case("messages-npz-object-no-pickle", ["eval", "{onnx}", "--data", "{data_npz_object}"], 1,
     r"^(?!.*allow_pickle).*Python objects")

# -- class 6: data that does not fit the artifact -------------------------------------------------
BUILDERS["data_three_classes"] = lambda w: "npz:" + str(_npz(w, "three", x=_imgs(60).astype(
    np.float32) / 16, y=_labels(60, 3)))
# another image size is fitted to the model (edgekit.adapt: resize); 2 channels cannot be
BUILDERS["data_2ch"] = lambda w: "npz:" + str(_npz(w, "twoch", x=np.stack([_imgs(40)] * 2, -1),
                                                   y=_labels(40, 10)))
for verb, args in {"eval": ["eval", "{onnx}", "--data"],
                   "bench": ["bench", "{onnx}", "--iterations", "1", "--data"],
                   "export": ["export", "{onnx}", "--format", "onnx", "--data"],
                   "export_o": ["export", "{onnx}", "-o", "{tmp}/e", "--data"],
                   "compress": ["compress", "{keras}", "--method", "quantize", "-o", "{tmp}/q",
                                "--data"]}.items():
    case("mismatch-{}-classes".format(verb), args + ["{data_three_classes}"], 1,
         r"(made for 10 classes but .* has 3|has 10 outputs but .* has 3 classes)")
    case("mismatch-{}-shape".format(verb), args + ["{data_2ch}"], 1,
         r"has 2-channel images but the model expects 1 channels")


# -- the check ------------------------------------------------------------------------------

def listing(root):
    """Every path under ``root`` with (size, mtime_ns, symlink target): what 'nothing new or
    changed on disk' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, str(root))] = (
                st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns,
                os.readlink(p) if os.path.islink(p) else None)
    return out


def assert_one_error_line(code, err, want_code, pattern, progress=False):
    """The exit code; exactly one ``error:`` line, first on stderr (or last, after progress
    lines, for verbs that log progress); no traceback; the message matches ``pattern``."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == want_code, "exit {} (want {}); stderr:\n{}".format(code, want_code, err)
    assert "Traceback" not in err, err
    assert sum(ln.startswith("error") for ln in lines) == 1, err
    line = lines[-1] if progress else lines[0]
    assert line.startswith("error: "), "the error line is not {}:\n{}".format(
        "last" if progress else "first", err)
    assert re.search(pattern, line), "{!r} not in {!r}".format(pattern, line)


@pytest.mark.parametrize("args, code, pattern, progress", CASES)
def test_bad_input(args, code, pattern, progress, tmp_path, request, run_cli, monkeypatch):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    argv = [a.format_map(world) for a in args]
    monkeypatch.chdir(world.tmp)
    before = listing(world.tmp)
    got, out, err = run_cli(*argv)
    assert_one_error_line(got, err, code, pattern, progress)
    assert listing(world.tmp) == before, "files were created, changed or removed"
