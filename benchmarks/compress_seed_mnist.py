"""Compression on MNIST (issue 3 acceptance): prune, structured prune, int8, distill, dense width.

Teacher: ``seed-mnist-cnn`` (/work/cache/seed-mnist, or trained here with ``edgekit train``
when absent). Every run goes through ``edgekit.compress.compress`` (what ``edgekit compress``
calls) and the figures are read back from the artifacts' manifests; latencies are
onnxruntime CPU, batch 1, 1 thread, ``edgekit.runtime.bench.measure`` on ONNX exports made
with ``edgekit.export.onnx.to_onnx``.

Example::

    .venv/bin/python benchmarks/compress_seed_mnist.py --mnist ../shared/datasets/mnist \\
        --teacher /work/cache/seed-mnist --out /tmp/compress-bench \\
        --json benchmarks/results/compress_seed_mnist.json
    # a subset: --only prune,structured,quantize,distill,distill_gap,width
    .venv/bin/python benchmarks/compress_seed_mnist.py --render RESULTS.json...   # Markdown
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SEED_WIDTH_TABLE = {128: (1200000, 0.9865), 8: (31700, 0.978)}  # seed talk, dense width 128 -> 8
RUNS = ("prune", "structured", "quantize", "distill", "distill_gap", "width")
# "latency": re-time teacher / structured / int8 ONNX back to back (rounds interleaved), from
# artifacts an earlier run left in --out, so load from other jobs hits all three alike


def ort_latency(model_or_onnx, work, name, x, iterations):
    """p50/mean latency (ms) of an ONNX file, or of a Keras model exported to ONNX first."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import measure
    path = Path(model_or_onnx) if isinstance(model_or_onnx, (str, Path)) else None
    if path is None:
        from edgekit.export.onnx import to_onnx
        path = Path(work) / (name + ".onnx")
        to_onnx(model_or_onnx, path, opset=13)
    r = open_runner("onnxruntime", path, threads=1)
    try:
        res = measure(r, x[:200], batch=1, warmup=50, iterations=iterations)
    finally:
        r.close()
    return {"p50_ms": res["latency_ms"]["p50"], "mean_ms": res["latency_ms"]["mean"],
            "onnx_bytes": path.stat().st_size, "iterations": res["iterations"]}


