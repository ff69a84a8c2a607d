"""Runners on a small real model (ONNX, TFLite, OpenVINO IR), the statistics, bad input,
the selftest, and the TensorRT runner's control flow (driven by a recorded fake: no GPU here)."""
import time

import numpy as np
import pytest

from edgekit.errors import EdgekitError, HardwareMissing, MissingDependency
from edgekit.runtime import RUNNERS, RUNTIME_FORMATS, open_runner
from edgekit.runtime.base import Runner
from edgekit.runtime.bench import latency_stats, measure


# -- model files made here, not by the exporter --------------------------------------------------
@pytest.fixture(scope="module")
def model_files(tiny_artifact, digits, tmp_path_factory):
    """tiny CNN as ONNX (to_onnx), TFLite (tf.lite converter), OpenVINO IR (convert_model) +
    the Keras reference scores on 64 test images."""
    import openvino as ov
    from edgekit._tf import tf
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    d = tmp_path_factory.mktemp("models")
    model = load_model(tiny_artifact.path)
    to_onnx(model, d / "tiny.onnx", opset=13)
    (d / "tiny.tflite").write_bytes(tf().lite.TFLiteConverter.from_keras_model(model).convert())
    ov.save_model(ov.convert_model(str(d / "tiny.onnx")), str(d / "ir" / "model.xml"),
                  compress_to_fp16=False)
    x = digits.x_test[:64]
    return {"onnxruntime": d / "tiny.onnx", "litert": d / "tiny.tflite",
            "openvino": d / "ir" / "model.xml", "x": x,
            "ref": model.predict(x, verbose=0), "y": digits.y_test[:64]}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "litert"])
def test_cpu_runner_matches_keras_and_benchmarks(model_files, runtime):
    x, ref = model_files["x"], model_files["ref"]
    with open_runner(runtime, model_files[runtime]) as r:
        got = list(r.infer(x).values())[0]
        assert got.shape == ref.shape
        assert np.max(np.abs(got - ref)) < 1e-4
        assert (r.predict(x[:8]) == ref[:8].argmax(1)).all()
        assert r.describe()["runtime"] == runtime
        if runtime == "openvino":   # fp32 IR runs in f32, not the plugin's bf16 where AMX exists
            assert str(r.compiled.get_property("INFERENCE_PRECISION_HINT")).lower() in (
                "f32", "<type: 'float32'>", "float32")
    res = measure(RUNNERS_CLS(runtime)(model_files[runtime]), x, model_files["y"], batch=4,
                  warmup=3, iterations=20)
    assert res["iterations"] == 20 and res["batch"] == 4 and res["warmup"] == 3
    assert res["cold_start_ms"] > 0 and res["latency_ms"]["min"] > 0
    assert res["accuracy"] == pytest.approx(float(np.mean(ref.argmax(1) == model_files["y"])))


def _timed_output(r):
    """The first output of the last timed call, read where each runtime left it."""
    if r.name == "openvino":
        return r._timed.get_output_tensor(0).data
    if r.name == "onnxruntime":
        return r._binding.copy_outputs_to_cpu()[0]
    return r.interp.get_tensor(r._outs[0]["index"])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "litert"])
def test_timed_call_runs_a_private_preset_input(model_files, runtime):
    """What the benchmark times: the model on an input bound once (a private copy); ``infer``
    on another batch works after it, and binding again times the preset input again."""
    x, ref = model_files["x"], model_files["ref"]
    one = x[:1].copy()
    with open_runner(runtime, model_files[runtime]) as r:
        call = r.timed_call(one)
        one[:] = np.nan                          # the caller's array is not what runs
        call()
        call()
        assert np.max(np.abs(_timed_output(r) - ref[:1])) < 1e-4
        got = list(r.infer(x[:5]).values())[0]    # another batch after the preset one
        assert np.max(np.abs(got - ref[:5])) < 1e-4
        call = r.timed_call(x[1:2])
        call()
        assert np.max(np.abs(_timed_output(r) - ref[1:2])) < 1e-4
        call = r.timed_call(x[:1])
        call()
        assert np.max(np.abs(_timed_output(r) - ref[:1])) < 1e-4


