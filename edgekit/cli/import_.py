"""``edgekit import``: a model file (ONNX, Keras) as an artifact that export, bench, deploy
and doctor take (see :mod:`edgekit.importer` for why one verb)."""
from pathlib import Path

import typer

from edgekit.cli.common import MEAN, PREPROCESS, SCALE, STD, console, pct, say_stderr


def import_cmd(
    model: Path = typer.Argument(..., help="A .onnx file, a Keras .h5/.keras file or a SavedModel directory."),
    out: Path = typer.Option(..., "-o", "--out", help="Artifact directory to create."),
    data: str = typer.Option(None, "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE (required for Keras; recorded, accuracy measured)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    preprocess: str = PREPROCESS,
    scale: float = SCALE,
    mean: str = MEAN,
    std: str = STD,
):
    """Make a model file an artifact (manifest: the file's sha256, input layout and
    preprocessing, output convention, accuracy on --data).

    Example: edgekit import model.h5 -o out/mine --data mnist:../shared/datasets/mnist

    Example: edgekit import lenet.onnx -o out/lenet --data mnist:DIR --scale 0.00392157 --mean 0.1307 --std 0.3081
    """
    from edgekit.adapt import parse_preprocess
    from edgekit.importer import import_model
    parsed = parse_preprocess(preprocess, scale, mean, std)
    art = import_model(model, out, data=data, preprocess=parsed, force=force, say=say_stderr)
    m = art.manifest
    acc = m["metrics"].get("accuracy")
    console.print("imported {} -> {} ({} input {}{}){}".format(
        model, art.path, m["input"].get("layout", "NHWC"), m["input"].get("shape"),
        ", preprocess " + m["input"]["preprocess"] if m["input"].get("preprocess") else "",
        ": test accuracy " + pct(acc) if acc is not None else ""))
