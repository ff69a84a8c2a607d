"""Fidelity of edgekit's benchmark protocol against the vendor's own tool, on one IR.

1. OpenVINO CPU, sync, 1 stream, batch 1: the median latency edgekit measures
   (``edgekit.runtime.bench.measure`` with ``OvRunner``) vs ``benchmark_app -hint latency
   -api sync`` (OpenVINO's own tool, shipped with the openvino pip package) on the same IR, in
   the same session, rounds interleaved (A B A B ...) because the machine is shared.
   Acceptance: ratio within +-15%.
2. Harness overhead: edgekit's measure() loop vs a bare ``session.run`` loop (onnxruntime) and a
   bare ``request.infer`` loop (OpenVINO), same input, interleaved. Acceptance: <= 5%.

The model is seed-mnist-cnn (trained MNIST artifact; default /work/cache/seed-mnist, trained
with ``edgekit train`` when absent), exported to ONNX + OpenVINO IR with ``edgekit export``.

Usage::

    .venv/bin/python benchmarks/fidelity_openvino.py [--artifact DIR] [--seconds 10] [--rounds 3]
        [--json out.json]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_ART = Path("/work/cache/seed-mnist")
MNIST = REPO.parent / "shared" / "datasets" / "mnist"


def prepare(artifact, work):
    """A copy of the artifact with ONNX + OpenVINO IR files; returns (onnx path, xml path, ds)."""
    from edgekit.artifact import Artifact
    from edgekit.data import load_data
    art_dir = work / "seed"
    if artifact and Path(artifact).exists():
        shutil.copytree(artifact, art_dir)
    else:
        print("no trained artifact at {}: training seed-mnist-cnn (edgekit train)".format(artifact))
        subprocess.run([str(REPO / ".venv" / "bin" / "edgekit"), "train", "--arch", "seed-mnist-cnn",
                        "--data", "mnist:{}".format(MNIST), "-o", str(art_dir), "--epochs", "3"],
                       check=True)
    art = Artifact.open(art_dir)
    if not art.find("openvino"):
        try:
            from edgekit.export import export
            export(art_dir, ["onnx", "openvino"], target="laptop-cpu", precision="fp32")
        except Exception as exc:  # the exporter is someone else's; fall back to our own IR
            print("edgekit export failed ({}): writing ONNX + IR here".format(
                str(exc).splitlines()[0][:200]))
    art = Artifact.open(art_dir)
    if art.find("onnx"):
        onnx_path = art.file(art.find("onnx")[0])
    else:
        from edgekit.export.onnx import to_onnx
        from edgekit.models import load_model
        onnx_path = work / "model.onnx"
        to_onnx(load_model(art_dir), onnx_path, opset=13)
    if art.find("openvino"):
        name = [n for n in art.find("openvino") if art.files[n].get("inference", True)][0]
        xml = art.file(name)
        if xml.is_dir():  # an IR folder entry
            xml = xml / art.files[name].get("entry", "model.xml")
    else:  # write the IR ourselves from the same ONNX (openvino.convert_model)
        import openvino as ov
        xml = work / "ir" / "model.xml"
        xml.parent.mkdir()
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    ds = load_data(art.manifest["source"].get("data") or "mnist:{}".format(MNIST))
    return onnx_path, xml, ds


def benchmark_app(xml, seconds, shape):
    """Run OpenVINO's benchmark_app; returns its median / average latency in ms."""
    exe = Path(sys.executable).parent / "benchmark_app"
    if not exe.exists():
        exe = shutil.which("benchmark_app")
        if not exe:
            raise SystemExit("benchmark_app not found (it ships with the openvino pip package): "
                             "pip install openvino")
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync",
           "-t", str(int(round(seconds))), "-shape", "[{}]".format(",".join(str(d) for d in shape))]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    if out.returncode != 0:
        raise SystemExit("benchmark_app failed:\n" + out.stdout[-2000:])
    med = re.search(r"Median:\s*([\d.]+)\s*ms", out.stdout)
    avg = re.search(r"Average:\s*([\d.]+)\s*ms", out.stdout)
    cnt = re.search(r"Count:\s*(\d+)", out.stdout)
    streams = re.search(r"NUM_STREAMS:\s*(\d+)", out.stdout)
    return {"median_ms": float(med.group(1)), "mean_ms": float(avg.group(1)) if avg else None,
            "count": int(cnt.group(1)) if cnt else None,
            "streams": int(streams.group(1)) if streams else None, "command": " ".join(cmd)}


def edgekit_openvino(xml, x, seconds):
    from edgekit.runtime.bench import measure
    from edgekit.runtime.openvino import OvRunner
    runner = OvRunner(str(xml), device="CPU")
    try:
        res = measure(runner, x, None, batch=1, warmup=20, iterations=1, duration=seconds)
        streams = runner.compiled.get_property("NUM_STREAMS")
    finally:
        runner.close()
    return {"median_ms": res["latency_ms"]["p50"], "mean_ms": res["latency_ms"]["mean"],
            "count": res["iterations"], "streams": int(streams)}


