"""Evolutionary optimisation of a sliced CNN trunk's conv kernels for k-NN accuracy.

The seed talk spent 24 h (CMA-ES) and 12 h (PSO) on the 18,816 conv parameters of the
MNIST CNN trunk. Here the same search takes minutes: a *separable* (diagonal) CMA-ES from
pycma (``CMA_diagonal``: O(N) per sample instead of an N x N covariance), a vectorised
particle swarm, and a population fitness computed in batched TensorFlow calls that take
the weights as arguments (see :mod:`edgekit.compress.evolve.fitness`).

Strategies
    ``serial``   one conv layer's kernels + biases at a time, the rest frozen, layer by layer
                 (the generations and the time budget are shared equally among the layers);
    ``parallel`` the filters of every conv layer split into groups, each group an independent
                 sub-problem with its own optimiser; every generation all groups' populations
                 are evaluated in one batch, each with the other groups at the current best,
                 then the groups' improvements are plugged back together (the combination is
                 evaluated; if it is worse than the best single-group improvement, only that
                 one is kept).

Fitness: with ``batch_size`` set (issue 31, docs/evolve.md) a fresh seeded mini-batch of
training images per generation scored leave-one-out, and the returned weights chosen (and
stages stopped early) on a held-out validation split the fitness never sees; without it the
older fixed-subset fitness below, which the optimiser can fit (kept for its callers).

The starting point (backprop kernels, or a seeded Glorot-uniform draw with
``init="random"``) is the first best-so-far, so with ``init="backprop"`` the result is never
worse than the input on the validation fitness.

PSO: DEAP has no PSO algorithm to call — its PSO is a documentation example whose update rule
is user code over per-particle Python lists; pyswarms' ``optimize`` loop owns the iterations
and the global numpy RNG, which rules out per-generation checkpoints. So the swarm here is a
small hand-written vectorised global-best PSO with Clerc's constriction coefficients (the
rule of DEAP's example), whose RNG is a seeded ``numpy.random.Generator`` it owns.

Checkpoint/resume: with ``checkpoint=DIR`` every generation writes ``DIR/evolve_state.pkl``
(optimiser objects, stage, generation, best-so-far, logbook, numpy/python RNG states; via a
temp file + ``os.replace``) and ``DIR/logbook.json``. Calling again with the same arguments
resumes and reaches exactly the result of an uninterrupted run. A checkpoint written for
another model/data set (fingerprint) or other settings is refused with the reason.
The state file is a pickle: resume only from checkpoint dirs you wrote yourself.

Example::

    trunk, log = evolve_trunk(trunk, x_ref, y_ref, x_val, y_val, method="cma",
                              strategy="serial", time_budget=600, checkpoint="ckpt")
    print(log["fitness_before"]["accuracy"], log["fitness_after"]["accuracy"], log["plot_png"])
"""
import hashlib
import json
import math
import os
import pickle
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.compress.knn.cuts import layer_output
from edgekit.compress.evolve.executor import DASK_TIMEOUT, make_executor, parse_dask_address
from edgekit.compress.evolve.fitness import (BatchKnnFitness, KnnFitness, RefIndex, conv_slices, filter_groups,
                                             knn_scores, set_trunk_weights, trunk_spec)
from edgekit.errors import EdgekitError

METHODS = ("cma", "pso")
SPACES = ("channels", "kernels")      # evolve_channels (channels.py) | evolve_trunk (this module)
STRATEGIES = ("serial", "parallel")
INITS = ("backprop", "random")
CMA_VARIANTS = ("sep", "vd")
STATE_FILE = "evolve_state.pkl"
LOGBOOK_FILE = "logbook.json"
PLOT_FILE = "convergence.png"
STATE_VERSION = 1
MAX_GROUP_PARAMS = 5000   # parallel strategy: filters per group so that a group holds <= this
PSO_W, PSO_C1, PSO_C2 = 0.7298, 1.49618, 1.49618


class EvolutionInterrupted(Exception):
    """Raised by a callback to stop a run after its checkpoint was written (tests, tools)."""


# --------------------------------------------------------------------------- optimisers
class CmaOptimizer:
    """pycma's separable CMA-ES (diagonal covariance) on one sub-problem; maximises fitness."""

    name = "cma"

    def __init__(self, x0, stds, sigma, popsize, seed, variant="sep", noisy=False):
        import cma
        # An RNG of its own (pickled with the ES): pycma's default np.random.randn would pickle a
        # *copy* of numpy's global RandomState and a resumed run would drift from an uninterrupted one.
        self.rng = np.random.RandomState(int(seed))
        self.variant = variant
        self.opts = {"randn": self.rng.randn, "popsize": int(popsize),
                     "verbose": -9, "CMA_stds": np.asarray(stds, float), "maxiter": 10 ** 9,
                     "tolfun": 0, "tolflatfitness": 10 ** 9, "tolfunhist": 0, "tolstagnation": 10 ** 9,
                     "tolx": 0, "tolupsigma": 1e30, "tolconditioncov": False}
        if variant == "vd":
            # VD-CMA (Akimoto et al. 2014): covariance D (I + v v^T) D, pycma's GaussVDSampler
            from cma.restricted_gaussian_sampler import GaussVDSampler
            self.opts = GaussVDSampler.extend_cma_options(self.opts)
            self.opts["CMA_sampler_options"] = {"randn": self.rng.randn}
            # the sampler takes the scaling itself: CMA_stds would rescale twice
            scale = np.asarray(self.opts.pop("CMA_stds"))
            x0 = np.asarray(x0, float) / scale
            self.scale = scale
        else:
            # "sep": separable CMA-ES (diagonal covariance, for the 18k-dim kernel search);
            # "full": the full covariance, for small spaces (channels.py's 128 gains and biases)
            self.opts["CMA_diagonal"] = variant == "sep"
            self.scale = None
        self.es = cma.CMAEvolutionStrategy(np.asarray(x0, float), float(sigma), self.opts)
        self._asked = None

    def _x(self, X):
        X = np.asarray(X, float)
        return X * self.scale if self.scale is not None else X

    def candidate(self):
        """The distribution mean: CMA-ES's own estimate of the optimum (what noisy runs return)."""
        return np.asarray(self._x(self.es.mean), np.float32)

    def ask(self):
        self._asked = self.es.ask()
        return np.asarray(self._x(self._asked), np.float32)

    def tell(self, X, fit):
        self.es.tell(self._asked, [-float(f) for f in fit])
        self._asked = None

    def params(self):
        return {"variant": self.variant, "popsize": self.opts["popsize"], "sigma0": self.es.sigma0}