def test_openvino_own_latency_recorded_beside_wall_clock(model_files):
    """OpenVINO's ``InferRequest.latency`` of each timed call is taken inside that call, so
    every percentile of it is at most the wall-clock one; other runtimes record none."""
    from edgekit.runtime.openvino import OvRunner
    from edgekit.schemas import RESULT_SCHEMA, check
    x = model_files["x"]
    res = measure(OvRunner(model_files["openvino"]), x, batch=1, warmup=3, iterations=40)
    own, wall = res["runtime_latency_ms"], res["latency_ms"]
    assert "InferRequest.latency" in res["runtime_latency_source"]
    assert 0 < own["min"] and all(own[k] <= wall[k] for k in ("min", "p50", "p90", "max"))
    res.update(target="laptop-cpu")
    check(res, RESULT_SCHEMA, "results")
    lite = measure(RUNNERS_CLS("litert")(model_files["litert"]), x, warmup=1, iterations=5)
    assert lite["runtime_latency_ms"] is None and lite["runtime_latency_source"] is None


def test_onnxruntime_own_latency_from_a_profiling_pass(model_files):
    """onnxruntime reports its own latency only when profiling: a second, profiled session runs
    as many calls as were timed (up to PROFILED_CALLS) after the timed ones; each call's
    ``model_run`` event is recorded and its trace file removed."""
    import glob
    import tempfile
    from edgekit.runtime.bench import PROFILED_CALLS
    from edgekit.schemas import RESULT_SCHEMA, check
    before = set(glob.glob(tempfile.gettempdir() + "/edgekit-ortprof-*"))
    res = measure(RUNNERS_CLS("onnxruntime")(model_files["onnxruntime"]), model_files["x"],
                  warmup=2, iterations=30)
    own, wall = res["runtime_latency_ms"], res["latency_ms"]
    assert "profiling" in res["runtime_latency_source"]
    assert 0 < own["min"] <= own["p50"] <= own["max"]
    assert own["p50"] < 20 * wall["p50"]          # the same model's run, not a unit slip
    assert set(glob.glob(tempfile.gettempdir() + "/edgekit-ortprof-*")) == before
    with open_runner("onnxruntime", model_files["onnxruntime"]) as r:
        got = r.profiled_latencies_ms(model_files["x"][:1], 7)
    assert len(got) == 7 and PROFILED_CALLS >= 30
    res.update(target="laptop-cpu")
    check(res, RESULT_SCHEMA, "results")


def RUNNERS_CLS(name):
    from edgekit.runtime import runner_class
    return runner_class(name)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "litert"])
def test_wrong_shape_and_dtype_are_refused(model_files, runtime):
    x = model_files["x"]
    with open_runner(runtime, model_files[runtime]) as r:
        with pytest.raises(EdgekitError, match="input has shape"):
            r.infer(x[:, :4])
        with pytest.raises(EdgekitError, match="input has shape"):
            r.infer(x[0])
        with pytest.raises(EdgekitError, match="dtype"):
            r.infer(np.zeros(x[:2].shape, dtype=np.complex64))
        r.infer(x[:2].astype(np.float64))  # lossless-enough cast is accepted


def test_registry_lists_every_runtime():
    assert set(RUNNERS) == {"onnxruntime", "openvino", "litert", "tensorrt"}
    assert RUNTIME_FORMATS == {"onnxruntime": "onnx", "openvino": "openvino", "litert": "tflite",
                               "tensorrt": "onnx"}


# -- statistics -------------------------------------------------------------------------------
def test_latency_stats_on_a_known_sample():
    s = latency_stats([7, 1, 10, 3, 5, 2, 9, 4, 8, 6])  # 1..10 shuffled
    assert s["min"] == 1 and s["max"] == 10 and s["mean"] == 5.5
    assert s["p50"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)      # linear interpolation: 1 + 0.9 * 9
    assert s["p95"] == pytest.approx(9.55)
    assert s["p99"] == pytest.approx(9.91)
    assert s["p25"] == pytest.approx(3.25) and s["p75"] == pytest.approx(7.75)
    assert s["std"] == pytest.approx(np.sqrt(8.25))  # population std of 1..10
    with pytest.raises(EdgekitError):
        latency_stats([])


