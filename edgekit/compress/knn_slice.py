"""k-NN slicing: cut a trained CNN after a conv block, classify with k-NN on its features.

The result is ONE ONNX graph (trunk + pooling/PCA/L2 reduction + k-NN head, default-domain
ops at opset 13, see :mod:`edgekit.compress.knn_onnx`) in an artifact of kind
``compressed`` / method ``knn-slice``. ``metrics.bytes`` is that file's size: every byte
inference needs (trunk weights, reduction, prototypes and labels).

Cut choice (``cut="auto"``): every candidate (the end of each conv/pool block) is scored on
the validation split with the same head settings (reference set subsampled to
``sweep_samples``): validation accuracy, the ONNX file's bytes, onnxruntime CPU latency
(batch 1). Candidates over ``max_bytes`` or under ``min_accuracy`` are dropped; then
``objective="accuracy"`` takes the highest accuracy (ties: fewer bytes), ``"size"`` the
fewest bytes, ``"latency"`` the lowest p50 latency. Then ``dims``, ``prototypes`` and ``k``
(when not given) are chosen on the validation split, in that order, from small grids.
Test accuracy is measured once, at the end, on the test split.

Example::

    art = knn_slice("runs/seed", "mnist:data/mnist", "runs/knn", cut="pool1", k=9)
    art.manifest["metrics"]["bytes"], art.manifest["metrics"]["agreement"]
"""
import json
import tempfile
from pathlib import Path

import numpy as np

from edgekit.artifact import Artifact, describe_file, new_manifest, staging, write_manifest
from edgekit.errors import EdgekitError

ONNX_FILE = "model.onnx"
TRUNK_FILE = "trunk.h5"
SWEEP_FILE = "sweep.json"
OBJECTIVES = ("accuracy", "size", "latency")
BLOCK_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
                "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")
BLOCK_TAIL = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU")
K_GRID = (1, 3, 5, 7, 9)
DIMS_GRID = (16, 32, 64)
PROTO_GRID = (10, 30, 100)
DEFAULT_K = 5


def candidate_cuts(model):
    """Indices (into ``model.layers``) that end a conv/pool block, output layer excluded."""
    layers = model.layers
    out = []
    for i, layer in enumerate(layers):
        if type(layer).__name__ not in BLOCK_LAYERS:
            continue
        j = i
        while j + 1 < len(layers) and type(layers[j + 1]).__name__ in BLOCK_TAIL:
            j += 1
        if j < len(layers) - 1 and j not in out:
            out.append(j)
    return out


def resolve_cut(model, cut):
    """A layer index from a name or index; refuses unknown layers and the output layer."""
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
    if idx == len(layers) - 1:
        raise EdgekitError("--cut {!r} is the output layer: cut earlier (candidates: {})".format(
            names[idx], ", ".join(names[i] for i in candidate_cuts(model))))
    return idx


def _trunk(model, idx):
    from edgekit._tf import keras
    return keras().Model(model.inputs, model.layers[idx].output, name="trunk")


def _features(trunk, x, batch=512):
    return trunk.predict(x, batch_size=batch, verbose=0)