class PsoOptimizer:
    """Global-best particle swarm (Clerc constriction), vectorised over the swarm."""

    name = "pso"

    def __init__(self, x0, stds, sigma, popsize, seed, variant=None, noisy=False):
        self.rng = np.random.default_rng(int(seed))
        x0 = np.asarray(x0, np.float64)
        scale = np.asarray(stds, np.float64) * float(sigma)
        # noisy (mini-batch) fitness: half the evaluations re-score the personal bests on the
        # generation's batch, so a particle is compared with its best on the *same* images
        self.noisy = bool(noisy)
        n = max(2, int(popsize) // 2) if self.noisy else int(popsize)
        self.pos = x0[None, :] + scale[None, :] * self.rng.standard_normal((n, x0.size))
        self.pos[0] = x0
        self.vel = 0.1 * scale[None, :] * self.rng.standard_normal((n, x0.size))
        self.vmax = 2.0 * scale
        self.pbest = self.pos.copy()
        self.pbest_f = np.full(n, -np.inf)
        self.gbest, self.gbest_f = x0.copy(), -np.inf

    def ask(self):
        if self.noisy:
            return np.concatenate([self.pos, self.pbest]).astype(np.float32)
        return self.pos.astype(np.float32)

    def candidate(self):
        """The swarm's global best (by its personal bests' latest scores)."""
        return self.gbest.astype(np.float32)

    def tell(self, X, fit):
        fit = np.asarray(fit, float)
        if self.noisy:
            n = len(self.pos)
            fit, self.pbest_f = fit[:n], fit[n:].copy()
            self.gbest_f = -np.inf      # re-chosen among the re-scored personal bests
        better = fit > self.pbest_f
        self.pbest[better] = self.pos[better]
        self.pbest_f[better] = fit[better]
        j = int(np.argmax(self.pbest_f))
        if self.pbest_f[j] > self.gbest_f:
            self.gbest, self.gbest_f = self.pbest[j].copy(), float(self.pbest_f[j])
        r1 = self.rng.random(self.pos.shape)
        r2 = self.rng.random(self.pos.shape)
        self.vel = (PSO_W * self.vel + PSO_C1 * r1 * (self.pbest - self.pos)
                    + PSO_C2 * r2 * (self.gbest[None, :] - self.pos))
        self.vel = np.clip(self.vel, -self.vmax, self.vmax)
        self.pos = self.pos + self.vel

    def params(self):
        return {"w": PSO_W, "c1": PSO_C1, "c2": PSO_C2, "swarm": len(self.pos)}


OPTIMIZERS = {"cma": CmaOptimizer, "pso": PsoOptimizer}


# --------------------------------------------------------------------------- public API
def evolve_trunk(trunk_model, x_ref, y_ref, x_val, y_val, method="cma", strategy="serial",
                 generations=20, population=None, time_budget=None, init="backprop", seed=0,
                 checkpoint=None, executor="local", progress=True, k=9, ref_samples=1000,
                 val_samples=500, fingerprint=None, sigma=None, groups=None, callback=None,
                 dask_timeout=DASK_TIMEOUT, batch_size=None, holdout_refs=2000, holdout_every=1,
                 patience=None, margin_weight=0.25, cma_variant="sep", candidate_hook=None,
                 precision="float32", stage_share=None):
    """Evolve the conv kernels of ``trunk_model`` for k-NN accuracy; return ``(model, logbook)``.

    ``trunk_model`` (tf_keras, conv features out) gets the best weights found (in place).
    Fitness = k-NN (``k``) accuracy of ``val_samples`` validation images against
    ``ref_samples`` reference images (seeded subsamples; never pass the test split) with a
    tiny nearest-neighbour-margin tie-breaker. ``generations`` is the total over all stages;
    ``time_budget`` (s) stops cleanly before the generation that would overrun it.
    ``sigma``: initial step size relative to each layer's weight std (default 0.1 for
    backprop init, 0.5 for random). ``groups``: filter groups per conv layer for the parallel
    strategy (default: enough that a group holds <= 5,000 params). ``callback(record)`` is
    called after each generation (after its checkpoint is written).

    **Mini-batch mode** (``batch_size`` set; the fitness that generalises, issue 31): the
    fitness is :class:`~edgekit.compress.evolve.fitness.BatchKnnFitness` — leave-one-out k-NN
    on a fresh seeded mini-batch of ``batch_size`` images of ``x_ref`` (all of it, or a
    ``ref_samples`` subsample) each generation, + ``margin_weight`` x mean margin. The
    validation images (``val_samples`` of them) are then a **held-out** split the fitness
    never sees: every ``holdout_every`` generations (and at each stage's end) the optimiser's
    candidate (CMA-ES: its mean; PSO: its global best) is scored on them against
    ``holdout_refs`` training images, and the returned weights are the held-out best (the
    start included), never merely the last or the fitness best. ``patience``: stop a stage
    after that many held-out scores without improvement (early stop). The PSO then spends
    half of its ``population`` evaluations re-scoring its personal bests on the same batch.
    ``cma_variant``: ``sep`` (pycma's ``CMA_diagonal``) or ``vd`` (VD-CMA, pycma's
    ``GaussVDSampler``). ``candidate_hook(gen, vector)`` sees each held-out-scored candidate.
    ``precision``: ``bfloat16`` runs the mini-batch forward pass in bfloat16 (2.5x faster
    convolutions on CPUs with AVX512-BF16; the held-out score stays float32).
    ``stage_share``: the serial stages' shares of ``time_budget`` and ``generations`` (one
    number per conv layer, e.g. ``(0.25, 0.75)``; default equal shares).

    The logbook is a JSON-able dict. With a checkpoint, ``logbook["plot_png"]`` is the path of
    its convergence plot ``DIR/convergence.png``; without one nothing is written to disk
    (:func:`plot_convergence` draws the plot wherever a caller wants it).
    """
    _check_args(method, strategy, generations, population, time_budget, init, k, executor, ref_samples,
                val_samples, sigma, groups)
    _check_batch_args(batch_size, holdout_refs, holdout_every, patience, margin_weight, cma_variant)
    if stage_share is not None:
        share = [float(v) for v in stage_share]
        if not share or min(share) <= 0 or not all(math.isfinite(v) for v in share):
            raise EdgekitError("stage_share must be positive numbers, got {!r}".format(stage_share))
        stage_share = [v / sum(share) for v in share]
    if batch_size:
        x_hr, y_hr = _subsample(x_ref, y_ref, holdout_refs, seed + 2, "reference")
    x_ref, y_ref = _subsample(x_ref, y_ref, ref_samples, seed, "reference")
    x_val, y_val = _subsample(x_val, y_val, val_samples, seed + 1, "validation")
    spec, x_backprop = trunk_spec(trunk_model)
    if init == "random":
        x_start = _glorot(spec, x_backprop.size, seed)
    else:
        x_start = x_backprop.copy()
    sigma = float(sigma if sigma is not None else (0.1 if init == "backprop" else 0.5))
    stds = _coordinate_stds(spec, x_start)
    stages = _stages(spec, strategy, groups)
    if stage_share is not None and len(stage_share) != len(stages):
        raise EdgekitError("stage_share has {} numbers for {} stages".format(len(stage_share), len(stages)))
    config = {"method": method, "strategy": strategy, "population": population, "init": init,
              "seed": int(seed), "k": int(k), "sigma": sigma, "groups": groups,
              "ref_samples": int(len(x_ref)), "val_samples": int(len(x_val))}
    if stage_share is not None:
        config["stage_share"] = [round(v, 6) for v in stage_share]
    mb = None
    if batch_size:
        fitness = BatchKnnFitness(spec, x_ref, y_ref, x_val, y_val, x_hr, y_hr, k=k, batch_size=batch_size,
                                  seed=seed, margin_weight=margin_weight, precision=precision)
        mb = {"batch_size": fitness.batch_size, "holdout_refs": int(len(y_hr)),
              "holdout_every": int(holdout_every), "patience": patience,
              "margin_weight": float(margin_weight), "cma_variant": cma_variant, "precision": precision}
        config.update(mb)
        mb = dict(mb, fitness=fitness, hook=candidate_hook)
    else:
        fitness = KnnFitness(spec, x_ref, y_ref, x_val, y_val, k=k)
        if cma_variant != "sep":
            config["cma_variant"] = cma_variant
    fp = fingerprint or _fingerprint(spec, x_backprop, x_ref, y_ref, x_val, y_val)
    ex = make_executor(executor, fitness, timeout=dask_timeout)
    try:
        state = _load_checkpoint(checkpoint, fp, config) if checkpoint else None
        if state is None:
            state = _new_state(ex, x_start, fp, config, stages, method, strategy, generations, spec,
                               executor, seed, mb)
        state = _run(state, ex, stages, stds, sigma, population, method, generations, time_budget,
                     seed, checkpoint, progress, callback, mb, cma_variant, stage_share)
    finally:
        ex.close()
    set_trunk_weights(trunk_model, spec, state["best_x"])
    logbook = state["logbook"]
    if checkpoint:
        logbook["plot_png"] = plot_convergence(logbook, Path(checkpoint) / PLOT_FILE)
        _atomic_write(Path(checkpoint) / LOGBOOK_FILE, json.dumps(logbook, indent=1).encode())
    return trunk_model, logbook


def evolve(model, data, cut="pool1", out=None, method="cma", strategy="serial", test_ref_samples=10000,
           force=False, **kwargs):
    """Standalone: slice ``model`` (artifact/.h5/Keras) at ``cut``, evolve the trunk on ``data``.

    Reference images come from the training split, fitness images from the validation
    split. Returns a dict with the logbook, the evolved trunk and k-NN test accuracy (``k``
    neighbours among ``test_ref_samples`` training images) before and after. With ``out`` the
    evolved trunk is saved as ``out/trunk.h5`` with ``out/logbook.json`` and
    ``out/convergence.png`` (a plain folder, not an artifact: knn-slice puts these into its
    artifact; written to a temp dir, then renamed).

    Example::

        res = evolve("/work/cache/seed-mnist", "mnist:DIR", method="pso", time_budget=600)
    """
    from edgekit.data import load_data
    from edgekit.models import load_model
    if out and Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    ds = data if hasattr(data, "x_train") else load_data(data)
    full = model if hasattr(model, "layers") else load_model(model)
    trunk = slice_trunk(full, cut)
    k = kwargs.get("k", 9)
    seed = kwargs.get("seed", 0)
    before = knn_test_accuracy(trunk, ds, k=k, ref_samples=test_ref_samples, seed=seed)
    trunk, log = evolve_trunk(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, method=method,
                              strategy=strategy, **kwargs)
    after = knn_test_accuracy(trunk, ds, k=k, ref_samples=test_ref_samples, seed=seed)
    log["test_accuracy_before"], log["test_accuracy_after"] = before, after
    log["test_protocol"] = {"k": k, "reference": "{} seeded training images".format(
        min(test_ref_samples, len(ds.x_train))), "test": len(ds.x_test)}
    if out:
        _write_out_dir(out, trunk, log, force)
    return {"trunk": trunk, "logbook": log, "test_accuracy_before": before, "test_accuracy_after": after}


def _write_out_dir(out, trunk, log, force):
    """``out/{trunk.h5, logbook.json, convergence.png}``, staged in a temp dir then renamed."""
    from edgekit.util import staged_dir
    with staged_dir(out, force=force) as tmp:
        from edgekit.util import save_keras_h5
        save_keras_h5(trunk, tmp / "trunk.h5")
        plot_convergence(log, tmp / PLOT_FILE)
        (tmp / LOGBOOK_FILE).write_text(json.dumps(dict(log, plot_png=PLOT_FILE), indent=1))


def slice_trunk(model, cut):
    """A tf_keras model from ``model``'s input to layer ``cut`` (name or index)."""
    from edgekit._tf import keras
    names = [layer.name for layer in model.layers]
    if isinstance(cut, int) or (isinstance(cut, str) and cut.lstrip("-").isdigit()):
        i = int(cut)
        if not -len(names) <= i < len(names):
            raise EdgekitError("cut index {} out of range (model has {} layers)".format(i, len(names)))
        layer = model.layers[i]
    elif cut in names:
        layer = model.get_layer(cut)
    else:
        raise EdgekitError("no layer {!r} in the model; layers: {}".format(cut, ", ".join(names)))
    return keras().Model(model.inputs, layer_output(model, layer), name="trunk")


def knn_test_accuracy(trunk, ds, k=9, ref_samples=10000, seed=0):
    """k-NN test-split accuracy on trunk features, reference = seeded training subsample."""
    xr, yr = _subsample(ds.x_train, ds.y_train, ref_samples, seed, "reference")
    return knn_accuracy(trunk, xr, yr, ds.x_test, ds.y_test, k=k)


def knn_accuracy(trunk, x_ref, y_ref, x_query, y_query, k=9, chunk=500):
    """k-NN (``k``, squared Euclidean on the flattened trunk features, ties to the nearer
    neighbours) accuracy of ``x_query`` against ``x_ref``; ``trunk`` is a Keras trunk or a
    ``(spec, vector)`` pair. Reference features are held in float32 (60,000 x 9,216 = 2.2 GB
    for the seed trunk); queries go in chunks."""
    spec, w = trunk if isinstance(trunk, tuple) else trunk_spec(trunk)
    y_ref = np.asarray(y_ref, np.int64).ravel()
    y_query = np.asarray(y_query, np.int64).ravel()
    fit = KnnFitness(spec, np.asarray(x_ref[:1], np.float32), y_ref[:1], np.asarray(x_query[:1], np.float32),
                     y_query[:1], k=k)
    ref = RefIndex(np.concatenate([fit.features(w, np.asarray(x_ref[s:s + 4096], np.float32))
                                   for s in range(0, len(x_ref), 4096)]))
    n_classes = int(max(y_ref.max(), y_query.max()) + 1)
    correct = 0
    for s in range(0, len(x_query), chunk):
        f = fit.features(w, np.asarray(x_query[s:s + chunk], np.float32))
        c, _ = knn_scores(ref.sq_distances(f), y_query[s:s + chunk], y_ref, k, n_classes, margin=False)
        correct += int(np.sum(c))
    return correct / len(x_query)


# --------------------------------------------------------------------------- internals
def _check_args(method, strategy, generations, population, time_budget, init, k, executor, ref_samples,
                val_samples, sigma, groups):
    if method not in METHODS:
        raise EdgekitError("unknown optimiser {!r}: use one of {}".format(method, ", ".join(METHODS)))
    if strategy not in STRATEGIES:
        raise EdgekitError("unknown strategy {!r}: use one of {}".format(strategy, ", ".join(STRATEGIES)))
    if init not in INITS:
        raise EdgekitError("unknown init {!r}: use one of {}".format(init, ", ".join(INITS)))
    if not isinstance(generations, int) or generations < 1:
        raise EdgekitError("generations must be an integer >= 1, got {!r}".format(generations))
    if population is not None and (not isinstance(population, int) or population < 2):
        raise EdgekitError("population must be an integer >= 2, got {!r}".format(population))
    if time_budget is not None and not time_budget > 0:
        raise EdgekitError("time budget must be > 0 seconds, got {!r}".format(time_budget))
    if not isinstance(k, int) or k < 1:
        raise EdgekitError("k must be an integer >= 1, got {!r}".format(k))
    for name, n in (("ref_samples", ref_samples), ("val_samples", val_samples)):
        if n is not None and (not isinstance(n, int) or n < 2):
            raise EdgekitError("{} must be an integer >= 2, got {!r}".format(name, n))
    if sigma is not None and not sigma > 0:
        raise EdgekitError("sigma must be > 0, got {!r}".format(sigma))
    if groups is not None and (not isinstance(groups, int) or groups < 1):
        raise EdgekitError("groups must be an integer >= 1, got {!r}".format(groups))
    if executor not in (None, "local"):
        if not isinstance(executor, str) or not executor.startswith("dask://"):
            raise EdgekitError("unknown executor {!r}: use local or dask://HOST:PORT".format(executor))
        parse_dask_address(executor)


def _check_batch_args(batch_size, holdout_refs, holdout_every, patience, margin_weight, cma_variant):
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 3):
        raise EdgekitError("batch_size must be an integer >= 3, got {!r}".format(batch_size))
    if not isinstance(holdout_refs, int) or holdout_refs < 2:
        raise EdgekitError("holdout_refs must be an integer >= 2, got {!r}".format(holdout_refs))
    if not isinstance(holdout_every, int) or holdout_every < 1:
        raise EdgekitError("holdout_every must be an integer >= 1, got {!r}".format(holdout_every))
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise EdgekitError("patience must be an integer >= 1, got {!r}".format(patience))
    if not (isinstance(margin_weight, (int, float)) and margin_weight >= 0 and math.isfinite(margin_weight)):
        raise EdgekitError("margin_weight must be a number >= 0, got {!r}".format(margin_weight))
    if cma_variant not in CMA_VARIANTS:
        raise EdgekitError("unknown cma_variant {!r}: use one of {}".format(cma_variant, ", ".join(CMA_VARIANTS)))


