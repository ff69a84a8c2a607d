"""``edgekit export``: write ONNX / TFLite / OpenVINO IR files, each checked for parity."""
from pathlib import Path

import typer

from edgekit.cli.common import RESIZE, TARGET, console, table


def export(
    artifact: Path = typer.Argument(..., help="Artifact directory, or a bare .onnx file (then -o and --data are required)."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="Comma list: onnx, tflite, openvino."),
    target: str = TARGET,
    precision: str = typer.Option(None, "--precision", help="fp32 | fp16 | int8 (default: the target's)."),
    out: Path = typer.Option(None, "-o", "--out", help="Write a new artifact dir instead of adding to ARTIFACT."),
    force: bool = typer.Option(False, "--force", help="Replace -o DIR if it exists."),
    data: str = typer.Option(None, "--data", help="Parity/calibration data spec (default: the manifest's)."),
    parity_samples: int = typer.Option(1000, "--parity-samples", help="Test images for the parity check."),
    calibration_samples: int = typer.Option(200, "--calibration-samples", help="Training images calibrating int8 TFLite."),
    batch: int = typer.Option(None, "--batch", help="Static batch size (default: dynamic, or the target's static_batch)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Force a dynamic batch dimension."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default: the target's; at most its max)."),
    ov2022_check: bool = typer.Option(True, "--ov2022-check/--no-ov2022-check",
                                      help="Targets with check_ov2022: load and run every file in OpenVINO 2022.3 (needs `make device-venvs`)."),
    resize: bool = RESIZE,
):
    """Export an artifact and check parity against the original; nothing written on failure.

    Example: edgekit export out/seed --format onnx,tflite,openvino
    """
    from edgekit.export import export as do_export
    art = do_export(artifact, fmt, target=target, precision=precision, out=out, force=force,
                    data=data, parity_samples=parity_samples, batch=batch,
                    dynamic_batch=dynamic_batch, calibration_samples=calibration_samples,
                    opset=opset, check_ov2022=None if ov2022_check else False)
    from edgekit.targets import default_target
    tname = target or default_target()
    rows = []
    for name, e in art.files.items():
        p = e.get("parity")
        if p and e.get("target") == tname:
            ov = e.get("ov2022")
            rows.append((name, e["format"], e["precision"], "{:,}".format(art.run_bytes(name)),
                         "{:.2%}".format(p["agreement"]),
                         "-" if p.get("max_abs_diff") is None else "{:.2e}".format(p["max_abs_diff"]),
                         "{:.2%}".format(p["accuracy_export"]),
                         "-" if not ov else ("reads" if ov.get("readable") else
                                             "no -> " + str(e.get("ov2022_fallback")))))
    cols = ["file", "format", "precision", "bytes", "agreement", "max |diff|", "accuracy",
            "OpenVINO 2022.3"]
    if all(r[-1] == "-" for r in rows):
        cols, rows = cols[:-1], [r[:-1] for r in rows]
    console.print(table("exported into {} (target {})".format(art.path, tname), cols, rows))
