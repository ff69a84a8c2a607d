"""The seed talk's evolution table on MNIST: CMA-ES and PSO on the 18,816 conv weights (issue 31).

Rows: the backprop trunk, serial CMA-ES (pycma) and serial PSO, each with the same k-NN
(k = 9) on the flattened conv1 -> conv2 -> max-pool features of ``seed-mnist-cnn`` (the Keras
MNIST example CNN the talk used). Columns (the talk's):

``4k-5ep``   CNN trained 5 epochs on 4,000 training images; k-NN references = those 4,000,
             queries = 1,000 test images;
``60k-5ep``  CNN trained 5 epochs; references = all 60,000 training images, queries = all
             10,000 test images;
``4k-20ep``  as ``4k-5ep`` with 20 epochs of training.

Stated by the talk and kept: serial conv1 -> conv2, k = 9, 60,000 references / 10,000 test
images, 5 / 20 epochs. Our own choices (not stated by the talk), recorded in the JSON:

- distance: squared Euclidean on the raw (ReLU, max-pooled) features, no normalisation,
  majority vote with ties to the nearer neighbours — the k-NN edgekit's knn-slice uses;
- CNN training: edgekit's ``fit`` (Adam 1e-3, batch 128, seeded);
- fitness (:class:`edgekit.compress.evolve.fitness.BatchKnnFitness`): leave-one-out k-NN on a
  fresh seeded mini-batch of the column's training images every generation, plus a margin
  term; the returned trunk and the early stop are chosen on a **held-out** validation split
  the fitness never sees (60k column: edgekit's 6,000-image validation split, the CNN is
  trained on the other 54,000 — all 60,000 are test-time references as in the talk; 4k
  columns: 1,000 other training images; their 4,000 are the CNN's training set, the fitness
  pool and the test-time references).

The "test per generation" curve of the plot is measured after each run on ``--curve-points``
of the candidates the run scored on the held-out split (every ``--holdout-every``
generations), on ``--curve-test`` test images against ``--curve-refs`` of the column's
references (affordable on a loaded 2-core machine). The table's figures use the column's protocol;
for the 60k column that is all 60,000 / 10,000 unless ``--big-test-refs`` / ``--big-test-queries``
reduce it (then the JSON's ``test_references`` / ``test_queries`` say so).

Examples (the runs recorded in benchmarks/results/evolve_table_*20261207*; see docs/evolve.md)::

    PYTHONPATH=. python benchmarks/evolve_table.py --columns 4k-5ep,4k-20ep,60k-5ep \\
        --budget 4k-5ep=200,4k-20ep=200,60k-5ep=300 --patience 8 \\
        --big-test-refs 10000 --big-test-queries 2000 --tag 20261207
    PYTHONPATH=. python benchmarks/evolve_table.py --columns 4k-5ep --methods pso --budget 1500 \\
        --curve-points 8 --tag long_pso_20261207 --json benchmarks/results/evolve_table_long_pso_20261207.json
    PYTHONPATH=. python benchmarks/evolve_table.py --replot benchmarks/results/evolve_table_20261207.json
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = "mnist:/work/shared/datasets/mnist"
COLUMNS = {
    "4k-5ep": {"train": 4000, "holdout": 1000, "test": 1000, "epochs": 5},
    "60k-5ep": {"train": None, "holdout": None, "test": None, "epochs": 5},
    "4k-20ep": {"train": 4000, "holdout": 1000, "test": 1000, "epochs": 20},
}
TALK = {  # the seed talk's test accuracies (%), 18.8k conv weights, DEAP, 6 cores
    "quote": "MNIST 60k/10k: CMA-ES 98.57% (24 h), PSO 98.52% (12 h); 4,000/1,000 subsets at 5 and "
             "20 epochs: 97.5% / 97.5% CMA-ES, 97.3% PSO",
    "4k-5ep": {"cma": 97.5, "pso": 97.3},
    "60k-5ep": {"cma": 98.57, "pso": 98.52},
    "4k-20ep": {"cma": 97.5, "pso": None},
}


def _subset(x, y, n, seed):
    """A seeded class-stratified subset of ``n`` images (all when n is None)."""
    if n is None or n >= len(x):
        return x, y
    from sklearn.model_selection import train_test_split
    idx, _ = train_test_split(np.arange(len(x)), train_size=n, stratify=y, random_state=seed)
    idx = np.sort(idx)
    return x[idx], y[idx]


def column_data(ds, name, seed):
    """The column's images: CNN training / fitness pool, held-out split, test refs and queries."""
    c = COLUMNS[name]
    x_tr, y_tr = _subset(ds.x_train, ds.y_train, c["train"], seed)
    x_ho, y_ho = _subset(ds.x_val, ds.y_val, c["holdout"], seed + 1)
    x_te, y_te = _subset(ds.x_test, ds.y_test, c["test"], seed + 2)
    if c["train"] is None:   # the talk's 60,000 references = edgekit's train + validation splits
        x_ref, y_ref = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    else:
        x_ref, y_ref = x_tr, y_tr
    return SimpleNamespace(name=name, epochs=c["epochs"], x_train=x_tr, y_train=y_tr, x_val=x_ho,
                           y_val=y_ho, x_ref=x_ref, y_ref=y_ref, x_test=x_te, y_test=y_te)


