"""Device-side entry point: ``python3 -m edgekit.runtime selftest|bench``.

``selftest`` checks each inference runtime installed here (its version, its device) by
running a tiny model end to end and comparing the output with numpy. ``bench`` runs the one
benchmark protocol (:func:`edgekit.runtime.bench.measure`) on a model file and writes the
results JSON — the deploy step runs exactly this on the Jetson Nano / NCS2 host.
Python 3.6 syntax, numpy + the runtimes; never tensorflow.

Examples::

    python3 -m edgekit.runtime selftest
    python3 -m edgekit.runtime bench model.onnx --runtime onnxruntime --iterations 200 \\
        --npz test.npz --json results.json

``--npz`` holds ``x`` (already preprocessed: the model's input layout and dtype) and ``y``
(labels); ``x_test`` / ``y_test`` are accepted too. Without it the input is random (no
accuracy). Exit codes: 0 ok, 1 error, 2 runtime or hardware missing.
"""
import argparse
import json
import os
import platform
import sys
import tempfile

import numpy as np

from edgekit.runtime import RUNNERS, RUNTIME_FORMATS, runner_class, runner_options
from edgekit.runtime.errors import EdgekitError, MissingDependency

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_ONNX = os.path.join(HERE, "tiny.onnx")
TINY_TFLITE = os.path.join(HERE, "tiny.tflite")

# The tiny model: scores = x @ W + b, x float32 (N, 4) -> (N, 3). Same weights in both files.
TINY_W = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5.5) / 4.0
TINY_B = np.array([0.5, -0.25, 0.125], dtype=np.float32)
TINY_X = np.array([[0.0, 1.0, 2.0, 3.0], [1.5, -2.0, 0.25, 4.0]], dtype=np.float32)


def tiny_expected(x=TINY_X):
    return np.dot(x, TINY_W) + TINY_B


def tiny_onnx_bytes():
    """The tiny ONNX model built with onnx.helper (opset 11, IR 6: every runtime since 2020)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["scores"])],
        "edgekit_tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(TINY_W, "W"), numpy_helper.from_array(TINY_B, "b")])
    model = helper.make_model(graph, producer_name="edgekit",
                              opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_onnx_path(tmpdir):
    """Path of the tiny ONNX model: built with onnx.helper if onnx is installed, else the
    copy shipped in this package (the device has no onnx package)."""
    try:
        data = tiny_onnx_bytes()
    except ImportError:
        return TINY_ONNX
    path = os.path.join(tmpdir, "tiny.onnx")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def selftest(runtimes=None, device=None, out=None):
    """Run the tiny model on each runtime; returns (exit code, list of result dicts).

    ``out`` defaults to the sys.stdout of the moment of the call (not of import time).
    """
    out = out if out is not None else sys.stdout
    names = runtimes or sorted(RUNNERS)
    rows = []
    tmpdir = tempfile.mkdtemp(prefix="edgekit-selftest-")
    out.write("edgekit.runtime selftest: Python {} ({}), numpy {}\n".format(
        platform.python_version(), platform.machine(), np.__version__))
    for name in names:
        row = {"runtime": name, "status": "ok"}
        try:
            fmt = RUNTIME_FORMATS[name] if name in RUNTIME_FORMATS else None
            if fmt is None:
                raise EdgekitError("unknown runtime {!r}".format(name))
            path = TINY_TFLITE if fmt == "tflite" else tiny_onnx_path(tmpdir)
            opts = {}
            if device and name == "openvino":  # MYRIAD: reshaped to the tiny batch (static)
                opts = {"device": device, "batch": len(TINY_X)}
            runner = runner_class(name)(path, **opts)
            with runner:
                got = list(runner.infer(TINY_X).values())[0]
                info = runner.describe()
            tol = 2e-2 if info.get("precision") == "fp16" else 1e-4
            err = float(np.max(np.abs(got - tiny_expected())))
            row.update(info)
            row["max_abs_diff"] = err
            row["infer_ms"] = runner.last_infer_ms
            if got.shape != (2, 3) or err > tol:
                row["status"] = "wrong"
                row["message"] = "output differs from numpy by {:.3g} (tolerance {})".format(err, tol)
        except MissingDependency as exc:
            row.update({"status": "missing", "message": str(exc)})
        except EdgekitError as exc:
            row.update({"status": "error", "message": str(exc)})
        rows.append(row)
        if row["status"] == "ok":
            out.write("  ok       {:<12} {:<28} {:<10} tiny model max|diff| {:.1e}, {:.3f} ms\n"
                      .format(name, str(row.get("runtime_version")), str(row.get("device")),
                              row["max_abs_diff"], row["infer_ms"] or 0.0))
        else:
            out.write("  {:<8} {:<12} {}\n".format(row["status"], name, row.get("message", "")))
    statuses = [r["status"] for r in rows]
    if any(s in ("wrong", "error") for s in statuses):
        code = 1
    elif "ok" not in statuses or (runtimes and "missing" in statuses):
        code = 2
    else:
        code = 0
    out.write("selftest: {}\n".format({0: "ok", 1: "FAILED", 2: "runtime missing"}[code]))
    return code, rows


def load_npz(path):
    """(x, y) from an npz with x/y or x_test/y_test (y optional)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (IOError, OSError, ValueError) as exc:
        raise EdgekitError("cannot read test data {}: {}".format(path, exc))
    x = data["x"] if "x" in data.files else data["x_test"] if "x_test" in data.files else None
    if x is None:
        raise EdgekitError("{} has no array 'x' (or 'x_test'): found {}".format(
            path, ", ".join(data.files)))
    y = data["y"] if "y" in data.files else data["y_test"] if "y_test" in data.files else None
    if y is not None and len(y) != len(x):
        raise EdgekitError("{}: {} labels for {} inputs".format(path, len(y), len(x)))
    return x, y


