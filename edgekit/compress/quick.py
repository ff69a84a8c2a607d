"""Every compression method on a small model, quickly: what ``edgekit demo`` shows.

Each method runs with its defaults: fine-tuning budgeted to the data set and the accuracy
guard (``--max-drop 1``); a method the guard refuses gives a row saying so (``refused``, the
measured drop) instead of an artifact. Each row holds before/after accuracy, params, MACs, bytes.

Example::

    rows = quick_compress("out/demo/tiny", "digits", "out/demo/compress")
    for r in rows: print(r["method"], r["accuracy"], r["bytes"])
"""
import time
from pathlib import Path

# method label -> (compress method, params): quick settings for digits-sized models
QUICK = {
    "prune": ("prune", {"sparsity": 0.5}),
    "prune-structured": ("prune", {"structured": True, "ratio": 0.5}),
    "quantize": ("quantize", {"calibration_samples": 100, "formats": "tflite,onnx"}),
    "distill": ("distill", {"width": 0.5}),
}
TRAINS = ("prune", "distill")


def quick_compress(model, data, out_dir, methods=tuple(QUICK), force=True, progress=False,
                   epochs=None, on_done=None):
    """Run each of ``methods`` (keys of :data:`QUICK`) on ``model``; artifacts go to
    ``out_dir/<method>``. Returns one dict per method: method, artifact, seconds, accuracy,
    params, macs, bytes and their ``before_*`` values.

    ``epochs`` caps every method's fine-tuning / training epochs (default: the step budget);
    ``on_done(row)`` is called after each method. A row the guard refused has ``refused``
    (the one-line reason) and no artifact.
    """
    from edgekit.compress import compress
    from edgekit.compress.guard import GuardFailed
    rows = []
    for label in methods:
        method, params = QUICK[label]
        params = dict(params)
        if epochs is not None and method in TRAINS:
            params["epochs"] = int(epochs)
        t0 = time.time()
        try:
            art = compress(model, method, data, Path(out_dir) / label, force=force,
                           progress=progress, **params)
        except GuardFailed as exc:
            row = {"method": label, "artifact": None, "seconds": round(time.time() - t0, 1),
                   "refused": str(exc)}
            rows.append(row)
            if on_done is not None:
                on_done(row)
            continue
        m = art.manifest["metrics"]
        b = m["before"]
        row = {"method": label, "artifact": str(art.path), "seconds": round(time.time() - t0, 1)}
        for key in ("accuracy", "params", "macs", "bytes"):
            row[key] = m.get(key)
            row["before_" + key] = b.get(key)
        rows.append(row)
        if on_done is not None:
            on_done(row)
    return rows
