"""Fidelity of ``edgekit bench --runtime openvino`` against OpenVINO's own ``benchmark_app``.

Both tools run as child processes of this script (one process tree), alternately (A B, B A,
...) for ``--rounds`` rounds of ``--seconds`` each, on the same IR, so a shared machine's load
hits both alike; the figure is the median of the per-round ratios.

* ``benchmark_app -d CPU -hint latency -api sync -infer_precision f32 -t S`` (shipped with the
  openvino pip package) reports the median of ``InferRequest.latency``: OpenVINO's own time
  inside its C++ call. ``-infer_precision f32`` because edgekit pins the CPU plugin to f32 for
  an fp32 IR (``edgekit.runtime.openvino``); without it benchmark_app runs the same IR in bf16
  on a CPU with AVX512-BF16/AMX (7-10x faster for the seed CNN here) and the two tools would
  time different arithmetic.
* ``edgekit bench ART --runtime openvino --duration S`` reports wall-clock percentiles
  (``time.perf_counter`` around ``InferRequest.infer()`` on an input tensor preset once,
  ``Runner.timed_call``) and, beside them, ``runtime_latency_ms``: ``InferRequest.latency`` of
  the same calls -- the quantity benchmark_app reports.

Models (latency does not depend on the weights, so both are untrained unless ``--artifact``
gives a trained seed CNN): ``seed`` = seed-mnist-cnn on 28x28x1 (~0.3 ms), ``mnv2`` =
keras.applications MobileNetV2 (alpha 1.0, 160x160x3, 10 classes; >= 3 ms here). Each is
converted to ONNX and exported to OpenVINO IR with ``edgekit export`` (fp32).

Goals: edgekit's wall-clock p50 within 1.2x of benchmark_app's median on ``seed`` and within
1.05x on ``mnv2``. Exit 0 when both hold. Beside it, per round, edgekit's wall-clock p50 over
OpenVINO's own p50 of the same calls: what the Python call adds, free of the drift between
rounds (on a shared machine the rounds' load differs, and so do both tools' medians).

Usage::

    .venv/bin/python benchmarks/fidelity_openvino.py [--seconds 3] [--rounds 6]
        [--models seed,mnv2] [--artifact TRAINED_SEED_DIR] [--threads N] [--json out.json]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "datasets" / "mnist"
GOALS = {"seed": 1.2, "mnv2": 1.05}
ENV = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")

BUILD = r"""
import os, sys
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
from edgekit.export.onnx import to_onnx
which, out = sys.argv[1], sys.argv[2]
if which == "seed":
    from edgekit.models import build
    model = build("seed-mnist-cnn", (28, 28, 1), 10)
else:
    from edgekit._tf import keras
    model = keras().applications.MobileNetV2(input_shape=(160, 160, 3), alpha=1.0,
                                             weights=None, classes=10)
to_onnx(model, out, opset=13)
"""


def edgekit_cli(*args):
    """``edgekit ARGS`` from this checkout (not whatever an editable install points at)."""
    return [sys.executable, "-c", "from edgekit.cli import main; main()"] + [str(a) for a in args]


def prepare(name, work, artifact=None):
    """An artifact dir holding the model's OpenVINO IR (``edgekit export``); returns
    (artifact dir, IR .xml, input shape with batch 1)."""
    art = work / name
    if name == "seed" and artifact:
        shutil.copytree(str(artifact), str(art))
        subprocess.run(edgekit_cli("export", art, "--format", "openvino"), env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
    else:
        onnx = work / (name + ".onnx")
        subprocess.run([sys.executable, "-c", BUILD, name, str(onnx)], env=ENV, check=True)
        # the data only feeds export's parity check; digits (8x8x1) must be told to --resize to
        # MobileNetV2's 160x160x3 (export refuses a fit that invents most of each image)
        data = ["--data", "mnist:{}".format(MNIST)] if name == "seed" else ["--data", "digits",
                                                                             "--resize"]
        subprocess.run(edgekit_cli("export", onnx, "--format", "openvino", "-o", art, *data),
                       env=ENV, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((art / "manifest.json").read_text())
    xml = [n for n, e in manifest["files"].items()
           if e["format"] == "openvino" and e.get("inference", True)][0]
    shape = [1] + [int(d) for d in manifest["input"]["shape"][1:]]
    return art, art / xml, shape


def benchmark_app(xml, seconds, shape, threads=None):
    """OpenVINO's benchmark_app (sync, latency hint); its median/mean latency in ms."""
    exe = Path(sys.executable).parent / "benchmark_app"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "openvino.tools.benchmark.main"]
    hint = ["-hint", "latency"] if not threads else ["-hint", "none", "-nstreams", "1",
                                                     "-nthreads", str(threads)]
    cmd += ["-m", str(xml), "-d", "CPU"] + hint + ["-api", "sync", "-infer_precision", "f32",
                                                   "-t", str(int(seconds)),
                                                   "-shape", "[{}]".format(",".join(map(str, shape)))]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    if out.returncode != 0:
        raise SystemExit("benchmark_app failed:\n" + out.stdout[-2000:])
    return dict(_app_figures(out.stdout), command=" ".join(cmd[-16:]))


_UNIT_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


def _app_figures(text):
    """Median/average latency in ms and the count from benchmark_app's report.

    benchmark_app prints each latency with its own unit ("Median: 349.36 us" below 1 ms,
    "Median: 4.05 ms" above), so the unit is read, never assumed.
    """
    got = {}
    for key, name in (("Median", "median_ms"), ("Average", "mean_ms")):
        m = re.search(key + r":\s*([\d.]+)\s*(ms|us|s)\b", text)
        if not m:
            raise SystemExit("benchmark_app printed no {} latency:\n{}".format(key, text[-2000:]))
        got[name] = float(m.group(1)) * _UNIT_MS[m.group(2)]
    got["count"] = int(re.search(r"Count:\s*(\d+)", text).group(1))
    return got