def random_input(batch, seed=0):
    """A callable for measure(): random data shaped like the loaded model's input."""
    def make(runner):
        shape = [batch if (d is None or not isinstance(d, int) or d < 1) else d
                 for d in (runner.input_shape or [batch])]
        rng = np.random.RandomState(seed)
        dtype = np.dtype(runner.input_dtype)
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        info = np.iinfo(dtype)
        return rng.randint(info.min, info.max + 1, size=shape).astype(dtype)
    return make


def run_bench(model, runtime, batch=1, warmup=10, warmup_seconds=0.0, iterations=100,
              duration=0.0, threads=None, npz=None, eval_samples=None, json_path=None,
              device=None, target=None, max_batch=None):
    """Benchmark one model file with one runtime; returns the results dict (docs/contract.md)."""
    from edgekit.runtime.bench import measure
    if not os.path.exists(model):
        raise EdgekitError("model file {} does not exist".format(model))
    if runtime == "openvino" and not device and target:
        raise EdgekitError(
            "--target {} with --runtime openvino needs --device (the target's device, e.g. "
            "CPU): the device runtime does not guess it; `edgekit deploy` passes the "
            "target's device from targets/{}.toml".format(target, target))
    opts = runner_options(runtime, threads=threads, device=device, batch=batch,
                          max_batch=max_batch)
    if iterations < 1 and duration <= 0:
        raise EdgekitError("--iterations must be >= 1 (or give a --duration)")
    runner = runner_class(runtime)(model, **opts)
    if npz:
        x, y = load_npz(npz)
    else:
        x, y = random_input(batch), None
    try:
        res = measure(runner, x, y, batch=batch, warmup=warmup, warmup_seconds=warmup_seconds,
                      iterations=iterations, duration=duration, eval_samples=eval_samples)
    finally:
        runner.close()
    res.update({"target": target, "file": os.path.basename(model.rstrip("/")),
                "bytes": model_bytes(model),
                "threads": threads, "python": platform.python_version(),
                "data": os.path.basename(npz) if npz else "random"})
    if getattr(runner, "precision", None):
        res["precision"] = runner.precision
    info = runner.describe()
    for key in ("device_name", "reshaped"):  # e.g. "Intel Movidius Myriad X VPU"
        if info.get(key):
            res[key] = info[key]
    if json_path:
        write_json(json_path, res)
    return res


