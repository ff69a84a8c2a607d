"""Target rules from targets/*.toml: refusals, static ONNX checks, NCS2 exports checked in the
real OpenVINO 2022.3.1 venv (tests/devices.py fails loudly when it is missing)."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.artifact import Artifact
from edgekit.errors import EdgekitError
from edgekit.export import export
from edgekit.targets import (TRT82_OPS, check_artifact, check_onnx_model, load_target,
                             target_names)
from tests.devices import ov2022_python


def _graph(nodes, opset=13, inits=(), domains=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y], initializer=list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(g, opset_imports=imports)


def test_descriptors_load_and_unknown_target_is_refused():
    assert target_names() == ["jetson-nano", "laptop-cpu", "ncs2", "raspberry-pi"]
    nano, ncs2 = load_target("jetson-nano"), load_target("ncs2")
    assert nano["max_opset"] == 13 and "int8" not in nano["precisions"]
    assert ncs2["precisions"] == ["fp16"] and ncs2["static_batch"] == 1
    with pytest.raises(EdgekitError, match="unknown target 'nano'.*jetson-nano, laptop-cpu, ncs2"):
        load_target("nano")


@pytest.mark.parametrize("argv, needle", [
    (["--target", "jetson-nano", "--precision", "int8"], "Maxwell"),
    (["--target", "ncs2", "--precision", "fp32"], "FP16 only"),
    (["--target", "ncs2", "--format", "tflite"], "does not run tflite"),
    (["--target", "jetson-nano", "--format", "openvino"], "does not run openvino"),
    (["--target", "jetson-nano", "--opset", "17"], "above jetson-nano's max opset 13"),
])
def test_target_refusals(tiny_artifact, run_cli, argv, needle):
    args = ["export", tiny_artifact.path] + (["--format", "onnx"] if "--format" not in argv else [])
    code, _, err = run_cli(*(args + argv))
    assert code == 1 and err.startswith("error: ") and needle in err, err


def test_check_onnx_model_names_each_problem(tmp_path):
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    cases = {
        "ok": (_graph([helper.make_node("Relu", ["x"], ["y"])]), []),
        "opset": (_graph([helper.make_node("Relu", ["x"], ["y"])], opset=17),
                  ["opset 17 > jetson-nano's max opset 13"]),
        "det": (_graph([helper.make_node("Det", ["x"], ["y"])]),
                ["op Det is outside TensorRT 8.2's ONNX parser"]),
        "nonzero": (_graph([helper.make_node("NonZero", ["x"], ["y"])]),
                    ["op NonZero is not supported on jetson-nano"]),
        "ml": (_graph([helper.make_node("Normalizer", ["x"], ["y"], domain="ai.onnx.ml")],
                      domains=["ai.onnx.ml"]),
               ["op Normalizer (domain ai.onnx.ml) is not supported on jetson-nano"]),
        "topk_dyn": (_graph([helper.make_node("Shape", ["x"], ["s"]),
                             helper.make_node("TopK", ["x", "s"], ["y", "i"], name="tk")]),
                     ["op TopK needs a constant K for TensorRT 8.2 (node tk)"]),
        "topk_const": (_graph([helper.make_node("TopK", ["x", "k"], ["y", "i"])], inits=[k]), []),
    }
    for name, (model, want) in cases.items():
        p = tmp_path / (name + ".onnx")
        onnx.save(model, str(p))
        assert check_onnx_model(p, "jetson-nano") == want, name
    assert check_onnx_model(tmp_path / "opset.onnx", "laptop-cpu") == []
    assert check_onnx_model(tmp_path / "ml.onnx", "ncs2") == [
        "op Normalizer (domain ai.onnx.ml) is not supported on ncs2"]
    assert {"Conv", "MaxPool", "Gemm", "TopK", "Softmax"} <= TRT82_OPS and "Det" not in TRT82_OPS


def test_check_artifact_for_doctor(tiny_artifact, artifact_copy):
    probs = check_artifact(tiny_artifact.path, "jetson-nano")
    assert len(probs) == 1 and "edgekit export" in probs[0] and "--target jetson-nano" in probs[0]
    art = artifact_copy(tiny_artifact)
    export(art, "onnx", target="jetson-nano", parity_samples=100)
    a = Artifact.open(art)
    e = a.files["model.opset13.onnx"]
    assert e["opset"] == 13 and e["target_precision"] == "fp16" and e["targets"] == ["jetson-nano"]
    assert check_artifact(a, "jetson-nano") == []
    # an int8 file smuggled in for the Nano is reported (with the Maxwell reason)
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["model.opset13.onnx"]["precision"] = "int8"
    (art / "manifest.json").write_text(json.dumps(m))
    probs = check_artifact(art, "jetson-nano")
    assert probs and "int8 is not allowed on jetson-nano" in probs[0] and "Maxwell" in probs[0]


def test_ncs2_export_reads_in_openvino_2022_3(tiny_artifact, artifact_copy):
    """The NCS2 export (FP16, static batch 1, opset 13) is loaded and run by OpenVINO 2022.3.1
    and agrees with the current OpenVINO and with Keras."""
    ov2022_python()                                           # fails loudly when missing
    art = artifact_copy(tiny_artifact)
    export(art, "openvino,onnx", target="ncs2", parity_samples=120)
    a = Artifact.open(art)
    ir = a.files["openvino/model.fp16.b1.xml"]
    assert ir["precision"] == "fp16" and ir["batch"] == 1 and ir["parity"]["passed"]
    assert ir["ov2022"]["readable"] is True and ir["ov2022"]["version"].startswith("2022.3")
    assert ir["ov2022"]["agreement_vs_current_openvino"] >= 0.995
    assert ir["ov2022"]["agreement_vs_reference"] >= 0.995
    onnx_e = a.files["model.opset13.b1.onnx"]
    assert onnx_e["opset"] == 13 and onnx_e["ov2022"]["readable"] is True
    assert a.manifest["exports"]["ncs2:fp16"]["ov2022_fallback"] is None
    assert check_artifact(a, "ncs2") == []


def test_ncs2_knn_graph_falls_back_to_onnx_opset13(tiny_artifact, tmp_path):
    """A real k-NN sliced artifact (one ONNX graph, no Keras model): its IR from the current
    OpenVINO uses TopK-11, which OpenVINO 2022.3 cannot read, so the export records the
    artifact's own opset-13 ONNX (read and run by 2022.3) as the NCS2 fallback."""
    ov2022_python()
    from edgekit.compress.knn.slice import knn_slice
    knn = knn_slice(tiny_artifact.path, "digits", tmp_path / "knn", cut="pool2", k=3,
                    prototypes=5, progress=False, allow_drop=True)  # 5 prototypes: under the guard
    with pytest.raises(EdgekitError, match="TFLite export needs the Keras model"):
        export(knn.path, "tflite")
    export(knn.path, "openvino", target="ncs2", parity_samples=150)
    a = Artifact.open(knn.path)
    ir = a.files["openvino/model.fp16.b1.xml"]
    assert ir["parity"]["passed"] and ir["parity"]["max_abs_diff"] is None   # class ids compared
    src = a.files["model.onnx"]
    assert src["ov2022"]["readable"] is True and src["ov2022"]["agreement_vs_reference"] >= 0.995
    if ir["ov2022"]["readable"]:   # a future 2022.3-compatible IR writer would make this true
        assert ir["ov2022"]["agreement_vs_current_openvino"] >= 0.995
    else:
        assert "TopK" in ir["ov2022"]["error"] and ir["ov2022_fallback"] == "model.onnx"
        assert a.manifest["exports"]["ncs2:fp16"]["ov2022_fallback"] == {
            "files": ["openvino/model.fp16.b1.xml"], "use": "model.onnx"}
    assert check_artifact(a, "ncs2") == []