def _subsample(x, y, n, seed, what):
    x, y = np.asarray(x), np.asarray(y).astype(np.int64).ravel()
    if len(x) != len(y):
        raise EdgekitError("{} images ({}) and labels ({}) differ in number".format(what, len(x), len(y)))
    if len(x) < 2:
        raise EdgekitError("need at least 2 {} images, got {}".format(what, len(x)))
    if n is None or n >= len(x):
        return x.astype(np.float32), y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[idx].astype(np.float32), y[idx]


def _glorot(spec, size, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros(size, np.float32)
    for e in spec:
        if e["op"] == "conv":
            kh, kw, cin, cout = e["kshape"]
            lim = math.sqrt(6.0 / (kh * kw * cin + kh * kw * cout))
            a, b = e["kslice"]
            x[a:b] = rng.uniform(-lim, lim, b - a).astype(np.float32)
    return x


def _coordinate_stds(spec, x):
    """Per-coordinate scale: each conv layer's kernel std (its biases use the same)."""
    stds = np.ones(x.size)
    for e in spec:
        if e["op"] != "conv":
            continue
        a, b = e["kslice"]
        s = float(np.std(x[a:b]))
        if not s > 0:
            kh, kw, cin, cout = e["kshape"]
            s = math.sqrt(2.0 / (kh * kw * (cin + cout)))
        stds[a:b] = s
        if "bslice" in e:
            stds[e["bslice"][0]:e["bslice"][1]] = s
    return stds


def _stages(spec, strategy, groups):
    """List of stages; a stage is a list of (name, param index array) sub-problems."""
    if strategy == "serial":
        return [[(name, idx)] for name, idx, _ in conv_slices(spec)]

    def per_layer(e):
        if groups:
            return groups
        n = int(np.prod(e["kshape"])) + e["kshape"][-1]
        return max(1, math.ceil(n / MAX_GROUP_PARAMS))
    return [filter_groups(spec, per_layer)]


def _fingerprint(spec, x, x_ref, y_ref, x_val, y_val):
    h = hashlib.sha256()
    h.update(json.dumps([{k: v for k, v in e.items() if not isinstance(v, np.ndarray)} for e in spec],
                        sort_keys=True).encode())
    for a in (x, x_ref, y_ref, x_val, y_val):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _new_state(ex, x_start, fp, config, stages, method, strategy, generations, spec, executor, seed, mb=None):
    t0 = time.time()
    if mb:
        f0 = np.asarray(mb["fitness"].holdout_full(x_start))
        if mb["hook"] is not None:
            mb["hook"](0, x_start.copy())
    else:
        f0 = ex.evaluate_full(x_start[None, :])[0]
    n_params = int(x_start.size)
    logbook = {
        "method": method, "strategy": strategy,
        "params": dict(config, n_params=n_params, generations=generations, executor=str(executor),
                       stages=[[{"name": n, "params": int(len(i))} for n, i in st] for st in stages]),
        "fitness_definition": "k-NN accuracy (validation subset vs reference subset) + "
                              "0.5/n_val * mean nearest-neighbour margin",
        "generations": [],
        "fitness_before": {"fitness": float(f0[0]), "accuracy": float(f0[1]), "margin": float(f0[2])},
    }
    if mb:
        f = mb["fitness"]
        logbook["fitness_definition"] = (
            "mini-batch: leave-one-out k-NN (k={}) accuracy among a fresh seeded batch of {} training "
            "images per generation + {:g} x mean nearest-neighbour margin; selection and early stop: "
            "held-out k-NN accuracy of the optimiser's candidate ({} validation images vs {} training "
            "images, + 0.5/n_val x margin); fitness_before/after are held-out scores".format(
                f.k, f.batch_size, f.margin_weight, len(f.y_hold), len(f.y_hold_ref)))
        logbook["holdout"] = [{"gen": 0, "stage": 0, "accuracy": float(f0[1]), "score": float(f0[0])}]
    return {"since_best": 0, "best_gen": 0, "stage_holdout_gen": 0,"version": STATE_VERSION, "fingerprint": fp, "config": config, "stage": 0, "stage_gen": 0,
            "gen": 0, "optimizers": None, "best_x": x_start.astype(np.float32).copy(),
            "best": [float(v) for v in f0], "evaluations": 1, "elapsed": time.time() - t0,
            "logbook": logbook, "done": False, "stopped": None,
            "np_random": None, "py_random": None}


def _stage_generations(generations, n_stages, share=None):
    if share is None:
        base, rem = divmod(generations, n_stages)
        return [max(1, base + (1 if s < rem else 0)) for s in range(n_stages)]
    return [max(1, int(round(generations * v))) for v in share]


def _make_optimizers(state, stage, stds, sigma, population, method, seed, stage_index, variant="sep",
                     noisy=False):
    opts = []
    for j, (name, idx) in enumerate(stage):
        pop = population or 4 + int(3 * math.log(len(idx)))
        opts.append(OPTIMIZERS[method](state["best_x"][idx], stds[idx], sigma, pop,
                                       1 + 1000 * int(seed) + 100 * stage_index + j, variant=variant,
                                       noisy=noisy))
    return opts


def _run(state, ex, stages, stds, sigma, population, method, generations, time_budget, seed,
         checkpoint, progress, callback, mb=None, cma_variant="sep", stage_share=None):
    if state["np_random"] is not None:
        np.random.set_state(state["np_random"])
        random.setstate(state["py_random"])
    share = stage_share or [1.0 / len(stages)] * len(stages)
    per_stage = _stage_generations(generations, len(stages), stage_share)
    total = sum(per_stage)
    bar = _Progress(progress, total, state["gen"], time_budget)
    t_resume, elapsed0 = time.time(), state["elapsed"]
    last_gen_time = 0.0
    try:
        while not state["done"]:
            s = state["stage"]
            elapsed = elapsed0 + time.time() - t_resume
            if s >= len(stages):
                state["done"], state["stopped"] = True, state["stopped"] or "generations"
                break
            if time_budget is not None:
                stage_deadline = time_budget * sum(share[:s + 1])
                if elapsed + last_gen_time > time_budget:
                    _end_stage(state, stages, mb)
                    state["done"], state["stopped"] = True, "time_budget"
                    break
                if state["stage_gen"] > 0 and elapsed + last_gen_time > stage_deadline:
                    _next_stage(state, stages, mb)
                    continue
            if state["stage_gen"] >= per_stage[s]:
                _next_stage(state, stages, mb)
                continue
            if mb and mb["patience"] and state["since_best"] >= mb["patience"]:
                state["logbook"].setdefault("early_stops", []).append(
                    {"stage": s, "gen": state["gen"], "best_gen": state["best_gen"]})
                _next_stage(state, stages, mb)
                continue
            if state["optimizers"] is None:
                state["optimizers"] = _make_optimizers(state, stages[s], stds, sigma, population, method,
                                                       seed, s, cma_variant, noisy=bool(mb))
            tg = time.time()
            record = _generation_batch(state, ex, stages[s], mb) if mb else _generation(state, ex, stages[s])
            last_gen_time = time.time() - tg
            state["elapsed"] = elapsed0 + time.time() - t_resume
            record["elapsed"] = round(state["elapsed"], 3)
            state["logbook"]["generations"].append(record)
            if checkpoint:
                _save_checkpoint(checkpoint, state)
            bar.update(record)
            if callback is not None:
                callback(record)
    finally:
        bar.close()
    state["elapsed"] = elapsed0 + time.time() - t_resume
    log = state["logbook"]
    log["fitness_after"] = {"fitness": state["best"][0], "accuracy": state["best"][1],
                            "margin": state["best"][2]}
    log["evaluations"] = state["evaluations"]
    log["wall_time_s"] = round(state["elapsed"], 3)
    log["stopped"] = state["stopped"]
    log["generations_run"] = state["gen"]
    log["params"]["optimizer"] = _optimizer_params(method, cma_variant, bool(mb))
    if mb:
        log["selected_generation"] = state["best_gen"]
    if checkpoint:
        _save_checkpoint(checkpoint, state)
    return state


def _optimizer_params(method, variant="sep", noisy=False):
    if method == "cma":
        if variant == "vd":
            return {"library": "pycma", "CMA_sampler": "GaussVDSampler", "note": "VD-CMA, coordinates "
                    "scaled by the layer weight std", "returned": "held-out best mean" if noisy else "best"}
        return {"library": "pycma", "CMA_diagonal": True, "note": "separable CMA-ES, CMA_stds = layer weight std",
                "returned": "held-out best mean" if noisy else "best"}
    return {"library": "edgekit (vectorised gbest PSO)", "w": PSO_W, "c1": PSO_C1, "c2": PSO_C2,
            "note": "half the evaluations re-score the personal bests on each batch" if noisy else ""}


def _end_stage(state, stages, mb):
    """Mini-batch mode: score the stage's last candidate on the held-out split if it was not."""
    if mb and state["optimizers"] is not None and state["stage_holdout_gen"] != state["gen"] \
            and state["stage"] < len(stages):
        rec = state["logbook"]["generations"][-1] if state["logbook"]["generations"] else None
        _holdout_step(state, stages[state["stage"]], mb, rec)


def _next_stage(state, stages=None, mb=None):
    _end_stage(state, stages, mb)
    state["stage"] += 1
    state["stage_gen"] = 0
    state["optimizers"] = None
    state["since_best"] = 0


def _candidate(state, stage):
    """The optimisers' own estimate of the optimum, plugged into the current best vector."""
    x = state["best_x"].copy()
    for (name, idx), opt in zip(stage, state["optimizers"]):
        x[idx] = opt.candidate()
    return x


def _holdout_step(state, stage, mb, record):
    """Score the candidate on the held-out split; keep it when it beats the held-out best."""
    cand = _candidate(state, stage)
    h = [float(v) for v in mb["fitness"].holdout_full(cand)]
    state["stage_holdout_gen"] = state["gen"]
    state["logbook"]["holdout"].append({"gen": state["gen"], "stage": state["stage"], "accuracy": h[1],
                                        "score": h[0]})
    if h[0] > state["best"][0]:
        state["best_x"], state["best"], state["best_gen"] = cand, h, state["gen"]
        state["since_best"] = 0
    else:
        state["since_best"] += 1
    if record is not None:
        record.update(holdout=h[1], holdout_score=h[0], best_so_far=state["best"][0],
                      accuracy_so_far=state["best"][1])
    if mb["hook"] is not None:
        mb["hook"](state["gen"], cand.copy())


def _generation_batch(state, ex, stage, mb):
    """One generation on mini-batch ``gen``; every ``holdout_every`` the held-out step."""
    opts = state["optimizers"]
    asked = [opt.ask() for opt in opts]
    blocks = []
    for (name, idx), X in zip(stage, asked):
        full = np.repeat(state["best_x"][None, :], len(X), axis=0)
        full[:, idx] = X
        blocks.append(full)
    W = np.concatenate(blocks)
    F = ex.evaluate_full(W, batch=state["gen"])
    state["evaluations"] += len(W)
    pos = 0
    for opt, X in zip(opts, asked):
        opt.tell(X, F[pos:pos + len(X), 0])
        pos += len(X)
    state["gen"] += 1
    state["stage_gen"] += 1
    record = {"gen": state["gen"], "stage": state["stage"],
              "stage_name": ",".join(n for n, _ in stage) if len(stage) <= 3 else "{} groups".format(len(stage)),
              "best": float(F[:, 0].max()), "mean": float(F[:, 0].mean()),
              "best_accuracy": float(F[:, 1].max()), "mean_accuracy": float(F[:, 1].mean()),
              "best_so_far": state["best"][0], "accuracy_so_far": state["best"][1],
              "evaluations": state["evaluations"]}
    if state["stage_gen"] % mb["holdout_every"] == 0:
        _holdout_step(state, stage, mb, record)
    state["np_random"] = np.random.get_state()
    state["py_random"] = random.getstate()
    return record


def _generation(state, ex, stage):
    best_x = state["best_x"]
    opts = state["optimizers"]
    asked = [opt.ask() for opt in opts]
    blocks = []
    for (name, idx), X in zip(stage, asked):
        full = np.repeat(best_x[None, :], len(X), axis=0)
        full[:, idx] = X
        blocks.append(full)
    W = np.concatenate(blocks)
    F = ex.evaluate_full(W)
    state["evaluations"] += len(W)
    improved, pos = [], 0
    for (name, idx), opt, X in zip(stage, opts, asked):
        f = F[pos:pos + len(X)]
        opt.tell(X, f[:, 0])
        j = int(np.argmax(f[:, 0]))
        if f[j, 0] > state["best"][0]:
            improved.append((float(f[j, 0]), W[pos + j], f[j], idx))
        pos += len(X)
    if len(improved) == 1:
        state["best_x"], state["best"] = improved[0][1].copy(), [float(v) for v in improved[0][2]]
    elif improved:
        combo = best_x.copy()
        for _, w, _, idx in improved:
            combo[idx] = w[idx]
        fc = ex.evaluate_full(combo[None, :])[0]
        state["evaluations"] += 1
        top = max(improved, key=lambda t: t[0])
        if fc[0] >= top[0]:
            state["best_x"], state["best"] = combo, [float(v) for v in fc]
        else:
            state["best_x"], state["best"] = top[1].copy(), [float(v) for v in top[2]]
    state["gen"] += 1
    state["stage_gen"] += 1
    state["np_random"] = np.random.get_state()
    state["py_random"] = random.getstate()
    return {"gen": state["gen"], "stage": state["stage"],
            "stage_name": ",".join(n for n, _ in stage) if len(stage) <= 3 else "{} groups".format(len(stage)),
            "best": float(F[:, 0].max()), "mean": float(F[:, 0].mean()),
            "best_accuracy": float(F[:, 1].max()),
            "best_so_far": state["best"][0], "accuracy_so_far": state["best"][1],
            "evaluations": state["evaluations"]}


# --------------------------------------------------------------------------- checkpoint
def _atomic_write(path, data):
    from edgekit.util import atomic_write_bytes
    atomic_write_bytes(path, data, fsync=True)


def _save_checkpoint(directory, state):
    try:
        _atomic_write(Path(directory) / STATE_FILE, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        _atomic_write(Path(directory) / LOGBOOK_FILE, json.dumps(state["logbook"], indent=1).encode())
    except OSError as exc:
        raise EdgekitError("cannot write checkpoint to {}: {}".format(directory, exc.strerror or exc)) from None


def _load_checkpoint(directory, fp, config):
    path = Path(directory) / STATE_FILE
    if Path(directory).exists() and not Path(directory).is_dir():
        raise EdgekitError("checkpoint {} is not a directory".format(directory))
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except Exception as exc:
        raise EdgekitError("checkpoint {} is unreadable ({}): delete it or use another --checkpoint dir"
                           .format(path, type(exc).__name__)) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise EdgekitError("checkpoint {} was written by another edgekit version: use another "
                           "--checkpoint dir".format(path))
    if state["fingerprint"] != fp:
        raise EdgekitError("checkpoint {} was written for another model or data set (fingerprint {}… != {}…): "
                           "use another --checkpoint dir or delete it".format(
                               directory, state["fingerprint"][:12], fp[:12]))
    diff = [key for key in config if state["config"].get(key) != config[key]]
    if diff:
        raise EdgekitError("checkpoint {} was written with other settings ({}): resume with the same "
                           "arguments or use another --checkpoint dir".format(directory, ", ".join(
                               "{}={!r} not {!r}".format(key, state["config"].get(key), config[key])
                               for key in diff)))
    # a finished run may go on when asked for more generations; the time budget counts the
    # elapsed time of all earlier calls, so the same call resumed stops where it would have
    state["done"], state["stopped"] = False, None
    return state


# --------------------------------------------------------------------------- progress, plot
class _Progress:
    def __init__(self, enabled, total, done, time_budget):
        self.p = None
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.p = Progress(TextColumn("evolve gen"), MofNCompleteColumn(), BarColumn(),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                          TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        self.p.start()
        self.task = self.p.add_task("evolve", total=total, completed=done,
                                    info="budget {}s".format(time_budget) if time_budget else "")

    def update(self, rec):
        if self.p:
            self.p.update(self.task, completed=rec["gen"], info="best {:.4f} mean {:.4f} (acc {:.2%})".format(
                rec["best_so_far"], rec["mean"], rec["accuracy_so_far"]))

    def close(self):
        if self.p:
            self.p.stop()


def plot_convergence(logbook, path):
    """Draw an evolution logbook's convergence plot (fitness, held-out, test per generation; a
    channel search's held-out NCA on a right axis) as the PNG ``path`` (written atomically);
    returns ``str(path)``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gens = logbook["generations"]
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=100)
    twin = None
    if gens and "holdout" in logbook:
        g = [r["gen"] for r in gens]
        ax.plot(g, [r["mean_accuracy"] for r in gens], label="fitness: batch LOO acc (mean)", alpha=0.5)
        ax.plot(g, [r["best_accuracy"] for r in gens], label="fitness: batch LOO acc (best)", alpha=0.5)
        ho = logbook["holdout"]
        ax.plot([h["gen"] for h in ho], [h["accuracy"] for h in ho], "o-", ms=3, label="held-out acc (candidate)")
        curve = logbook.get("test_curve")
        if curve:
            ax.plot([c["gen"] for c in curve], [c["accuracy"] for c in curve], "s-", ms=3, label="test (candidate)")
        sel = logbook.get("selected_generation")
        if sel is not None:
            ax.axvline(sel, color="gray", ls=":", label="returned (held-out best)")
        ax.set_ylabel("k-NN accuracy")
        if ho and all("nca" in h for h in ho):    # channel search: the fitness's measure, held out
            ax2 = ax.twinx()
            ax2.plot([h["gen"] for h in ho], [h["nca"] for h in ho], "^--", ms=3, color="tab:purple",
                     label="held-out NCA log-likelihood (right axis)")
            ax2.set_ylabel("held-out NCA", color="tab:purple")
            twin = ax2
    elif gens:
        g = [r["gen"] for r in gens]
        ax.plot(g, [r["mean"] for r in gens], label="population mean", alpha=0.7)
        ax.plot(g, [r["best"] for r in gens], label="generation best", alpha=0.7)
        ax.plot(g, [r["best_so_far"] for r in gens], label="best so far", lw=2)
    if "holdout" not in logbook:
        ax.axhline(logbook["fitness_before"]["fitness"], color="gray", ls="--", label="start")
        ax.set_ylabel("fitness (val k-NN acc)")
    ax.set_xlabel("generation")
    ax.set_title("{} / {}".format(logbook["method"], logbook.get("strategy") or logbook.get("space")))
    if twin is None:
        ax.legend(fontsize=8)
    else:   # one legend for both axes, below the plot (inside it would cover the curves)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".convergence.", suffix=".png", dir=str(path.parent))
    os.close(fd)
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)
