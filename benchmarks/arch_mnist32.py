"""Issue 11 benchmark models: MNIST as 32x32x3 (zero-padded 28->32, grey repeated to 3 channels),
the zoo's MobileNetV2 alpha 0.35 / ResNet-style / Inception-style nets trained with plain Keras
(``tests.zoo.train_plain``: Adam, softmax head), saved as .h5 for ``edgekit compress``.

    .venv/bin/python benchmarks/arch_mnist32.py --out /work/cache/arch --epochs 2
    # writes OUT/mnist32.npz (data spec npz:OUT/mnist32.npz) and OUT/{mobilenetv2,resnet,inception}.h5
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def mnist32(src, dst):
    from edgekit.data import read_idx
    src = Path(src)

    def imgs(name):
        x = read_idx(next(src.glob(name + "*")))
        x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
        return np.repeat(x[..., None], 3, axis=-1).astype(np.uint8)

    def labels(name):
        return read_idx(next(src.glob(name + "*"))).astype(np.int64)
    np.savez(dst, x=imgs("train-images"), y=labels("train-labels"),
             x_test=imgs("t10k-images"), y_test=labels("t10k-labels"))


def refresh_bn(model, x, batches=200, batch_size=64, seed=0):
    """Re-estimate BatchNorm moving statistics with the weights frozen: training-mode forward
    passes at momentum 0.9. keras.applications' BN momentum 0.999 needs far more steps than
    2 epochs to settle (MobileNetV2 scored 13% in inference mode, 96% with batch statistics)."""
    bns = [l for l in _flat(model) if type(l).__name__ == "BatchNormalization"]
    old = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.9
    rs = np.random.RandomState(seed)
    for _ in range(batches):
        model(x[rs.choice(len(x), batch_size, replace=False)], training=True)
    for l, m in zip(bns, old):
        l.momentum = m
    return model


def _flat(model):
    for l in model.layers:
        if hasattr(l, "layers") and l.layers:
            yield from _flat(l)
        else:
            yield l


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/work/cache/arch")
    ap.add_argument("--mnist", default=str(Path(__file__).resolve().parent.parent.parent
                                           / "shared" / "datasets" / "mnist"))
    ap.add_argument("--models", default="mobilenetv2,resnet,inception")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--refresh-only", action="store_true",
                    help="only re-estimate BN statistics of the saved OUT/NAME.h5 models")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "mnist32.npz"
    if not npz.exists():
        mnist32(a.mnist, npz)
    from edgekit.data import load_data
    from edgekit.models import keras_accuracy
    from tests.zoo import build, train_plain
    ds = load_data("npz:{}".format(npz))
    log = {}
    if (out / "train_log.json").exists():
        log = json.loads((out / "train_log.json").read_text())
    for name in a.models.split(","):
        t0 = time.time()
        if a.refresh_only:
            from edgekit.models import load_model
            model = load_model(out / (name + ".h5"))
        else:
            model = build(name, ds.input_shape, ds.num_classes, head="softmax")
            train_plain(model, ds.x_train, ds.y_train, epochs=a.epochs, batch_size=a.batch_size,
                        lr=1e-3)
        refresh_bn(model, ds.x_train)
        model.save(str(out / (name + ".h5")), include_optimizer=False)
        log[name] = {"test_accuracy": keras_accuracy(model, ds.x_test, ds.y_test),
                     "val_accuracy": keras_accuracy(model, ds.x_val, ds.y_val),
                     "epochs": a.epochs, "batch_size": a.batch_size, "train_images": len(ds.x_train),
                     "bn_refresh": "200 x 64 training images, momentum 0.9, weights frozen",
                     "seconds": round(time.time() - t0, 1) + log.get(name, {}).get("seconds", 0)}
        print(name, log[name], flush=True)
        (out / "train_log.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