def test_check_ov2022_reports_unreadable_file(tmp_path):
    from edgekit.export.openvino import check_ov2022
    bad = tmp_path / "bad.xml"
    bad.write_text("<net name='x' version='11'><layers><layer id='0' type='Nope'/></layers></net>")
    res = check_ov2022(bad, np.zeros((2, 8, 8, 1), np.float32), python=ov2022_python())
    assert res["readable"] is False and res["error"]


def test_no_ov2022_check_skips_the_2022_run_and_says_so(tiny_artifact, artifact_copy, run_cli,
                                                        monkeypatch):
    """`--no-ov2022-check`: the OpenVINO 2022.3 interpreter is not run (here it is /bin/false,
    which fails any check it is asked to do), and the manifest notes the skipped check."""
    art = artifact_copy(tiny_artifact)
    monkeypatch.setenv("EDGEKIT_OV2022_PYTHON", "/bin/false")
    code, out, err = run_cli("export", art, "--format", "onnx", "--target", "ncs2",
                             "--no-ov2022-check")
    assert code == 0, err
    a = Artifact.open(art)
    rec = a.manifest["exports"]["ncs2:fp16"]
    assert "OpenVINO 2022.3 check skipped" in rec.get("notes", [])
    assert all("ov2022" not in e for e in a.files.values())
    # with the check on, the same broken interpreter is noticed
    art2 = artifact_copy(tiny_artifact)
    before = sorted(str(p.relative_to(art2)) for p in art2.rglob("*"))
    code, out, err = run_cli("export", art2, "--format", "onnx", "--target", "ncs2")
    assert code == 1 and "error: OpenVINO 2022.3" in err and "cannot read" in err
    assert sorted(str(p.relative_to(art2)) for p in art2.rglob("*")) == before  # nothing written


def test_every_target_toml_key_is_read_by_code():
    """Issue 30 item 9: a key in targets/*.toml that no code reads is a promise nothing keeps
    (``input_layout``, ``python``, ncs2's ``openvino`` were removed). Each top-level key and each
    ``[hardware]`` key must be read (quoted) by edgekit's code or the device-side script;
    ``container_image`` is checked against the Dockerfiles' FROM by tests/test_deploy.py."""
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "edgekit"
    code = "\n".join(p.read_text() for p in root.rglob("*.py") if "_data" not in p.parts)
    code += (root / "_data" / "deploy" / "edgekit_remote.py").read_text()
    unread = []
    for toml in sorted((root / "_data" / "targets").glob("*.toml")):
        data = tomllib.loads(toml.read_text())
        keys = list(data) + list(data.get("hardware", {}))
        for key in keys:
            if key == "container_image":
                continue
            if '"{}"'.format(key) not in code:
                unread.append("{}: {}".format(toml.name, key))
    assert unread == []
