"""The k-NN slicing search: per cut, every head configuration that fits the byte budget.

For each candidate cut (features from :mod:`edgekit.compress.knn.features`), the grid is
PCA dims x reference set x prototype precision x k:

* dims: :data:`DIMS_GRID` below the feature size, and "no PCA" for narrow features;
* reference set: every training vector (only up to :data:`ALL_REFS_MAX` of them: past that,
  per-class k-means prototypes are the default) or :data:`PROTO_GRID` prototypes per class
  (those that keep at most half of the smallest class); under a byte budget the prototype
  axis grows to what the budget pays for, per dims (:func:`budget_rungs`): the
  :data:`PROTO_LADDER` rungs that fit and the largest per-class count that fits (the "fill",
  at the cheapest prototype precision searched, at most half the smallest class). Without a
  budget (``--max-bytes none``) nothing bounds that growth, so the grid stays
  :data:`PROTO_GRID`;
* prototypes fp32 or int8 (``int8=None``); k from :data:`K_GRID` (one neighbour search
  scores every k).

A configuration's bytes are **computed, not built** (:func:`config_bytes`: the candidate's
trunk subgraph + PCA matrix + prototypes x dims x dtype + labels + the measured head graph
overhead); configurations over the budget are not evaluated. The rest are scored on a
seeded validation subset. :func:`pick` applies the objective to all of them at once, so an
automatic cut choice searches everything an explicit ``--cut`` would.

Example::

    rows, smallest, heads = search_cut(cut_feats, y_ref, y_val, opts, trunk_bytes=36_400,
                                       budget=74_000)
    best = pick(rows, "accuracy", 74_000)
"""
import numpy as np

from edgekit.errors import EdgekitError

OBJECTIVES = ("accuracy", "size", "latency")
K_GRID = (1, 3, 5, 7, 9)
DIMS_GRID = (16, 32, 64)
PROTO_GRID = (10, 30, 100)
PROTO_LADDER = (300, 1000, 3000)  # further rungs, tried only under a budget that pays for them
ALL_REFS_MAX = 5000          # more training vectors than this: prototypes by default
VAL_SAMPLES = 2000           # validation images scoring the search (seeded, stratified)
TOLERANCE = 0.005            # "size"/"latency": within this of the best validation accuracy
DEFAULT_K = 5


def head_options(k, prototypes, dims, int8, reduction, n_ref, class_counts):
    """The grid axes: ``{"k": [...], "refs": [(reduction, per-class or None)], "int8": [...],
    "dims": fixed dims or None (= the grid), "fill": most k-means prototypes per class the
    budget may grow the grid to (None: prototypes fixed or not searched)}``."""
    min_count = int(np.min(class_counts))
    fill = None
    if reduction == "cnn":
        refs = [("cnn", None)]
    elif reduction == "all":
        refs = [("all", None)]
    elif prototypes is not None:
        refs = [("kmeans", int(prototypes))]
    else:
        refs = [("all", None)] if (n_ref <= ALL_REFS_MAX or reduction == "all") else []
        # k-means keeping half a class or more is close to "every vector": not worth a fit
        refs += [("kmeans", p) for p in PROTO_GRID if 2 * p <= min_count]
        if not refs:                     # tiny classes: every vector
            refs = [("all", None)]
        # the budget may grow k-means where the grid uses it at all (not for tiny classes)
        fill = min_count // 2 if 2 * PROTO_GRID[0] <= min_count else None
    return {"k": [int(k)] if k is not None else list(K_GRID), "refs": refs,
            "int8": [bool(int8)] if int8 is not None else [False, True], "dims": dims,
            "fill": fill}


def budget_rungs(fits, most, have):
    """Per-class k-means counts the budget adds to the grid at one dims: the
    :data:`PROTO_LADDER` rungs that fit and the largest count that fits (``fits(p)``: the
    configuration with ``p`` per class is within the budget, monotone in ``p``), at most
    ``most``; none above that count, none already in ``have``. Empty when no count past the
    rungs in ``have`` fits."""
    if not most or most < 1 or not fits(1):
        return []
    lo, hi = 1, int(most)               # largest p with fits(p): binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    top = max([p for p in have if p <= lo] or [0])
    if lo <= top:
        return []
    return [r for r in PROTO_LADDER if top < r < lo and r not in have] + [lo]


def dims_choices(cut, fixed):
    """PCA dims to try at this cut (None = no PCA)."""
    if fixed == 0:
        return [None]
    if fixed:
        return [int(fixed)]
    out = [None] if cut.keep_raw else []
    return out + [d for d in DIMS_GRID if d <= cut.n_components]


def config_bytes(cut, trunk_bytes, dims, n_protos, n_classes, int8, int8_weights, pool,
                 weights, feat):
    from edgekit.compress.knn.onnx import predict_head_bytes
    return int(trunk_bytes + predict_head_bytes(cut.in_dims, dims, n_protos, n_classes, 1,
                                                pool, int8, int8_weights, weights, feat))


