"""``edgekit report``: results JSON -> Markdown comparison + PNG plots."""
from pathlib import Path
from typing import List

import typer

from edgekit.cli.common import console


def report(
    results: List[Path] = typer.Argument(..., help="Results JSON files from edgekit bench/deploy."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    baseline: str = typer.Option(None, "--baseline",
                                 help="Row to compare against too (text in 'target / runtime')."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
):
    """Compare benchmark results side by side (ratios vs the fastest) and plot them.

    Example: edgekit report laptop.json stick.json -o report/
    """
    from edgekit.report import report as do_report
    for p in do_report(results, out, baseline=baseline, force=force):
        console.print("wrote {}".format(p))
