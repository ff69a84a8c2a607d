"""The seed talk's evolution table on MNIST: CMA-ES and PSO on the 18,816 conv weights (issue 31).

Rows: the backprop trunk, serial CMA-ES (pycma) and serial PSO, each with the same k-NN
(k = 9) on the flattened conv1 -> conv2 -> max-pool features of ``seed-mnist-cnn`` (the Keras
MNIST example CNN the talk used). Columns (the talk's):

``4k-5ep``   CNN trained 5 epochs on 4,000 training images; k-NN references = those 4,000,
             queries = 1,000 test images;
``60k-5ep``  CNN trained 5 epochs; references = all 60,000 training images, queries = all
             10,000 test images;
``4k-20ep``  as ``4k-5ep`` with 20 epochs of training.

Stated by the talk and kept: serial conv1 -> conv2, k = 9, 60,000 references / 10,000 test
images, 5 / 20 epochs. Our own choices (not stated by the talk), recorded in the JSON:

- distance: squared Euclidean on the raw (ReLU, max-pooled) features, no normalisation,
  majority vote with ties to the nearer neighbours — the k-NN edgekit's knn-slice uses;
- CNN training: edgekit's ``fit`` (Adam 1e-3, batch 128, seeded);
- fitness (:class:`edgekit.compress.evolve_fitness.BatchKnnFitness`): leave-one-out k-NN on a
  fresh seeded mini-batch of the column's training images every generation, plus a margin
  term; the returned trunk and the early stop are chosen on a **held-out** validation split
  the fitness never sees (60k column: edgekit's 6,000-image validation split, the CNN is
  trained on the other 54,000 — all 60,000 are test-time references as in the talk; 4k
  columns: 1,000 other training images; their 4,000 are the CNN's training set, the fitness
  pool and the test-time references).

The "test per generation" curve of the plot is measured after each run on the candidates the
run held out-evaluated (every ``--holdout-every`` generations), with the column's test
protocol (for the 60k column on ``--curve-test`` test images against ``--curve-refs``
references, to keep it affordable; the table's figures always use the full protocol).

Example (the run recorded in benchmarks/results/evolve_table_*.json)::

    PYTHONPATH=. .venv/bin/python benchmarks/evolve_table.py --columns 4k-5ep,4k-20ep,60k-5ep \\
        --budget 4k-5ep=240,4k-20ep=240,60k-5ep=300 --json benchmarks/results/evolve_table.json
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = "mnist:/work/shared/datasets/mnist"
COLUMNS = {
    "4k-5ep": {"train": 4000, "holdout": 1000, "test": 1000, "epochs": 5},
    "60k-5ep": {"train": None, "holdout": None, "test": None, "epochs": 5},
    "4k-20ep": {"train": 4000, "holdout": 1000, "test": 1000, "epochs": 20},
}
TALK = {  # the seed talk's test accuracies (%), 18.8k conv weights, DEAP, 6 cores
    "quote": "MNIST 60k/10k: CMA-ES 98.57% (24 h), PSO 98.52% (12 h); 4,000/1,000 subsets at 5 and "
             "20 epochs: 97.5% / 97.5% CMA-ES, 97.3% PSO",
    "4k-5ep": {"cma": 97.5, "pso": 97.3},
    "60k-5ep": {"cma": 98.57, "pso": 98.52},
    "4k-20ep": {"cma": 97.5, "pso": None},
}


def _subset(x, y, n, seed):
    """A seeded class-stratified subset of ``n`` images (all when n is None)."""
    if n is None or n >= len(x):
        return x, y
    from sklearn.model_selection import train_test_split
    idx, _ = train_test_split(np.arange(len(x)), train_size=n, stratify=y, random_state=seed)
    idx = np.sort(idx)
    return x[idx], y[idx]


def column_data(ds, name, seed):
    """The column's images: CNN training / fitness pool, held-out split, test refs and queries."""
    c = COLUMNS[name]
    x_tr, y_tr = _subset(ds.x_train, ds.y_train, c["train"], seed)
    x_ho, y_ho = _subset(ds.x_val, ds.y_val, c["holdout"], seed + 1)
    x_te, y_te = _subset(ds.x_test, ds.y_test, c["test"], seed + 2)
    if c["train"] is None:   # the talk's 60,000 references = edgekit's train + validation splits
        x_ref, y_ref = np.concatenate([ds.x_train, ds.x_val]), np.concatenate([ds.y_train, ds.y_val])
    else:
        x_ref, y_ref = x_tr, y_tr
    return SimpleNamespace(name=name, epochs=c["epochs"], x_train=x_tr, y_train=y_tr, x_val=x_ho,
                           y_val=y_ho, x_ref=x_ref, y_ref=y_ref, x_test=x_te, y_test=y_te)


def trained_model(cd, work_dir, seed):
    """seed-mnist-cnn trained ``cd.epochs`` epochs on ``cd.x_train`` (cached in ``work_dir``)."""
    from edgekit._tf import keras, tf
    from edgekit.models import build, fit
    path = Path(work_dir) / "seed-mnist-cnn_{}_seed{}.h5".format(cd.name, seed)
    if path.exists():
        return keras().models.load_model(str(path), compile=False)
    keras().utils.set_random_seed(seed)
    tf().config.experimental.enable_op_determinism()
    model = build("seed-mnist-cnn", cd.x_train.shape[1:], 10)
    fit(model, cd, cd.epochs, batch_size=128, lr=1e-3, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5")
    model.save(str(tmp), include_optimizer=False)
    os.replace(str(tmp), str(path))
    return model
