"""Files that are not what they say (issue 34, class 5), for real: a FIFO where a model, a
data file, a results file or an artifact's file should be (refused before opening: it used to
hang forever), a ``manifest.json`` symlinked out of its artifact, input shapes of 100000x100000
(bounded before anything is allocated), an empty ``.onnx``, an ONNX whose output is a 4-D
feature map, and one whose symbolic ``(N, K)`` output is really one column (checked on the
first batch: it used to score 10.03% with exit 0), named as the user's file, not the temp
artifact bench wraps it in.
"""
import json
import os
import shutil
import signal

import numpy as np
import pytest

from test_bad_input import World, assert_one_error_line, listing


def _onnx_models(d):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    opset = [helper.make_opsetid("", 13)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])
    w = numpy_helper.from_array(np.random.RandomState(0).randn(6, 1, 3, 3).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "fm",
                          [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                             ["N", 6, 8, 8])], [w])
    onnx.save(helper.make_model(g, opset_imports=opset), str(d / "featuremap.onnx"))
    w2 = numpy_helper.from_array(np.random.RandomState(0).randn(64, 1).astype(np.float32), "w2")
    shp = numpy_helper.from_array(np.array([-1, 64], np.int64), "shp")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shp"], ["f"]),
                           helper.make_node("MatMul", ["f", "w2"], ["y"])], "onecol", [x],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])],
                          [w2, shp])
    onnx.save(helper.make_model(g, opset_imports=opset), str(d / "onecol.onnx"))
    big = [1, 1, 100000, 100000]
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "huge",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, big)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, big)])
    onnx.save(helper.make_model(g, opset_imports=opset), str(d / "huge.onnx"))
    (d / "empty.onnx").write_bytes(b"")


def _fifo(w, name):
    path = w.tmp / name
    os.mkfifo(str(path))
    return path


def _art_with(w, fixture, edit):
    art = w.copy(fixture, "art")
    edit(art)
    return art


def _fifo_in_artifact(art):
    (art / "model.h5").unlink()
    os.mkfifo(str(art / "model.h5"))


def _manifest_symlink_out(art):
    outside = art.parent / "elsewhere.json"
    shutil.move(str(art / "manifest.json"), str(outside))
    (art / "manifest.json").symlink_to(outside)


def _huge_shape(art):
    m = json.loads((art / "manifest.json").read_text())
    m["input"]["shape"] = [None, 100000, 100000, 1]
    (art / "manifest.json").write_text(json.dumps(m))


BUILD = {
    "fifo.onnx": lambda w: _fifo(w, "m.onnx"),
    "fifo.h5": lambda w: _fifo(w, "m.h5"),
    "fifo.npz": lambda w: "npz:{}".format(_fifo(w, "d.npz")),
    "fifo.json": lambda w: _fifo(w, "r.json"),
    "art_fifo": lambda w: _art_with(w, "tiny_artifact", _fifo_in_artifact),
    "art_symlink": lambda w: _art_with(w, "tiny_onnx", _manifest_symlink_out),
    "art_huge": lambda w: _art_with(w, "tiny_onnx", _huge_shape),
}
FIFO = r"is a FIFO \(named pipe\): edgekit reads regular files only"
CASES = [
    ("fifo-eval-onnx", ["eval", "{fifo.onnx}", "--data", "digits"], FIFO),
    ("fifo-compress-h5", ["compress", "{fifo.h5}", "--method", "quantize", "--data", "digits",
                          "-o", "{tmp}/q"], FIFO),
    ("fifo-eval-npz", ["eval", "{onnx}", "--data", "{fifo.npz}"], FIFO),
    ("fifo-report-results", ["report", "{fifo.json}", "-o", "{tmp}/rep"], FIFO),
    ("fifo-in-artifact", ["eval", "{art_fifo}", "--data", "digits"], FIFO),
    ("manifest-symlink-out", ["eval", "{art_symlink}", "--data", "digits"],
     r"manifest.json is a symlink out of the artifact"),
    ("manifest-huge-shape-bench", ["bench", "{art_huge}", "--iterations", "1"],
     r"values per image \(limit"),
    ("manifest-huge-shape-eval", ["eval", "{art_huge}", "--data", "digits"],
     r"values per image \(limit"),
    ("onnx-empty", ["eval", "{models}/empty.onnx", "--data", "digits"],
     r"is empty \(0 bytes\): not an ONNX model"),
    ("onnx-feature-map", ["eval", "{models}/featuremap.onnx", "--data", "digits"],
     r"is a feature map \(4-D\), not one score per class"),
    # --preprocess unit: the file does not say its pixel range, and the note saying so
    # would come before the error (eval's preprocessing note is covered in test_torch_onnx)
    ("onnx-one-column", ["eval", "{models}/onecol.onnx", "--data", "digits", "--preprocess",
                         "unit"],
     r"has 1 column per image but the data's labels need 10 classes"),
    ("onnx-one-column-bench-names-the-file", ["bench", "{models}/onecol.onnx", "--data", "digits",
                                              "--iterations", "1"],
     r"error: \S*/models/onecol\.onnx: its first output has 1 column"),  # not its temp copy
    ("onnx-huge-input-eval", ["eval", "{models}/huge.onnx", "--data", "digits"],
     r"10,000,000,000 values per image"),
    ("onnx-huge-input-bench", ["bench", "{models}/huge.onnx", "--iterations", "1"],
     r"10,000,000,000 values per image"),
]


class _Hung(Exception):
    pass


def _alarm(*_):
    raise _Hung("the command blocked (a FIFO opened?)")


@pytest.mark.parametrize("args, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_files_that_are_not_what_they_say(args, pattern, tmp_path, request, run_cli, monkeypatch):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    _onnx_models(models)

    def fill(a):
        for key, build in BUILD.items():
            if "{" + key + "}" in a:
                a = a.replace("{" + key + "}", str(build(world)))
        return a.replace("{models}", str(models)).format_map(world)
    argv = [fill(a) for a in args]
    monkeypatch.chdir(world.tmp)
    before = listing(world.tmp)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(120)
    try:
        code, out, err = run_cli(*argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert_one_error_line(code, err, 1, pattern)
    assert listing(world.tmp) == before
