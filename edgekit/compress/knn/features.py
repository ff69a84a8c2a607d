"""Features of every candidate cut at once, streamed in batches, reduced as they come.

One Keras model with every candidate cut as an output runs over the images batch by batch;
each batch's feature maps are pooled (``--pool``), projected onto a PCA basis and dropped, so
memory holds ``images x PCA dims`` per candidate — never ``images x feature-map size x
candidates``. Two passes:

1. **PCA fit** on a seeded, class-stratified subsample of the reference images
   (:data:`FIT_SAMPLES`, fewer for very wide feature maps so one candidate's fit matrix stays
   under :data:`FIT_MEMORY`); candidates are fitted in groups that fit that memory together.
2. **Projection** of every reference image and of the validation subset onto the first
   ``max_dims`` components (the smaller ``dims`` choices are prefixes of it: PCA components
   are ordered by variance). Narrow feature maps (<= :data:`RAW_MAX` values, e.g. after
   global pooling) are also kept whole, for the "no PCA" choice.

Example::

    multi = multi_output_model(model, [12, 30])
    feats = cut_features(multi, [(0, 12, "block_2_add"), (1, 30, "block_5_add")], x_ref,
                         y_ref, x_val, max_dims=64)
    feats[0].ref["pca"].shape      # (len(x_ref), 64)
"""
import numpy as np

from edgekit.errors import EdgekitError

FIT_SAMPLES = 2000
FIT_MEMORY = 384 << 20          # bytes of float32 features held at once for a PCA fit
RAW_MAX = 512                   # keep un-reduced features up to this many values per image
BATCH = 128


class CutFeatures(object):
    """One candidate's reduced features: ``ref`` / ``val`` dicts with ``"pca"`` (projected,
    not yet L2-normalised) and/or ``"raw"`` (pooled, flattened) arrays, plus the PCA
    (``mean`` (D,), ``components`` (m, D), float32; int8-exact per component when
    ``int8_weights``)."""

    def __init__(self, index, name, shape, in_dims, n_components, keep_raw, fit_n):
        self.index, self.name, self.shape, self.in_dims = index, name, tuple(shape), in_dims
        self.n_components, self.keep_raw, self.fit_n = n_components, keep_raw, fit_n
        self.mean = self.components = self._W = self._b = None
        self.ref, self.val = {}, {}
        self.fit_samples = 0

    def dims_available(self):
        """PCA dims this candidate can give (prefixes of its basis) and None for raw."""
        return ([None] if self.keep_raw else []) + list(range(1, self.n_components + 1))

    def features(self, split, dims):
        """L2-normalised ``split`` ("ref" | "val") features at ``dims`` (None: no PCA)."""
        from edgekit.compress.knn.onnx import l2_normalise
        store = self.ref if split == "ref" else self.val
        x = store["raw"] if dims is None else store["pca"][:, :int(dims)]
        return l2_normalise(x)

    def _project(self, pooled):
        return pooled @ self._W + self._b


def multi_output_model(model, indices, int8_weights=False):
    """``model`` with the outputs of ``model.layers[i]`` for every i (int8-exact kernels
    when ``int8_weights``)."""
    from edgekit._tf import keras
    from edgekit.compress.knn.cuts import layer_output
    multi = keras().Model(model.inputs, [layer_output(model, i) for i in indices],
                          name="trunk")
    if int8_weights:
        from edgekit.compress.knn.onnx import quantize_keras_trunk
        multi = quantize_keras_trunk(multi)
    return multi


def stream(multi, x, index=None, batch=BATCH):
    """Yield ``(start, [output arrays])`` batch by batch over ``x`` (or ``x[index]``, without
    copying it): never the whole set's outputs."""
    n = len(x) if index is None else len(index)
    for s in range(0, n, batch):
        out = multi.predict_on_batch(x[s:s + batch] if index is None else x[index[s:s + batch]])
        yield s, out if isinstance(out, list) else [out]


