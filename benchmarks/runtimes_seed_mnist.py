"""seed-mnist-cnn on MNIST: onnxruntime vs OpenVINO vs LiteRT on this CPU, fastest marked.

Exports a copy of the trained artifact (default /work/cache/seed-mnist; trained with
``edgekit train`` when absent) to ONNX + TFLite + OpenVINO IR (fp32), runs
``edgekit bench --target laptop-cpu --runtime all`` on it (accuracy on all 10,000 test images),
adds any int8 artifacts given with ``--int8 DIR`` (from ``edgekit compress --method quantize``),
and writes ``edgekit report`` into ``--out``.

Usage::

    .venv/bin/python benchmarks/runtimes_seed_mnist.py --out /tmp/seed-runtimes \
        [--iterations 500] [--threads 1] [--int8 DIR ...]
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MNIST = REPO.parent / "shared" / "datasets" / "mnist"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", default="/work/cache/seed-mnist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--int8", action="append", default=[], help="int8 artifact dir(s)")
    args = ap.parse_args(argv)
    from edgekit.bench import bench
    from edgekit.export import export
    from edgekit.report import report
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    art = out / "seed-fp32"
    if not art.exists():
        if Path(args.artifact).exists():
            shutil.copytree(args.artifact, art)
        else:
            subprocess.run([str(REPO / ".venv" / "bin" / "edgekit"), "train", "--arch",
                            "seed-mnist-cnn", "--data", "mnist:{}".format(MNIST), "-o", str(art)],
                           check=True)
        export(art, ["onnx", "tflite", "openvino"], target="laptop-cpu", precision="fp32")
    files = []
    res = bench(art, "laptop-cpu", runtime="all", iterations=args.iterations, warmup=50,
                threads=args.threads, json_path=out / "fp32.json")
    files.append(out / "fp32.json")
    for r in res:
        print("fp32 {:<12} p50 {:.3f} ms  p99 {:.3f} ms  accuracy {:.4f}{}".format(
            r["runtime"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["accuracy"],
            "  <- fastest" if r.get("fastest") else ""))
    for i, d in enumerate(args.int8):
        f = out / "int8-{}.json".format(i)
        res = bench(d, "laptop-cpu", runtime="all", iterations=args.iterations, warmup=50,
                    threads=args.threads, json_path=f)
        files.append(f)
        for r in res:
            print("int8 {:<12} p50 {:.3f} ms  accuracy {:.4f}".format(
                r["runtime"], r["latency_ms"]["p50"], r["accuracy"]))
    for p in report(files, out / "report", title="seed-mnist-cnn on MNIST: runtimes on this CPU"):
        print("wrote", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
