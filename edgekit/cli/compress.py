"""``edgekit compress``: one command for every compression method (see edgekit.compress).

Its method options are not written here: they are generated from the declarations in
:mod:`edgekit.compress.options` (flag, help, metavar) and passed as the user typed them to ``edgekit.compress.compress``,
which converts and checks them exactly as it does for Python callers (one error text)."""
from pathlib import Path

import typer

from edgekit.cli.common import RESIZE, console, kib, pct


def compress(
    model: Path = typer.Argument(..., help="Model: artifact dir, .h5/.keras, SavedModel dir, or .onnx (quantize, knn-slice)."),
    method: str = typer.Option(..., "--method", help="prune | quantize | distill | knn-slice"),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    out: Path = typer.Option(..., "-o", "--out", help="Artifact directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    resize: bool = RESIZE,
    **options
):
    """Compress a trained CNN; the artifact's manifest records what was traded (before/after).

    Example: edgekit compress out/seed --method prune --sparsity 0.8 --data digits -o out/pruned

    Example: edgekit compress out/seed --method quantize --calibration-samples 500 --data digits -o out/int8

    Example: edgekit compress model.onnx --method quantize --data npz:images.npz -o out/int8   (any framework's ONNX: int8 ONNX + OpenVINO)

    Example: edgekit compress out/seed --method knn-slice --data mnist:../shared/datasets/mnist -o out/knn --cut auto

    Example: edgekit compress mobilenet.h5 --method prune --sparsity 0.5 --preprocess symmetric --data folder:imgs -o out/p50

    Every method is checked on the validation split: a result more than --max-drop points
    below the input is not written (exit 1) unless --allow-drop.
    """
    from edgekit.compress import compress as do_compress
    given = {name: v for name, v in options.items() if v is not None}
    art = do_compress(model, method, data, out, force=force, **given)
    m = art.manifest["metrics"]
    if "before" in m:
        _before_after(method, art, m)
        return
    console.print("{} -> {}: test accuracy {}, {} on disk (every byte inference needs)".format(
        method, art.path, pct(m.get("accuracy")), kib(m.get("bytes"))))


def _with_declared_options(fn):
    """``fn``'s signature with one keyword option per declared compression option
    (:func:`edgekit.compress.options.cli_parameters`) in place of ``**options``."""
    import inspect
    from edgekit.compress.options import cli_parameters
    sig = inspect.signature(fn)
    fixed = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=fixed + cli_parameters())
    return fn


compress = _with_declared_options(compress)


def _format_rows(b, m):
    """One row per written file (quantize): the fp32 model's accuracy before, the file's after
    (each run by its own runtime), and its bytes against the same format in fp32."""
    rows = []
    for name, f in (m.get("formats") or {}).items():
        drop = None if b.get("accuracy") is None else 100 * (b["accuracy"] - f["accuracy"])
        rows.append(("test accuracy, " + name, pct(b.get("accuracy")), "{}{}".format(
            pct(f["accuracy"]), "" if drop is None else " ({:+.2f} pt)".format(-drop))))
        rows.append(("bytes, " + name, "-" if not f.get("fp32_bytes") else
                     "{:,}".format(f["fp32_bytes"]), "{:,}".format(f["bytes"])))
    return rows


def _before_after(method, art, m):
    from edgekit.cli.common import table
    b = m["before"]

    def num(v):
        return "-" if v is None else "{:,}".format(v)
    rows = [("test accuracy", pct(b.get("accuracy")), pct(m.get("accuracy")))]
    g = m.get("guard")
    if g:
        rows.append(("validation accuracy", pct(g["base_accuracy"]), "{} ({:+.2f} pt; guard {} "
                     "{:g} pt{})".format(pct(g["accuracy"]), -g["drop_pts"],
                                         "within" if g["passed"] else "OVER", g["max_drop_pts"],
                                         ", --allow-drop" if g.get("allowed_drop") else "")))
    rows += [("params", num(b.get("params")), num(m.get("params"))),
             ("nonzero params", num(b.get("nonzero_params")), num(m.get("nonzero_params"))),
             ("MACs", num(b.get("macs")), num(m.get("macs"))),
             ("bytes on disk", num(b.get("bytes")), num(m.get("bytes")))]
    if "gzip_bytes" in m:
        rows.append(("gzip bytes", num(b.get("gzip_bytes")), num(m.get("gzip_bytes"))))
    rows += _format_rows(b, m)
    console.print(table("{} -> {}".format(method, art.path), ["", "before", "after"], rows))
    for name, f in (m.get("formats") or {}).items():
        console.print("  {}: test accuracy {}, {} ({:.1f}x smaller than fp32)".format(
            name, pct(f["accuracy"]), kib(f["bytes"]), f["ratio_vs_fp32"] or 0))
        if f.get("float_layers"):
            console.print("    kept in float: " + ", ".join(f["float_layers"]))
        if f.get("size_note"):
            console.print("    size: " + f["size_note"])
    if m.get("layer_sparsity"):
        console.print("  sparsity reached per layer: " + ", ".join(
            "{} {:.1%}".format(n, s) for n, s in m["layer_sparsity"].items()))
    if m.get("note"):
        console.print("  note: " + m["note"])
    if (m.get("guard") or {}).get("note"):
        console.print("  guard: " + m["guard"]["note"])
    from edgekit.compress._common import stop_sentence
    ran = stop_sentence(art.manifest["method"].get("params"), method)
    if ran:
        console.print("  " + ran)