def edgekit_bench(art, seconds, json_path, threads=None):
    """``edgekit bench ART --runtime openvino``: wall-clock and OpenVINO-internal p50 in ms."""
    cmd = ["bench", art, "--target", "laptop-cpu", "--runtime", "openvino", "--warmup", "20",
           "--iterations", "1", "--duration", seconds, "--eval-samples", "10", "--json", json_path]
    if threads:
        cmd += ["--threads", threads]
    subprocess.run(edgekit_cli(*cmd), env=ENV, check=True, stdout=subprocess.DEVNULL)
    r = json.loads(Path(json_path).read_text())
    r = r[0] if isinstance(r, list) else r
    own = r.get("runtime_latency_ms") or {}
    return {"median_ms": r["latency_ms"]["p50"], "mean_ms": r["latency_ms"]["mean"],
            "count": r["iterations"], "runtime_latency_p50_ms": own.get("p50"),
            "runtime_latency_source": r.get("runtime_latency_source"),
            "command": "edgekit " + " ".join(str(c) for c in cmd[:-2])}


def compare(name, art, xml, shape, args, work):
    rounds = []
    for i in range(args.rounds):
        pair = [("benchmark_app", lambda: benchmark_app(xml, args.seconds, shape, args.threads)),
                ("edgekit", lambda: edgekit_bench(art, args.seconds, work / "r.json",
                                                  args.threads))]
        if i % 2:
            pair.reverse()                       # neither tool always goes first
        got = {k: f() for k, f in pair}
        app, ek = got["benchmark_app"], got["edgekit"]
        got["ratio"] = ek["median_ms"] / app["median_ms"]
        got["ratio_runtime_latency"] = ek["runtime_latency_p50_ms"] / app["median_ms"]
        # the same calls, inside vs outside OpenVINO: what edgekit's Python call adds, free of
        # the drift between rounds that a shared machine brings
        got["wall_over_own"] = ek["median_ms"] / ek["runtime_latency_p50_ms"]
        got["load_average"] = os.getloadavg()[0]
        rounds.append(got)
        print("[{}] round {}: benchmark_app median {:.3f} ms ({} iters) | edgekit wall p50 {:.3f} "
              "ms, OpenVINO's own p50 {:.3f} ms ({} iters) | ratio {:.3f} (own {:.3f}) | load "
              "{:.1f}".format(name, i + 1, app["median_ms"], app["count"], ek["median_ms"],
                              ek["runtime_latency_p50_ms"], ek["count"], got["ratio"],
                              got["ratio_runtime_latency"], got["load_average"]), flush=True)
    med = {k: float(np.median([r[k] for r in rounds]))
           for k in ("ratio", "ratio_runtime_latency", "wall_over_own")}
    app_p50 = float(np.median([r["benchmark_app"]["median_ms"] for r in rounds]))
    ek_p50 = float(np.median([r["edgekit"]["median_ms"] for r in rounds]))
    ek_own = float(np.median([r["edgekit"]["runtime_latency_p50_ms"] for r in rounds]))
    passed = med["ratio"] <= GOALS[name]
    print("FIDELITY [{}]: median per-round ratio edgekit wall p50 / benchmark_app median = {:.3f} "
          "(goal <= {}) -> {}; medians {:.3f} vs {:.3f} ms; OpenVINO's own latency of edgekit's "
          "calls {:.3f} ms (ratio {:.3f}); edgekit wall / OpenVINO's own, same calls: {:.3f}"
          .format(name, med["ratio"], GOALS[name], "PASS" if passed else "FAIL", ek_p50, app_p50,
                  ek_own, med["ratio_runtime_latency"], med["wall_over_own"]), flush=True)
    return {"ir": str(xml), "shape": shape, "rounds": rounds, "median_ratio": med["ratio"],
            "median_ratio_runtime_latency": med["ratio_runtime_latency"],
            "median_wall_over_own": med["wall_over_own"],
            "benchmark_app_median_ms": app_p50, "edgekit_wall_p50_ms": ek_p50,
            "edgekit_runtime_latency_p50_ms": ek_own, "goal": GOALS[name], "passed": passed,
            "benchmark_app_command": rounds[0]["benchmark_app"]["command"],
            "edgekit_command": rounds[0]["edgekit"]["command"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="seed,mnv2")
    ap.add_argument("--artifact", default=None, help="a trained seed-mnist-cnn artifact")
    ap.add_argument("--seconds", type=int, default=3, help="per run, each tool")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved A/B rounds per model")
    ap.add_argument("--threads", type=int, default=None,
                    help="pin N threads in both (default: OpenVINO's latency hint decides)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import openvino as ov
    work = Path(tempfile.mkdtemp(prefix="edgekit-fidelity-"))
    out = {"openvino": ov.__version__, "cpus": os.cpu_count(), "models": {},
           "load_average_start": os.getloadavg(), "seconds": args.seconds,
           "rounds": args.rounds, "threads": args.threads}
    print("OpenVINO {} | {} CPUs | load average {}".format(ov.__version__, os.cpu_count(),
                                                           os.getloadavg()), flush=True)
    try:
        for name in args.models.split(","):
            art, xml, shape = prepare(name, work, args.artifact)
            out["models"][name] = compare(name, art, xml, shape, args, work)
        out["load_average_end"] = os.getloadavg()
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        return 0 if all(m["passed"] for m in out["models"].values()) else 1
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