def render(paths):
    """Markdown rows for BENCHMARKS.md from one or more result JSON files."""
    runs = {}
    for p in paths:
        runs.update(json.loads(Path(p).read_text())["runs"])
    lines = ["| run | accuracy before -> after | params | nonzero | MACs | bytes | other | time |",
             "|---|---|---|---|---|---|---|---|"]
    for key, r in runs.items():
        b, a = r["before"], r["after"]
        other = []
        if "sparsity" in a:
            other.append("sparsity {:.1%} (min layer {:.1%}); gzip {:,} -> {:,} B = {:.2f}x".format(
                a["sparsity"], min(a["layer_sparsity"].values()), b["gzip_bytes"], a["gzip_bytes"],
                a["gzip_ratio"]))
        if "macs_ratio" in a:
            other.append("{:.2f}x fewer MACs".format(a["macs_ratio"]))
        for n, f in (a.get("formats") or {}).items():
            other.append("{}: {:.2%}, {:,} B vs fp32 {:,} B = {:.2f}x smaller".format(
                n, f["accuracy"], f["bytes"], f["fp32_bytes"], f["ratio_vs_fp32"]))
        lat = r.get("latency")
        if lat:
            ks = list(lat)
            other.append("ORT CPU p50 {:.3f} ms -> {:.3f} ms = {:.2f}x".format(
                lat[ks[0]]["p50_ms"], lat[ks[1]]["p50_ms"], lat["speedup_p50"]))
        lines.append("| {} | {:.2%} -> {:.2%} ({:+.2f} pt) | {:,} -> {:,} | {:,} -> {:,} | {:,} -> {:,} "
                     "| {:,} -> {:,} | {} | {:.0f} s |".format(
                         key, b["accuracy"], a["accuracy"], 100 * (a["accuracy"] - b["accuracy"]),
                         b["params"], a["params"], b["nonzero_params"], a["nonzero_params"],
                         b["macs"], a["macs"], b["bytes"], a["bytes"], "; ".join(other),
                         r["seconds"]))
    return "\n".join(lines)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--render":
        print(render(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--teacher", default="/work/cache/seed-mnist")
    ap.add_argument("--out", default="/tmp/compress-bench")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "compress_seed_mnist.json"))
    ap.add_argument("--only", default=",".join(RUNS))
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (prune/structured)")
    ap.add_argument("--distill-epochs", type=int, default=6)
    ap.add_argument("--width-epochs", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=500, help="latency iterations")
    args = ap.parse_args()
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = "mnist:" + str(Path(args.mnist).resolve())
    teacher = Path(args.teacher)
    if not (teacher / "manifest.json").exists():
        teacher = out / "teacher"
        if not (teacher / "manifest.json").exists():
            subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", "train", "--arch", "seed-mnist-cnn",
                            "--data", spec, "-o", str(teacher), "--epochs", "6"], check=True)

    from edgekit.compress import compress
    from edgekit.data import load_data
    from edgekit.models import load_model
    ds = load_data(spec)
    res = {"machine": "2-core x86-64 VM, CPU only (shared with other jobs)", "data": spec,
           "teacher": str(teacher), "runs": {}}
    if Path(args.json).exists():  # keep earlier runs of other subsets
        res["runs"] = json.loads(Path(args.json).read_text()).get("runs", {})
    work = out / "onnx"
    work.mkdir(exist_ok=True)
    base_lat = ort_latency(load_model(teacher), work, "teacher", ds.x_test, args.iterations)

    def run(key, method, dst, **params):
        t0 = time.time()
        art = compress(str(teacher), method, spec, str(out / dst), force=True, progress=False,
                       **params)
        m = art.manifest["metrics"]
        rec = {"command": "edgekit compress {} --method {} --data {} -o {} {}".format(
            teacher, method, spec, out / dst, " ".join(
                "--{}{}".format(k.replace("_", "-"), "" if v is True else " {}".format(v))
                for k, v in params.items())),
            "seconds": round(time.time() - t0, 1), "before": m["before"],
            "after": {k: v for k, v in m.items() if k != "before"}}
        res["runs"][key] = rec
        print(json.dumps({key: rec}, indent=1, default=str), flush=True)
        return art, rec

    if "prune" in only:
        run("prune", "prune", "pruned", sparsity=0.8, epochs=args.epochs)
    if "structured" in only:
        art, rec = run("structured", "prune", "structured", structured=True, ratio=0.5,
                       epochs=args.epochs)
        lat = ort_latency(load_model(art.path), work, "structured", ds.x_test, args.iterations)
        rec["latency"] = {"teacher": base_lat, "structured": lat,
                          "speedup_p50": base_lat["p50_ms"] / lat["p50_ms"]}
    if "quantize" in only:
        art, rec = run("quantize", "quantize", "int8", calibration_samples=500)
        lat = ort_latency(art.path / "model.int8.onnx", work, "int8", ds.x_test, args.iterations)
        rec["latency"] = {"fp32_onnx": base_lat, "int8_onnx": lat,
                          "speedup_p50": base_lat["p50_ms"] / lat["p50_ms"]}
    if "distill" in only:
        run("distill", "distill", "student", width=0.25, epochs=args.distill_epochs)
    if "distill_gap" in only:  # a named all-conv student: 35,994 params (33x fewer)
        run("distill_gap", "distill", "student-gap", student="gap-cnn", epochs=args.distill_epochs)
    if "width" in only:
        for w in (64, 32, 16, 8):
            run("dense_width_{}".format(w), "prune", "width{}".format(w), dense_width=w,
                epochs=args.width_epochs)
    if "latency" in only:
        import statistics
        files = {"fp32 (teacher)": work / "teacher.onnx", "structured": work / "structured.onnx",
                 "int8 QDQ": out / "int8" / "model.int8.onnx"}
        p50 = {k: [] for k in files}
        for _ in range(5):
            for k, f in files.items():
                p50[k].append(ort_latency(f, work, k, ds.x_test, args.iterations)["p50_ms"])
        med = {k: statistics.median(v) for k, v in p50.items()}
        res["runs"].setdefault("latency", {})
        res["latency"] = {"p50_ms_median_of_5": med, "rounds": p50,
                          "speedup_structured": med["fp32 (teacher)"] / med["structured"],
                          "speedup_int8": med["fp32 (teacher)"] / med["int8 QDQ"]}
        res["runs"].pop("latency")
        print(json.dumps(res["latency"], indent=1), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
