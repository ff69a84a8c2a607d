"""Issue 11: structured pruning / int8 / distillation on the zoo's functional nets trained on
MNIST as 32x32x3 (``benchmarks/arch_mnist32.py`` writes the models and the npz; or
``--data mnist:DIR`` with the models of ``benchmarks/your_cnn.py user-models``).

Every run goes through ``edgekit.compress.compress`` (= ``edgekit compress``); figures are read
back from the artifact manifests. Latency: onnxruntime, batch 1, 1 thread, ONNX opset 13 from
``edgekit.export.onnx.to_onnx``, p50 of interleaved rounds (before/after in the same run).

    .venv/bin/python benchmarks/arch_compress.py --models mobilenetv2,resnet --only prune \
        --epochs 1 --out /work/cache/arch/runs --json /work/cache/arch/prune.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def p50(paths, x, rounds=5, iterations=200):
    """Median over ``rounds`` interleaved rounds of each ONNX file's p50 (ms)."""
    from edgekit.runtime import open_runner
    from edgekit.runtime.bench import measure
    got = {str(p): [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            r = open_runner("onnxruntime", p, threads=1)
            try:
                got[str(p)].append(measure(r, x[:200], batch=1, warmup=30,
                                           iterations=iterations)["latency_ms"]["p50"])
            finally:
                r.close()
    return {p: float(np.median(v)) for p, v in got.items()}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/work/cache/arch")
    ap.add_argument("--out", default="/work/cache/arch/runs")
    ap.add_argument("--json", default="/work/cache/arch/results.json")
    ap.add_argument("--models", default="mobilenetv2,resnet")
    ap.add_argument("--only", default="prune")
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=None,
                    help="fine-tuning / distillation epoch cap (default: edgekit's, scaled to the data)")
    ap.add_argument("--data", default=None,
                    help="data spec (default: npz:CACHE/mnist32.npz); edgekit fits it to each model")
    ap.add_argument("--extra", default="{}", help="JSON dict of extra compress() params")
    a = ap.parse_args(argv)
    from edgekit.compress.guard import GuardFailed
    from edgekit.data import load_data
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    cache, out = Path(a.cache), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = a.data or "npz:{}".format(cache / "mnist32.npz")
    ds = load_data(data)
    results = json.loads(Path(a.json).read_text()) if Path(a.json).exists() else {}
    extra = json.loads(a.extra)
    for name in a.models.split(","):
        src = cache / (name + ".h5")
        for run in a.only.split(","):
            key = "{}:{}".format(name, run)
            dst = out / "{}-{}".format(name, run)
            t0 = time.time()
            try:
                art = _run(run, name, src, ds, dst, out, a, extra, results, key)
            except GuardFailed as exc:   # the guard refused: nothing written, say so
                results[key] = {"refused": str(exc), "seconds": round(time.time() - t0, 1)}
                print(key, json.dumps(results[key]), flush=True)
                Path(a.json).write_text(json.dumps(results, indent=1, default=str))
                continue
            if art is None:
                continue
            m = art.manifest["metrics"]
            res = {"seconds": round(time.time() - t0, 1), "params": art.manifest["method"]["params"],
                   "accuracy": m.get("accuracy"), "before_accuracy": m["before"].get("accuracy"),
                   "macs": m.get("macs"), "before_macs": m["before"].get("macs"),
                   "params_count": m.get("params"), "before_params": m["before"].get("params"),
                   "formats": m.get("formats"), "guard": m.get("guard")}
            if run != "quantize":
                a_onnx, b_onnx = dst / "after.onnx", out / (name + ".fp32.onnx")
                to_onnx(load_model(dst), a_onnx)
                if not b_onnx.exists():
                    to_onnx(load_model(src), b_onnx)
                lat = p50([b_onnx, a_onnx], _fitted(ds, load_model(src)).x_test)
                res["p50_ms_before"], res["p50_ms_after"] = lat[str(b_onnx)], lat[str(a_onnx)]
            results[key] = res
            print(key, json.dumps(res, default=str), flush=True)
            Path(a.json).write_text(json.dumps(results, indent=1, default=str))


def _fitted(ds, model):
    """``ds`` as the model sees it (edgekit's loader: resize / channels)."""
    from edgekit.adapt import fit_data
    return fit_data(ds, tuple(int(d) for d in model.input_shape[1:]), say=lambda m: None)


def _run(run, name, src, ds, dst, out, a, extra, results, key):
    """One run through ``edgekit.compress.compress``: the artifact, or None (students' cost
    only, recorded here)."""
    from edgekit.compress import compress
    from edgekit.export.onnx import to_onnx
    from edgekit.models import load_model
    if run == "prune":
        art = compress(src, "prune", ds, dst, structured=True,
                       target_macs=a.target_macs, epochs=a.epochs, force=True, **extra)
    elif run == "quantize":
        art = compress(src, "quantize", ds, dst, force=True, **extra)
    elif run == "students":  # derived students' cost only (untrained: no accuracy)
        from edgekit.compress.student import derive
        from edgekit.models import count_macs, count_params
        teacher = load_model(src)
        b_onnx = out / (name + ".fp32.onnx")
        if not b_onnx.exists():
            to_onnx(teacher, b_onnx)
        res, paths = {}, [b_onnx]
        for label, kw in (("width0.5", {"width": 0.5}), ("depthwise", {"depthwise": True}),
                          ("resolution0.75", {"resolution": 0.75})):
            net = derive(teacher, **kw)
            p = out / "{}-student-{}.onnx".format(name, label)
            to_onnx(net, p)
            paths.append(p)
            res[label] = {"params": count_params(net), "macs": count_macs(net),
                          "teacher_params": count_params(teacher),
                          "teacher_macs": count_macs(teacher)}
        lat = p50(paths, _fitted(ds, teacher).x_test)
        for label, p in zip(res, paths[1:]):
            res[label]["p50_ms"] = lat[str(p)]
            res[label]["teacher_p50_ms"] = lat[str(b_onnx)]
        results[key] = res
        print(key, json.dumps(res), flush=True)
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
        return None
    elif run == "latency":  # re-time an earlier prune run: both exported afresh, interleaved
        prev = out / "{}-prune".format(name)
        a_onnx, b_onnx = prev / "after.onnx", out / (name + ".fp32.onnx")
        base = load_model(src)
        to_onnx(load_model(prev), a_onnx)
        to_onnx(base, b_onnx)
        lat = p50([b_onnx, a_onnx], _fitted(ds, base).x_test, rounds=9)
        results[key] = {"p50_ms_before": lat[str(b_onnx)], "p50_ms_after": lat[str(a_onnx)],
                        "ratio": lat[str(b_onnx)] / lat[str(a_onnx)]}
        print(key, json.dumps(results[key]), flush=True)
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
        return None
    elif run.startswith("distill"):
        how = {"distill-width": {"width": 0.5}, "distill-depthwise": {"depthwise": True},
               "distill-resolution": {"resolution": 0.75}}[run]
        how.update(extra)
        art = compress(src, "distill", ds, dst, epochs=a.epochs, force=True, **how)
    else:
        raise SystemExit("unknown run " + run)
    return art


if __name__ == "__main__":
    main()
