"""``edgekit optimize``: search compressions under a target's limits (see edgekit.optimize)."""
from pathlib import Path

import typer

from edgekit.cli.common import (RESIZE, ACCEPT_NEW_HOST_KEY, IDENTITY, KNOWN_HOSTS, REMOTE_DIR,
                                REMOTE_PYTHON, TARGET, console)


def optimize(
    model: Path = typer.Argument(..., help="Trained Keras model: artifact dir, .h5/.keras or SavedModel dir."),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    directory: Path = typer.Option(..., "-o", "--out", help="Output directory (the same one again resumes the study)."),
    target: str = TARGET,
    host: str = typer.Option(None, "--host", help="[USER@]HOST[:PORT]: time candidates on the device (deploy --bench over SSH)."),
    identity: Path = IDENTITY,
    known_hosts: Path = KNOWN_HOSTS,
    accept_new_host_key: bool = ACCEPT_NEW_HOST_KEY,
    remote_python: str = REMOTE_PYTHON,
    remote_dir: str = REMOTE_DIR,
    max_bytes: int = typer.Option(None, "--max-bytes", help="Most bytes on disk of the target's file."),
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", help="Highest p50 latency (ms, batch 1), measured on the target."),
    max_params: int = typer.Option(None, "--max-params", help="Most parameters."),
    max_drop: float = typer.Option(None, "--max-drop", help="Most validation accuracy (points) a candidate may lose (default 1.0)."),
    objective: str = typer.Option("accuracy", "--objective", help="What picks the model among those that fit: accuracy | bytes | latency."),
    budget: str = typer.Option(None, "--budget", help="Wall time of this run, e.g. 45m, 90s, 1.5h (running candidates finish)."),
    trials: int = typer.Option(None, "--trials", help="Total trials of the study (default 20 without --budget)."),
    executor: str = typer.Option("local", "--executor", help="local | dask://HOST:PORT (an existing Dask scheduler)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of every training."),
    methods: str = typer.Option(None, "--methods", help="Shrink moves to search, comma list of none,prune,distill,prune+distill,distill+distill (teacher assistant),distill+knn,knn (default: all)."),
    formats: str = typer.Option(None, "--formats", help="The target's file formats to try, comma list (default: every format the target runs)."),
    batch: int = typer.Option(2, "--batch", help="Trials proposed at once (evaluated in parallel on a cluster; results do not depend on the executor)."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of each training step at the top rung (default: budgeted in optimizer steps; lower rungs get 1/9 and 1/3)."),
    iterations: int = typer.Option(100, "--iterations", help="Timed runs per candidate (the bench protocol)."),
    force: bool = typer.Option(False, "--force", help="Start over: replace an optimize directory OUT."),
    resize: bool = RESIZE,
):
    """Search prune / distill / k-NN / int8 / fp16 variants of a CNN for a target and its limits;
    write the Pareto front (accuracy x bytes x latency) and the chosen model to OUT/best.

    Example: edgekit optimize runs/seed --data mnist:../shared/datasets/mnist --target laptop-cpu --max-bytes 16000 --budget 60m -o runs/opt

    Example: edgekit optimize runs/seed --data digits --target ncs2 --max-params 20000 --trials 12 -o runs/opt-ncs2

    Example: edgekit optimize runs/seed --data digits --max-bytes 20000 --executor dask://10.0.0.5:8786 -o runs/opt

    Every candidate is measured on validation data with the target's runtime; test accuracy is
    measured once, for the front and the chosen model. Nothing meets the limits: exit 1 naming
    the closest candidate, no OUT/best.
    """
    from edgekit.optimize import optimize as run
    deploy_options = None
    if host is not None:
        deploy_options = {"identity": str(identity) if identity else None,
                          "known_hosts": str(known_hosts) if known_hosts else None,
                          "accept_new_host_key": accept_new_host_key,
                          "remote_python": remote_python, "remote_dir": remote_dir}
    res = run(model, data, directory, target=target, host=host, max_bytes=max_bytes,
              max_latency_ms=max_latency_ms, max_params=max_params, max_drop=max_drop,
              objective=objective, budget=budget, trials=trials, executor=executor, seed=seed,
              force=force, methods=methods, formats=formats, batch=batch, max_epochs=epochs,
              bench_iterations=iterations, deploy_options=deploy_options)
    from edgekit.cli.common import table
    from edgekit.optimize.front import COLUMNS, table_rows
    console.print(table("Pareto front ({} trials, {})".format(res["trials"], res["target"]),
                        COLUMNS, table_rows(res["front"], res["best"])))
    b = res["best"]
    console.print("chosen: {} -> {} ({}): {:.2%} test accuracy, {:,} bytes{}".format(
        b["id"], res["best_dir"], b["label"], b["test_accuracy"], b["bytes"],
        "" if b.get("latency_ms") is None else ", p50 {:.3f} ms".format(b["latency_ms"])))
