"""Every compression method on a small model, quickly: what ``edgekit demo`` shows.

Settings sized for the ``digits`` data set (seconds per method on 2 CPU cores, see the
README's Compression section); each row holds before/after accuracy, params, MACs, bytes.

Example::

    rows = quick_compress("out/demo/tiny", "digits", "out/demo/compress")
    for r in rows: print(r["method"], r["accuracy"], r["bytes"])
"""
import time
from pathlib import Path

# method label -> (compress method, params): quick settings for digits-sized models
QUICK = {
    "prune": ("prune", {"sparsity": 0.5, "epochs": 2, "batch_size": 32}),
    "prune-structured": ("prune", {"structured": True, "ratio": 0.5, "epochs": 3, "batch_size": 32}),
    "quantize": ("quantize", {"calibration_samples": 100, "formats": "tflite,onnx"}),
    "distill": ("distill", {"width": 0.5, "epochs": 8, "batch_size": 32}),
}


def quick_compress(model, data, out_dir, methods=tuple(QUICK), force=True, progress=False,
                   epochs=None, on_done=None):
    """Run each of ``methods`` (keys of :data:`QUICK`) on ``model``; artifacts go to
    ``out_dir/<method>``. Returns one dict per method: method, artifact, seconds, accuracy,
    params, macs, bytes and their ``before_*`` values.

    ``epochs`` overrides every method's fine-tuning / training epochs (e.g. 1 on MNIST, where
    one epoch is 54,000 images); ``on_done(row)`` is called after each method.
    """
    from edgekit.compress import compress
    rows = []
    for label in methods:
        method, params = QUICK[label]
        params = dict(params)
        if epochs is not None and "epochs" in params:
            params["epochs"] = int(epochs)
            params.pop("batch_size", None)  # the method's default batch for big data sets
        t0 = time.time()
        art = compress(model, method, data, Path(out_dir) / label, force=force,
                       progress=progress, **params)
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
