"""``edgekit optimize`` on MNIST from ``seed-mnist-cnn``: the issue's size goal.

Goal (issue 14): ``--target laptop-cpu --max-bytes 16000`` finds a model with >= 99.0% test
accuracy in <= 16,000 bytes (the whole file the target runs) within ``--budget 60m`` on the
project's 2-core machine.

Trains the teacher first if ``--teacher`` does not exist yet (``edgekit train --arch
seed-mnist-cnn --epochs 5``, ~99.1%), then runs the search through the CLI entry point
(in-process) and prints a JSON summary: wall time, trials by state, the chosen model (test
accuracy, bytes, latency, what produced it) and the Pareto front. The output directory keeps
the study: running the same command again resumes it (``--trials``/``--budget`` count anew).

Example::

    nice -n 10 .venv/bin/python benchmarks/optimize_mnist.py --mnist ../shared/datasets/mnist \\
        --teacher /work/cache/opt/seed-mnist --out /work/cache/opt/run --budget 60m \\
        --json benchmarks/results/optimize_mnist.json
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _cli(args):
    from edgekit.cli import main
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--teacher", required=True, help="seed-mnist-cnn artifact (trained if missing)")
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-bytes", type=int, default=16000, help="0: no byte limit")
    ap.add_argument("--max-params", type=int, default=None)
    ap.add_argument("--budget", default="60m")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="optimize --epochs (top rung)")
    ap.add_argument("--methods", default=None)
    ap.add_argument("--formats", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", default="local")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--min-test", type=float, default=0.99,
                    help="the goal's test accuracy (the --max-params table: 0.9896 ...)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    data = "mnist:" + a.mnist
    t0 = time.time()
    teacher_s = None
    if not (Path(a.teacher) / "manifest.json").is_file():
        code = _cli(["train", "--arch", "seed-mnist-cnn", "--data", data, "-o", a.teacher,
                     "--epochs", a.teacher_epochs])
        if code:
            sys.exit(code)
        teacher_s = round(time.time() - t0, 1)
    args = ["optimize", a.teacher, "--data", data, "-o", a.out, "--target", "laptop-cpu",
            "--seed", a.seed, "--executor", a.executor]
    for flag, v in (("--max-bytes", a.max_bytes or None), ("--budget", a.budget), ("--trials", a.trials), ("--epochs", a.epochs),
                    ("--methods", a.methods), ("--formats", a.formats),
                    ("--max-params", a.max_params), ("--batch", a.batch)):
        if v is not None:
            args += [flag, v]
    t1 = time.time()
    code = _cli(args)
    wall = time.time() - t1
    front_file = Path(a.out) / "front.json"
    f = json.loads(front_file.read_text()) if front_file.is_file() else {}
    teacher = json.loads((Path(a.teacher) / "manifest.json").read_text())["metrics"]
    best = f.get("best")
    summary = {
        "command": " ".join(str(x) for x in ["edgekit"] + args),
        "exit_code": code, "wall_s": round(wall, 1), "teacher_train_s": teacher_s,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "teacher": {"test_accuracy": teacher.get("accuracy"), "params": teacher.get("params"),
                    "bytes": teacher.get("bytes")},
        "trials": f.get("trials"), "states": f.get("states"),
        "best": None if best is None else {k: best.get(k) for k in (
            "id", "label", "test_accuracy", "val_accuracy", "bytes", "params", "latency_ms",
            "runtime", "file")},
        "goal": {"max_bytes": a.max_bytes or None, "max_params": a.max_params,
                 "min_test_accuracy": a.min_test,
                 "met": bool(best and (not a.max_bytes or best["bytes"] <= a.max_bytes)
                             and (a.max_params is None or best["params"] <= a.max_params)
                             and best["test_accuracy"] >= a.min_test)},
        "front": [{k: r.get(k) for k in ("id", "label", "val_accuracy", "test_accuracy",
                                         "bytes", "latency_ms")} for r in f.get("front", [])],
        "refit": f.get("refit"),
        "rows": [{k: r.get(k) for k in ("id", "label", "val_accuracy", "test_accuracy", "bytes",
                                        "seconds")} for r in f.get("rows", [])],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
