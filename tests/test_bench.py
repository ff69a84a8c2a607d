"""`edgekit bench` through the CLI on a really exported artifact: every laptop-cpu runtime,
the fastest marked; NCS2 / Jetson Nano missing -> exit 2 with what to install/attach; bad input."""
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(tiny_artifact, tmp_path_factory):
    """tiny artifact copy exported to ONNX + TFLite + OpenVINO IR (edgekit export)."""
    import shutil
    from edgekit.export import export
    dst = tmp_path_factory.mktemp("bench") / "tiny"
    shutil.copytree(str(tiny_artifact.path), str(dst))
    export(dst, ["onnx", "tflite", "openvino"])
    return dst


def test_bench_all_runtimes_marks_fastest(exported, run_cli, tmp_path, digits):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli("bench", exported, "--target", "laptop-cpu", "--runtime", "all",
                                "--iterations", "30", "--warmup", "5", "--threads", "1",
                                "--json", out)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert sorted(r["runtime"] for r in res) == ["litert", "onnxruntime", "openvino"]
    fastest = [r for r in res if r["fastest"]]
    assert len(fastest) == 1
    assert fastest[0]["latency_ms"]["p50"] == min(r["latency_ms"]["p50"] for r in res)
    for r in res:
        assert r["target"] == "laptop-cpu" and r["host"] and r["threads"] == 1
        assert r["iterations"] == 30 and r["accuracy"] > 0.8 and r["bytes"] > 0
        assert r["data"] == "digits" and r["test_samples"] == len(digits.y_test)
        assert r["file"] and (exported / r["file"]).exists()


def test_bench_ncs2_without_stick_exits_2(exported, run_cli):
    code, _, err = run_cli("bench", exported, "--target", "ncs2", "--iterations", "5")
    assert code == 2
    # the one machine check (targets/ncs2.toml): the stick's USB id and the OpenVINO it needs
    assert err.startswith("error: ncs2 cannot run here: ") and len(err.strip().splitlines()) == 1
    assert "03e7" in err and "2022.3" in err and "Traceback" not in err


def test_bench_ncs2_path_with_cpu_override_says_so(exported, tmp_path):
    from edgekit.bench import bench
    from edgekit.report import label
    r = bench(exported, "ncs2", device="CPU", iterations=5, warmup=1, eval_samples=50)[0]
    assert r["device"] == "CPU" and r["runtime"] == "openvino" and r["target"] == "ncs2"
    assert label(r).endswith("on CPU")


def test_bench_jetson_nano_without_tensorrt_exits_2(exported, run_cli):
    code, _, err = run_cli("bench", exported, "--target", "jetson-nano")
    assert code == 2
    assert err.startswith("error: jetson-nano cannot run here: ") and "JetPack" in err
    assert "/proc/device-tree/model" in err and "tensorrt" in err and "edgekit deploy" in err
    code, _, err = run_cli("bench", exported, "--target", "jetson-nano", "--runtime", "onnxruntime")
    assert code == 2 and "not a Jetson" in err and "edgekit deploy" in err
    assert "tensorrt" not in err.lower()  # onnxruntime was asked for: TensorRT is not needed


def test_bench_iterations_zero_is_user_error(exported, run_cli):
    code, _, err = run_cli("bench", exported, "--iterations", "0")
    assert code == 1 and err.startswith("error: --iterations must be >= 1")


def test_bench_artifact_without_runnable_format_names_the_export(tiny_artifact, run_cli):
    code, _, err = run_cli("bench", tiny_artifact.path, "--target", "laptop-cpu")
    assert code == 1
    assert "run `edgekit export {} --format onnx --target laptop-cpu`".format(tiny_artifact.path) in err
    code, _, err = run_cli("bench", tiny_artifact.path, "--target", "laptop-cpu", "--runtime", "litert")
    assert code == 1 and "--format tflite" in err


def test_bench_wrong_input_shape_is_user_error(exported, run_cli, tmp_path):
    rng = np.random.RandomState(0)
    # another size would be resized to fit (edgekit.adapt); two channels cannot be
    np.savez(tmp_path / "wrong.npz", x=rng.rand(40, 5, 5, 2).astype(np.float32),
             y=rng.randint(0, 10, 40))
    code, _, err = run_cli("bench", exported, "--runtime", "onnxruntime", "--iterations", "3",
                           "--data", "npz:{}".format(tmp_path / "wrong.npz"))
    # refused from the manifest before any runner loads
    assert code == 1 and err.startswith("error: ") \
        and "has 2-channel images but the model expects 1 channels" in err


def test_bench_runtime_the_target_lacks(exported, run_cli):
    code, _, err = run_cli("bench", exported, "--target", "ncs2", "--runtime", "litert")
    assert code == 1 and "target ncs2 has no runtime 'litert'" in err
