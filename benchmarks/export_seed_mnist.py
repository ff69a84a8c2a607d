"""Export seed-mnist-cnn (MNIST) to every format x precision the targets allow, with parity.

For each target in targets/*.toml, every (format, precision) pair its ``format_precisions``
lists is exported with ``edgekit.export.export`` into a copy of the seed artifact (parity on
the first ``--parity-samples`` MNIST test images; the ncs2 files are also loaded and run in
OpenVINO 2022.3.1). Every file is run here by its runtime (onnxruntime, OpenVINO CPU, LiteRT)
as part of the parity check. Prints a Markdown table and writes JSON.

The seed artifact comes from ``--seed`` (default /work/cache/seed-mnist); when absent it is
trained here with ``edgekit train --arch seed-mnist-cnn``. Example::

    .venv/bin/python benchmarks/export_seed_mnist.py --seed /work/cache/seed-mnist \\
        --mnist ../shared/datasets/mnist --out /tmp/export-bench --json /tmp/export-bench/export.json
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def seed_artifact(seed, mnist, out):
    """A writable copy of the seed artifact (trained here when ``seed`` does not exist)."""
    dst = out / "seed"
    if dst.exists():
        shutil.rmtree(dst)
    if seed and Path(seed, "manifest.json").is_file():
        shutil.copytree(seed, dst)
    else:
        print("no seed artifact at {}: training seed-mnist-cnn (edgekit train)".format(seed))
        subprocess.run([sys.executable, "-c", "import sys; from edgekit.cli import main; main(sys.argv[1:])",
                        "train", "--arch", "seed-mnist-cnn",
                        "--data", "mnist:{}".format(mnist), "-o", str(dst), "--epochs", "5"],
                       check=True)
    return dst


def plan():
    """(target, precision, formats) for every format x precision each target allows."""
    from edgekit.export import export_plan
    from edgekit.targets import target_names
    return [(name, prec, fmts) for name in target_names() for prec, fmts in export_plan(name)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", default="/work/cache/seed-mnist")
    ap.add_argument("--mnist", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--out", default="/tmp/export-bench")
    ap.add_argument("--json", default=None)
    ap.add_argument("--parity-samples", type=int, default=1000)
    args = ap.parse_args(argv)

    from edgekit.artifact import Artifact
    from edgekit.export import export
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    art_dir = seed_artifact(args.seed, args.mnist, out)
    data = "mnist:{}".format(args.mnist)
    timings = []
    for target, prec, fmts in plan():
        t0 = time.perf_counter()
        export(art_dir, fmts, target=target, precision=prec, data=data,
               parity_samples=args.parity_samples)
        timings.append({"target": target, "precision": prec, "formats": fmts,
                        "seconds": round(time.perf_counter() - t0, 1)})
        print("exported {} {} {} in {:.1f} s".format(target, prec, ",".join(fmts),
                                                     timings[-1]["seconds"]), flush=True)
    art = Artifact.open(art_dir)
    rows = []
    keras_bytes = art.files[art.find("keras")[0]]["bytes"]
    for name, e in art.files.items():
        if "parity" not in e:
            continue
        size = e["bytes"] + (art.files[e["weights"]]["bytes"] if e.get("weights") else 0)
        p, ov = e["parity"], e.get("ov2022") or {}
        rows.append({"file": name, "targets": e.get("targets"), "format": e["format"],
                     "precision": e["precision"], "bytes": size,
                     "ratio_vs_keras": round(size / keras_bytes, 3),
                     "agreement": p["agreement"], "max_abs_diff": p["max_abs_diff"],
                     "mean_abs_diff": p["mean_abs_diff"],
                     "accuracy_reference": p["accuracy_reference"],
                     "accuracy_export": p["accuracy_export"], "samples": p["samples"],
                     "ov2022_readable": ov.get("readable"),
                     "ov2022_agreement_vs_current": ov.get("agreement_vs_current_openvino")})
    result = {"artifact": str(art_dir), "keras_bytes": keras_bytes, "data": data,
              "exports": timings, "files": rows}
    print("\n| file | target(s) | format | precision | bytes | agreement | max abs diff | "
          "accuracy (ref -> export) | OV 2022.3 |")
    print("|---|---|---|---|---:|---:|---:|---|---|")
    for r in rows:
        print("| {} | {} | {} | {} | {:,} | {:.2%} | {:.2e} | {:.2%} -> {:.2%} | {} |".format(
            r["file"], ", ".join(r["targets"] or []), r["format"], r["precision"], r["bytes"],
            r["agreement"], r["max_abs_diff"] if r["max_abs_diff"] is not None else float("nan"),
            r["accuracy_reference"], r["accuracy_export"],
            "-" if r["ov2022_readable"] is None else
            ("reads, {:.2%} vs current".format(r["ov2022_agreement_vs_current"])
             if r["ov2022_agreement_vs_current"] is not None else
             ("reads" if r["ov2022_readable"] else "no"))))
    if args.json:
        from edgekit.util import atomic_write_text
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