def bare_vs_harness(kind, path, x, n):
    """(bare loop, edgekit measure) -> wall ms per iteration and median ms, same n."""
    sample = np.ascontiguousarray(x[:1])
    if kind == "onnxruntime":
        import onnxruntime as ort
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def call():
            sess.run(None, {name: sample})
        from edgekit.runtime.ort import OrtRunner as R
        runner = R(str(path))
    else:
        import openvino as ov
        core = ov.Core()
        req = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()

        def call():
            req.infer({0: sample})
        from edgekit.runtime.openvino import OvRunner as R
        runner = R(str(path), device="CPU")
    for _ in range(20):
        call()
    times = []
    t_all = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    bare_wall = (time.perf_counter() - t_all) * 1e3 / n
    from edgekit.runtime.bench import measure
    try:
        t_all = time.perf_counter()
        res = measure(runner, np.repeat(sample, 1, axis=0), None, batch=1, warmup=20,
                      iterations=n)
        harness_total = (time.perf_counter() - t_all)
    finally:
        runner.close()
    return {"bare_median_ms": float(np.median(times)), "bare_wall_ms": bare_wall,
            "edgekit_median_ms": res["latency_ms"]["p50"],
            "edgekit_wall_ms": 1e3 / res["throughput_ips"], "n": n,
            "harness_total_s": harness_total}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default=str(DEFAULT_ART))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--overhead-iterations", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import openvino as ov
    work = Path(tempfile.mkdtemp(prefix="edgekit-fidelity-"))
    try:
        onnx_path, xml, ds = prepare(args.artifact, work)
        x = ds.x_test[:256].astype(np.float32)
        shape = [1] + list(x.shape[1:])
        print("IR {} | OpenVINO {} | input {}".format(xml, ov.__version__, shape))
        rounds = []
        for i in range(args.rounds):
            a = benchmark_app(xml, args.seconds, shape)
            b = edgekit_openvino(xml, x, args.seconds)
            rounds.append({"benchmark_app": a, "edgekit": b,
                           "ratio": b["median_ms"] / a["median_ms"]})
            print("round {}: benchmark_app median {:.3f} ms ({} iters, {} stream) | edgekit median "
                  "{:.3f} ms ({} iters, {} stream) | ratio {:.3f}".format(
                      i + 1, a["median_ms"], a["count"], a["streams"], b["median_ms"], b["count"],
                      b["streams"], rounds[-1]["ratio"]))
        app_med = float(np.median([r["benchmark_app"]["median_ms"] for r in rounds]))
        ek_med = float(np.median([r["edgekit"]["median_ms"] for r in rounds]))
        ratio = ek_med / app_med
        print("FIDELITY: edgekit / benchmark_app median latency = {:.3f} / {:.3f} ms = {:.3f} "
              "({:+.1f}%) -> {}".format(ek_med, app_med, ratio, 100 * (ratio - 1),
                                        "PASS" if abs(ratio - 1) <= 0.15 else "FAIL (>15%)"))
        overhead = {}
        for kind, path in (("onnxruntime", onnx_path), ("openvino", xml)):
            reps = []
            for _ in range(args.rounds):
                reps.append(bare_vs_harness(kind, path, x, args.overhead_iterations))
            bare = float(np.median([r["bare_median_ms"] for r in reps]))
            ek = float(np.median([r["edgekit_median_ms"] for r in reps]))
            bare_w = float(np.median([r["bare_wall_ms"] for r in reps]))
            ek_w = float(np.median([r["edgekit_wall_ms"] for r in reps]))
            overhead[kind] = {"rounds": reps, "median_overhead": ek / bare - 1,
                              "wall_overhead": ek_w / bare_w - 1}
            print("OVERHEAD {}: median {:.4f} ms bare vs {:.4f} ms edgekit ({:+.1f}%), wall per "
                  "iteration {:.4f} vs {:.4f} ms ({:+.1f}%) -> {}".format(
                      kind, bare, ek, 100 * (ek / bare - 1), bare_w, ek_w, 100 * (ek_w / bare_w - 1),
                      "PASS" if ek / bare - 1 <= 0.05 else "FAIL (>5%)"))
        out = {"ir": str(xml), "openvino": ov.__version__, "rounds": rounds,
               "benchmark_app_median_ms": app_med, "edgekit_median_ms": ek_med, "ratio": ratio,
               "overhead": overhead}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        ok = abs(ratio - 1) <= 0.15 and all(o["median_overhead"] <= 0.05 for o in overhead.values())
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
