"""``KnnHead``: a k-nearest-neighbour classifier on feature vectors, built to export.

A scikit-learn estimator (``fit`` returns self, fitted attributes end in ``_``,
``check_is_fitted``) whose arithmetic is exactly what :mod:`edgekit.compress.knn.onnx`
writes as ONNX ops, so the Python head and the exported graph agree:

* squared distance ``d = ||a||^2 - 2 a.b + ||b||^2`` in float32, clamped at 0;
* the ``k`` smallest by a stable sort: equal distances -> lowest prototype index
  (onnxruntime's TopK does the same; measured);
* votes summed per class: 1 each (``weights="uniform"``) or ``1 / (d + 1e-6)``
  (``weights="distance"``); ties in votes -> lowest class index (``argmax``, like ONNX ArgMax).

Prototype reduction shrinks the reference set so it fits a device:
``reduction="all"`` keeps every training vector, ``"kmeans"`` keeps ``prototypes`` k-means
centroids per class (seeded), ``"cnn"`` runs Hart's condensed nearest neighbour (1-NN
consistent subset, deterministic order). Exact duplicate prototypes are dropped (the
first is kept) so no two prototypes tie structurally. ``int8=True`` stores prototypes
as int8 with one float32 scale; prediction then uses the dequantised values
``float32(q) * scale``, as the graph does.

Example::

    head = KnnHead(n_neighbors=9, prototypes=20, reduction="kmeans", int8=True).fit(F, y)
    head.predict(F_test); head.prototypes_.shape
"""
import functools

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from edgekit.errors import EdgekitError

WEIGHTS = ("uniform", "distance")
REDUCTIONS = ("all", "kmeans", "cnn")
DIST_EPS = 1e-6
CHUNK = 2048
CHUNK_DISTANCES = 1 << 22   # distances per neighbour-search chunk: rows x prototypes
                            # (the sort's temporaries are a few times this many bytes)


class KnnHeadError(EdgekitError, ValueError):
    """Bad parameters or data for :class:`KnnHead` (a ValueError, as scikit-learn expects)."""


def sq_distances(a, protos, proto_sq=None):
    """float32 ``||a||^2 - 2 a.p + ||p||^2`` clamped at 0: the graph's formula."""
    a = np.asarray(a, dtype=np.float32)
    protos = np.asarray(protos, dtype=np.float32)
    if proto_sq is None:
        proto_sq = np.sum(protos * protos, axis=1, dtype=np.float32)
    a_sq = np.sum(a * a, axis=1, keepdims=True, dtype=np.float32)
    d = a_sq - np.float32(2.0) * (a @ protos.T) + proto_sq[None, :]
    return np.maximum(d, np.float32(0.0))


