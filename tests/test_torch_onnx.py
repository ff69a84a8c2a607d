"""ONNX as PyTorch writes it, through every verb that takes an ONNX file (issue 33).

The files are committed fixtures written by tests/fixtures/make_torch_onnx.py with torch 2.13
(classic exporter at opset 13/17 with torch's static batch 1, ``dynamo=True`` at opset 18 and
21, module functions, external data, LogSoftmax / Softmax heads, a net dividing 0..255 pixels
by 255 itself), registered in ``onnx_models.TORCH_FIXTURES``. Table-driven: file x verb ->
written within the accuracy guard (and at the file's own accuracy, computed here by
onnxruntime directly), or one clear ``error:`` line. Then: the fixed-batch feeding,
``edgekit import`` (ONNX and Keras) and the errors pointing to it, eval's preprocessing note.
"""
import json

import numpy as np

import pytest

from onnx_models import (MNIST_NORMALIZE, TORCH_FIXTURES, TORCH_MNIST, centroid_accuracy,
                         centroid_onnx, ort_reference_accuracy, rgb_digits_npz, torch_fixture)

NAMES = sorted(TORCH_FIXTURES)


def _mnist_dir():
    """conftest's MNIST (next to the repository), or next to a worktree's parent folder."""
    from conftest import MNIST_DIR, REPO
    for d in (MNIST_DIR, REPO.parent.parent / "shared" / "datasets" / "mnist"):
        if d.is_dir():
            return d
    pytest.skip("no MNIST at " + str(MNIST_DIR))


@pytest.fixture(scope="module")
def reference():
    """file -> test accuracy on digits, onnxruntime run directly, one image at a time."""
    from edgekit.data import load_data
    ds = load_data("digits")
    return {n: ort_reference_accuracy(torch_fixture(n), ds, raw=f["preprocess"] == "raw")
            for n, f in TORCH_FIXTURES.items()}


def test_fixtures_are_small_and_trained(reference):
    total = sum(p.stat().st_size for p in torch_fixture("").iterdir() if p.suffix != ".py")
    assert total < 2 * 1024 * 1024
    for name, acc in reference.items():
        assert acc > 0.85, (name, acc)     # trained: far from chance (10%)


@pytest.mark.parametrize("name", NAMES)
def test_inspect_reads_what_torch_wrote(name):
    from edgekit.onnx_model import inspect_onnx
    want = TORCH_FIXTURES[name]
    f = inspect_onnx(torch_fixture(name))
    assert f["layout"] == "NCHW" and f["image_shape"] == (8, 8, 1) and f["num_classes"] == 10
    assert f["input_shape"] == [want["batch"], 1, 8, 8] and f["input_name"] == want["input_name"]
    assert (f["opset"], f["output"], f["preprocess"]) == (want["opset"], want["output"],
                                                          want["preprocess"])
    assert f["external_data"] == want["external"] and f["functions"] == want["functions"]
    assert f["params"] == 3818 and f["producer"].startswith("pytorch")


def test_identity_chains_around_the_graph_hide_nothing(tmp_path, reference):
    """Older dynamo exports put Identity chains on the input and the output: the layout, the
    LogSoftmax head and the accuracy are read through them."""
    import onnx
    from onnx import helper
    from edgekit.models import evaluate
    from edgekit.onnx_model import inspect_onnx
    m = onnx.load(str(torch_fixture("torch_digits_logsoftmax.onnx")))
    g = m.graph
    inp, out = g.input[0].name, g.output[0].name
    for node in g.node:   # the graph now reads "x2", two Identities after the input
        node.input[:] = ["x2" if i == inp else i for i in node.input]
        node.output[:] = ["y0" if o == out else o for o in node.output]
    nodes = ([helper.make_node("Identity", [inp], ["x1"]),
              helper.make_node("Identity", ["x1"], ["x2"])] + list(g.node) +
             [helper.make_node("Identity", ["y0"], ["y1"]),
              helper.make_node("Identity", ["y1"], [out])])
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    path = tmp_path / "chains.onnx"
    onnx.save(m, str(path))
    f = inspect_onnx(path)
    assert (f["layout"], f["output"]) == ("NCHW", "log_softmax")
    acc = evaluate(path, "digits")["onnxruntime"]
    assert acc == pytest.approx(reference["torch_digits_logsoftmax.onnx"], abs=1 / 359.0)


