"""Wall-clock of evolutionary trunk optimisation vs. number of Dask workers (issue 5).

Runs the same seeded evolution (seed-mnist-cnn trunk, parallel strategy: every generation
evaluates all filter groups' populations as one batch) with the in-process ``local`` executor
and with a ``dask.distributed.LocalCluster`` of 1, 2, ... worker processes (one thread each),
and checks every executor reaches exactly the local result. Cluster start-up and the
workers' first TensorFlow import are excluded (a warm-up task runs first).

Example:
    .venv/bin/python benchmarks/evolve_dask_scaling.py --workers 1,2 --json bench-evolve-dask.json
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _warm():
    from edgekit._tf import tf
    tf().constant(1.0)
    return os.getpid()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/cache/seed-mnist")
    ap.add_argument("--data", default="mnist:" + str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--cut", default="pool1")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--method", default="cma")
    ap.add_argument("--strategy", default="parallel")
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--ref-samples", type=int, default=400)
    ap.add_argument("--val-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="bench-evolve-dask.json")
    args = ap.parse_args(argv)

    import numpy as np
    from distributed import LocalCluster

    from edgekit.compress.evolve import evolve_trunk, slice_trunk
    from edgekit.data import load_data
    from edgekit.models import load_model

    ds = load_data(args.data)
    trunk = slice_trunk(load_model(args.model), args.cut)
    w0 = trunk.get_weights()

    def run(executor):
        trunk.set_weights(w0)
        t = time.time()
        _, log = evolve_trunk(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, method=args.method,
                              strategy=args.strategy, generations=args.generations,
                              population=args.population, seed=args.seed, executor=executor,
                              ref_samples=args.ref_samples, val_samples=args.val_samples, progress=False)
        return time.time() - t, log, [w.copy() for w in trunk.get_weights()]

    rows = []
    wall, log, ref_w = run("local")
    evals = log["evaluations"]
    rows.append({"executor": "local (in-process)", "workers": 0, "wall_s": round(wall, 1),
                 "evaluations": evals, "evals_per_s": round(evals / wall, 2), "equals_local": True})
    print(rows[-1], flush=True)
    for n in [int(v) for v in args.workers.split(",")]:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster:
            from distributed import Client
            with Client(cluster) as c:
                c.run(_warm)
            address = cluster.scheduler_address.replace("tcp://", "dask://")
            wall, log, w = run(address)
        same = all(np.array_equal(a, b) for a, b in zip(ref_w, w))
        rows.append({"executor": "dask LocalCluster", "workers": n, "wall_s": round(wall, 1),
                     "evaluations": log["evaluations"], "evals_per_s": round(log["evaluations"] / wall, 2),
                     "equals_local": bool(same)})
        print(rows[-1], flush=True)
    out = {"machine": "2-core x86-64 VM, CPU only, shared with other jobs",
           "command": " ".join([os.path.relpath(sys.argv[0], str(REPO))] + sys.argv[1:]),
           "setup": vars(args), "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