class KnnHead(ClassifierMixin, BaseEstimator):
    """k-NN classifier with prototype reduction and optional int8 prototype storage.

    Parameters: ``n_neighbors`` (k), ``weights`` (``uniform`` | ``distance``),
    ``prototypes`` (None | int per class, for ``reduction="kmeans"``), ``reduction``
    (``all`` | ``kmeans`` | ``cnn``), ``int8`` (store prototypes as int8 + scale),
    ``random_state`` (k-means seed).

    Fitted: ``classes_``, ``n_features_in_``, ``prototypes_`` (float32, dequantised if int8),
    ``prototype_labels_`` (indices into ``classes_``), ``prototypes_int8_`` and ``scale_``
    (when int8), ``n_prototypes_``.
    """

    def __init__(self, n_neighbors=5, weights="uniform", prototypes=None, reduction="all",
                 int8=False, random_state=0):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.prototypes = prototypes
        self.reduction = reduction
        self.int8 = int8
        self.random_state = random_state

    # -- fitting ----------------------------------------------------------------
    def _check_params(self):
        k = self.n_neighbors
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise KnnHeadError("n_neighbors (k) must be an integer >= 1, got {!r}".format(k))
        if self.weights not in WEIGHTS:
            raise KnnHeadError("weights must be one of {}, got {!r}".format(WEIGHTS, self.weights))
        if self.reduction not in REDUCTIONS:
            raise KnnHeadError("reduction must be one of {}, got {!r}".format(
                REDUCTIONS, self.reduction))
        if self.reduction == "kmeans":
            p = self.prototypes
            if not isinstance(p, (int, np.integer)) or isinstance(p, bool) or p < 1:
                raise KnnHeadError("reduction='kmeans' needs prototypes (per class) as an "
                                   "integer >= 1, got {!r}".format(p))
        elif self.prototypes is not None:
            raise KnnHeadError("prototypes={!r} only applies to reduction='kmeans' (got "
                               "reduction={!r})".format(self.prototypes, self.reduction))

    def fit(self, X, y):
        """Pick the prototypes from (X, y); returns self."""
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=False)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        y_idx = y_idx.astype(np.int64)
        if self.reduction == "kmeans":
            P, L = self._kmeans(X, y_idx)
        elif self.reduction == "cnn":
            P, L = self._condensed(X, y_idx)
        else:
            P, L = X, y_idx
        self._store(*_dedupe(np.asarray(P, np.float32), np.asarray(L, np.int64)))
        if self.n_neighbors > self.n_prototypes_:
            raise KnnHeadError(
                "k={} is larger than the {} prototype(s) kept (from {} sample(s)): choose "
                "k <= {} or keep more prototypes".format(
                    self.n_neighbors, self.n_prototypes_, len(X), self.n_prototypes_))
        return self

    def _store(self, P, L):
        if self.int8:
            amax = float(np.max(np.abs(P))) if P.size else 0.0
            scale = np.float32(amax / 127.0 if amax > 0 else 1.0)
            q = np.clip(np.round(P / scale), -127, 127).astype(np.int8)
            self.prototypes_int8_ = q
            self.scale_ = float(scale)
            P = q.astype(np.float32) * scale
        self.prototypes_ = np.ascontiguousarray(P, dtype=np.float32)
        self.prototype_labels_ = L
        self.n_prototypes_ = int(len(P))

    def as_int8(self):
        """A copy of this fitted float head with its prototypes stored as int8 (no refit):
        what ``int8=True`` would have given from the same prototypes."""
        check_is_fitted(self, "prototypes_")
        if self.int8:
            raise KnnHeadError("the head already stores int8 prototypes")
        q = KnnHead(**dict(self.get_params(), int8=True))
        q.classes_, q.n_features_in_ = self.classes_, self.n_features_in_
        q._store(self.prototypes_, self.prototype_labels_)
        return q

    def _kmeans(self, X, y_idx):
        from sklearn.cluster import KMeans
        per = int(self.prototypes)
        P, L = [], []
        for c in range(len(self.classes_)):
            Xc = X[y_idx == c]
            if per > len(Xc):
                raise KnnHeadError(
                    "prototypes per class ({}) is larger than class {!r}: it has only {} "
                    "sample(s) in training: choose --prototypes <= {}".format(
                        per, self.classes_[c].item() if hasattr(self.classes_[c], "item")
                        else self.classes_[c], len(Xc), len(Xc)))
            if per == len(Xc):
                centers = Xc
            else:
                km = KMeans(n_clusters=per, n_init=1, random_state=self.random_state)
                # one thread: k-means' OpenMP threads spin when the cores are shared
                # (measured 10x slower at load 18 on 2 cores), and a class is small work
                with threadpools().limit(limits=1):
                    centers = km.fit(Xc.astype(np.float64)).cluster_centers_
            P.append(np.asarray(centers, np.float32))
            L.append(np.full(per, c, np.int64))
        return np.concatenate(P), np.concatenate(L)

    def _condensed(self, X, y_idx):
        """Hart's CNN: grow a store until every training vector's 1-NN in it has its label."""
        order = np.arange(len(X))
        keep = [int(order[0])]
        in_store = np.zeros(len(X), bool)
        in_store[keep[0]] = True
        changed = True
        while changed:
            changed = False
            for start in range(0, len(X), CHUNK):
                idx = order[start:start + CHUNK]
                idx = idx[~in_store[idx]]
                if not len(idx):
                    continue
                # one pass per chunk against the current store, then add misfits one by one
                nn = np.argmin(sq_distances(X[idx], X[keep]), axis=1)
                wrong = idx[y_idx[np.asarray(keep)[nn]] != y_idx[idx]]
                for i in wrong:
                    d = sq_distances(X[i:i + 1], X[keep])[0]
                    if y_idx[keep[int(np.argmin(d))]] != y_idx[i]:
                        keep.append(int(i))
                        in_store[i] = True
                        changed = True
        keep = np.sort(np.asarray(keep, np.int64))
        return X[keep], y_idx[keep]

    # -- prediction ---------------------------------------------------------------
    def _votes(self, X):
        check_is_fitted(self, "prototypes_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        out = np.zeros((len(X), len(self.classes_)), np.float32)
        for s, nn, d in self._neighbours(X, self.n_neighbors):
            out[s:s + len(nn)] = self._vote(nn, d, self.n_neighbors)
        return out

    def _neighbours(self, X, k):
        """Chunks ``(start, indices (n, k), distances (n, k))`` of the k nearest prototypes,
        ordered by (distance, index)."""
        check_is_fitted(self, "prototypes_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        P = self.prototypes_
        p_sq = np.sum(P * P, axis=1, dtype=np.float32)
        # fewer rows per chunk when there are many prototypes: 2,048 rows x 16,000 prototypes
        # and the k-smallest temporaries raised peak RSS by ~0.4 GB (measured: MNIST default
        # knn-slice, 2.0 GB -> 1.6 GB peak with this cap, same result)
        rows = max(1, min(CHUNK, CHUNK_DISTANCES // max(1, len(P))))
        for s in range(0, len(X), rows):
            d = sq_distances(X[s:s + rows], P, p_sq)
            nn = _k_smallest(d, k)
            yield s, nn, np.take_along_axis(d, nn, axis=1)

    def _vote(self, nn, d, k):
        """Votes (n, C) of the first ``k`` of the sorted neighbours ``nn`` at distances ``d``."""
        nn, d = nn[:, :k], d[:, :k]
        C = len(self.classes_)
        labels = self.prototype_labels_[nn]
        if self.weights == "distance":
            w = np.float32(1.0) / (d + np.float32(DIST_EPS))
        else:
            w = np.ones(nn.shape, np.float32)
        onehot = (labels[:, :, None] == np.arange(C)[None, None, :]).astype(np.float32)
        return np.sum(onehot * w[:, :, None], axis=1, dtype=np.float32)

    def accuracy_by_k(self, X, y, ks):
        """``{k: accuracy}`` for every k in ``ks`` from one neighbour search: equal to
        ``set_params(n_neighbors=k).score(X, y)`` for each k, at the cost of the largest."""
        ks = sorted(set(int(k) for k in ks))
        if not ks or ks[0] < 1 or ks[-1] > self.n_prototypes_:
            raise KnnHeadError("k must be in 1..{} (the prototype count), got {}".format(
                self.n_prototypes_, ks))
        y = np.asarray(y)
        hits = dict.fromkeys(ks, 0)
        for s, nn, d in self._neighbours(X, ks[-1]):
            for k in ks:
                pred = self.classes_[np.argmax(self._vote(nn, d, k), axis=1)]
                hits[k] += int(np.sum(pred == y[s:s + len(nn)]))
        return {k: hits[k] / float(len(y)) for k in ks}

    def vote_scores(self, X):
        """Per-class votes (N, C), float32: the graph's ``scores`` output."""
        return self._votes(X)

    def predict_index(self, X):
        """Predicted class indices (into ``classes_``): the graph's ``class_id`` output."""
        return np.argmax(self._votes(X), axis=1).astype(np.int64)

    def predict(self, X):
        idx = self.predict_index(X)
        return self.classes_[idx]

    def predict_proba(self, X):
        v = self._votes(X).astype(np.float64)
        s = v.sum(axis=1, keepdims=True)
        s[s == 0] = 1.0
        return v / s

    # -- sizes --------------------------------------------------------------------
    def storage_bytes(self):
        """Bytes of the raw prototype + label arrays as the graph stores them."""
        check_is_fitted(self, "prototypes_")
        per = 1 if self.int8 else 4
        return int(self.prototypes_.size * per + self.n_prototypes_ * label_itemsize(
            len(self.classes_)) + (4 if self.int8 else 0))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


@functools.lru_cache(maxsize=1)
def threadpools():
    """threadpoolctl's view of the loaded BLAS/OpenMP pools, found once (~50 ms each time)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def clone_fitted(head):
    """An independent copy of a fitted head (``set_params`` on it leaves ``head`` alone)."""
    import copy
    return copy.deepcopy(head)


def _k_smallest(d, k):
    """Indices of the k smallest per row, ordered by (distance, index): a stable sort's head.

    Same result as ``np.argsort(d, kind="stable")[:, :k]`` without sorting whole rows.
    """
    n, m = d.shape
    if k >= m:
        return np.argsort(d, axis=1, kind="stable")[:, :k]
    kth = np.partition(d, k - 1, axis=1)[:, k - 1:k]
    less = d < kth
    eq = d == kth
    need = k - less.sum(axis=1, keepdims=True)
    sel = less | (eq & (np.cumsum(eq, axis=1) <= need))
    idx = np.nonzero(sel)[1].reshape(n, k)              # row-major: increasing index per row
    order = np.argsort(np.take_along_axis(d, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def label_itemsize(n_classes):
    return 1 if n_classes <= 255 else 4


def _dedupe(P, L):
    """Drop exact duplicate prototype vectors, keeping the first (lowest index)."""
    if len(P) < 2:
        return P, L
    _, first = np.unique(P, axis=0, return_index=True)
    if len(first) == len(P):
        return P, L
    keep = np.sort(first)
    return P[keep], L[keep]
