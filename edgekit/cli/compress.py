"""``edgekit compress``: one command for every compression method (see edgekit.compress)."""
from pathlib import Path

import typer

from edgekit.cli.common import console, kib, pct


def compress(
    model: Path = typer.Argument(..., help="Model: artifact dir, .h5/.keras, SavedModel dir, or .onnx (quantize, knn-slice)."),
    method: str = typer.Option(..., "--method", help="prune | quantize | distill | knn-slice"),
    data: str = typer.Option(..., "--data", help="digits | mnist:DIR | folder:DIR | npz:FILE"),
    out: Path = typer.Option(..., "-o", "--out", help="Artifact directory to create."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    max_drop: float = typer.Option(None, "--max-drop", help="Most validation accuracy (points) the result may lose; over it nothing is written (default 1.0)."),
    allow_drop: bool = typer.Option(None, "--allow-drop", help="Write the result even when it loses more than --max-drop."),
    preprocess: str = typer.Option(None, "--preprocess", help="Input the model expects: unit (raw/255) | symmetric (raw/127.5-1) | raw | imagenet (default: raw if the model has a Rescaling layer, else unit)."),
    scale: float = typer.Option(None, "--scale", help="Explicit preprocessing: x = (pixel*SCALE - MEAN) / STD on 0..255 pixels."),
    mean: str = typer.Option(None, "--mean", help="Explicit preprocessing: MEAN (one value or one per channel, comma-separated)."),
    std: str = typer.Option(None, "--std", help="Explicit preprocessing: STD (one value or one per channel)."),
    epochs: int = typer.Option(None, "--epochs", help="prune/distill/--qat: most fine-tuning epochs (default: scaled to the data)."),
    lr: float = typer.Option(None, "--lr", help="prune/quantize --qat/distill: learning rate."),
    batch_size: int = typer.Option(None, "--batch-size", help="prune/quantize --qat/distill."),
    sparsity: float = typer.Option(None, "--sparsity", help="prune: target sparsity in (0,1) (default 0.8)."),
    structured: bool = typer.Option(None, "--structured", help="prune: remove whole conv channels by coupled group (Add/Concatenate/depthwise follow; L1)."),
    ratio: float = typer.Option(None, "--ratio", help="prune --structured: fraction of filters removed (default 0.5)."),
    keep: str = typer.Option(None, "--keep", help="prune --structured: channels kept, LAYER=N[,LAYER=N] (the layer's whole group)."),
    dense_width: int = typer.Option(None, "--dense-width", help="prune: shrink the first hidden Dense to N units."),
    target_macs: float = typer.Option(None, "--target-macs", help="prune --structured: remove the globally weakest conv channels until MACs <= this fraction of the original (e.g. 0.5)."),
    precision: str = typer.Option(None, "--precision", help="quantize: int8 (default) | fp16."),
    formats: str = typer.Option(None, "--formats", help="quantize: tflite,onnx,openvino (default: all)."),
    calibration_samples: int = typer.Option(None, "--calibration-samples", help="quantize: training images for calibration (default 200)."),
    calibration_data: str = typer.Option(None, "--calibration-data", help="quantize: calibrate on this spec's training split instead."),
    io: str = typer.Option(None, "--io", help="quantize: TFLite input/output type, float | int8."),
    onnx_activations: str = typer.Option(None, "--onnx-activations", help="quantize: ONNX activations uint8 | int8."),
    qat: bool = typer.Option(None, "--qat", help="quantize: quantization-aware training (tfmot), then int8 TFLite."),
    target: str = typer.Option(None, "--target", help="quantize: refuse precisions the target cannot run."),
    student: str = typer.Option(None, "--student", help="distill: student architecture (tiny, ...)."),
    width: float = typer.Option(None, "--width", help="distill: width multiplier in (0,1] for a derived student."),
    depthwise: bool = typer.Option(None, "--depthwise", help="distill: SeparableConv2D in the derived student."),
    resolution: float = typer.Option(None, "--resolution", help="distill: the derived student sees r-scaled images (a Resizing first layer; ~r^2 MACs)."),
    temperature: float = typer.Option(None, "--temperature", help="distill: softmax temperature (default 4)."),
    alpha: float = typer.Option(None, "--alpha", help="distill: weight of the hard-label loss (default 0.1)."),
    cut: str = typer.Option(None, "--cut", help="knn-slice: layer NAME, INDEX or auto."),
    k: int = typer.Option(None, "--k", help="knn-slice: neighbours (default: chosen on validation)."),
    prototypes: int = typer.Option(None, "--prototypes", help="knn-slice: k-means prototypes per class."),
    dims: int = typer.Option(None, "--dims", help="knn-slice: PCA dimensions (0: no PCA)."),
    pool: str = typer.Option(None, "--pool", help="knn-slice: pooling window before the head: avgN | maxN | N (avg)."),
    int8: bool = typer.Option(None, "--int8/--no-int8", help="knn-slice: store prototypes as int8."),
    int8_weights: bool = typer.Option(None, "--int8-weights", help="knn-slice: store trunk kernels and PCA as int8."),
    objective: str = typer.Option(None, "--objective", help="knn-slice --cut auto: accuracy | size | latency."),
    max_bytes: str = typer.Option(None, "--max-bytes", help="knn-slice: size limit in bytes (default: the input model's bytes; 'none': no limit)."),
    cut_candidates: str = typer.Option(None, "--cut-candidates", help="knn-slice --cut auto: blocks (default: block ends) | all (every conv/pool unit)."),
    min_accuracy: float = typer.Option(None, "--min-accuracy", help="knn-slice --cut auto: accuracy floor (0-1)."),
    evolve: str = typer.Option(None, "--evolve", help="knn-slice: cma | pso (evolve the trunk's kernels)."),
    strategy: str = typer.Option(None, "--strategy", help="evolution: serial | parallel."),
    generations: int = typer.Option(None, "--generations"),
    population: int = typer.Option(None, "--population"),
    time_budget: float = typer.Option(None, "--time-budget", help="evolution: seconds, keeps the best so far."),
    init: str = typer.Option(None, "--init", help="evolution: backprop | random."),
    seed: int = typer.Option(None, "--seed"),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="evolution: checkpoint/resume directory."),
    executor: str = typer.Option(None, "--executor", help="evolution: local | dask://HOST:PORT."),
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
    if scale is not None or mean is not None or std is not None:
        from edgekit.adapt import parse_preprocess
        parse_preprocess(preprocess, scale, mean, std)  # one clear error for a bad combination
        preprocess = {"scale": scale, "mean": mean, "std": std}
    given = {"max_drop": max_drop, "allow_drop": allow_drop, "preprocess": preprocess,
             "cut": cut, "k": k, "prototypes": prototypes, "dims": dims, "pool": pool,
             "int8": int8, "int8_weights": int8_weights, "objective": objective,
             "max_bytes": _max_bytes(max_bytes), "cut_candidates": cut_candidates,
             "min_accuracy": min_accuracy, "evolve": evolve, "strategy": strategy,
             "generations": generations, "population": population, "time_budget": time_budget,
             "init": init, "seed": seed, "checkpoint": checkpoint, "executor": executor,
             "epochs": epochs, "lr": lr, "batch_size": batch_size, "sparsity": sparsity,
             "structured": structured, "ratio": ratio, "keep": keep, "dense_width": dense_width,
             "target_macs": target_macs,
             "precision": precision, "formats": formats, "calibration_samples": calibration_samples,
             "calibration_data": calibration_data, "io": io, "onnx_activations": onnx_activations,
             "qat": qat, "target": target, "student": student, "width": width,
             "depthwise": depthwise, "resolution": resolution, "temperature": temperature,
             "alpha": alpha}
    params = {key: v for key, v in given.items() if v is not None}
    from edgekit.compress import METHODS, check_params
    from edgekit.errors import EdgekitError
    if method not in METHODS:
        raise EdgekitError("unknown compression method {!r}; choose one of: {}".format(
            method, ", ".join(sorted(METHODS))))
    check_params(method, params)
    art = do_compress(model, method, data, out, force=force, **params)
    m = art.manifest["metrics"]
    if "before" in m:
        _before_after(method, art, m)
        return
    console.print("{} -> {}: test accuracy {}, {} on disk (every byte inference needs)".format(
        method, art.path, pct(m.get("accuracy")), kib(m.get("bytes"))))


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


def _max_bytes(text):
    """``--max-bytes``: a byte count (``74000``, ``74_000``) or ``none`` (no limit)."""
    from edgekit.errors import EdgekitError
    if text is None:
        return None
    t = text.strip().lower().replace("_", "").replace(",", "")
    if t == "none":
        return "none"
    if not t.isdigit() or int(t) < 1:
        raise EdgekitError("--max-bytes must be a positive byte count or 'none', got {!r}"
                           .format(text))
    return int(t)


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
