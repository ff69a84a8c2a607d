"""k-NN slicing: cut a trained CNN after a block, classify with k-NN on its features.

The result is ONE ONNX graph (trunk + pooling/PCA/L2 reduction + k-NN head, default-domain
ops at opset 13, see :mod:`edgekit.compress.knn.onnx`) in an artifact of kind
``compressed`` / method ``knn-slice``. ``metrics.bytes`` is that file's size: every byte
inference needs (trunk weights, reduction, prototypes and labels).

How it scales (each step in its own module):

* **candidate cuts** from the layer graph (:mod:`~edgekit.compress.knn.cuts`): block ends —
  after a merge (residual / inception), after pooling, bottlenecks (strided / projection
  blocks), global pooling; ``cut_candidates="all"``: every conv / pool unit;
* **features streamed** (:mod:`~edgekit.compress.knn.features`): one Keras model with every
  candidate as an output runs over the images in batches; PCA is fitted on a seeded
  subsample; only ``images x PCA dims`` per candidate is kept;
* **bytes computed, not built** (:mod:`~edgekit.compress.knn.search`): the Keras model is
  converted to ONNX once (all candidates as outputs); each candidate's trunk is its subgraph,
  and a configuration's bytes = trunk subgraph + PCA + prototypes x dims x dtype + labels +
  measured head overhead. Only the chosen configuration is built, and the prediction is
  recorded beside the real size (``metrics.bytes_predicted``);
* **one search** over every cut x dims x reference set (all vectors up to
  ``ALL_REFS_MAX``, else k-means prototypes per class; under a budget the prototype counts
  grow to the largest that fits, :func:`~edgekit.compress.knn.search.budget_rungs`) x int8
  prototypes x k, within the byte budget, scored on a seeded validation subset (``val_samples``): the ``objective``
  (``accuracy``: most accurate; ``size``: fewest bytes within 0.5 pt of the best;
  ``latency``: fastest trunk within 0.5 pt) picks the configuration. An explicit ``--cut``
  runs the same search on one cut;
* **default budget**: the input model's bytes on disk (the result is never bigger than what
  it compresses); ``max_bytes="none"`` lifts it.

Progress lines (stderr) name each candidate as it is scored. Test accuracy is measured once,
at the end, on the test split.

Example::

    art = knn_slice("runs/seed", "mnist:data/mnist", "runs/knn", cut="auto", int8=True)
    art.manifest["metrics"]["bytes"], art.manifest["metrics"]["agreement"]
"""
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.artifact import describe_file
from edgekit.compress._common import Job, bytes_on_disk, keras_file_of
from edgekit.compress.evolve import evolve_trunk, plot_convergence
from edgekit.compress.evolve.channels import channel_layout, evolve_channels
from edgekit.compress.evolve.fitness import trunk_spec
from edgekit.compress.knn.cuts import candidate_cuts, flatten_nested, head_start, layer_output
from edgekit.compress.options import KERNEL_ONLY_PARAMS, declared
from edgekit.compress.knn.search import (DEFAULT_K, VAL_SAMPLES, head_options,
                                         pick, search_cut)
from edgekit.errors import EdgekitError
from edgekit.util import save_keras_h5

ONNX_FILE = "model.onnx"
TRUNK_FILE = "trunk.h5"
SWEEP_FILE = "sweep.json"
OUTPUTS = ("class_id", "scores")      # the graph's outputs: the class index and its k-NN votes

__all__ = ["knn_slice", "candidate_cuts", "resolve_cut", "pick_cut", "input_bytes"]


def pick_cut(rows, objective="accuracy", max_bytes=None, min_accuracy=None):
    """The configuration row chosen by the rule (:func:`edgekit.compress.knn.search.pick`)."""
    return pick(rows, objective, max_bytes, min_accuracy)


def resolve_cut(model, cut):
    """A layer index from a name or index; refuses unknown layers and the classifier."""
    layers = model.layers
    names = [l.name for l in layers]
    if isinstance(cut, str) and cut.lstrip("-").isdigit():
        cut = int(cut)
    if isinstance(cut, (int, np.integer)):
        idx = int(cut)
        if idx < 0:
            idx += len(layers)
        if not 0 <= idx < len(layers):
            raise EdgekitError("--cut {} is out of range: the model has layers 0..{} ({})".format(
                cut, len(layers) - 1, ", ".join(names)))
    else:
        if cut not in names:
            raise EdgekitError("--cut {!r}: no such layer; layers are: {}".format(
                cut, ", ".join(names)))
        idx = names.index(cut)
    if idx >= head_start(model):
        what = "the output layer" if idx == len(layers) - 1 else "part of the classifier"
        raise EdgekitError("--cut {!r} is {}: cut earlier (candidates: {})".format(
            names[idx], what, ", ".join(names[i] for i in candidate_cuts(model))))
    if type(layers[idx]).__name__ == "InputLayer":
        raise EdgekitError("--cut {!r} is the input: cut after a layer (candidates: {})".format(
            names[idx], ", ".join(names[i] for i in candidate_cuts(model))))
    return idx