# -- file x verb --------------------------------------------------------------------------------
# (verb id, argv after the file, what to check); {out} is the output path
VERBS = {
    "eval-onnxruntime": ["eval", "{f}", "--data", "digits", "--json"],
    "eval-openvino": ["eval", "{f}", "--data", "digits", "--runtime", "openvino", "--json"],
    "bench": ["bench", "{f}", "--target", "laptop-cpu", "--data", "digits", "--iterations", "20",
              "--json", "{out}.json"],
    "export-openvino": ["export", "{f}", "--format", "openvino", "--target", "laptop-cpu",
                        "--data", "digits", "-o", "{out}", "--parity-samples", "200"],
    "knn-slice": ["compress", "{f}", "--method", "knn-slice", "--data", "digits", "-o", "{out}"],
    "quantize": ["compress", "{f}", "--method", "quantize", "--data", "digits", "-o", "{out}",
                 "--calibration-samples", "100"],
}
# quantize (~35 s: 6 onnxruntime + 4 NNCF candidates) and knn-slice on every file is for -m slow;
# the default run keeps the kinds that differ: static classic, functions, external data, dynamo
DEFAULT = {"quantize": {"torch_digits_op13_b1.onnx", "torch_digits_functions.onnx",
                        "torch_digits_external.onnx", "torch_digits_dynamo21_ls.onnx"},
           "knn-slice": {"torch_digits_op17_b1.onnx", "torch_digits_dynamo.onnx",
                         "torch_digits_functions.onnx", "torch_digits_external.onnx"}}
CASES = [pytest.param(n, v, marks=() if n in DEFAULT.get(v, {n}) else pytest.mark.slow,
                      id="{}-{}".format(n[len("torch_digits_"):-5], v))
         for n in NAMES for v in VERBS]


@pytest.mark.parametrize("name, verb", CASES)
def test_every_verb_on_every_torch_file(name, verb, reference, run_cli, tmp_path):
    """Written within the guard and at the file's own accuracy (never chance with exit 0)."""
    path = torch_fixture(name)
    out = tmp_path / "out"
    argv = [a.format(f=path, out=out) for a in VERBS[verb]]
    code, stdout, err = run_cli(*argv)
    lines = err.strip().splitlines()
    if code != 0:   # a refusal is one clear line, nothing written
        assert code == 1 and len([ln for ln in lines if ln.startswith("error:")]) == 1, err
        assert not out.exists()
        pytest.fail("{} refused {}: {}".format(verb, name, lines[-1]))
    assert "Traceback" not in err
    ref, n = reference[name], 359.0
    if verb.startswith("eval"):
        acc = list(json.loads(stdout)["accuracy"].values())[0]
        assert abs(acc - ref) <= 1 / n, (acc, ref)
    elif verb == "bench":
        rows = json.loads((tmp_path / "out.json").read_text())
        rows = rows if isinstance(rows, list) else [rows]     # one object per runtime
        assert rows and all(abs(r["accuracy"] - ref) <= 1 / n for r in rows), rows
        assert rows[0]["batch"] == 1
    else:
        m = json.loads((out / "manifest.json").read_text())
        assert m["source"]["model_sha256"] and m["input"]["layout"] == "NCHW"
        if verb == "export-openvino":
            ents = [e for e in m["files"].values() if e.get("parity")]
            assert {e["format"] for e in ents} == {"openvino"}
            assert all(e["parity"]["agreement"] == 1.0 for e in ents), ents
            assert abs(m["metrics"].get("accuracy", ref) - ref) <= 1 / n
        elif verb == "knn-slice":
            assert m["metrics"]["guard"]["split"] == "validation"
            assert m["metrics"]["accuracy"] > 0.8
        else:
            before = m["metrics"]["before"]
            assert abs(before["accuracy"] - ref) <= 1 / n     # fed as it was trained
            assert m["output"]["convention"] == TORCH_FIXTURES[name]["output"]
            assert set(m["metrics"]["formats"]) == {"model.int8.onnx", "openvino/model.int8.xml"}
            for fname, f in m["metrics"]["formats"].items():
                assert m["files"][fname]["guard"]["split"] == "validation"
                assert f["accuracy"] >= before["accuracy"] - 0.01 - 1 / n, (fname, f)
            from edgekit.compress.int8 import int8_tensor_summary
            assert int8_tensor_summary(out / "model.int8.onnx")["quantize_nodes"] > 0


