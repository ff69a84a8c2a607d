"""``edgekit bench``: one benchmark protocol on every target and runtime."""
from pathlib import Path

import typer

from edgekit.cli.common import RESIZE, TARGET, console, table


def bench(
    artifact: Path = typer.Argument(..., help="Artifact directory (exported), or a bare .onnx file."),
    target: str = TARGET,
    runtime: str = typer.Option(None, "--runtime", help="onnxruntime | openvino | litert | tensorrt | all."),
    batch: int = typer.Option(1, "--batch"),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up iterations."),
    warmup_seconds: float = typer.Option(0.0, "--warmup-seconds", help="Warm-up seconds (minimum)."),
    iterations: int = typer.Option(100, "--iterations", help="Timed iterations (minimum)."),
    duration: float = typer.Option(0.0, "--duration", help="Timed seconds (minimum)."),
    threads: int = typer.Option(None, "--threads", help="Pin intra-op threads (recorded)."),
    data: str = typer.Option(None, "--data", help="Accuracy data (default: the manifest's)."),
    eval_samples: int = typer.Option(None, "--eval-samples",
                                     help="Accuracy on the first N test samples (default: all)."),
    json_file: Path = typer.Option(None, "--json", help="Write results JSON here."),
    device: str = typer.Option(None, "--device", help=(
        "OpenVINO device (default: the target's `device`; DEVICE.<id> picks one of several "
        "sticks; CPU runs the path on the CPU).")),
    resize: bool = RESIZE,
):
    """Measure cold start, latency percentiles, throughput, peak RSS and accuracy.

    Example: edgekit bench out/seed --runtime all --json laptop.json
    """
    from edgekit.bench import bench as do_bench
    results = do_bench(artifact, target, runtime=runtime, batch=batch, warmup=warmup,
                       iterations=iterations, duration=duration, threads=threads, data=data,
                       json_path=json_file, device=device, eval_samples=eval_samples,
                       warmup_seconds=warmup_seconds)
    rows = [(r["runtime"] + (" (fastest)" if r.get("fastest") else ""), r["file"], r["device"], r["batch"],
             "{:.3f}".format(r["latency_ms"]["p50"]), "{:.3f}".format(r["latency_ms"]["p99"]),
             "{:.1f}".format(r["throughput_ips"]),
             "-" if r["accuracy"] is None else "{:.2%}".format(r["accuracy"]))
            for r in results]
    shown = target or (results[0].get("target") if results else None) or "the default target"
    console.print(table("bench {} on {}".format(artifact, shown),
                        ["runtime", "file", "device", "batch", "p50 ms", "p99 ms", "ips", "accuracy"], rows))
    if json_file:
        console.print("results: {}".format(json_file))
