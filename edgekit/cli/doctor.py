"""``edgekit doctor``: versions, and whether this machine can run a target."""
from pathlib import Path

import typer

from edgekit.cli.common import console, print_json, table


def doctor(
    artifact: Path = typer.Argument(None, help="Also check this artifact (or a bare .onnx file) against the target."),
    target: str = typer.Option(None, "--target", help="A target name from targets/*.toml."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
):
    """List installed versions (without importing tensorflow) and what a target still needs.

    Exit 0 when the target can run here, 2 when hardware or a runtime is missing, 1 when the
    artifact cannot run on the target as it is.

    Example: edgekit doctor --target NAME   (NAME: a targets/*.toml)
    """
    from edgekit.doctor import doctor as run_doctor
    from edgekit.errors import EdgekitError, HardwareMissing, MissingDependency
    rep = run_doctor(target=target, artifact=artifact)
    if as_json:
        print_json(rep)
    else:
        _print(rep)
    if rep.get("artifact", {}).get("problems"):
        raise EdgekitError("{} cannot run on {}: {}".format(
            artifact, rep["target"]["name"], "; ".join(rep["artifact"]["problems"])))
    t = rep.get("target")
    if t and not t["ready"]:
        first = t["missing"][0]
        cls = HardwareMissing if any(m["hardware"] for m in t["missing"]) else MissingDependency
        raise cls("{} cannot run here: missing {} ({})".format(
            t["name"], "; ".join(m["what"] for m in t["missing"]), first["install"]))


def _print(rep):
    py = rep["python"]
    rows = [("python", py["version"], py["executable"])]
    for name, ver in rep["packages"].items():
        rows.append((name, ver or "missing", ""))
    t = table("edgekit doctor", ["package", "version", ""], rows)
    console.print(t)
    tg = rep.get("target")
    if tg:
        status = "[green]ready[/green]" if tg["ready"] else "[red]not ready[/red]"
        console.print("target {}{}: {}".format(tg["name"], " ({})".format(tg["description"])
                                               if tg.get("description") else "", status))
        for note in tg["notes"]:
            console.print("  " + note)
        for m in tg["missing"]:
            console.print("  missing: {}\n    -> {}".format(m["what"], m["install"]),
                          markup=False)
    art = rep.get("artifact")
    if art:
        if art["problems"]:
            console.print("artifact {}: {} problem(s)".format(art["path"], len(art["problems"])))
            for p in art["problems"]:
                console.print("  " + p, markup=False)
        else:
            console.print("artifact {}: runs on {}".format(art["path"], tg["name"]))