def trained_model(cd, work_dir, seed):
    """seed-mnist-cnn trained ``cd.epochs`` epochs on ``cd.x_train`` (cached in ``work_dir``)."""
    from edgekit._tf import keras, tf
    from edgekit.models import build, fit
    path = Path(work_dir) / "seed-mnist-cnn_{}_seed{}.h5".format(cd.name, seed)
    if path.exists():
        return keras().models.load_model(str(path), compile=False)
    keras().utils.set_random_seed(seed)
    tf().config.experimental.enable_op_determinism()
    model = build("seed-mnist-cnn", cd.x_train.shape[1:], 10)
    fit(model, cd, cd.epochs, batch_size=128, lr=1e-3, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5")
    model.save(str(tmp), include_optimizer=False)
    os.replace(str(tmp), str(path))
    return model


def _curve_points(gens, n):
    """At most ``n`` generations, evenly spread, always the first and the last."""
    if len(gens) <= n:
        return list(gens)
    pick = np.unique(np.round(np.linspace(0, len(gens) - 1, n)).astype(int))
    return [gens[i] for i in pick]


def plot_run(path, title, run, base_test):
    """fitness (batch LOO, right axis), held-out and test accuracy per generation, as a PNG;
    runs that record the NCA log-likelihood on the held-out and test images (``nca`` in their
    curves) get a second panel with the held-out and test NCA on one axis (the batch fitness
    stays in the first: its batch-to-batch noise would hide their trend).

    ``run`` is a run record of the results JSON (``fitness_curve``, ``holdout_curve``,
    ``test_curve``, ``selected_generation``), so a plot can be redrawn from the JSON."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gens, ho, curve = run["fitness_curve"], run["holdout_curve"], run["test_curve"]
    two = all("nca" in h for h in ho) and all("nca" in c for c in curve)
    fig, axes = plt.subplots(2 if two else 1, 1, figsize=(7.5, 7 if two else 4), dpi=110, sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    ax2 = ax.twinx()
    nca = (run.get("params") or {}).get("objective") == "nca"
    ax2.plot([r["gen"] for r in gens], [r["mean" if nca else "mean_accuracy"] for r in gens], lw=0.7, alpha=0.45,
             color="tab:blue", label="fitness: batch LOO {}, population mean (right axis)".format(
                 "NCA log-likelihood" if nca else "k-NN acc"))
    ax2.set_ylabel("fitness (fresh batch each generation)", color="tab:blue", fontsize=8)
    ax.plot([h["gen"] for h in ho], [h["accuracy"] for h in ho], "o-", ms=3, color="tab:orange",
            label="held-out acc (candidate)")
    ax.plot([c["gen"] for c in curve], [c["accuracy"] for c in curve], "s-", ms=4, color="tab:green",
            label="test acc (candidate, {})".format(run.get("test_curve_protocol", "")))
    if base_test is not None:
        ax.axhline(base_test, color="gray", ls="--", lw=0.8, label="backprop trunk, test (curve protocol)")
    for a in axes[:, 0]:
        a.axvline(run["selected_generation"], color="k", ls=":", lw=0.8, label="returned (held-out best)")
    stage2 = [r["gen"] for r in gens if r["stage"] == 1]
    if stage2:
        ax.axvline(stage2[0] - 0.5, color="tab:red", lw=0.6, alpha=0.6)
    axes[-1, 0].set_xlabel("generation (red line: conv1 -> conv2 stage)" if stage2 else "generation")
    ax.set_ylabel("k-NN accuracy (k=9)")
    ax.set_title(title, fontsize=9)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=6.5, loc="lower right")
    if two:
        bx = axes[1, 0]
        bx.plot([h["gen"] for h in ho], [h["nca"] for h in ho], "o-", ms=3, color="tab:orange",
                label="held-out (candidate)")
        bx.plot([c["gen"] for c in curve], [c["nca"] for c in curve], "s-", ms=4, color="tab:green",
                label="test (candidate, re-ranked)")
        r = run.get("holdout_test_nca_correlation")
        bx.set_ylabel("NCA log-likelihood (higher is better)")
        bx.set_title("the fitness's measure on unseen images{}".format(
            "" if r is None else ": held-out vs test r = {:.2f}".format(r)), fontsize=9)
        bx.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)


def run_title(col, run):
    """A run plot's title: column, method, search space, seed, length, test vs backprop."""
    space = "conv2 " + run["space"].replace("channel ", "") if run.get("space", "").startswith("channel") \
        else "serial"
    return "{} {} ({}, seed {}), {} gens, {:.0f}s: test {:.2%} (backprop {:.2%})".format(
        col["column"], run["method"], space, run.get("seed", 0), run["generations"], run["wall_s"],
        run["test_accuracy"], col["backprop_test_accuracy"])


def curve_correlations(run):
    """Per-run correlations over the held-out looks that have a test point, from the stored
    curves: held-out vs test accuracy, held-out vs test NCA, held-out NCA vs test accuracy
    (the last two only when the curves carry NCA)."""
    ho = {h["gen"]: h for h in run["holdout_curve"]}
    curve = [c for c in run["test_curve"] if c["gen"] in ho]
    out = {"holdout_test_correlation": _correlation([ho[c["gen"]]["accuracy"] for c in curve],
                                                    [c["accuracy"] for c in curve])}
    if curve and all("nca" in ho[c["gen"]] and "nca" in c for c in curve):
        hn = [ho[c["gen"]]["nca"] for c in curve]
        out["holdout_test_nca_correlation"] = _correlation(hn, [c["nca"] for c in curve])
        out["holdout_nca_test_accuracy_correlation"] = _correlation(hn, [c["accuracy"] for c in curve])
    return out


def replot(json_path):
    """Redraw every run's PNG of a results JSON (``--replot``), and fill in the curves'
    correlations (:func:`curve_correlations`, derived from the stored curves)."""
    res = json.loads(Path(json_path).read_text())
    for col in res["columns"]:
        for run in col["runs"]:
            first = run["test_curve"][0]   # generation 0 is the backprop trunk, on the curve protocol
            base = run.get("curve_backprop_accuracy", first["accuracy"] if first["gen"] == 0 else None)
            if run.get("space", "").startswith("channel"):
                run.update(curve_correlations(run))
            plot_run(REPO / run["plot_png"], run_title(col, run), run, base)
    Path(json_path).write_text(json.dumps(res, indent=1))


def run_column(name, ds, args, results, save):
    from edgekit.compress.evolve import evolve_trunk, knn_accuracy, slice_trunk
    from edgekit.compress.evolve.fitness import trunk_spec
    cd = column_data(ds, name, args.seed)
    if COLUMNS[name]["train"] is None:   # a smaller test protocol only when asked (said in the JSON)
        cd.x_ref, cd.y_ref = _subset(cd.x_ref, cd.y_ref, args.big_test_refs, args.seed + 5)
        cd.x_test, cd.y_test = _subset(cd.x_test, cd.y_test, args.big_test_queries, args.seed + 6)
    t = time.time()
    model = trained_model(cd, args.work_dir, args.seed)
    trunk = slice_trunk(model, "pool1")
    w0 = trunk.get_weights()
    n_params = sum(int(w.size) for w in w0)
    col = {"column": name, "cnn_train_images": len(cd.x_train), "epochs": cd.epochs,
           "test_references": len(cd.x_ref), "test_queries": len(cd.x_test), "holdout_images": len(cd.x_val),
           "cnn_test_accuracy": None, "trunk_params": n_params, "talk": TALK[name], "runs": []}
    from edgekit.models import keras_accuracy
    col["cnn_test_accuracy"] = keras_accuracy(model, cd.x_test, cd.y_test)
    col["backprop_test_accuracy"] = knn_accuracy(trunk, cd.x_ref, cd.y_ref, cd.x_test, cd.y_test, k=args.k)
    col["setup_s"] = round(time.time() - t, 1)
    print("[{}] CNN {:.2%}; backprop trunk ({} params) k-NN test {:.2%} ({:.0f}s)".format(
        name, col["cnn_test_accuracy"], n_params, col["backprop_test_accuracy"], col["setup_s"]), flush=True)
    results["columns"].append(col)
    save()
    c_ref = _subset(cd.x_ref, cd.y_ref, args.curve_refs, args.seed + 3)
    c_te = _subset(cd.x_test, cd.y_test, args.curve_test, args.seed + 4)
    curve_base = knn_accuracy(trunk, c_ref[0], c_ref[1], c_te[0], c_te[1], k=args.k)
    for method in args.methods.split(","):
        trunk.set_weights(w0)
        cands = {}
        t = time.time()
        trunk, log = evolve_trunk(
            trunk, cd.x_train, cd.y_train, cd.x_val, cd.y_val, method=method, strategy="serial",
            generations=10 ** 6, population=args.population, time_budget=args.budget[name], seed=args.seed,
            k=args.k, ref_samples=None, val_samples=args.holdout, batch_size=args.batch_size,
            holdout_refs=args.holdout_refs, holdout_every=args.holdout_every, patience=args.patience,
            margin_weight=args.margin_weight, cma_variant=args.cma_variant, sigma=args.sigma,
            precision=args.precision, stage_share=[float(v) for v in args.stage_share.split(",")],
            progress=False, candidate_hook=lambda g, v: cands.__setitem__(g, v))
        wall = time.time() - t
        t = time.time()
        test = knn_accuracy(trunk, cd.x_ref, cd.y_ref, cd.x_test, cd.y_test, k=args.k)
        spec, _ = trunk_spec(trunk)
        pts = sorted(set(_curve_points(sorted(cands), args.curve_points)) | {log["selected_generation"]})
        curve = [{"gen": g, "accuracy": knn_accuracy((spec, cands[g]), c_ref[0], c_ref[1], c_te[0], c_te[1],
                                                      k=args.k)} for g in pts]
        tag = "{}_{}_{}".format(name, method, args.tag)
        png = Path(args.out_dir) / "evolve_table_{}.png".format(tag)
        ho = [h["accuracy"] for h in log["holdout"]]
        te = [c["accuracy"] for c in curve]
        run = {"method": method, "wall_s": round(wall, 1), "eval_s": round(time.time() - t, 1),
               "generations": log["generations_run"], "evaluations": log["evaluations"],
               "s_per_generation": round(wall / max(1, log["generations_run"]), 3),
               "stopped": log["stopped"], "early_stops": log.get("early_stops", []),
               "selected_generation": log["selected_generation"],
               "holdout_before": log["fitness_before"]["accuracy"], "holdout_after": log["fitness_after"]["accuracy"],
               "test_accuracy": test, "gain_over_backprop": test - col["backprop_test_accuracy"],
               "talk_test_accuracy": TALK[name].get(method),
               "optimizer": log["params"]["optimizer"], "fitness_definition": log["fitness_definition"],
               "test_curve_protocol": "{} refs x {} test images".format(len(c_ref[1]), len(c_te[1])),
               "test_curve": curve, "holdout_curve": log["holdout"],
               "holdout_test_correlation": _correlation([h["accuracy"] for h in log["holdout"]
                                                         if h["gen"] in pts], te),
               "fitness_curve": [{k: r[k] for k in ("gen", "stage", "mean_accuracy", "best_accuracy", "mean", "best")}
                                 for r in log["generations"]],
               "curve_backprop_accuracy": curve_base,
               "plot_png": os.path.relpath(str(png), str(REPO))}
        plot_run(png, "{} {} serial, {} gens, {:.0f}s: test {:.2%} (backprop {:.2%})".format(
            name, method, log["generations_run"], wall, test, col["backprop_test_accuracy"]), run, curve_base)
        col["runs"].append(run)
        print("[{}] {}: {} gens ({:.2f}s/gen), returned gen {}; held-out {:.2%} -> {:.2%}; test {:.2%} "
              "(backprop {:.2%}, talk {}) [{:.0f}s + {:.0f}s eval]".format(
                  name, method, run["generations"], run["s_per_generation"], run["selected_generation"],
                  ho[0], run["holdout_after"], test, col["backprop_test_accuracy"], TALK[name].get(method),
                  wall, run["eval_s"]), flush=True)
        save()


def exact_knn_accuracy(P_ref, y_ref, P_q, y_q, fold, k, metric, chunk=1000):
    """k-NN test accuracy over *all* references (float32, exact search) of the trunk whose
    features are ``fold(P)`` (relu(g (p + t)) of the pooled pre-activations: the identity that
    tests/test_evolve.py checks against the Keras trunk)."""
    from edgekit.compress.evolve.fitness import RefIndex, knn_scores
    F = np.empty(P_ref.shape, np.float32)
    for s in range(0, len(P_ref), 8192):
        F[s:s + 8192] = fold(P_ref[s:s + 8192], metric)
    index = RefIndex(F)
    del F
    correct = 0
    for s in range(0, len(P_q), chunk):
        c, _ = knn_scores(index.sq_distances(fold(P_q[s:s + chunk], metric)), y_q[s:s + chunk], y_ref, k,
                          int(max(y_ref.max(), y_q.max()) + 1), margin=False)
        correct += int(np.sum(c))
    return correct / len(P_q)


def _folder(u, v, scales):
    """``fold(P, metric)``: the features relu(exp(u) (p + v s)) of pooled pre-activations (cosine:
    L2-normalised)."""
    g = np.exp(np.asarray(u, np.float32))
    t = (np.asarray(v, np.float64) * scales).astype(np.float32)

    def fold(P, metric):
        n_ch = len(g)
        F = np.maximum((P.reshape(len(P), -1, n_ch) + t) * g, 0).reshape(len(P), -1)
        if metric == "cosine":
            F /= np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
        return F
    return fold


def choose_metric(P_tr, y_tr, P_val, y_val, k, n_refs, seed):
    """Validation k-NN accuracy of the backprop trunk per distance (the issue's "our own choice",
    made on validation, the same for every row): {metric: accuracy}."""
    from edgekit.compress.evolve.channels import METRICS, relu_features
    idx = np.sort(np.random.default_rng(seed + 7).permutation(len(y_tr))[:n_refs])
    out = {}
    for metric in METRICS:
        out[metric] = exact_knn_accuracy(P_tr[idx], y_tr[idx], P_val, y_val, relu_features, k,
                                         metric)
    return out


def run_column_channels(name, ds, args, results, save):
    """The column with the per-filter gain+bias search of conv2 (evolve/channels.py): one-off
    pooled pre-activations, distance choice and candidate search, then one run per
    (method, seed); the exact full-protocol test per run, a re-ranked test curve per held-out look."""
    from edgekit.compress.evolve import slice_trunk
    from edgekit.compress.evolve.channels import (ChannelKnnFitness, _nearest, channel_layout, evolve_channels,
                                                  pooled_preactivations, relu_features, unfold_channels)
    from edgekit.compress.evolve.fitness import trunk_spec
    from edgekit.models import keras_accuracy
    cd = column_data(ds, name, args.seed)
    t = time.time()
    model = trained_model(cd, args.work_dir, args.seed)
    trunk = slice_trunk(model, "pool1")
    spec, w0 = trunk_spec(trunk)
    n_ch = channel_layout(spec)[2]
    w_init = trunk.get_weights()
    P_tr = pooled_preactivations(spec, w0, cd.x_train)
    P_val = pooled_preactivations(spec, w0, cd.x_val)
    P_te = pooled_preactivations(spec, w0, cd.x_test)
    if COLUMNS[name]["train"] is None:   # 60k: references = train + validation splits (the talk's 60,000)
        P_ref, y_ref = np.concatenate([P_tr, P_val]), np.concatenate([cd.y_train, cd.y_val])
    else:
        P_ref, y_ref = P_tr, cd.y_train
    col = {"column": name, "space": "channels", "cnn_train_images": len(cd.x_train), "epochs": cd.epochs,
           "test_references": len(y_ref), "test_queries": len(cd.y_test), "holdout_images": len(cd.y_val),
           "trunk_params": int(w0.size), "talk": TALK[name], "runs": [],
           "cnn_test_accuracy": keras_accuracy(model, cd.x_test, cd.y_test), "pooled_s": round(time.time() - t, 1)}
    t = time.time()
    if args.metric == "auto":
        col["metric_choice"] = choose_metric(P_tr, cd.y_train, P_val, cd.y_val, args.k, args.metric_refs, args.seed)
        col["metric_choice_protocol"] = "backprop trunk, {} validation images vs {} training references".format(
            len(cd.y_val), min(args.metric_refs, len(cd.y_train)))
        metric = max(col["metric_choice"], key=col["metric_choice"].get)
    else:
        metric = args.metric
    col["metric"] = metric
    col["metric_s"] = round(time.time() - t, 1)
    print("[{}] CNN {:.2%}; distance {} {}".format(name, col["cnn_test_accuracy"], metric,
                                                    col.get("metric_choice", "")), flush=True)
    t = time.time()
    grid = [float(v) for v in args.thresholds.split(",")]
    fit = ChannelKnnFitness(P_tr, cd.y_train, P_val, cd.y_val, n_ch, k=args.k, candidates=args.candidates,
                            queries=args.queries, batch_size=args.query_batch, grid=grid, metric=metric,
                            seed=args.seed, share_weight=args.share_weight, hard=args.hard,
                            objective=args.objective, temperature=args.temperature)
    col["fitness_setup"] = {"search_s": round(fit.search_s, 1), "table_s": round(fit.table_s, 1),
                            "queries_searched": fit.n_searched, "fitness_queries": int(len(fit.q_idx))}
    t2 = time.time()
    F_ref = relu_features(P_ref, metric)
    test_cand = _nearest(relu_features(P_te, metric), F_ref, args.candidates, metric)
    del F_ref
    tt = ChannelKnnFitness(P_ref, y_ref, P_te, cd.y_test, n_ch, k=args.k, candidates=args.candidates, grid=grid,
                           metric=metric, search={"q_idx": [], "cand": np.zeros((0, args.candidates)),
                                                  "cand_hold": test_cand}, scales=fit.scales)
    tt.T = fit.T     # the test curve's NCA in the fitness's temperature
    col["test_curve_setup_s"] = round(time.time() - t2, 1)
    del P_tr   # (2 GB for the 60k column) the references P_ref hold what the exact test needs
    x0 = np.zeros(fit.dim)
    # the backprop trunk: exact k-NN (the first k of the exact candidate search are its neighbours)
    col["backprop_test_accuracy"] = tt.holdout_full(x0)[1]
    col["backprop_holdout_accuracy"] = fit.holdout_full(x0)[1]
    col["setup_s"] = round(time.time() - t, 1)
    print("[{}] backprop trunk ({} params) k-NN test {:.2%}, held-out {:.2%} ({:.0f}s setup)".format(
        name, w0.size, col["backprop_test_accuracy"], col["backprop_holdout_accuracy"], col["setup_s"]), flush=True)
    results["columns"].append(col)
    save()
    seeds = [int(v) for v in args.seeds.split(",")]
    order = [(m, s) for s in seeds for m in args.methods.split(",")] if args.interleave else \
        [(m, s) for m in args.methods.split(",") for s in seeds]
    for method, seed in order:
        if args.stop_at and time.time() + args.budget[name] + col.get("exact_test_s", 0) > args.stop_at:
            print("[{}] {} seed {}: skipped, it would end after --stop-at".format(name, method, seed), flush=True)
            continue
        trunk.set_weights(w_init)
        cands = {}
        t = time.time()
        trunk, log = evolve_channels(trunk, None, None, None, None, method=method, fitness=fit,
                                     population=args.population, sigma=args.sigma or 0.2,
                                     time_budget=args.budget[name], seed=seed, holdout_every=args.holdout_every,
                                     min_improvement=args.min_improvement, patience=args.patience,
                                     select=args.select,
                                     candidate_hook=lambda g, v: cands.__setitem__(g, v))
        wall = time.time() - t
        curve = []
        for g in sorted(cands):
            x = unfold_channels(spec, w0, cands[g], fit.scales)
            _, acc, _, nca = tt.holdout_scores(x)
            curve.append({"gen": g, "accuracy": acc, "nca": nca})
        x_sel = unfold_channels(spec, w0, cands[log["selected_generation"]], fit.scales)
        t = time.time()
        u, v = fit.decode(x_sel)
        test = exact_knn_accuracy(P_ref, y_ref, P_te, cd.y_test, _folder(u, v, fit.scales), args.k, metric)
        col["exact_test_s"] = round(time.time() - t, 1)
        tag = "{}_{}_s{}_{}".format(name, method, seed, args.tag)
        png = Path(args.out_dir) / "evolve_table_{}.png".format(tag)
        run = {"method": method, "seed": seed, "wall_s": round(wall, 1), "eval_s": col["exact_test_s"],
               "load_average_after": [round(v, 1) for v in os.getloadavg()],
               "generations": log["generations_run"], "evaluations": log["evaluations"],
               "s_per_generation": round(wall / max(1, log["generations_run"]), 4),
               "stopped": log["stopped"], "selected_generation": log["selected_generation"],
               "holdout_before": log["fitness_before"]["accuracy"], "holdout_after": log["fitness_after"]["accuracy"],
               "test_accuracy": test, "gain_over_backprop": test - col["backprop_test_accuracy"],
               "test_rerank_selected": tt.holdout_full(x_sel)[1],
               "talk_test_accuracy": TALK[name].get(method), "space": log["space"], "n_search": log["n_search"],
               "params": log["params"], "fitness_definition": log["fitness_definition"],
               "gains": log["gains"], "thresholds": log["thresholds"],
               "test_curve_protocol": "re-ranked: each test image's {} nearest of the {} references under the "
                                      "backprop trunk".format(args.candidates, len(y_ref)),
               "test_curve": curve, "holdout_curve": log["holdout"],
               "fitness_curve": [{k: r[k] for k in ("gen", "stage", "mean_accuracy", "best_accuracy", "mean", "best")}
                                 for r in log["generations"]],
               "curve_backprop_accuracy": col["backprop_test_accuracy"],
               "plot_png": os.path.relpath(str(png), str(REPO))}
        run.update(curve_correlations(run))
        plot_run(png, run_title(col, run), run, col["backprop_test_accuracy"])
        col["runs"].append(run)
        _summarise(col)
        print("[{}] {} seed {}: {} gens ({:.3f}s/gen), returned gen {}; held-out {:.2%} -> {:.2%}; test {:.2%} "
              "(backprop {:.2%}, talk {}) [{:.0f}s + {:.0f}s exact test]".format(
                  name, method, seed, run["generations"], run["s_per_generation"], run["selected_generation"],
                  run["holdout_before"], run["holdout_after"], test, col["backprop_test_accuracy"],
                  TALK[name].get(method), wall, run["eval_s"]), flush=True)
        save()


def _correlation(a, b):
    """Pearson correlation of two curves over the held-out looks (None when either is flat)."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def channel_setup(args):
    """The JSON's ``setup`` for ``--space channels`` (each run also records its fitness_definition)."""
    from edgekit.compress.evolve.channels import SELECTIONS
    return {"trunk": "seed-mnist-cnn conv1 -> conv2 -> ReLU -> max-pool (pool1), 18,816 weights",
            "searched": "conv2's per-filter log-gain{} (folded into conv2's kernels and biases)".format(
                "" if args.thresholds.strip() == "0" else " and threshold (grid {})".format(args.thresholds)),
            "k": args.k, "distance": "chosen on validation per column (its 'metric', 'metric_choice'); the same "
                                     "for the backprop and evolved rows",
            "vote": "majority, ties to the nearer neighbours",
            "fitness": "{} on a seeded mini-batch of {} of {} training images per generation (leave-one-out, "
                       "{} re-ranked candidates){}".format(
                           "NCA soft-neighbour log-likelihood" if args.objective == "nca" else
                           "k-NN accuracy + {} x same-label share".format(args.share_weight),
                           args.query_batch, args.queries, args.candidates,
                           ", T = {} x the start's 1st-to-k-th gap".format(args.temperature)
                           if args.objective == "nca" else ""),
            "selection": "held-out {}: the column's validation images, every {} generations; a candidate must "
                         "beat the held-out best by {}; patience {}".format(
                             "NCA log-likelihood" if args.select == "nca" else "k-NN accuracy",
                             args.holdout_every, SELECTIONS[args.select] if args.min_improvement is None
                             else args.min_improvement, args.patience)}


def _summarise(col):
    """Per method: mean, sample std and range of the exact test accuracy over seeds."""
    summ = {}
    for method in sorted({r["method"] for r in col["runs"]}):
        acc = [r["test_accuracy"] for r in col["runs"] if r["method"] == method]
        summ[method] = {"seeds": len(acc), "mean": float(np.mean(acc)),
                        "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
                        "min": float(min(acc)), "max": float(max(acc)),
                        "mean_gain_over_backprop": float(np.mean(acc)) - col["backprop_test_accuracy"]}
    col["summary"] = summ


def _budgets(text, columns):
    out = {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=")
            out[k.strip()] = float(v)
        else:
            out.update({c: float(part) for c in columns})
    missing = [c for c in columns if c not in out]
    if missing:
        raise SystemExit("error: no --budget for {}".format(", ".join(missing)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--columns", default="4k-5ep,60k-5ep,4k-20ep")
    ap.add_argument("--methods", default="cma,pso")
    ap.add_argument("--budget", default="600", help="evolution seconds per run: N or COLUMN=N,...")
    ap.add_argument("--population", type=int, default=None,
                    help="default: 12 (kernels), pycma's 4 + 3 ln(n) = 18 (channels)")
    ap.add_argument("--batch-size", type=int, default=256, help="fitness mini-batch (LOO k-NN) per generation")
    ap.add_argument("--holdout", type=int, default=1000, help="held-out validation queries")
    ap.add_argument("--holdout-refs", type=int, default=2000, help="training references for the held-out score")
    ap.add_argument("--holdout-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--margin-weight", type=float, default=0.25)
    ap.add_argument("--cma-variant", default="sep", choices=["sep", "vd"])
    ap.add_argument("--sigma", type=float, default=None)
    ap.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"],
                    help="fitness forward pass (held-out and test stay float32)")
    ap.add_argument("--stage-share", default="0.2,0.8", help="time shares of the conv1 and conv2 stages")
    ap.add_argument("--big-test-refs", type=int, default=None,
                    help="60k column: test-time references (default all 60,000: the talk's protocol)")
    ap.add_argument("--big-test-queries", type=int, default=None,
                    help="60k column: test images (default all 10,000)")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curve-points", type=int, default=5, help="test-curve candidates per run")
    ap.add_argument("--curve-refs", type=int, default=2000, help="test curve: references")
    ap.add_argument("--curve-test", type=int, default=1000, help="test curve: test images")
    ap.add_argument("--work-dir", default="/tmp/evolve-table", help="trained CNNs are cached here")
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--tag", default=time.strftime("%Y%m%d"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--space", default="channels", choices=["channels", "kernels"],
                    help="channels: conv2's per-filter gain+bias (evolve/channels.py); kernels: all conv weights")
    ap.add_argument("--seeds", default="0", help="channels: evolution seeds (the CNN stays --seed's)")
    ap.add_argument("--interleave", action="store_true", help="channels: run methods per seed (cma s0, pso s0, ...)")
    ap.add_argument("--metric", default="auto", choices=["auto", "euclidean", "cosine"],
                    help="channels: k-NN distance; auto = the better on validation for the backprop trunk")
    ap.add_argument("--metric-refs", type=int, default=20000, help="channels: references of the distance choice")
    ap.add_argument("--thresholds", default="-0.5,-0.25,0,0.25,0.5",
                    help="channels: bias grid in units of each channel's pooled pre-activation std ('0': gains only)")
    ap.add_argument("--candidates", type=int, default=32, help="channels: re-ranked neighbours per query")
    ap.add_argument("--queries", type=int, default=10000, help="channels: training images used as fitness queries")
    ap.add_argument("--query-batch", type=int, default=2000, help="channels: fitness queries per generation")
    ap.add_argument("--share-weight", type=float, default=0.1, help="channels, --objective accuracy: share term")
    ap.add_argument("--objective", default="nca", choices=["nca", "accuracy"],
                    help="channels: fitness (NCA soft-neighbour log-likelihood, or k-NN accuracy + share)")
    ap.add_argument("--temperature", type=float, default=0.3,
                    help="channels, NCA: T as a fraction of the start's median 1st-to-k-th neighbour gap")
    ap.add_argument("--hard", type=int, default=18,
                    help="channels: fitness queries = those with another label among their HARD nearest (0: all)")
    ap.add_argument("--select", default="nca", choices=["nca", "accuracy"],
                    help="channels: held-out score that picks the returned candidate")
    ap.add_argument("--min-improvement", type=float, default=None,
                    help="channels: a held-out replacement must win by this (default: per --select, see "
                         "edgekit.compress.evolve.channels.SELECTIONS)")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time: skip runs that would end later")
    ap.add_argument("--replot", default=None, metavar="JSON", help="only redraw the PNGs of a results JSON")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(args.replot)
    columns = [c.strip() for c in args.columns.split(",")]
    bad = [c for c in columns if c not in COLUMNS]
    if bad:
        raise SystemExit("error: unknown column {}: use {}".format(", ".join(bad), ", ".join(COLUMNS)))
    args.budget = _budgets(args.budget, columns)
    if args.space == "kernels" and args.population is None:
        args.population = 12
    from edgekit.data import load_data
    ds = load_data(args.data, lazy=False)
    json_path = Path(args.json or Path(args.out_dir) / "evolve_table_{}.json".format(args.tag))
    results = {"command": " ".join(["PYTHONPATH=. python", os.path.relpath(sys.argv[0], str(REPO))] + sys.argv[1:]),
               "machine": "{} cores ({}), CPU only; load average at start (1 per busy core) {}".format(
                   os.cpu_count(), platform.machine(), " ".join("{:.1f}".format(v) for v in os.getloadavg())),
               "setup": channel_setup(args) if args.space == "channels" else {
                         "trunk": "seed-mnist-cnn conv1 -> conv2 -> pool1 (serial: conv1 stage, then conv2)",
                         "k": args.k, "distance": "squared Euclidean, raw ReLU/max-pooled features, no normalisation",
                         "vote": "majority, ties to the nearer neighbours",
                         "fitness": "leave-one-out k-NN on a fresh seeded batch of {} training images per "
                                    "generation + {} x mean margin".format(args.batch_size, args.margin_weight),
                         "selection": "held-out: {} validation images vs {} training references, every {} "
                                      "generations and at each stage end; patience {}".format(
                                          args.holdout, args.holdout_refs, args.holdout_every, args.patience),
                         "population": args.population, "cma_variant": args.cma_variant, "sigma": args.sigma,
                         "precision": args.precision, "stage_share": args.stage_share},
               "talk": TALK, "columns": []}

    def save():
        results["load_average_now"] = [round(v, 1) for v in os.getloadavg()]
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1))
    if args.space == "channels":
        results["setup"].update(space="channels", metric=args.metric, thresholds=args.thresholds,
                                candidates=args.candidates, queries=args.queries, query_batch=args.query_batch,
                                share_weight=args.share_weight, batch_size=None, precision=None,
                                min_improvement=args.min_improvement, seeds=args.seeds, hard=args.hard,
                                fitness="see each run's fitness_definition", population=args.population)
    for name in columns:
        (run_column_channels if args.space == "channels" else run_column)(name, ds, args, results, save)
    save()
    return results


if __name__ == "__main__":
    main()
