"""``edgekit train``: train a reference CNN and write it as an artifact."""
from pathlib import Path

import typer

from edgekit.cli.common import console, kib, pct


def train(
    arch: str = typer.Option(..., "--arch", help="Reference CNN: seed-mnist-cnn, gap-cnn, micro-cnn, wide-gap-cnn or tiny."),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    out: Path = typer.Option(..., "-o", "--out", help="Artifact directory to create."),
    epochs: int = typer.Option(5, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(128, "--batch-size"),
    seed: int = typer.Option(0, "--seed"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (the start of the schedule)."),
    schedule: str = typer.Option("constant", "--schedule",
                                 help="Learning rate over the epochs: constant | cosine (decays to 0)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
):
    """Train a reference CNN on a dataset (test accuracy recorded in the manifest).

    Example: edgekit train --arch seed-mnist-cnn --data mnist:../shared/datasets/mnist -o out/seed --epochs 12

    Example: edgekit train --arch gap-cnn --data mnist:../shared/datasets/mnist -o out/gap --epochs 12 --schedule cosine
    """
    from edgekit.models import train as train_model
    art = train_model(arch, data, out, epochs=epochs, batch_size=batch_size, seed=seed, lr=lr,
                      schedule=schedule, force=force)
    m = art.manifest["metrics"]
    console.print("trained {} -> {}: test accuracy {}, {:,} params, {}".format(
        arch, art.path, pct(m["accuracy"]), m["params"], kib(m["bytes"])))