def _subsample(y, n, seed=0):
    """Stratified-ish seeded subsample of indices (all when n is None or >= len)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = np.random.RandomState(seed)
    idx = []
    for c in np.unique(y):
        ic = np.flatnonzero(y == c)
        take = max(1, int(round(n * len(ic) / float(len(y)))))
        idx.append(rng.choice(ic, min(take, len(ic)), replace=False))
    return np.sort(np.concatenate(idx))


def _fit_pipeline(F_ref, y_ref, pool, dims, k, prototypes, reduction, int8, weights,
                  int8_weights=False):
    from edgekit.compress.knn_head import KnnHead
    from edgekit.compress.knn_onnx import FeatureReducer
    reducer = FeatureReducer(pool, dims, int8=int8_weights).fit(F_ref)
    red = reduction or ("kmeans" if prototypes else "all")
    head = KnnHead(n_neighbors=k, weights=weights, prototypes=prototypes if red == "kmeans" else None,
                   reduction=red, int8=int8).fit(reducer.transform(F_ref), y_ref)
    return reducer, head


def _val_acc(reducer, head, F_val, y_val):
    return float(np.mean(head.predict(reducer.transform(F_val)) == y_val))


def _latency_ms(path, x):
    from edgekit.runtime.bench import measure
    from edgekit.runtime.ort import OrtRunner
    r = measure(OrtRunner(path, threads=1), x[:16], batch=1, warmup=3, iterations=20)
    return r["latency_ms"]["p50"]


def _check_args(k, prototypes, dims, objective, max_bytes, min_accuracy, reduction):
    if objective not in OBJECTIVES:
        raise EdgekitError("--objective must be one of {}, got {!r}".format(
            ", ".join(OBJECTIVES), objective))
    for name, v in (("--k", k), ("--prototypes", prototypes), ("--dims", dims),
                    ("--max-bytes", max_bytes)):
        low = 0 if name == "--dims" else 1
        if v is not None and (not isinstance(v, (int, np.integer)) or v < low):
            raise EdgekitError("{} must be an integer >= {}, got {!r}".format(name, low, v))
    if min_accuracy is not None and not 0.0 <= float(min_accuracy) <= 1.0:
        raise EdgekitError("--min-accuracy must be in 0..1, got {!r}".format(min_accuracy))
    if reduction not in (None, "all", "kmeans", "cnn"):
        raise EdgekitError("reduction must be all, kmeans or cnn, got {!r}".format(reduction))
    if prototypes is not None and reduction in ("all", "cnn"):
        raise EdgekitError("--prototypes needs reduction 'kmeans' (got {!r})".format(reduction))


def knn_slice(model, data, out, cut="auto", k=None, prototypes=None, dims=None, pool=None,
              objective="accuracy", max_bytes=None, min_accuracy=None, evolve=None, force=False,
              progress=True, int8=False, weights="uniform", reduction=None, sweep_samples=3000,
              ref_samples=None, int8_weights=False, **evolve_params):
    """Slice ``model`` at ``cut``, fit a k-NN head, write ONE ONNX graph artifact to ``out``.

    ``model``: artifact dir, .h5 or SavedModel; ``data``: a spec or Dataset. ``pool``: None,
    ``avgN`` / ``maxN`` (N x N pooling before flattening). ``int8``: int8 prototypes.
    ``dims=0``: no PCA (and no dims search). ``ref_samples``: cap on the training vectors used as the reference set (seeded
    subsample). ``evolve``: ``cma``/``pso`` to evolve the trunk weights first
    (``edgekit.compress.evolve.evolve_trunk``; ``evolve_params`` are passed on).
    Returns the written :class:`~edgekit.artifact.Artifact`.
    """
    from edgekit.data import load_data
    from edgekit.models import check_model_fits, count_params, load_model, model_sha256

    _check_args(k, prototypes, dims, objective, max_bytes, min_accuracy, reduction)
    if Path(out).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    ds = data if hasattr(data, "x_train") else load_data(data)
    net = load_model(model)
    check_model_fits(net, ds)
    from edgekit.compress.knn_onnx import (build_knn_graph, parse_pool, pool_name,
                                           quantize_keras_trunk)
    parse_pool(pool)
    say = _printer(progress)

    ref_idx = _subsample(ds.y_train, ref_samples)
    x_ref, y_ref = ds.x_train[ref_idx], ds.y_train[ref_idx]
    counts = np.bincount(y_ref, minlength=ds.num_classes)
    if prototypes is not None and prototypes > counts.min():
        raise EdgekitError("--prototypes {} per class is larger than the smallest class ({} "
                           "training samples): choose --prototypes <= {}".format(
                               prototypes, int(counts.min()), int(counts.min())))
    n_protos_max = len(y_ref) if prototypes is None else prototypes * ds.num_classes
    if k is not None and k > n_protos_max:
        raise EdgekitError("--k {} is larger than the prototype count ({}): choose --k <= {}"
                           .format(k, n_protos_max, n_protos_max))

    # -- 1. cut ---------------------------------------------------------------------
    sweep = []
    tmpdir = Path(tempfile.mkdtemp(prefix="edgekit-knn-"))
    try:
        if cut == "auto" or cut is None:
            cands = candidate_cuts(net)
            if not cands:
                raise EdgekitError("the model has no conv/pool block to cut after: give --cut")
            sw_idx = _subsample(y_ref, sweep_samples)
            skipped = []
            for idx in cands:
                trunk = _trunk(net, idx)
                if int8_weights:
                    trunk = quantize_keras_trunk(trunk)
                Fr = _features(trunk, x_ref[sw_idx])
                Fv = _features(trunk, ds.x_val)
                kk = min(k or DEFAULT_K, len(sw_idx))
                pp = None if prototypes is None else min(prototypes, int(np.bincount(
                    y_ref[sw_idx]).min()))
                dd = None if dims is None else min(dims, len(sw_idx))
                try:
                    reducer, head = _fit_pipeline(Fr, y_ref[sw_idx], pool, dd, kk, pp,
                                                  reduction, int8, weights, int8_weights)
                except EdgekitError as exc:
                    say("cut {}: skipped ({})".format(net.layers[idx].name, exc))
                    skipped.append("{}: {}".format(net.layers[idx].name, exc))
                    continue
                acc = _val_acc(reducer, head, Fv, ds.y_val)
                gpath = tmpdir / "cand{}.onnx".format(idx)
                parts = build_knn_graph(trunk, reducer, head, gpath, int8_weights=int8_weights)
                row = {"index": idx, "layer": net.layers[idx].name,
                       "feature_shape": list(trunk.output_shape[1:]),
                       "trunk_params": count_params(trunk), "val_accuracy": acc,
                       "bytes": parts["total"], "latency_ms_p50": _latency_ms(gpath, ds.x_val),
                       "k": kk, "prototypes": head.n_prototypes_, "dims": reducer.out_dims(
                           trunk.output_shape[1:]), "reference": len(sw_idx)}
                sweep.append(row)
            if not sweep:
                if dims and skipped and all("--dims" in r for r in skipped):
                    raise EdgekitError("--dims {} is larger than the features at every cut point "
                                       "(e.g. {}): lower --dims".format(dims, skipped[-1]))
                raise EdgekitError("no cut point could be evaluated ({}): give --cut".format(
                    skipped[0] if skipped else "no candidate"))
            chosen = pick_cut(sweep, objective, max_bytes, min_accuracy)
            _print_sweep(sweep, chosen, progress)
            cut_idx = chosen["index"]
        else:
            cut_idx = resolve_cut(net, cut)
        trunk = _trunk(net, cut_idx)
        say("cut after layer {} ({}): trunk {:,} params".format(
            cut_idx, net.layers[cut_idx].name, count_params(trunk)))

        # -- 2. optional evolution of the trunk --------------------------------------
        logbook = None
        if evolve:
            from edgekit.compress.evolve import evolve_trunk
            strategy = evolve_params.pop("strategy", "serial")
            trunk, logbook = evolve_trunk(trunk, x_ref, y_ref, ds.x_val, ds.y_val, evolve,
                                          strategy, progress=progress, k=k or DEFAULT_K,
                                          **evolve_params)
        if int8_weights:
            trunk = quantize_keras_trunk(trunk)

        # -- 3. reduction + head settings on the validation split ---------------------
        say("extracting features of {:,} reference / {:,} validation images".format(
            len(x_ref), len(ds.x_val)))
        F_ref, F_val = _features(trunk, x_ref), _features(trunk, ds.x_val)
        fshape = tuple(trunk.output_shape[1:])
        trunk_bytes_est = _trunk_bytes(trunk, tmpdir, int8_weights)
        chosen_cfg, grid = choose_head(F_ref, y_ref, F_val, ds.y_val, fshape, pool, k, prototypes,
                                       dims, reduction, int8, weights, objective, max_bytes,
                                       min_accuracy, trunk_bytes_est, say, int8_weights)
        reducer, head = _fit_pipeline(F_ref, y_ref, pool, chosen_cfg["dims"], chosen_cfg["k"],
                                      chosen_cfg["prototypes"], reduction, int8, weights,
                                      int8_weights)
        val_acc = _val_acc(reducer, head, F_val, ds.y_val)

        # -- 4. export + measure ------------------------------------------------------
        from edgekit.runtime.ort import OrtRunner
        F_test = _features(trunk, ds.x_test)
        py_pred = head.predict_index(reducer.transform(F_test))
        with staging(out, force=force) as tmp:
            parts = build_knn_graph(trunk, reducer, head, tmp / ONNX_FILE,
                                    int8_weights=int8_weights)
            if max_bytes is not None and parts["total"] > max_bytes:
                raise EdgekitError("the engine is {:,} bytes, over --max-bytes {:,}: allow more "
                                   "bytes or pass --prototypes/--dims/--pool to shrink it".format(
                                       parts["total"], max_bytes))
            with OrtRunner(tmp / ONNX_FILE) as r:
                ort_pred = np.concatenate([r.predict(ds.x_test[i:i + 1024])
                                           for i in range(0, len(ds.x_test), 1024)])
            latency = _latency_ms(tmp / ONNX_FILE, ds.x_val)
            trunk.save(str(tmp / TRUNK_FILE), include_optimizer=False)
            test_acc_py = float(np.mean(py_pred == ds.y_test))
            test_acc_onnx = float(np.mean(ort_pred == ds.y_test))
            agreement = float(np.mean(py_pred == ort_pred))
            n_cls = ds.num_classes
            params = {"cut": net.layers[cut_idx].name, "cut_index": int(cut_idx),
                      "cut_requested": "auto" if cut in (None, "auto") else str(cut),
                      "k": int(head.n_neighbors), "weights": weights,
                      "reduction": head.reduction, "prototypes_per_class": chosen_cfg["prototypes"],
                      "dims": chosen_cfg["dims"], "pool": pool_name(pool), "int8_prototypes": bool(int8),
                      "int8_weights": bool(int8_weights),
                      "objective": objective, "max_bytes": max_bytes, "min_accuracy": min_accuracy,
                      "reference_samples": int(len(y_ref)), "evolve": evolve,
                      "evolve_params": {kk: _jsonable(v) for kk, v in evolve_params.items()}}
            metrics = {
                "accuracy": test_acc_onnx,
                "accuracy_python": test_acc_py,
                "accuracy_onnx": test_acc_onnx,
                "agreement": agreement,
                "val_accuracy": val_acc,
                "params": count_params(trunk),
                "trunk_params": count_params(trunk),
                "prototypes": int(head.n_prototypes_),
                "dims": int(reducer.out_dims(fshape)),
                "num_classes": n_cls,
                "bytes": int(parts["total"]),
                "bytes_parts": {"trunk_weights": parts["trunk_weights"],
                                "reduction": parts["reduction"],
                                "prototypes_labels": parts["prototypes_labels"],
                                "graph_overhead": parts["total"] - parts["trunk_weights"]
                                - parts["reduction"] - parts["prototypes_labels"]},
                "latency_ms_p50_ort_cpu_b1": latency,
                "sweep": sweep,
                "head_grid": grid,
            }
            source = {"model_sha256": model_sha256(model) if not hasattr(model, "layers") else None,
                      "data": ds.spec, "data_sha256": ds.fingerprint()}
            manifest = new_manifest("compressed", "knn-slice", params, source, ds.input_spec(),
                                    ds.classes, metrics)
            manifest["outputs"] = ["class_id", "scores"]
            manifest["files"][ONNX_FILE] = describe_file(
                tmp / ONNX_FILE, "onnx", "fp32", opset=13, inference=True,
                prototypes_precision="int8" if int8 else "fp32")
            manifest["files"][TRUNK_FILE] = describe_file(tmp / TRUNK_FILE, "keras", "fp32",
                                                          inference=False, role="trunk")
            (tmp / SWEEP_FILE).write_text(json.dumps({"objective": objective, "sweep": sweep,
                                                      "head_grid": grid}, indent=2) + "\n")
            manifest["files"][SWEEP_FILE] = describe_file(tmp / SWEEP_FILE, "json", "fp32",
                                                          inference=False)
            if logbook is not None:
                _write_logbook(tmp, manifest, logbook)
            write_manifest(tmp, manifest)
    finally:
        import shutil
        shutil.rmtree(tmpdir, ignore_errors=True)
    art = Artifact.open(out)
    say("knn-slice -> {}: test accuracy {:.2%} (onnx) / {:.2%} (python), agreement {:.2%}, "
        "{:,} bytes".format(out, test_acc_onnx, test_acc_py, agreement, parts["total"]))
    return art


def pick_cut(sweep, objective, max_bytes=None, min_accuracy=None):
    """The sweep row chosen by the stated rule (see the module docstring)."""
    ok = list(sweep)
    if max_bytes is not None:
        ok = [r for r in ok if r["bytes"] <= max_bytes]
        if not ok:
            small = min(sweep, key=lambda r: r["bytes"])
            raise EdgekitError("no cut meets --max-bytes {:,}: the smallest reachable is {:,} bytes "
                               "(cut {}); raise --max-bytes or shrink with --prototypes/--dims/"
                               "--pool".format(max_bytes, small["bytes"], small["layer"]))
    if min_accuracy is not None:
        ok2 = [r for r in ok if r["val_accuracy"] >= min_accuracy]
        if not ok2:
            best = max(ok, key=lambda r: r["val_accuracy"])
            raise EdgekitError("no cut reaches --min-accuracy {:.4f} on the validation split: the "
                               "best is {:.4f} (cut {})".format(min_accuracy, best["val_accuracy"],
                                                                best["layer"]))
        ok = ok2
    if objective == "size":
        return min(ok, key=lambda r: (r["bytes"], -r["val_accuracy"], r["index"]))
    if objective == "latency":
        return min(ok, key=lambda r: (r["latency_ms_p50"], -r["val_accuracy"], r["index"]))
    return min(ok, key=lambda r: (-r["val_accuracy"], r["bytes"], r["index"]))


def choose_head(F_ref, y_ref, F_val, y_val, fshape, pool, k, prototypes, dims, reduction, int8,
                weights, objective, max_bytes, min_accuracy, trunk_bytes, say, int8_weights=False):
    """Choose dims, then prototypes, then k on the validation split (each only if not given).

    Rule per stage: candidates whose estimated bytes exceed ``max_bytes`` are dropped;
    ``objective="size"`` takes the smallest within 0.5 points of the best validation
    accuracy (and >= ``min_accuracy``), otherwise the most accurate (ties: smaller).
    """
    from edgekit.compress.knn_head import label_itemsize
    counts = np.bincount(y_ref)
    counts = counts[counts > 0]
    n_cls = len(counts)
    grid = []

    def est_bytes(d_out, n_protos):
        per = 1 if int8 else 4
        red = 0 if d_out is None or d_out == in_dims else \
            in_dims * d_out * (1 if int8_weights else 4) + d_out * 4 * (2 if int8_weights else 1)
        return trunk_bytes + red + n_protos * (d_out or in_dims) * per + n_protos * label_itemsize(n_cls)

    from edgekit.compress.knn_onnx import FeatureReducer
    in_dims = FeatureReducer(pool).in_dims(fshape)
    cfg = {"dims": dims, "prototypes": prototypes, "k": k or DEFAULT_K}
    cache = {}

    def evaluate(stage, **change):
        c = dict(cfg, **change)
        red = reduction or ("kmeans" if c["prototypes"] else "all")
        n_pro = c["prototypes"] * n_cls if red == "kmeans" else len(y_ref)
        if c["k"] > n_pro:
            return None
        d_out = c["dims"] or in_dims
        if max_bytes is not None and est_bytes(c["dims"], n_pro) > max_bytes and \
                n_pro * d_out > 10 ** 6:
            return None              # far too big to fit: skip the (expensive) evaluation
        key = (c["dims"], c["prototypes"])
        if key not in cache:        # prototypes and PCA do not depend on k: fit once
            cache.clear()
            cache[key] = _fit_pipeline(F_ref, y_ref, pool, c["dims"], c["k"], c["prototypes"],
                                       reduction, int8, weights, int8_weights)
        reducer, head = cache[key]
        head.set_params(n_neighbors=c["k"])
        row = dict(c, stage=stage, val_accuracy=_val_acc(reducer, head, F_val, y_val),
                   est_bytes=int(est_bytes(c["dims"], head.n_prototypes_)))
        grid.append(row)
        return row

    def choose(rows):
        rows = [r for r in rows if r is not None]
        if not rows:
            return dict(cfg)
        if max_bytes is not None:
            fit = [r for r in rows if r["est_bytes"] <= max_bytes]
            rows = fit or rows
        best = max(r["val_accuracy"] for r in rows)
        if objective == "size":
            floor = max(best - 0.005, min_accuracy or 0.0)
            ok = [r for r in rows if r["val_accuracy"] >= floor] or rows
            return min(ok, key=lambda r: (r["est_bytes"], -r["val_accuracy"]))
        return min(rows, key=lambda r: (-r["val_accuracy"], r["est_bytes"]))

    if dims is None:
        opts = [None] + [d for d in DIMS_GRID if d < min(in_dims, len(y_ref))]
        if len(opts) > 1:
            cfg["dims"] = choose([evaluate("dims", dims=d) for d in opts])["dims"]
            say("dims chosen on validation: {}".format(cfg["dims"] or in_dims))
    if prototypes is None and reduction in (None, "kmeans"):
        opts = [None] + [p for p in PROTO_GRID if p < counts.min()]
        if len(opts) > 1:
            cfg["prototypes"] = choose([evaluate("prototypes", prototypes=p) for p in opts])[
                "prototypes"]
            say("prototypes per class chosen on validation: {}".format(cfg["prototypes"] or "all"))
    if k is None:
        cfg["k"] = choose([evaluate("k", k=kk) for kk in K_GRID])["k"]
        say("k chosen on validation: {}".format(cfg["k"]))
    return cfg, grid


def _trunk_bytes(trunk, tmpdir, int8_weights=False):
    import onnx
    from edgekit.compress.knn_onnx import quantize_initializers
    from edgekit.export.onnx import to_onnx
    p = Path(tmpdir) / "trunk_only.onnx"
    to_onnx(trunk, p, opset=13)
    if int8_weights:
        m = onnx.load(str(p))
        quantize_initializers(m)
        p.write_bytes(m.SerializeToString())
    return p.stat().st_size


def _write_logbook(tmp, manifest, logbook):
    png = logbook.get("plot_png") if isinstance(logbook, dict) else None
    book = {kk: v for kk, v in logbook.items() if kk != "plot_png"} if isinstance(logbook, dict) \
        else logbook
    (tmp / "logbook.json").write_text(json.dumps(book, indent=2, default=_jsonable) + "\n")
    manifest["files"]["logbook.json"] = describe_file(tmp / "logbook.json", "json", "fp32",
                                                      inference=False)
    if png:
        data = png if isinstance(png, (bytes, bytearray)) else Path(png).read_bytes()
        (tmp / "convergence.png").write_bytes(data)
        manifest["files"]["convergence.png"] = describe_file(tmp / "convergence.png", "png",
                                                             "fp32", inference=False)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (str, int, float, bool, type(None), list, dict)):
        return v
    return str(v)


def _printer(progress):
    if not progress:
        return lambda *a: None
    from rich.console import Console
    console = Console(stderr=True)
    return lambda msg: console.print(msg, highlight=False)


def _print_sweep(sweep, chosen, progress):
    if not progress:
        return
    from rich.console import Console
    from rich.table import Table
    t = Table(title="k-NN slicing: cut sweep (validation split)")
    for col in ("", "layer", "features", "trunk params", "val acc", "bytes", "p50 ms"):
        t.add_column(col)
    for r in sweep:
        t.add_row("*" if r is chosen else "", r["layer"], "x".join(map(str, r["feature_shape"])),
                  "{:,}".format(r["trunk_params"]), "{:.2%}".format(r["val_accuracy"]),
                  "{:,}".format(r["bytes"]), "{:.3f}".format(r["latency_ms_p50"]))
    Console(stderr=True).print(t)
