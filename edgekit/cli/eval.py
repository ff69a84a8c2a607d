"""``edgekit eval``: test-split accuracy of an artifact or a bare model file (ONNX, Keras)."""
from pathlib import Path

import typer

from edgekit.cli.common import RESIZE, MEAN, PREPROCESS, SCALE, STD, console, pct, print_json, say_stderr


def eval_cmd(
    artifact: Path = typer.Argument(..., help="Artifact directory, ONNX file, or Keras .h5/.keras/SavedModel."),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    runtime: str = typer.Option(None, "--runtime", help="keras or a runtime (default: what the artifact holds)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    preprocess: str = PREPROCESS,
    scale: float = SCALE,
    mean: str = MEAN,
    std: str = STD,
    resize: bool = RESIZE,
):
    """Measure a model's accuracy on the data set's test split (an artifact or a bare model file).

    Example: edgekit eval out/seed --data mnist:../shared/datasets/mnist

    Example: edgekit eval resnet.onnx --data npz:cifar.npz --runtime openvino

    Example: edgekit eval lenet.onnx --data mnist:DIR --scale 0.00392157 --mean 0.1307 --std 0.3081

    A bare model file that does not tell its input scaling is fed 0..1 (said once on stderr);
    --preprocess or --scale/--mean/--std say what it was trained on. An artifact's manifest
    already records it.
    """
    from edgekit.adapt import parse_preprocess
    from edgekit.models import evaluate
    parsed = parse_preprocess(preprocess, scale, mean, std)
    results = evaluate(artifact, data, runtime=runtime, preprocess=parsed, say=say_stderr)
    if as_json:
        print_json({"artifact": str(artifact), "data": data, "accuracy": results})
    else:
        for rt, acc in results.items():
            console.print("{}: test accuracy {} ({})".format(artifact, pct(acc), rt))
