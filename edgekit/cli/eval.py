"""``edgekit eval``: test-split accuracy of an artifact or a bare model file (ONNX, Keras)."""
from pathlib import Path

import typer

from edgekit.cli.common import RESIZE, console, pct, print_json


def eval_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory, ONNX file, or Keras .h5/.keras/SavedModel."),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    runtime: str = typer.Option(None, "--runtime", help="keras or a runtime (default: what the artifact holds)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    resize: bool = RESIZE,
):
    """Measure a model's accuracy on the data set's test split (an artifact or a bare model file).

    Example: edgekit eval out/seed --data mnist:../shared/datasets/mnist

    Example: edgekit eval resnet.onnx --data npz:cifar.npz --runtime openvino
    """
    from edgekit.models import evaluate
    results = evaluate(artifact, data, runtime=runtime)
    if as_json:
        print_json({"artifact": str(artifact), "data": data, "accuracy": results})
    else:
        for rt, acc in results.items():
            console.print("{}: test accuracy {} ({})".format(artifact, pct(acc), rt))