def test_export_onnx_of_a_file_over_the_targets_opset_is_one_line(run_cli, tmp_path):
    """laptop-cpu's descriptor says max opset 17: a dynamo opset-18 file as ONNX for it is
    refused in one line (its OpenVINO IR is written: the table above)."""
    code, out, err = run_cli("export", torch_fixture("torch_digits_dynamo.onnx"), "--format",
                             "onnx", "--target", "laptop-cpu", "--data", "digits", "-o",
                             tmp_path / "out")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "opset 18 > laptop-cpu's max opset 17" in lines[0]
    assert not (tmp_path / "out").exists()


# -- fixed batch ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    from edgekit.data import load_data
    path = rgb_digits_npz(tmp_path_factory.mktemp("rgb") / "rgb.npz")
    return "npz:" + str(path), load_data("npz:" + str(path))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_fixed_batch_of_3_scores_every_test_image(rgb, tmp_path, runtime):
    """359 test images in batches of 3: the last one padded, none dropped (was: dropped)."""
    from edgekit.models import evaluate
    spec, ds = rgb
    assert len(ds.y_test) % 3 != 0
    path = centroid_onnx(ds, tmp_path / "b3.onnx", batch=3)
    assert evaluate(path, spec, runtime=runtime)[runtime] == pytest.approx(centroid_accuracy(ds))


def test_quantize_a_fixed_batch_of_3_on_both_int8_paths(rgb, tmp_path):
    """onnxruntime's calibration reader and NNCF's data set feed 3 at a time; the search's
    validation and the test accuracy too (this model keeps its one Conv float in ONNX)."""
    from edgekit.compress import compress
    spec, ds = rgb
    path = centroid_onnx(ds, tmp_path / "b3.onnx", batch=3)
    art = compress(path, "quantize", spec, tmp_path / "q", calibration_samples=20,
                   progress=False, allow_drop=True)
    for name, f in art.manifest["metrics"]["formats"].items():
        assert f["accuracy"] > centroid_accuracy(ds) - 0.1, (name, f)


# -- preprocessing --------------------------------------------------------------------------------

def test_eval_says_once_when_the_file_cannot_tell_its_preprocessing(run_cli):
    code, out, err = run_cli("eval", torch_fixture("torch_digits_op17_b1.onnx"), "--data",
                             "digits")
    assert code == 0 and err.count("does not say which pixel values") == 1, err
    assert "--preprocess" in err
    code, out, err = run_cli("eval", torch_fixture("torch_digits_op17_b1.onnx"), "--data",
                             "digits", "--preprocess", "unit")
    assert code == 0 and "does not say" not in err