def input_bytes(model):
    """Bytes on disk of the model to compress (its Keras file, or a SavedModel dir's files);
    None for an in-memory model."""
    if hasattr(model, "layers"):
        return None
    return bytes_on_disk(keras_file_of(model))


def _check_args(prototypes, reduction):
    """What the declarations (:mod:`edgekit.compress.options`) cannot check one by one."""
    if prototypes is not None and reduction in ("all", "cnn"):
        raise EdgekitError("--prototypes needs reduction 'kmeans' (got {!r})".format(reduction))


def _evolve(trunk, space, method, params, x_ref, y_ref, ds, k, progress, say):
    """The trunk evolved for the k-NN in ``space`` (``channels``: the last conv's per-filter
    gains, NCA fitness, :func:`~edgekit.compress.evolve.channels.evolve_channels`; ``kernels``:
    every conv weight, :func:`~edgekit.compress.evolve.evolve_trunk`) and the logbook."""
    if space == "kernels":
        params = dict(params)
        strategy = params.pop("strategy", "serial")
        return evolve_trunk(trunk, x_ref, y_ref, ds.x_val, ds.y_val, method, strategy,
                            progress=progress, k=k, **params)
    try:
        channel_layout(trunk_spec(trunk)[0])
    except EdgekitError as e:
        raise EdgekitError("{}: choose a --cut right after such a block, or use "
                           "--evolve-space kernels".format(e))
    say("evolving the last conv's per-filter gains ({}, NCA fitness, held-out selection on {:,} "
        "validation images)".format(method, len(ds.y_val)))
    # cosine: the head L2-normalises the (pooled, PCA-reduced) features, so its Euclidean
    # distances rank neighbours as cosine distances do
    return evolve_channels(trunk, x_ref, y_ref, ds.x_val, ds.y_val, method=method, k=k,
                           metric="cosine", thresholds=(0.0,), patience=12,
                           **{n: params[n] for n in ("generations", "population", "time_budget",
                                                     "seed") if n in params})


def _budget(max_bytes, job):
    """(bytes or None, where it came from)."""
    if isinstance(max_bytes, str):
        return None, "none (--max-bytes none)"
    if max_bytes is not None:
        return int(max_bytes), "--max-bytes"
    size = job.input_bytes()
    if size is None:
        return None, "none (in-memory model)"
    return size, "input model bytes"


