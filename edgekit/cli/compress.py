"""``edgekit compress``: one command for every compression method (see edgekit.compress)."""
from pathlib import Path

import typer

from edgekit.cli.common import console, kib, pct


def compress(
    model: Path = typer.Argument(..., help="Model: artifact dir, .h5 or SavedModel dir."),
    method: str = typer.Option(..., "--method", help="knn-slice"),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    out: Path = typer.Option(..., "-o", "--out", help="Artifact directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    cut: str = typer.Option(None, "--cut", help="knn-slice: layer NAME, INDEX or auto."),
    k: int = typer.Option(None, "--k", help="knn-slice: neighbours (default: chosen on validation)."),
    prototypes: int = typer.Option(None, "--prototypes", help="knn-slice: k-means prototypes per class."),
    dims: int = typer.Option(None, "--dims", help="knn-slice: PCA dimensions (0: no PCA)."),
    pool: str = typer.Option(None, "--pool", help="knn-slice: pooling window before the head: avgN | maxN | N (avg)."),
    int8: bool = typer.Option(None, "--int8/--no-int8", help="knn-slice: store prototypes as int8."),
    int8_weights: bool = typer.Option(None, "--int8-weights", help="knn-slice: store trunk kernels and PCA as int8."),
    objective: str = typer.Option(None, "--objective", help="knn-slice --cut auto: accuracy | size | latency."),
    max_bytes: int = typer.Option(None, "--max-bytes", help="knn-slice --cut auto: size limit."),
    min_accuracy: float = typer.Option(None, "--min-accuracy", help="knn-slice --cut auto: accuracy floor (0-1)."),
    evolve: str = typer.Option(None, "--evolve", help="knn-slice: cma | pso (evolve the trunk's kernels)."),
    strategy: str = typer.Option(None, "--strategy", help="evolution: serial | parallel."),
    generations: int = typer.Option(None, "--generations"),
    population: int = typer.Option(None, "--population"),
    time_budget: float = typer.Option(None, "--time-budget", help="evolution: seconds, keeps the best so far."),
    init: str = typer.Option(None, "--init", help="evolution: backprop | random."),
    seed: int = typer.Option(None, "--seed"),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="evolution: checkpoint/resume directory."),
    executor: str = typer.Option(None, "--executor", help="evolution: local | dask://HOST:PORT."),
):
    """Compress a trained CNN; the artifact's manifest records what was traded.

    Example: edgekit compress out/seed --method knn-slice --data mnist:../shared/datasets/mnist -o out/knn --cut auto
    """
    from edgekit.compress import compress as do_compress
    given = {"cut": cut, "k": k, "prototypes": prototypes, "dims": dims, "pool": pool,
             "int8": int8, "int8_weights": int8_weights, "objective": objective, "max_bytes": max_bytes,
             "min_accuracy": min_accuracy, "evolve": evolve, "strategy": strategy,
             "generations": generations, "population": population, "time_budget": time_budget,
             "init": init, "seed": seed, "checkpoint": checkpoint, "executor": executor}
    params = {key: v for key, v in given.items() if v is not None}
    art = do_compress(model, method, data, out, force=force, **params)
    m = art.manifest["metrics"]
    console.print("{} -> {}: test accuracy {}, {} on disk (every byte inference needs)".format(
        method, art.path, pct(m.get("accuracy")), kib(m.get("bytes"))))
