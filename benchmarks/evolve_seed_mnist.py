"""Serial CMA-ES and PSO on the seed MNIST CNN's 18,816-parameter conv trunk (issue 5).

Loads the seed-mnist-cnn artifact (trains one with `edgekit train` when it is absent),
slices it at --cut (default pool1: conv1, conv2, max-pool), measures k-NN test accuracy of
the backprop trunk, then evolves the trunk with each --method under --time-budget and
measures the test accuracy again. Fitness uses seeded subsets of the training split
(reference) and of the validation split (fitness), never the test split.

Example:
    .venv/bin/python benchmarks/evolve_seed_mnist.py --time-budget 480 --json bench-evolve.json
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SEED_PAPER = {"cma": 98.57, "pso": 98.52}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/cache/seed-mnist")
    ap.add_argument("--data", default="mnist:" + str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--train-epochs", type=int, default=6, help="when --model is absent, train this long")
    ap.add_argument("--methods", default="cma,pso")
    ap.add_argument("--strategy", default="serial")
    ap.add_argument("--cut", default="pool1")
    ap.add_argument("--time-budget", type=float, default=480.0)
    ap.add_argument("--generations", type=int, default=10 ** 6)
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--ref-samples", type=int, default=600)
    ap.add_argument("--val-samples", type=int, default=300)
    ap.add_argument("--test-ref-samples", type=int, default=10000)
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-root", default="bench-evolve-ckpt")
    ap.add_argument("--json", default="bench-evolve.json")
    args = ap.parse_args(argv)

    from edgekit.compress.evolve import evolve_trunk, knn_test_accuracy, slice_trunk
    from edgekit.data import load_data
    from edgekit.models import load_model

    if not Path(args.model).exists():
        subprocess.check_call([sys.executable, "-c", "import sys; from edgekit.cli import main; main(sys.argv[1:])",
                               "train", "--arch", "seed-mnist-cnn", "--data", args.data, "-o", args.model,
                               "--epochs", str(args.train_epochs)])
    ds = load_data(args.data)
    full = load_model(args.model)
    trunk = slice_trunk(full, args.cut)
    w0 = trunk.get_weights()
    n_params = sum(int(w.size) for w in w0)
    t = time.time()
    base_test = knn_test_accuracy(trunk, ds, k=args.k, ref_samples=args.test_ref_samples, seed=args.seed)
    print("backprop trunk ({} params): k-NN test accuracy {:.2%} ({:.0f}s)".format(
        n_params, base_test, time.time() - t), flush=True)
    results = {"machine": "2-core x86-64 VM, CPU only, shared with other jobs",
               "command": " ".join([os.path.relpath(sys.argv[0], str(REPO))] + sys.argv[1:]),
               "model": args.model, "cut": args.cut, "trunk_params": n_params,
               "test_protocol": "k={} majority vote on flattened {} features, reference = {} seeded training "
                                "images, all {} test images".format(args.k, args.cut, args.test_ref_samples,
                                                                    len(ds.x_test)),
               "backprop_test_accuracy": base_test, "runs": []}
    for method in args.methods.split(","):
        trunk.set_weights(w0)
        ck = Path(args.checkpoint_root) / "{}-{}".format(method, args.strategy)
        t = time.time()
        trunk, log = evolve_trunk(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, method=method,
                                  strategy=args.strategy, generations=args.generations,
                                  population=args.population, time_budget=args.time_budget, seed=args.seed,
                                  checkpoint=str(ck), k=args.k, ref_samples=args.ref_samples,
                                  val_samples=args.val_samples, progress=sys.stderr.isatty())
        wall = time.time() - t
        test = knn_test_accuracy(trunk, ds, k=args.k, ref_samples=args.test_ref_samples, seed=args.seed)
        run = {"method": method, "strategy": args.strategy, "wall_s": round(wall, 1),
               "generations": log["generations_run"], "evaluations": log["evaluations"],
               "val_fitness_before": log["fitness_before"], "val_fitness_after": log["fitness_after"],
               "test_accuracy": test, "seed_talk_test_accuracy": SEED_PAPER.get(method),
               "plot_png": log["plot_png"], "logbook": str(ck / "logbook.json"), "stopped": log["stopped"]}
        results["runs"].append(run)
        print("{} {}: {} generations, {} evaluations in {:.0f}s; val-subset k-NN acc {:.2%} -> {:.2%}; "
              "test acc {:.2%} (backprop {:.2%}, seed talk {}%)".format(
                  method, args.strategy, run["generations"], run["evaluations"], wall,
                  log["fitness_before"]["accuracy"], log["fitness_after"]["accuracy"], test, base_test,
                  SEED_PAPER.get(method)), flush=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
