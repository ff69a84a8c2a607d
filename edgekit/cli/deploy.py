"""``edgekit deploy``: bundle, push over SSH (atomically), preflight, remote bench, pull back."""
from pathlib import Path
from typing import List

import typer

from edgekit.cli.common import (RESIZE, ACCEPT_NEW_HOST_KEY, IDENTITY, KNOWN_HOSTS, REMOTE_DIR,
                                REMOTE_PYTHON, TARGET, console, err_console, kib, table)


def deploy(
    artifact: Path = typer.Argument(..., help="Artifact directory (exported for the target), or a bare .onnx file."),
    target: str = TARGET,
    host: List[str] = typer.Option([], "--host", help="[USER@]HOST[:PORT] or ~/.ssh/config alias "
                                                      "(repeatable)."),
    inventory: Path = typer.Option(None, "--inventory", help="Fleet TOML with [[device]] entries."),
    identity: Path = IDENTITY,
    known_hosts: Path = KNOWN_HOSTS,
    accept_new_host_key: bool = ACCEPT_NEW_HOST_KEY,
    remote_python: str = REMOTE_PYTHON,
    remote_dir: str = REMOTE_DIR,
    setup: bool = typer.Option(False, "--setup", help="Create a venv on the device (numpy + runtime)."),
    bench: bool = typer.Option(False, "--bench", help="Run the benchmark on the device, pull results."),
    json_file: Path = typer.Option(None, "--json", help="Write the pulled-back results JSON here."),
    docker: bool = typer.Option(False, "--docker", help="Run inside the target's image (its TOML's docker table)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent, send nothing."),
    runtime: str = typer.Option(None, "--runtime", help="Override the target's runtime."),
    device: str = typer.Option(None, "--device", help=(
        "OpenVINO device (default: the target's `device`; DEVICE.<id> picks one of "
        "several sticks; CPU runs the path on the CPU).")),
    iterations: int = typer.Option(100, "--iterations", help="Timed iterations on the device."),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up iterations on the device."),
    batch: int = typer.Option(1, "--batch"),
    model_file: str = typer.Option(None, "--model-file", help="Ship this artifact file (default: the "
                                                              "one exported for the target)."),
    test_samples: int = typer.Option(1000, "--test-samples", help="Test images shipped for accuracy."),
    data: str = typer.Option(None, "--data", help="Data spec whose test images are shipped "
                                                  "(default: the manifest's; a bare .onnx has none)."),
    ssh_config: Path = typer.Option(None, "--ssh-config", help="SSH config (default ~/.ssh/config)."),
    connect_timeout: float = typer.Option(10.0, "--connect-timeout", help="Seconds."),
    command_timeout: float = typer.Option(120.0, "--command-timeout",
                                          help="Seconds per remote step (bench gets 30x)."),
    min_free_mb: float = typer.Option(50.0, "--min-free-mb", help="Free disk the device must have."),
    resize: bool = RESIZE,
):
    """Copy what the device needs over SSH, check it, optionally benchmark there.

    Example: edgekit deploy out/seed --target NAME --host me@192.168.1.50 --bench --json dev.json

    Example: edgekit deploy model.onnx --host me@box --bench --data npz:images.npz
    """
    from edgekit.cli import fail
    from edgekit.deploy import deploy as do_deploy
    summary = do_deploy(artifact, target, hosts=host, inventory=inventory, identity=identity,
                        known_hosts=known_hosts, accept_new_host_key=accept_new_host_key,
                        remote_python=remote_python, remote_dir=remote_dir, setup=setup, bench=bench,
                        json_path=json_file, docker=docker, dry_run=dry_run, runtime=runtime,
                        device=device, iterations=iterations, warmup=warmup, batch=batch,
                        model_file=model_file,
                        test_samples=test_samples, data=data, ssh_config=ssh_config,
                        connect_timeout=connect_timeout, command_timeout=command_timeout,
                        min_free_mb=min_free_mb, log=lambda m: err_console.print(m, markup=False))
    if dry_run:
        for t, b in summary["bundles"].items():
            console.print(table("bundle for {} ({}, sha256 {})".format(t, b["runtime"], b["sha256"][:16]),
                                ["file", "bytes"], [(n, "{:,}".format(s)) for n, s in b["files"]]))
            console.print("would send {:,} bytes ({}) as one tar for {}".format(
                b["bytes"], kib(b["bytes"]), t))
        return
    rows = []
    for d in summary["devices"]:
        r = d.get("results") or {}
        lat = r.get("latency_ms") or {}
        rows.append((d["host"], d["target"], "ok" if d["ok"] else "FAILED",
                     "{:,}".format(d["bytes_sent"]),
                     "{:.3f}".format(lat["p50"]) if lat else "-",
                     "-" if r.get("accuracy") is None else "{:.2%}".format(r["accuracy"]),
                     (d.get("error") or "")[:120]))
    console.print(table("deploy {}".format(artifact),
                        ["host", "target", "status", "bytes sent", "p50 ms", "accuracy", "error"], rows))
    if json_file and summary["results"]:
        console.print("results: {}".format(json_file))
    failed = [d for d in summary["devices"] if not d["ok"]]
    if failed:
        if len(summary["devices"]) == 1:
            fail(failed[0]["error"], failed[0]["exit_code"])
        fail("{} of {} devices failed: {}".format(len(failed), len(summary["devices"]),
                                                  ", ".join(d["host"] for d in failed)), 1)