def search_cut(cut, y_ref, y_val, opts, trunk_bytes, budget=None, n_classes=None, pool=None,
               weights="uniform", int8_weights=False, feat="feat"):
    """Every configuration of ``opts`` at this cut within ``budget`` bytes, scored on the
    validation features. Returns ``(rows, smallest predicted bytes of any configuration,
    heads)``; ``heads[(dims, reduction, prototypes)]`` is the fitted float head of each
    reference set (k and int8 are applied to it without refitting)."""
    from edgekit.compress.knn.head import KnnHead
    n_classes = n_classes or int(np.max(y_ref)) + 1
    rows, smallest, heads = [], None, {}
    n_ref = len(y_ref)
    for dims in dims_choices(cut, opts["dims"]):
        F_ref = F_val = None
        refs = list(opts["refs"])
        if budget is not None and opts.get("fill"):   # grow the grid to what the budget pays
            cheapest = any(opts["int8"])                # int8 prototypes when searched
            refs += [("kmeans", p) for p in budget_rungs(
                lambda p: config_bytes(cut, trunk_bytes, dims, p * n_classes, n_classes,
                                       cheapest, int8_weights, pool, weights, feat) <= budget,
                opts["fill"], [p for r, p in refs if r == "kmeans"])]
        for reduction, per in refs:
            nominal = n_ref if reduction in ("all", "cnn") else per * n_classes

            def size(n, q):
                return config_bytes(cut, trunk_bytes, dims, n, n_classes, q, int8_weights,
                                    pool, weights, feat)
            low = min(size(nominal if reduction != "cnn" else 1, q) for q in opts["int8"])
            smallest = low if smallest is None else min(smallest, low)
            if budget is not None and low > budget:
                continue
            if F_ref is None:
                F_ref, F_val = cut.features("ref", dims), cut.features("val", dims)
            head = KnnHead(n_neighbors=1, weights=weights, reduction=reduction,
                           prototypes=per).fit(F_ref, y_ref)
            heads[(dims, reduction, per)] = head
            for q in opts["int8"]:
                nbytes = size(head.n_prototypes_, q)
                smallest = min(smallest, nbytes)
                if budget is not None and nbytes > budget:
                    continue
                h = head.as_int8() if q else head
                ks = [k for k in opts["k"] if k <= h.n_prototypes_]
                if not ks:
                    continue
                for k, acc in sorted(h.accuracy_by_k(F_val, y_val, ks).items()):
                    rows.append({"index": int(cut.index), "layer": cut.name,
                                 "feature_shape": list(cut.shape), "in_dims": int(cut.in_dims),
                                 "dims": None if dims is None else int(dims),
                                 "reduction": reduction, "prototypes": per,
                                 "n_prototypes": int(h.n_prototypes_), "int8": bool(q),
                                 "k": int(k), "val_accuracy": float(acc), "bytes": nbytes,
                                 "trunk_bytes": int(trunk_bytes)})
    return rows, smallest, heads


def _key_accuracy(r):
    return (-r["val_accuracy"], r["bytes"], r["index"], r["k"])


def pick(rows, objective="accuracy", max_bytes=None, min_accuracy=None, smallest=None):
    """The row the rule chooses: drop rows over ``max_bytes`` or under ``min_accuracy``; then
    ``accuracy``: the most accurate (ties: fewer bytes, earlier cut, smaller k); ``size``: the
    fewest bytes within :data:`TOLERANCE` of the best accuracy; ``latency``: the lowest trunk
    latency within that tolerance. ``smallest`` (bytes, layer) names the smallest
    configuration seen, for the error when nothing fits."""
    if objective not in OBJECTIVES:
        raise EdgekitError("--objective must be one of {}, got {!r}".format(
            ", ".join(OBJECTIVES), objective))
    ok = [r for r in rows if max_bytes is None or r["bytes"] <= max_bytes]
    if not ok:
        if smallest is None and rows:
            r = min(rows, key=lambda r: r["bytes"])
            smallest = (r["bytes"], r["layer"])
        if smallest is None:
            raise EdgekitError("no cut point could be evaluated: give --cut")
        from edgekit.errors import OverBudget
        raise OverBudget("no cut meets --max-bytes {:,}: the smallest reachable is {:,} bytes "
                         "(cut {}); raise --max-bytes (or --max-bytes none) or shrink with "
                         "--prototypes/--dims/--pool/--int8-weights".format(
                             max_bytes, smallest[0], smallest[1]), smallest=int(smallest[0]))
    if min_accuracy is not None:
        ok2 = [r for r in ok if r["val_accuracy"] >= min_accuracy]
        if not ok2:
            best = min(ok, key=_key_accuracy)
            raise EdgekitError("no cut reaches --min-accuracy {:.4f} on the validation split: the "
                               "best is {:.4f} (cut {})".format(min_accuracy, best["val_accuracy"],
                                                                best["layer"]))
        ok = ok2
    best = min(ok, key=_key_accuracy)
    if objective == "accuracy":
        return best
    floor = max(best["val_accuracy"] - TOLERANCE, min_accuracy or 0.0)
    near = [r for r in ok if r["val_accuracy"] >= floor - 1e-12]
    if objective == "size":
        return min(near, key=lambda r: (r["bytes"], -r["val_accuracy"], r["index"], r["k"]))
    return min(near, key=lambda r: (r.get("latency_ms_p50", np.inf), r["bytes"],
                                    -r["val_accuracy"], r["index"], r["k"]))