def model_bytes(model):
    """Bytes on disk needed to run ``model`` (an IR .xml counts its .bin; a folder, all files)."""
    if os.path.isdir(model):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(model) for f in fs)
    size = os.path.getsize(model)
    weights = os.path.splitext(model)[0] + ".bin"
    if model.endswith(".xml") and os.path.exists(weights):
        size += os.path.getsize(weights)
    return size


def write_json(path, obj):
    """Atomic JSON write (temp file + rename)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        os.makedirs(d)
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=d)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _parser():
    p = argparse.ArgumentParser(prog="python3 -m edgekit.runtime",
                                description="edgekit device side: selftest and benchmark.")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("selftest", help="check each runtime with a tiny model end to end")
    s.add_argument("--runtime", action="append", choices=sorted(RUNNERS),
                   help="only this runtime (repeatable); its absence then exits 2")
    s.add_argument("--device", help="OpenVINO device (CPU, MYRIAD, MYRIAD.<id>)")
    s.add_argument("--json", help="write the selftest rows here")
    b = sub.add_parser("bench", help="benchmark a model file, write results JSON")
    b.add_argument("model", help="model file (.onnx, .tflite, OpenVINO .xml or its folder)")
    b.add_argument("--runtime", required=True, choices=sorted(RUNNERS))
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--warmup", type=int, default=10, help="warm-up iterations")
    b.add_argument("--warmup-seconds", type=float, default=0.0)
    b.add_argument("--iterations", type=int, default=100, help="timed iterations (minimum)")
    b.add_argument("--duration", type=float, default=0.0, help="timed seconds (minimum)")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads (recorded)")
    b.add_argument("--npz", help="test data: x (preprocessed) and y")
    b.add_argument("--eval-samples", type=int, default=None, help="accuracy on the first N")
    b.add_argument("--device", help="OpenVINO device (CPU, MYRIAD, MYRIAD.<id>; required with "
                   "--target: never guessed)")
    b.add_argument("--target", help="target name recorded in the results")
    b.add_argument("--max-batch", type=int, default=None, help="TensorRT profile max batch")
    b.add_argument("--json", help="write results JSON here")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "selftest":
            code, rows = selftest(args.runtime, device=args.device)
            if args.json:
                write_json(args.json, rows)
            return code
        if args.command == "bench":
            res = run_bench(args.model, args.runtime, batch=args.batch, warmup=args.warmup,
                            warmup_seconds=args.warmup_seconds, iterations=args.iterations,
                            duration=args.duration, threads=args.threads, npz=args.npz,
                            eval_samples=args.eval_samples, json_path=args.json,
                            device=args.device, target=args.target, max_batch=args.max_batch)
            lat = res["latency_ms"]
            print("{} {} on {}: p50 {:.3f} ms, p99 {:.3f} ms, {:.1f} inferences/s, cold start "
                  "{:.1f} ms, accuracy {}".format(
                      res["runtime"], res["runtime_version"], res["device"], lat["p50"],
                      lat["p99"], res["throughput_ips"] or 0.0, res["cold_start_ms"] or 0.0,
                      "-" if res["accuracy"] is None else "{:.4f}".format(res["accuracy"])))
            if res.get("engine_cached") is False:
                print("TensorRT engine built in {:.1f} s (not part of the cold start; the next "
                      "run loads it from the cache)".format((res["engine_build_ms"] or 0) / 1e3))
            if args.json:
                print("results: {}".format(args.json))
            return 0
        _parser().print_help()
        return 1
    except EdgekitError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
