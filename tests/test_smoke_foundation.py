"""The skeleton's first real checks: train -> artifact -> eval on digits."""
import json

import numpy as np


def test_tiny_trains_and_records_test_accuracy(tiny_artifact, digits):
    m = tiny_artifact.manifest
    assert m["kind"] == "model" and m["method"]["name"] == "train"
    assert m["metrics"]["accuracy"] > 0.85
    entry = m["files"]["model.h5"]
    assert entry["bytes"] == (tiny_artifact.path / "model.h5").stat().st_size


def test_seed_arch_param_counts():
    from edgekit.models import build
    m = build("seed-mnist-cnn", (28, 28, 1), 10)
    assert m.count_params() == 1199882
    assert sum(l.count_params() for l in m.layers[:2]) == 18816


def test_to_onnx_matches_keras(tiny_artifact, digits, tmp_path):
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    from edgekit.runtime import open_runner
    model = load_model(tiny_artifact.path)
    info = to_onnx(model, tmp_path / "m.onnx", opset=13)
    with open_runner("onnxruntime", tmp_path / "m.onnx") as r:
        out = r.infer(digits.x_test[:64])
    ref = model.predict(digits.x_test[:64], verbose=0)
    got = list(out.values())[0]
    assert np.max(np.abs(got - ref)) < 1e-4
    assert info["input_name"] == "input"
