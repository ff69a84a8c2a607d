"""k-NN slicing at scale: time and peak RSS of ``--cut auto`` as the data grows.

Data: MNIST resized to 96x96x3 (bilinear, grey in 3 channels, PIL) — ``N`` training images
(the first N of MNIST's training set; the loader carves 10% of them for validation) and a
fixed test split (the first ``--test`` MNIST test images), saved as a uint8 ``.npz``.
Model: ``keras.applications.MobileNetV2`` (alpha 0.35, ``weights=None``, 96x96x3, softmax),
trained with plain Keras as a user would (its BatchNorm momentum lowered to 0.9 so a short
training from scratch gives usable inference statistics; see issue 17) on images the scale
runs do not use (MNIST training images 50,000-54,999).

Each run is the CLI, in a child process under ``/usr/bin/time -v`` (wall seconds, peak RSS):
``edgekit compress MODEL --method knn-slice --data npz:FILE --cut auto -o OUT [extra]``.
With ``--gap-cnn MODEL`` the MNIST (28x28) ``gap-cnn`` figure is run too:
``--cut auto --max-bytes 74000 --int8 --int8-weights`` on the full MNIST.

Example (the figures in BENCHMARKS.md)::

    .venv/bin/python benchmarks/knn_scale.py --out /tmp/knn-scale --sizes 1400 1000 5000 20000 \\
        --json /tmp/knn-scale/scale.json
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SIDE = 96
TRAIN_SLICE = (50000, 55000)      # MNIST training images the model is trained on


def mnist_arrays(mnist_dir):
    from edgekit.data import read_idx
    d = Path(mnist_dir)

    def one(prefix):
        return read_idx(sorted(p for p in d.iterdir() if p.name.startswith(prefix))[0])
    return one("train-images"), one("train-labels"), one("t10k-images"), one("t10k-labels")


def resize(images, side=SIDE):
    """(N, 28, 28) uint8 -> (N, side, side, 3) uint8, bilinear (PIL)."""
    from PIL import Image
    out = np.empty((len(images), side, side, 3), np.uint8)
    for i, im in enumerate(images):
        out[i, :, :, :] = np.asarray(Image.fromarray(im).resize((side, side), Image.BILINEAR))[
            ..., None]
    return out


def make_npz(path, x, y, x_test, y_test):
    if not Path(path).exists():
        tmp = Path(str(path) + ".tmp.npz")
        np.savez(tmp, x=resize(x), y=y, x_test=resize(x_test), y_test=y_test)
        tmp.rename(path)
    return path


def train_mobilenetv2(path, x, y, epochs):
    """Plain Keras: MobileNetV2 0.35, softmax, Adam, sparse CE on probabilities."""
    if Path(path).exists():
        return path
    from edgekit._tf import keras, set_seed
    k = keras()
    set_seed(0)
    model = k.applications.MobileNetV2(input_shape=(SIDE, SIDE, 3), alpha=0.35, weights=None,
                                       classes=10)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9
    model.compile(optimizer=k.optimizers.Adam(1e-3),
                  loss=k.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    model.fit(resize(x).astype(np.float32) / 255.0, y, epochs=epochs, batch_size=64, verbose=2)
    model.save(str(path), include_optimizer=False)
    return path


def timed_cli(args, log, code="import sys; from edgekit.cli import main; main(sys.argv[1:])"):
    """Run ``edgekit ARGS`` (or python ``code``) under /usr/bin/time -v:
    (exit code, wall s, peak RSS MB)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", code] + [str(a) for a in args]
    t = time.time()
    with open(log, "w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    wall = time.time() - t
    text = Path(log).read_text()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return code, wall, int(rss.group(1)) / 1024.0 if rss else None


def load_avg():
    return [round(v, 2) for v in os.getloadavg()]


def summary(out_dir):
    m = json.loads((Path(out_dir) / "manifest.json").read_text())
    mm, p = m["metrics"], m["method"]["params"]
    return {"test_accuracy": mm["accuracy"], "agreement": mm["agreement"], "bytes": mm["bytes"],
            "bytes_predicted": mm["bytes_predicted"], "input_bytes": mm.get("input_bytes"),
            "cut": p["cut"], "dims": p["dims"], "prototypes_per_class": p["prototypes_per_class"],
            "reduction": p["reduction"], "int8_prototypes": p["int8_prototypes"], "k": p["k"],
            "val_accuracy": mm["val_accuracy"], "candidates": len(mm["sweep"]),
            "search_validation_samples": p["search_validation_samples"],
            "reference_samples": p["reference_samples"], "pca_fit_samples": p["pca_fit_samples"],
            "budget": p["max_bytes"], "budget_source": p["max_bytes_source"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", default=str(REPO.parent / "shared" / "datasets" / "mnist"))
    ap.add_argument("--out", default="/tmp/knn-scale")
    ap.add_argument("--sizes", type=int, nargs="*", default=[1400, 1000, 5000, 20000])
    ap.add_argument("--test", type=int, default=2000, help="MNIST test images (resized)")
    ap.add_argument("--epochs", type=int, default=3, help="MobileNetV2 training epochs")
    ap.add_argument("--extra", default="", help="more CLI options for every run")
    ap.add_argument("--gap-cnn", default=None, help="a trained MNIST gap-cnn (.h5/artifact)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else {}
    res.setdefault("machine", "2-core x86-64 VM, CPU only, shared with other agents' jobs")
    res.setdefault("runs", {})
    xtr, ytr, xte, yte = mnist_arrays(a.mnist)
    model = train_mobilenetv2(out / "mobilenetv2_035_96.h5", xtr[slice(*TRAIN_SLICE)],
                              ytr[slice(*TRAIN_SLICE)], a.epochs)
    res["model"] = {"path": str(model), "bytes": Path(model).stat().st_size,
                    "trained_on": "MNIST train[{}:{}] at 96x96x3, {} epochs".format(
                        TRAIN_SLICE[0], TRAIN_SLICE[1], a.epochs)}

    def save():
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    for n in a.sizes:
        data = make_npz(out / "mnist96_{}.npz".format(n), xtr[:n], ytr[:n], xte[:a.test],
                        yte[:a.test])
        run = out / "knn-{}".format(n)
        args = ["compress", model, "--method", "knn-slice", "--data", "npz:{}".format(data),
                "-o", run, "--force", "--cut", "auto"] + a.extra.split()
        before = load_avg()
        code, wall, rss = timed_cli(args, out / "knn-{}.log".format(n))
        row = {"images": n, "exit": code, "wall_s": round(wall, 1), "peak_rss_mb": rss,
               "load_before": before, "load_after": load_avg(),
               "command": "edgekit " + " ".join(str(x) for x in args)}
        if code == 0:
            row.update(summary(run))
        # the data loader alone (edgekit.data.load_data), for what of the peak is the data set
        _, load_s, load_rss = timed_cli(["npz:{}".format(data)], out / "load-{}.log".format(n),
                                        "import sys; from edgekit.data import load_data; "
                                        "load_data(sys.argv[1])")
        row.update(load_data_s=round(load_s, 1), load_data_peak_rss_mb=load_rss)
        res["runs"][str(n)] = row
        print(json.dumps(row, indent=1), flush=True)
        save()
    if a.gap_cnn:
        run = out / "gap-cnn-knn"
        args = ["compress", a.gap_cnn, "--method", "knn-slice", "--data", "mnist:" + a.mnist,
                "-o", run, "--force", "--cut", "auto", "--max-bytes", "74000", "--int8",
                "--int8-weights"]
        before = load_avg()
        code, wall, rss = timed_cli(args, out / "gap-cnn-knn.log")
        row = {"exit": code, "wall_s": round(wall, 1), "peak_rss_mb": rss, "load_before": before,
               "load_after": load_avg(), "command": "edgekit " + " ".join(str(x) for x in args)}
        if code == 0:
            row.update(summary(run))
        res["gap_cnn"] = row
        print(json.dumps(row, indent=1), flush=True)
        save()
    return 0

if __name__ == "__main__":
    sys.exit(main())