class SleepRunner(Runner):
    """A real runner whose inference takes a known time (sleep), to check the protocol."""
    name = "sleep"

    def _load(self):
        time.sleep(0.05)
        self.input_shape = [None, 3]
        self.output_names = ["scores"]

    def _infer(self, x):
        time.sleep(self.options["ms"] / 1e3)
        return [np.tile(np.eye(3, dtype=np.float32)[0], (len(x), 1))]


def test_protocol_counts_times_and_accuracy():
    x = np.zeros((10, 3), np.float32)
    y = np.array([0] * 7 + [1] * 3)
    res = measure(SleepRunner("-", ms=3), x, y, batch=2, warmup=4, iterations=15)
    assert res["iterations"] == 15 and res["warmup"] == 4
    assert res["cold_start_ms"] >= 50 + 3
    assert 3 <= res["latency_ms"]["p50"] < 30
    assert res["throughput_ips"] == pytest.approx(2 * 1e3 / res["latency_ms"]["mean"], rel=0.3)
    assert res["accuracy"] == pytest.approx(0.7)
    # duration: timing continues past the iteration minimum until the seconds are spent
    t0 = time.perf_counter()
    res = measure(SleepRunner("-", ms=2), x, None, iterations=1, duration=0.3, warmup=0,
                  warmup_seconds=0.1)
    assert time.perf_counter() - t0 >= 0.4
    assert res["iterations"] >= 30 and res["warmup"] >= 10 and res["accuracy"] is None


def test_iterations_zero_and_batch_zero_refused():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(EdgekitError, match="--iterations"):
        measure(SleepRunner("-", ms=0), x, iterations=0)
    with pytest.raises(EdgekitError, match="--batch"):
        measure(SleepRunner("-", ms=0), x, batch=0)


# -- selftest on this host ----------------------------------------------------------------------
def test_selftest_host_runs_tiny_model_everywhere(capsys):
    from edgekit.runtime.__main__ import TINY_ONNX, main, tiny_onnx_bytes
    assert open(TINY_ONNX, "rb").read() == tiny_onnx_bytes()  # shipped copy is current
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    for name in ("onnxruntime", "openvino", "litert"):
        assert "ok       " + name in out
    assert "missing  tensorrt" in out
    assert main(["selftest", "--runtime", "tensorrt"]) == 2


def test_device_bench_entry_point_writes_results(tmp_path, capsys):
    import json
    from edgekit.runtime.__main__ import TINY_ONNX, TINY_X, main, tiny_expected
    np.savez(tmp_path / "d.npz", x=np.repeat(TINY_X, 5, axis=0),
             y=np.repeat(tiny_expected().argmax(1), 5))
    rc = main(["bench", TINY_ONNX, "--runtime", "onnxruntime", "--iterations", "30", "--batch",
               "2", "--npz", str(tmp_path / "d.npz"), "--threads", "1", "--json",
               str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["iterations"] == 30 and r["batch"] == 2 and r["accuracy"] == 1.0
    assert r["threads"] == 1 and r["runtime"] == "onnxruntime"
    assert main(["bench", TINY_ONNX, "--runtime", "onnxruntime", "--iterations", "0"]) == 1
    assert "error: --iterations" in capsys.readouterr().err


# -- NCS2 / TensorRT missing -----------------------------------------------------------------
def test_openvino_myriad_absent_is_hardware_missing(model_files):
    with pytest.raises(HardwareMissing) as e:
        open_runner("openvino", model_files["openvino"], device="MYRIAD")
    assert e.value.exit_code == 2
    assert "2022.3" in str(e.value) and "03e7" in str(e.value)


def test_tensorrt_absent_is_missing_dependency(tmp_path):
    from edgekit.runtime.__main__ import TINY_ONNX
    import importlib.util
    assert importlib.util.find_spec("tensorrt") is None  # no TensorRT on this x86 VM
    with pytest.raises(MissingDependency) as e:
        open_runner("tensorrt", TINY_ONNX)
    assert e.value.exit_code == 2 and "TensorRT" in str(e.value) and "JetPack" in str(e.value)

# TensorRT's control flow, buffers and version rules: tests/test_tensorrt_runner.py
