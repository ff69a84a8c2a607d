"""``edgekit demo``: the whole pipeline on the embedded default (digits) or any data spec."""
from pathlib import Path

import typer

from edgekit.cli.common import console, err_console, table


def demo(
    data: str = typer.Option("digits", "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Output directory (demo-out/)."),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs (default: digits 30, mnist 6)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Training batch (default: digits 32, mnist 128)."),
    iterations: int = typer.Option(500, "--iterations", help="Timed benchmark iterations (batch 1)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    model: Path = typer.Option(None, "--model", help="Use this trained artifact instead of training."),
):
    """Train seed-mnist-cnn, evaluate, export ONNX, check it against Keras, benchmark, report.

    Example: edgekit demo --data mnist:../shared/datasets/mnist -o demo-mnist
    """
    from edgekit.demo import demo as run_demo
    from edgekit.demo import summary_rows
    s = run_demo(data, out, epochs=epochs, batch_size=batch_size, iterations=iterations,
                 force=force, progress=True, console=err_console, model=model)
    console.print(table("edgekit demo: {} on {}".format(s["arch"], data), ["step", "result"],
                        summary_rows(s)))
    for path in s["files"].get("report", []):
        console.print("report: {}".format(path))
    console.print("results: {}".format(", ".join(s["files"].get("results", []))))
    console.print("artifact: {}".format(s["files"]["artifact"]))
