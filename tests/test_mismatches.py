"""Mismatches that used to give wrong numbers instead of errors (issue 12, class 6): a k-NN
artifact is evaluated through its inference ONNX (not the trunk), an int8-only artifact is not
"exported" for a float target, IR bytes are .xml + .bin everywhere, the exports record names
the opset of the file it points at, and data with another class count is refused."""
import json
import re

import numpy as np
import pytest

from edgekit.artifact import Artifact


@pytest.fixture(scope="module")
def knn(tiny_artifact, tmp_path_factory):
    from edgekit.compress.knn.slice import knn_slice
    return knn_slice(tiny_artifact.path, "digits", tmp_path_factory.mktemp("knn") / "knn",
                     cut="pool2", k=3, prototypes=5, progress=False,
                     allow_drop=True)  # what eval/export make of it is tested, not the guard


def test_eval_of_a_knn_artifact_runs_its_onnx_not_the_trunk(knn, run_cli):
    assert knn.files["trunk.h5"]["inference"] is False
    code, out, err = run_cli("eval", knn.path, "--data", "digits", "--json")
    assert code == 0, err
    acc = json.loads(out)["accuracy"]
    assert "keras" not in acc and set(acc) >= {"onnxruntime"}
    assert acc["onnxruntime"] == pytest.approx(knn.manifest["metrics"]["accuracy"], abs=0.01)


def test_knn_export_records_the_opset_of_its_own_onnx(knn, artifact_copy):
    import onnx
    from edgekit.export import export
    art = export(artifact_copy(knn), "onnx", target="laptop-cpu", parity_samples=50)
    real = [o.version for o in onnx.load(str(art.file("model.onnx"))).opset_import if o.domain == ""]
    assert art.manifest["exports"]["laptop-cpu:fp32"]["opset"] == real[0]


def test_export_of_an_int8_only_artifact_for_the_nano_fails_clearly(tiny_artifact, tmp_path,
                                                                    run_cli):
    from edgekit.compress.int8 import quantize
    q = quantize(tiny_artifact.path, "digits", tmp_path / "q", formats=["onnx"],
                 calibration_samples=50)
    inference = {n: e for n, e in q.files.items() if e.get("inference", True)}
    assert inference and all(e["precision"] == "int8" for e in inference.values())
    before = sorted(p.name for p in q.path.rglob("*"))
    code, out, err = run_cli("export", q.path, "--format", "onnx", "--target", "jetson-nano")
    assert code == 1 and err.startswith("error: ") and "only an int8 model" in err, err
    assert sorted(p.name for p in q.path.rglob("*")) == before


def test_openvino_ir_bytes_are_xml_plus_bin_in_every_table(tiny_onnx, artifact_copy, run_cli, tmp_path):
    path = artifact_copy(tiny_onnx)
    code, out, err = run_cli("export", path, "--format", "openvino", "--parity-samples", "20")
    assert code == 0, err
    art = Artifact.open(path)
    xml = [n for n, e in art.files.items() if e["format"] == "openvino" and n.endswith(".xml")][0]
    e = art.files[xml]
    want = e["bytes"] + art.files[e["weights"]]["bytes"]
    assert art.run_bytes(xml) == want and art.files[e["weights"]]["bytes"] > e["bytes"] / 10
    assert "{:,}".format(want) in out  # the export table
    code, _, err = run_cli("bench", path, "--runtime", "openvino", "--iterations", "2",
                           "--warmup", "0", "--eval-samples", "10", "--json", tmp_path / "r.json")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["bytes"] == want  # bench / report
    from edgekit.deploy import build_bundle
    bundle = build_bundle(path, "laptop-cpu", runtime="openvino", test_samples=5)
    assert bundle.meta["bytes"] == want  # what the device's results report


@pytest.mark.parametrize("verb", ["eval", "bench", "export"])
def test_data_with_another_class_count_is_refused(verb, tiny_onnx, tmp_path, run_cli):
    rng = np.random.RandomState(0)
    np.savez(str(tmp_path / "three.npz"), x=(rng.rand(60, 8, 8) * 16).astype(np.float32),
             y=np.arange(60) % 3)
    args = {"eval": ["eval", tiny_onnx.path, "--data"],
            "bench": ["bench", tiny_onnx.path, "--iterations", "1", "--data"],
            "export": ["export", tiny_onnx.path, "-o", tmp_path / "e", "--data"]}[verb]
    code, out, err = run_cli(*args, "npz:{}".format(tmp_path / "three.npz"))
    assert code == 1 and err.startswith("error: "), err
    assert re.search(r"(made for 10 classes but|has 10 outputs but) .* has 3", err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["three.npz"]