def test_a_graph_dividing_by_255_gets_raw_pixels_and_preprocess_overrides(run_cli, reference):
    f = torch_fixture("torch_digits_raw255.onnx")
    code, out, err = run_cli("eval", f, "--data", "digits", "--json")
    assert code == 0 and "input preprocessing raw" in err and "does not say" not in err
    assert json.loads(out)["accuracy"]["onnxruntime"] == pytest.approx(
        reference["torch_digits_raw255.onnx"], abs=1 / 359.0)
    code, out, err = run_cli("eval", f, "--data", "digits", "--json", "--preprocess", "unit")
    assert json.loads(out)["accuracy"]["onnxruntime"] < 0.5   # 0..1 into a /255 net: wrong


def test_eval_near_chance_with_assumed_pixels_says_so(tmp_path, run_cli):
    """The /255 net dividing by 256 instead (a net that wants 0..255 and does not say so)
    fed 0..1: near chance, and eval says why instead of a bare low figure."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(torch_fixture("torch_digits_raw255.onnx")))
    div = [n for n in m.graph.node if n.op_type == "Div"][0]
    const = [n for n in m.graph.node if n.output[0] in div.input][0]
    const.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(256.0, np.float32)))
    onnx.save(m, str(tmp_path / "raw.onnx"))
    code, out, err = run_cli("eval", tmp_path / "raw.onnx", "--data", "digits", "--json")
    assert code == 0 and json.loads(out)["accuracy"]["onnxruntime"] < 0.2
    assert "is near chance" in err and "--preprocess" in err
    code, out, err = run_cli("eval", tmp_path / "raw.onnx", "--data", "digits", "--json",
                             "--preprocess", "raw")
    assert json.loads(out)["accuracy"]["onnxruntime"] > 0.85 and "near chance" not in err


def test_metadata_tells_the_pixel_range(tmp_path):
    import onnx
    from edgekit.onnx_model import inspect_onnx
    m = onnx.load(str(torch_fixture("torch_digits_op17_b1.onnx")))
    onnx.helper.set_model_props(m, {"Image.NominalPixelRange": "NominalRange_0_255"})
    onnx.save(m, str(tmp_path / "m.onnx"))
    f = inspect_onnx(tmp_path / "m.onnx")
    assert f["preprocess"] == "raw" and "NominalPixelRange" in f["preprocess_source"]


# -- edgekit import -------------------------------------------------------------------------------

def test_import_an_external_data_onnx_with_its_preprocessing(run_cli, tmp_path, reference):
    from edgekit.artifact import Artifact
    from edgekit.data import file_sha256
    from edgekit.models import evaluate
    src = torch_fixture("torch_digits_external.onnx")
    code, out, err = run_cli("import", src, "-o", tmp_path / "art", "--data", "digits",
                             "--preprocess", "unit")
    assert code == 0, err
    art = Artifact.open(tmp_path / "art")          # verifies sha256s
    m = art.manifest
    assert (m["kind"], m["method"]["name"]) == ("model", "import")
    assert m["source"]["model_sha256"] == file_sha256(src)
    assert m["source"]["external_data"] == {
        "torch_digits_external.onnx.data": file_sha256(src.parent / "torch_digits_external.onnx.data")}
    assert m["input"]["preprocess"] == "unit" and m["input"]["layout"] == "NCHW"
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == ["manifest.json", "model.onnx"]
    assert m["metrics"]["accuracy"] == pytest.approx(reference["torch_digits_external.onnx"])
    got = evaluate(tmp_path / "art", "digits")    # every runtime that reads the artifact's ONNX
    assert got["onnxruntime"] == m["metrics"]["accuracy"]
    assert set(got) <= {"onnxruntime", "openvino"}
    assert abs(got.get("openvino", got["onnxruntime"]) - got["onnxruntime"]) < 0.01
    code, out, err = run_cli("eval", tmp_path / "art", "--data", "digits", "--preprocess", "raw")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "records its input preprocessing (unit)" in lines[0]


def test_import_a_torch_normalized_mnist_model_records_mean_std(run_cli, tmp_path):
    MNIST_DIR = _mnist_dir()
    code, out, err = run_cli("import", torch_fixture(TORCH_MNIST), "-o", tmp_path / "art",
                             "--data", "mnist:" + str(MNIST_DIR), *MNIST_NORMALIZE)
    assert code == 0, err
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert m["input"]["mean"] == [0.1307] and m["input"]["std"] == [0.3081]
    assert m["metrics"]["accuracy"] > 0.97


def test_import_a_keras_file_then_export_it(tiny_artifact, run_cli, tmp_path):
    from edgekit.data import file_sha256
    h5 = tiny_artifact.path / "model.h5"
    code, out, err = run_cli("import", h5, "-o", tmp_path / "art", "--data", "digits")
    assert code == 0, err
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert (m["kind"], m["method"]["name"]) == ("model", "import")
    assert m["source"]["model_sha256"] == file_sha256(h5)
    assert m["metrics"]["accuracy"] == pytest.approx(tiny_artifact.manifest["metrics"]["accuracy"])
    code, out, err = run_cli("export", tmp_path / "art", "--format", "onnx", "--target",
                             "laptop-cpu", "--parity-samples", "100")
    assert code == 0, err
    m = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert any(e["format"] == "onnx" and e["parity"]["agreement"] == 1.0
               for e in m["files"].values() if e.get("parity"))


@pytest.mark.parametrize("argv", [
    ["export", "{h5}", "--format", "onnx"],
    ["bench", "{h5}", "--target", "laptop-cpu"],
    ["deploy", "{h5}", "--target", "laptop-cpu", "--host", "127.0.0.1:9", "--dry-run"],
    ["doctor", "--target", "laptop-cpu", "{h5}"],
], ids=["export", "bench", "deploy", "doctor"])
def test_a_keras_file_where_an_artifact_goes_points_to_import(tiny_artifact, run_cli, argv):
    h5 = tiny_artifact.path / "model.h5"
    code, out, err = run_cli(*[a.format(h5=h5) for a in argv])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "edgekit import {} -o ART --data SPEC".format(h5) in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["import", "{h5}", "-o", "{out}"], "is a Keras model: pass --data SPEC"),
    (["import", "{missing}", "-o", "{out}"], "does not exist"),
    (["import", "{art}", "-o", "{out}"], "is already an edgekit artifact"),
    (["import", "{txt}", "-o", "{out}"], "is not a model file edgekit reads"),
    (["import", "{onnx}", "-o", "{out}", "--data", "digits", "--preprocess", "bogus"],
     "unknown --preprocess 'bogus'"),
], ids=["keras-no-data", "missing", "artifact", "not-a-model", "bad-preprocess"])
def test_import_refuses_in_one_line_and_writes_nothing(tiny_artifact, run_cli, tmp_path, argv,
                                                       message):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    names = {"h5": tiny_artifact.path / "model.h5", "missing": tmp_path / "nope.onnx",
             "art": tiny_artifact.path, "txt": txt, "out": tmp_path / "out",
             "onnx": torch_fixture("torch_digits_op13_b1.onnx")}
    code, out, err = run_cli(*[a.format(**names) for a in argv])
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


# -- the done-when: PyTorch static-batch MNIST LeNet -> int8 within 0.5 pt -----------------

@pytest.mark.slow
def test_torch_mnist_lenet_quantizes_within_half_a_point(run_cli, tmp_path):
    MNIST_DIR = _mnist_dir()
    code, out, err = run_cli("compress", torch_fixture(TORCH_MNIST), "--method", "quantize",
                             "--data", "mnist:" + str(MNIST_DIR), *MNIST_NORMALIZE,
                             "-o", tmp_path / "q")
    assert code == 0, err
    m = json.loads((tmp_path / "q" / "manifest.json").read_text())
    before = m["metrics"]["before"]["accuracy"]
    assert before > 0.97
    for name, f in m["metrics"]["formats"].items():
        assert f["accuracy"] >= before - 0.005, (name, f["accuracy"], before)