def cut_features(multi, cuts, x_ref, y_ref, x_val, pool=None, max_dims=64, dims=None,
                 int8_weights=False, fit_samples=FIT_SAMPLES, seed=0, say=None):
    """Reduced features of the cuts ``cuts`` = [(output position in ``multi``, layer index,
    name)]. ``dims``: a fixed PCA size (``0``: raw only), else PCA up to ``max_dims`` and raw
    when narrow. Returns [:class:`CutFeatures`]; a cut whose pooling cannot apply is left out
    with a message through ``say``."""
    from edgekit.compress.knn.onnx import FeatureReducer
    say = say or (lambda msg: None)
    reducer = FeatureReducer(pool)
    feats, keep = [], []
    for j, idx, name in cuts:
        shape = tuple(int(d) for d in _output_shape(multi, j)[1:])
        try:
            if reducer.pool is not None and len(shape) == 3 and reducer.pool[1] > min(shape[:2]):
                raise EdgekitError("pool size {} is larger than the {}x{} feature map".format(
                    reducer.pool[1], shape[0], shape[1]))
            D = reducer.in_dims(shape)
        except EdgekitError as exc:
            say("cut {}: skipped ({})".format(name, exc))
            continue
        fit_n = int(min(len(x_ref), fit_samples, max(2 * max_dims + 2, FIT_MEMORY // (4 * D))))
        if dims == 0:
            m, raw = 0, True
        elif dims:
            if dims > min(D, fit_n):
                say("cut {}: skipped (--dims {} is larger than its {} features or {} PCA "
                    "samples)".format(name, dims, D, fit_n))
                continue
            m, raw = int(dims), False
        else:
            m, raw = min(max_dims, D - 1, fit_n - 1), D <= RAW_MAX
            m = max(m, 0)
        feats.append(CutFeatures(idx, name, shape, D, m, raw, fit_n))
        keep.append(j)
    _fit_pcas(multi, feats, keep, x_ref, y_ref, reducer, int8_weights, fit_samples, seed, say)
    _project_all(multi, feats, keep, x_ref, x_val, reducer, say)
    return feats


def _output_shape(multi, j):
    shapes = multi.output_shape
    return shapes[j] if isinstance(shapes, list) else shapes


def _fit_pcas(multi, feats, keep, x_ref, y_ref, reducer, int8_weights, fit_samples, seed, say):
    from edgekit.compress.knn.onnx import quantize_array
    todo = [(f, j) for f, j in zip(feats, keep) if f.n_components > 0]
    groups, cur, used = [], [], 0
    for f, j in todo:                     # groups whose fit matrices fit FIT_MEMORY together
        need = 4 * f.in_dims * f.fit_n
        if cur and used + need > FIT_MEMORY:
            groups.append(cur)
            cur, used = [], 0
        cur.append((f, j))
        used += need
    if cur:
        groups.append(cur)
    idx = stratified_subsample(y_ref, min(fit_samples, len(y_ref)), seed)
    for g, group in enumerate(groups):
        n = max(f.fit_n for f, _ in group)
        say("PCA fit: {} cut(s) on {:,} seeded training images{}".format(
            len(group), min(n, len(idx)), " (group {}/{})".format(g + 1, len(groups))
            if len(groups) > 1 else ""))
        rows = [np.sort(np.random.RandomState(seed + f.index).choice(
            len(idx), min(f.fit_n, len(idx)), replace=False))
            for f, _ in group]            # each cut's own seeded share of the fit images
        used_rows = np.unique(np.concatenate(rows))
        mats = [np.empty((len(r), f.in_dims), np.float32) for r, (f, _) in zip(rows, group)]
        for s, outs in stream(multi, x_ref, idx[used_rows]):
            for (f, j), r, mat in zip(group, rows, mats):
                pos = np.searchsorted(used_rows, r)          # rows of r inside this pass
                sel = (pos >= s) & (pos < s + len(outs[j]))
                if sel.any():
                    mat[np.flatnonzero(sel)] = reducer.pooled(outs[j][pos[sel] - s])
        for (f, _), mat, r in zip(group, mats, rows):
            f.mean, f.components = _pca(mat, f.n_components, seed)
            f.fit_samples = len(mat)
            W = np.ascontiguousarray(f.components.T)
            f._W = quantize_array(W, axis=1) if int8_weights else W
            f._b = (-(f.mean @ f._W)).astype(np.float32)
            if len(r) == len(x_ref):      # fitted on every reference image: project them now
                f.ref["pca"] = np.empty((len(x_ref), f.n_components), np.float32)
                f.ref["pca"][idx[r]] = f._project(mat)
                if f.keep_raw:
                    f.ref["raw"] = np.empty((len(x_ref), f.in_dims), np.float32)
                    f.ref["raw"][idx[r]] = mat
        del mats


def _pca(mat, n_components, seed):
    """(mean (D,), components (m, D)) float32; randomized SVD for wide matrices."""
    from sklearn.decomposition import PCA
    solver = "randomized" if mat.shape[1] > 500 and n_components < 0.8 * min(mat.shape) \
        else "full"
    # two power iterations: enough for a k-NN basis, a third of the default's cost
    pca = PCA(n_components=int(n_components), random_state=seed, svd_solver=solver,
              iterated_power=2 if solver == "randomized" else "auto")
    pca.fit(mat)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def _project_all(multi, feats, keep, x_ref, x_val, reducer, say):
    for split, x in (("ref", x_ref), ("val", x_val)):
        todo = [(f, j) for f, j in zip(feats, keep)
                if split == "val" or ("pca" if f.n_components else "raw") not in f.ref]
        if not todo:                      # every cut was projected while fitting its PCA
            continue
        for f, _ in todo:
            store = f.ref if split == "ref" else f.val
            if f.n_components:
                store["pca"] = np.empty((len(x), f.n_components), np.float32)
            if f.keep_raw:
                store["raw"] = np.empty((len(x), f.in_dims), np.float32)
        say("features: {:,} {} images through {} cut(s)".format(
            len(x), "reference" if split == "ref" else "validation", len(todo)))
        for s, outs in stream(multi, x):
            for f, j in todo:
                store = f.ref if split == "ref" else f.val
                part = reducer.pooled(outs[j])
                if f.n_components:
                    store["pca"][s:s + len(part)] = f._project(part)
                if f.keep_raw:
                    store["raw"][s:s + len(part)] = part


def stratified_subsample(y, n, seed=0):
    """Seeded, class-stratified subsample of ``n`` indices, sorted (all when n >= len)."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = np.random.RandomState(seed)
    idx = []
    for c in np.unique(y):
        ic = np.flatnonzero(y == c)
        take = max(1, int(round(n * len(ic) / float(len(y)))))
        idx.append(rng.choice(ic, min(take, len(ic)), replace=False))
    return np.sort(np.concatenate(idx))
