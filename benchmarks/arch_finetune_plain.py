"""Fine-tune a pruned artifact with plain Keras (as the teachers were trained: Adam, sparse CE on
the softmax head, then BN statistics re-estimated) and print its test accuracy. A stand-in for
edgekit's own fine-tuning where that is not on main yet (see BENCHMARKS.md, issue 11).

    .venv/bin/python benchmarks/arch_finetune_plain.py /work/cache/arch/runs8/mobilenetv2-prune --epochs 1
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("artifact")
    ap.add_argument("--data", default="npz:/work/cache/arch/mnist32.npz")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-4)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arch_mnist32 import refresh_bn
    from edgekit.data import load_data
    from edgekit.models import keras_accuracy, load_model
    from tests.zoo import train_plain
    ds = load_data(a.data)
    m = load_model(a.artifact)
    t0 = time.time()
    train_plain(m, ds.x_train, ds.y_train, epochs=a.epochs, batch_size=32, lr=a.lr)
    refresh_bn(m, ds.x_train)
    print(json.dumps({"artifact": a.artifact, "epochs": a.epochs, "lr": a.lr,
                      "test_accuracy": keras_accuracy(m, ds.x_test, ds.y_test),
                      "val_accuracy": keras_accuracy(m, ds.x_val, ds.y_val),
                      "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