@declared("knn-slice")
def knn_slice(model, data, out, *, cut, k, prototypes, dims, pool, int8, int8_weights, objective,
              max_bytes, cut_candidates, min_accuracy, evolve, weights, reduction, ref_samples,
              val_samples, max_drop, allow_drop, preprocess, force=False, progress=True,
              **evolve_params):
    """Slice ``model`` at ``cut``, fit a k-NN head, write ONE ONNX graph artifact to ``out``.

    ``model``: artifact dir, .h5/.keras, SavedModel dir, or an ONNX file from any framework
    (its trunk cut out of the graph, features from onnxruntime, no tensorflow); ``data``: a
    spec or Dataset, fitted to the model's input (``preprocess``, resize, channels: as every
    method). ``cut``: a layer name / index (ONNX: a node or tensor name, or an index into
    the candidates) or ``"auto"`` (searched among ``cut_candidates``: ``"blocks"`` | ``"all"``).
    ``max_bytes``: the budget (default: the input model's bytes; ``"none"``: no limit).
    ``k``, ``prototypes`` (k-means per class), ``dims`` (PCA; ``0`` = none), ``int8``
    (prototypes; ``None`` = try both): fixed when given, searched when not. ``pool``:
    ``avgN`` / ``maxN`` pooling before flattening. ``int8_weights``: trunk kernels and PCA
    stored as int8. ``ref_samples``: cap on the training vectors used as references (seeded).
    ``val_samples``: validation images scoring the search (seeded, stratified). ``evolve``:
    ``cma``/``pso`` to evolve the trunk after the cut is chosen (Keras models), in
    ``evolve_space`` ``channels`` (default; the last conv's per-filter gains for the k-NN,
    ``edgekit.compress.evolve.channels.evolve_channels``) or ``kernels`` (every conv weight,
    ``edgekit.compress.evolve.evolve_trunk``); the evolution options given,
    :data:`edgekit.compress.options.EVOLVE_PARAMS`, are passed on.
    The accuracy guard: the chosen configuration's validation accuracy may be at most
    ``max_drop`` points (default 1.0) below the input model's, else nothing is written
    (:class:`~edgekit.compress.guard.GuardFailed`) unless ``allow_drop``.
    Options are declared (types, defaults, checks) in :mod:`edgekit.compress.options`.
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit.compress.knn.features import stratified_subsample
    from edgekit.compress.knn.head import threadpools
    from edgekit.images import take
    from edgekit.onnx_model import onnx_source

    _check_args(prototypes, reduction)
    evolve_params = {n: v for n, v in evolve_params.items() if v is not None}
    space = evolve_params.pop("evolve_space")
    if evolve and space == "channels":
        extra = [n for n in KERNEL_ONLY_PARAMS if n in evolve_params]
        if extra:
            raise EdgekitError("--{} applies to --evolve-space kernels only (the default space, "
                               "channels, runs in this process)".format(extra[0].replace("_", "-")))
    val_samples = VAL_SAMPLES if val_samples is None else val_samples
    src = None if hasattr(model, "layers") else onnx_source(model)
    if src is not None and evolve:
        raise EdgekitError("{} is an ONNX model and --evolve retrains the trunk's kernels, which "
                           "needs the Keras model (.h5/.keras/SavedModel): drop --evolve".format(model))
    given = model
    if src is None and not hasattr(model, "layers"):
        from edgekit.modelio.savedmodel import is_graphless_savedmodel
        if is_graphless_savedmodel(model):   # Keras 3 export(): no layers, slice its ONNX
            if evolve:
                raise EdgekitError("{} is a SavedModel without a Keras graph and --evolve "
                                   "retrains the trunk's kernels: drop --evolve, or give the "
                                   "model.save(\"m.keras\") file".format(model))
            src = model = _savedmodel_as_onnx(model)
    job = Job(model, data, out, force, max_drop=max_drop, allow_drop=allow_drop,
              preprocess=preprocess, method="knn-slice", onnx=src is not None)
    if model is not given:                       # the manifest names what the user gave
        from edgekit.models import model_sha256
        from edgekit.modelio.savedmodel import ONNX_READ
        job.source_model, job.sha, job.read_as = given, model_sha256(given), dict(ONNX_READ)
    say = _printer(progress)
    subject = (_OnnxSubject if src is not None else _KerasSubject)(job, cut, cut_candidates)
    ds = job.ds
    budget, budget_source = _budget(max_bytes, job)
    t0 = time.time()

    ref_idx = stratified_subsample(ds.y_train, ref_samples)
    if len(ref_idx) == len(ds.y_train):          # every image: no copy of the training set
        x_ref, y_ref = ds.x_train, ds.y_train
    else:
        x_ref, y_ref = take(ds.x_train, ref_idx), ds.y_train[ref_idx]
    counts = np.bincount(y_ref, minlength=ds.num_classes)
    if prototypes is not None and prototypes > counts.min():
        raise EdgekitError("--prototypes {} per class is larger than the smallest class ({} "
                           "training samples): choose --prototypes <= {}".format(
                               prototypes, int(counts.min()), int(counts.min())))
    n_protos_max = len(y_ref) if prototypes is None else prototypes * ds.num_classes
    if k is not None and k > n_protos_max:
        raise EdgekitError("--k {} is larger than the prototype count ({}): choose --k <= {}"
                           .format(k, n_protos_max, n_protos_max))
    if dims:                                     # refuse before any work
        from edgekit.compress.knn.onnx import FeatureReducer
        widths = [(name, FeatureReducer(pool).in_dims(shape)) for name, shape in subject.shapes()]
        if all(dims > w for _, w in widths):
            raise EdgekitError("--dims {} is larger than the features at every cut point (e.g. "
                               "{}: {} features): lower --dims".format(dims, *widths[-1]))
    vi = stratified_subsample(ds.y_val, val_samples, seed=1)
    x_val, y_val = take(ds.x_val, vi), ds.y_val[vi]      # lazy images stay lazy
    opts = head_options(k, prototypes, dims, int8, reduction, len(y_ref), counts[counts > 0])
    setting = dict(opts=opts, pool=pool, weights=weights, int8_weights=int8_weights,
                   objective=objective, budget=budget, min_accuracy=min_accuracy,
                   num_classes=ds.num_classes)
    say("k-NN slicing: {} candidate cut(s) ({}), {:,} reference images, validation subset "
        "{:,} of {:,}, budget {}".format(
            subject.count, cut_candidates if cut in (None, "auto") else "--cut", len(y_ref),
            len(vi), len(ds.y_val), "{:,} B ({})".format(budget, budget_source)
            if budget is not None else "none"))

    tmpdir = Path(tempfile.mkdtemp(prefix="edgekit-knn-"))
    # numpy/scipy/sklearn on one thread: each piece of work is small, and multi-threaded BLAS
    # spins when the cores are shared (randomized PCA 1,261 x 18,432: 3.8 s on one thread,
    # 11.7 s on two at load 13 on this 2-core VM). TensorFlow and onnxruntime keep their own.
    blas = threadpools().limit(limits=1)
    try:
        res = _search(subject.cuts_of(int8_weights, tmpdir, say), x_ref, y_ref, x_val,
                      y_val, tmpdir, say, **setting)
        logbook = None
        if evolve:
            from edgekit._tf import keras
            c = res["chosen"]
            net = subject.net
            trunk = keras().Model(net.inputs, layer_output(net, c["index"]), name="trunk")
            trunk, logbook = _evolve(trunk, space, evolve, evolve_params, x_ref, y_ref, ds,
                                     k or DEFAULT_K, progress, say)
            say("re-scoring the evolved trunk")
            last = len(trunk.layers) - 1
            res = _search(KerasCuts(trunk, [last], int8_weights, tmpdir, say,
                                    labels={last: (c["layer"], c["index"])}),
                          x_ref, y_ref, x_val, y_val, tmpdir, say, **setting)
        art = _build(res, subject, job, y_ref, say, tmpdir, cut, logbook,
                     dict(setting, budget_source=budget_source, k=k, prototypes=prototypes,
                          dims=dims, int8=int8, reduction=reduction, evolve=evolve,
                          evolve_params=dict(evolve_params, evolve_space=space) if evolve
                          else evolve_params, cut_candidates=cut_candidates,
                          val_samples=len(vi), seconds=time.time() - t0))
    finally:
        blas.restore_original_limits()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return art


def _savedmodel_as_onnx(path):
    """The ONNX conversion of a SavedModel without a Keras graph, in a temporary dir removed
    at exit (the k-NN graph is built from it while the artifact is written)."""
    import atexit
    from edgekit.export.onnx import to_onnx
    from edgekit.modelio.savedmodel import load_function_model
    work = Path(tempfile.mkdtemp(prefix="edgekit-savedmodel-"))
    atexit.register(shutil.rmtree, str(work), True)
    dst = work / "model.onnx"
    to_onnx(load_function_model(path), dst)   # its serving function, edgekit's default opset
    return dst


class _KerasSubject(object):
    """A Keras model to slice (``job.model``, nested models flattened): its candidate cuts
    (layer indices)."""

    def __init__(self, job, cut, which):
        self.job, self.net = job, flatten_nested(job.model)
        if cut in (None, "auto"):
            self.cands = candidate_cuts(self.net, which)
            if not self.cands:
                raise EdgekitError("the model has no block to cut after: give --cut")
        else:
            self.cands = [resolve_cut(self.net, cut)]
        self.count = len(self.cands)

    def shapes(self):
        return [(self.net.layers[i].name, _shape(self.net.layers[i])) for i in self.cands]

    def cuts_of(self, int8_weights, tmpdir, say):
        return KerasCuts(self.net, self.cands, int8_weights, tmpdir, say)

    def input_spec(self):
        return self.job.ds.input_spec()


class _OnnxSubject(object):
    """An ONNX model to slice (``job.onnx``: the data already fitted to its layout, size,
    channels): its candidate cuts (tensors, :mod:`edgekit.compress.knn.onnx_cuts`)."""

    def __init__(self, job, cut, which):
        from edgekit.compress.knn.onnx_cuts import onnx_candidates, resolve_onnx_cut
        from edgekit.onnx_model import load_inlined
        self.job, self.facts, path = job, job.onnx, job.model_path
        # external data read in, torch's module functions inlined: every tensor a cut
        self.model = _opset_checked(load_inlined(path), path)
        cands = onnx_candidates(self.model, which)
        if cut in (None, "auto"):
            if not cands:
                raise EdgekitError("{}: no cut point found in the ONNX graph (no block end with "
                                   "a known NCHW layout): give --cut NODE".format(path))
            self.cands = cands
        else:
            self.cands = [resolve_onnx_cut(cands, cut, self.model)]
        self.count = len(self.cands)

    def shapes(self):
        return [(c.node, c.shape) for c in self.cands]

    def cuts_of(self, int8_weights, tmpdir, say):
        return OnnxCuts(self.model, self.cands, self.facts["layout"], int8_weights, say)

    def input_spec(self):
        from edgekit.onnx_model import input_spec
        return input_spec(self.facts, self.job.ds)


def _opset_checked(model, path):
    """``model`` if the k-NN head can join it: default-domain opset <= HEAD_MAX_OPSET."""
    from edgekit.compress.knn.onnx import HEAD_MAX_OPSET, graph_opset
    if graph_opset(model) > HEAD_MAX_OPSET:
        raise EdgekitError("{} is at opset {}: the k-NN head is built for opsets 13..{}; export "
                           "it at opset <= {}".format(path, graph_opset(model), HEAD_MAX_OPSET,
                                                      HEAD_MAX_OPSET))
    return model


class KerasCuts(object):
    """The candidate cuts of a Keras model: one multi-output model (every cut an output) for
    the features, converted to ONNX once for the bytes. ``labels``: index -> (name, index)
    to report instead (the evolved trunk is reported as the cut of the original model)."""

    def __init__(self, model, cuts, int8_weights, tmpdir, say, labels=None):
        import onnx
        from edgekit.compress.knn.features import multi_output_model
        from edgekit.export.onnx import to_onnx
        t = time.time()
        self.model, self.cuts, self.labels = model, list(cuts), labels or {}
        self.multi = multi_output_model(model, cuts, int8_weights)
        path = Path(tmpdir) / "candidates.onnx"
        to_onnx(self.multi, path)
        self.graph = onnx.load(str(path))
        path.unlink()
        if len(self.graph.graph.output) != len(cuts):
            raise EdgekitError("ONNX conversion merged candidate outputs ({} for {} cuts): give "
                               "--cut".format(len(self.graph.graph.output), len(cuts)))
        say("converted the trunk with {} candidate output(s) to ONNX in {:.1f} s".format(
            len(cuts), time.time() - t))

    def label(self, i):
        return self.labels.get(i, (self.model.layers[i].name, i))

    def params(self, i, sub):
        return _upstream_params(self.model, i)

    def shape(self, j):
        from edgekit.compress.knn.features import _output_shape
        return [int(d) for d in _output_shape(self.multi, j)[1:]]

    def trunk(self, j, sub):
        from edgekit._tf import keras
        return keras().Model(self.multi.inputs, self.multi.outputs[j], name="trunk")


class OnnxCuts(object):
    """The candidate cuts of an ONNX model (:mod:`edgekit.compress.knn.onnx_cuts`): the
    graph with every candidate an output, run by onnxruntime; no tensorflow."""

    def __init__(self, model, cands, layout, int8_weights, say):
        from edgekit.compress.knn.onnx_cuts import OrtMulti, candidate_graph
        self.cands, self.cuts, self.layout = cands, list(range(len(cands))), layout
        self.graph = candidate_graph(model, cands, int8_weights)
        self.multi = OrtMulti(self.graph, layout)
        say("ONNX graph: {} candidate cut(s) as outputs ({})".format(
            len(cands), ", ".join(c.node for c in cands)))

    def label(self, i):
        return self.cands[i].node, i

    def params(self, i, sub):
        from edgekit.compress.knn.onnx_cuts import float_params
        return float_params(sub)

    def shape(self, j):
        return list(self.cands[j].shape)

    def trunk(self, j, sub):
        from edgekit.compress.knn.onnx_cuts import OrtMulti
        return OrtMulti(sub, self.layout)


def _search(cuts_of, x_ref, y_ref, x_val, y_val, tmpdir, say, opts, pool, weights,
            int8_weights, objective, budget, min_accuracy, num_classes):
    """Compute every candidate's bytes, stream features, score the grid.

    ``cuts_of``: :class:`KerasCuts` or :class:`OnnxCuts` (the candidates, their graph).
    Returns ``{"rows", "sweep", "chosen", "feats", "cuts_of", "info", "cut_of"}``.
    """
    from edgekit.compress.knn.features import RAW_MAX, cut_features
    from edgekit.compress.knn.onnx import FeatureReducer, predict_head_bytes, trunk_file_bytes, \
        trunk_subgraph
    from edgekit.compress.knn.search import DIMS_GRID
    label, cuts, graph, multi = cuts_of.label, cuts_of.cuts, cuts_of.graph, cuts_of.multi

    info, keep, smallest = {}, [], None
    for j, i in enumerate(cuts):
        name, shown = label(i)
        sub = trunk_subgraph(graph, j)
        tb = trunk_file_bytes(sub, int8_weights)
        shape = cuts_of.shape(j)
        info[i] = {"sub": sub, "trunk_bytes": tb, "feat": sub.graph.output[0].name,
                   "trunk_params": cuts_of.params(i, sub), "shape": shape}
        # the least this cut can cost: its trunk + the smallest head the options allow
        D = FeatureReducer(pool).in_dims(shape)
        d_min = None if (opts["dims"] == 0 or D <= RAW_MAX) else \
            min(opts["dims"] or DIMS_GRID[0], D)
        n_min = min(len(y_ref) if r in ("all",) else (1 if r == "cnn" else p * num_classes)
                    for r, p in opts["refs"])
        low = tb + predict_head_bytes(D, d_min, n_min, num_classes, 1, pool, any(opts["int8"]),
                                      int8_weights, weights, info[i]["feat"])
        if smallest is None or low < smallest[0]:
            smallest = (int(low), name)
        info[i]["entry"] = {"index": int(shown), "layer": name, "feature_shape": shape,
                            "in_dims": int(D), "trunk_params": info[i]["trunk_params"],
                            "trunk_bytes": tb}
        if budget is not None and low > budget:
            info[i]["entry"].update(skipped="smallest configuration over the budget",
                                    smallest_bytes=int(low))
            say("cut {} {}: skipped, its smallest configuration is {:,} B > budget {:,} B "
                "(trunk {:,} B)".format(name, "x".join(map(str, shape)), int(low), budget, tb))
            continue
        keep.append((j, i))
    if objective == "latency":
        for j, i in keep:
            info[i]["latency_ms_p50"] = _latency_ms(info[i]["sub"], x_val, tmpdir)

    feats = cut_features(multi, [(j, i, label(i)[0]) for j, i in keep], x_ref, y_ref, x_val,
                         pool=pool, max_dims=max(DIMS_GRID), dims=opts["dims"],
                         int8_weights=int8_weights, say=say)
    rows = []
    for n, cf in enumerate(feats):
        t = time.time()
        i = cf.index
        name, shown = label(i)
        crow, low, heads = search_cut(cf, y_ref, y_val, opts, info[i]["trunk_bytes"], budget,
                               num_classes, pool, weights, int8_weights, info[i]["feat"])
        if low is not None and low < smallest[0]:
            smallest = (low, name)
        for r in crow:
            r.update(index=int(shown), layer=name, trunk_params=info[i]["trunk_params"])
            if "latency_ms_p50" in info[i]:
                r["latency_ms_p50"] = info[i]["latency_ms_p50"]
        rows += crow
        cf.heads = heads
        entry = info[i]["entry"]
        entry.update(configs=len(crow), pca_fit_samples=int(cf.fit_samples),
                     seconds=round(time.time() - t, 2))
        if crow:
            best = pick(crow, objective, budget, None)
            entry.update({kk: best[kk] for kk in ("val_accuracy", "bytes", "dims", "reduction",
                                                   "prototypes", "n_prototypes", "int8", "k")})
            if "latency_ms_p50" in best:
                entry["latency_ms_p50"] = best["latency_ms_p50"]
            say("cut {:>2}/{} {} {}: {:.2%} val with {} in {:,} B [{} configs, {:.1f} s]".format(
                n + 1, len(feats), name, "x".join(map(str, cf.shape)), best["val_accuracy"],
                _describe(best), best["bytes"], len(crow), time.time() - t))
        else:
            entry.update(skipped="no configuration within the budget", smallest_bytes=low)
            say("cut {:>2}/{} {}: no configuration within {:,} B (smallest {:,} B)".format(
                n + 1, len(feats), name, budget, low or 0))
    sweep = [info[i]["entry"] for i in cuts]
    chosen = pick(rows, objective, budget, min_accuracy, smallest)
    return {"rows": rows, "sweep": sweep, "chosen": chosen, "cuts_of": cuts_of,
            "feats": {cf.index: cf for cf in feats}, "info": info,
            "cut_of": {label(i)[1]: (j, i) for j, i in keep}}


def _shape(layer):
    shape = layer.output_shape
    return tuple(shape[0] if isinstance(shape, list) else shape)[1:]


def _describe(r):
    refs = "all {:,} refs".format(r["n_prototypes"]) if r["reduction"] == "all" else \
        "{}/class".format(r["prototypes"]) if r["reduction"] == "kmeans" else \
        "{:,} condensed".format(r["n_prototypes"])
    return "{} dims, {}{}, k {}".format("raw {}".format(r.get("in_dims")) if r["dims"] is None
                                        else r["dims"], refs, " int8" if r["int8"] else "", r["k"])


def _upstream_params(model, idx):
    """Parameters of the layers ``model.layers[idx]`` depends on (itself included)."""
    from edgekit.compress.knn.cuts import layer_graph
    consumers = layer_graph(model)
    parents = [[] for _ in consumers]
    for a, cs in enumerate(consumers):
        for b in cs:
            parents[b].append(a)
    seen, stack = set(), [idx]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(parents[i])
    return int(sum(model.layers[i].count_params() for i in seen))


def _latency_ms(onnx_model, x, tmpdir):
    """onnxruntime CPU p50 (batch 1, one thread) of an ONNX model (file path or ModelProto)."""
    from edgekit.runtime.bench import measure
    from edgekit.runtime.ort import OrtRunner
    path = onnx_model
    if hasattr(onnx_model, "graph"):
        path = Path(tmpdir) / "latency.onnx"
        path.write_bytes(onnx_model.SerializeToString())
    r = measure(OrtRunner(path, threads=1), x[:16], batch=1, warmup=3, iterations=20)
    return r["latency_ms"]["p50"]


def _stream_transform(trunk, reducer, x, batch=128):
    """Reduced features of ``x`` through ``trunk``, batch by batch (no full feature maps)."""
    out = [reducer.transform(trunk.predict_on_batch(x[s:s + batch]))
           for s in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _build(res, subject, job, y_ref, say, tmpdir, cut, logbook, setting):
    """Fit the chosen configuration, check it against the job's accuracy guard, build its ONE
    graph, measure it, write the artifact through ``job``."""
    from edgekit.compress.knn.head import clone_fitted
    from edgekit.compress.knn.onnx import FeatureReducer, build_knn_graph, pool_name
    from edgekit.onnx_model import to_model_layout
    from edgekit.runtime.base import classes_of, first_output
    from edgekit.runtime.ort import OrtRunner
    ds = job.ds
    c = res["chosen"]
    j, i = res["cut_of"][c["index"]]
    cf, info = res["feats"][i], res["info"][i]
    int8_weights = setting["int8_weights"]
    if c["dims"] is None:
        reducer = FeatureReducer(setting["pool"])
    else:
        reducer = FeatureReducer.from_pca(setting["pool"], cf.mean, cf.components, c["dims"],
                                          int8=int8_weights)
    head = cf.heads[(c["dims"], c["reduction"], c["prototypes"])]   # as scored, no refit
    head = head.as_int8() if c["int8"] else clone_fitted(head)
    head.set_params(n_neighbors=c["k"])
    trunk = res["cuts_of"].trunk(j, info["sub"])
    say("chosen: cut {} ({} trunk params), {} -> predicted {:,} B; measuring".format(
        c["layer"], c["trunk_params"], _describe(c), c["bytes"]))
    val_pred = head.predict(_stream_transform(trunk, reducer, ds.x_val))
    val_acc = float(np.mean(val_pred == ds.y_val))
    guard_record = job.guard.check(val_acc, "knn-slice", [
        "a larger --max-bytes", "--cut-candidates all", "--objective accuracy"], pred=val_pred)
    py_pred = head.predict_index(_stream_transform(trunk, reducer, ds.x_test))
    before = job.before()
    layout = getattr(subject, "facts", {}).get("layout")
    budget = setting["budget"]
    files = {}
    with job.staging() as tmp:
        parts = build_knn_graph(None, reducer, head, tmp / ONNX_FILE, trunk_onnx=info["sub"],
                                int8_weights=int8_weights)
        if budget is not None and parts["total"] > budget:
            raise EdgekitError("the engine is {:,} bytes, over the budget of {:,}: allow more "
                               "bytes or pass --prototypes/--dims/--pool to shrink it".format(
                                   parts["total"], budget))
        with OrtRunner(tmp / ONNX_FILE) as r:        # small batches: a wide trunk's activations
            ort_pred = np.concatenate([
                classes_of(first_output(r, to_model_layout(ds.x_test[s:s + 128], layout)))
                for s in range(0, len(ds.x_test), 128)])
        latency = _latency_ms(tmp / ONNX_FILE, to_model_layout(ds.x_val[:16], layout), tmpdir)
        if hasattr(trunk, "save"):                   # the Keras trunk (evolve starts from it)
            save_keras_h5(trunk, tmp / TRUNK_FILE)
        test_acc_py = float(np.mean(py_pred == ds.y_test))
        test_acc_onnx = float(np.mean(ort_pred == ds.y_test))
        agreement = float(np.mean(py_pred == ort_pred))
        fshape = tuple(cf.shape)
        params = {"cut": c["layer"], "cut_index": int(c["index"]),
                  "cut_requested": "auto" if cut in (None, "auto") else str(cut),
                  "cut_candidates": setting["cut_candidates"],
                  "k": int(head.n_neighbors), "weights": setting["weights"],
                  "reduction": head.reduction, "prototypes_per_class": c["prototypes"],
                  "dims": c["dims"], "pool": pool_name(setting["pool"]),
                  "int8_prototypes": bool(c["int8"]), "int8_weights": bool(int8_weights),
                  "objective": setting["objective"], "max_bytes": budget,
                  "max_bytes_source": setting["budget_source"],
                  "min_accuracy": setting["min_accuracy"],
                  "reference_samples": int(len(y_ref)),
                  "search_validation_samples": int(setting["val_samples"]),
                  "pca_fit_samples": int(cf.fit_samples),
                  "evolve": setting["evolve"],
                  "evolve_params": {kk: _jsonable(v)
                                    for kk, v in setting["evolve_params"].items()}}
        metrics = {
            "accuracy": test_acc_onnx,
            "accuracy_python": test_acc_py,
            "accuracy_onnx": test_acc_onnx,
            "agreement": agreement,
            "val_accuracy": val_acc,
            "val_accuracy_search": c["val_accuracy"],
            "guard": guard_record,
            "before": before,
            "params": int(c["trunk_params"]),
            "trunk_params": int(c["trunk_params"]),
            "prototypes": int(head.n_prototypes_),
            "dims": int(reducer.out_dims(fshape)),
            "num_classes": ds.num_classes,
            "bytes": int(parts["total"]),
            "bytes_predicted": int(c["bytes"]),
            "bytes_parts": {"trunk_weights": parts["trunk_weights"],
                            "reduction": parts["reduction"],
                            "prototypes_labels": parts["prototypes_labels"],
                            "graph_overhead": parts["total"] - parts["trunk_weights"]
                            - parts["reduction"] - parts["prototypes_labels"]},
            "input_bytes": job.input_bytes(),
            "latency_ms_p50_ort_cpu_b1": latency,
            "search_seconds": round(setting["seconds"], 1),
            "sweep": res["sweep"],
        }
        files[ONNX_FILE] = describe_file(
            tmp / ONNX_FILE, "onnx", "fp32", opset=parts["opset"], inference=True,
            prototypes_precision="int8" if c["int8"] else "fp32")
        if (tmp / TRUNK_FILE).exists():
            files[TRUNK_FILE] = describe_file(tmp / TRUNK_FILE, "keras", "fp32", inference=False,
                                              role="trunk")
            if job.keras3:                           # the user's Keras reads the trunk too
                from edgekit.modelio import keras3_file
                files.update(keras3_file(trunk, tmp, "trunk", role="trunk"))
        grid = sorted(res["rows"], key=lambda r: (r["index"], -r["val_accuracy"], r["bytes"]))
        (tmp / SWEEP_FILE).write_text(json.dumps({
            "objective": setting["objective"], "budget": budget, "chosen": c,
            "sweep": res["sweep"], "configs": grid}, indent=1, default=_jsonable) + "\n")
        files[SWEEP_FILE] = describe_file(tmp / SWEEP_FILE, "json", "fp32", inference=False)
        if logbook is not None:
            _write_logbook(tmp, files, logbook)
        job.write(tmp, "knn-slice", params, metrics, files, input_spec=subject.input_spec(),
                  output={"names": list(OUTPUTS), "convention": "class_id"},
                  outputs=list(OUTPUTS))
    art = job.artifact()
    say("knn-slice -> {}: test accuracy {:.2%} (onnx) / {:.2%} (python), agreement {:.2%}, "
        "{:,} bytes (predicted {:,})".format(job.out, test_acc_onnx, test_acc_py, agreement,
                                             parts["total"], c["bytes"]))
    return art


def _write_logbook(tmp, files, logbook):
    book = {kk: v for kk, v in logbook.items() if kk != "plot_png"} if isinstance(logbook, dict) \
        else logbook
    (tmp / "logbook.json").write_text(json.dumps(book, indent=2, default=_jsonable) + "\n")
    files["logbook.json"] = describe_file(tmp / "logbook.json", "json", "fp32", inference=False)
    if isinstance(book, dict) and book.get("generations"):
        plot_convergence(book, tmp / "convergence.png")
        files["convergence.png"] = describe_file(tmp / "convergence.png", "png", "fp32",
                                                 inference=False)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool, type(None), list, dict)):
        return v
    return str(v)


def _printer(progress):
    """Progress lines on stderr, one per event, flushed as they happen, with the seconds
    since the start."""
    import sys
    if not progress:
        return lambda *a: None
    t0 = time.time()
    return lambda msg: print("[{:6.1f} s] {}".format(time.time() - t0, msg), file=sys.stderr,
                             flush=True)
