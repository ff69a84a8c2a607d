"""Evolve the per-filter gain and bias of a trunk's last conv layer for k-NN (issue 31).

Black-box search over all 18,496 conv2 weights of the seed trunk found no real gain in
~150 generations (docs/evolve.md). This module searches a space the optimiser can cover in
minutes: for each of the last conv layer's ``C`` filters a log-gain ``u_c`` and a threshold
``v_c`` (``2 C`` numbers: 128 for seed-mnist-cnn's conv2). Filter ``c``'s kernel becomes
``g_c K_c`` and its bias ``g_c (b_c + v_c s_c)``, with ``g_c = exp(u_c)`` and ``s_c`` the
standard deviation of that filter's pooled pre-activation on the pool images. The result is
still a plain conv trunk with the same parameters (only the last conv's kernels and biases
changed); reweighting and thresholding the channels is a learned metric for the k-NN.

Why an individual costs milliseconds
    For ``g > 0``, ``maxpool(relu(g z + b)) = relu(g maxpool(z) + b)``, so the pooled
    pre-activations ``p = maxpool(z)`` of every image are computed once (the layers before the
    last conv are fixed). Squared distances then split over channels::

        |f_q - f_r|^2 = sum_c g_c^2 (N_c(q) + N_c(r) - 2 D_c(q, r))
        N_c(q) = sum_pos relu(p_q + t_c)^2,   D_c(q, r) = sum_pos relu(p_q + t_c) relu(p_r + t_c)

    (``t_c = v_c s_c``; cosine distance = ``1 - sum g^2 D / sqrt(sum g^2 N(q) sum g^2 N(r))``).
    ``N`` and ``D`` are tabulated once on a grid of thresholds per channel and interpolated
    linearly in ``t`` (exact on the grid points; ``thresholds=(0,)`` searches gains only and is
    exact everywhere). ``D`` is only needed for each query's ``candidates`` nearest references
    under the starting trunk (exact search over all references): an individual's k-NN is taken
    among them (re-ranking). An individual is then one matrix-vector product per table.

Fitness: a fresh seeded mini-batch of ``batch_size`` queries per generation (from
``queries`` training images, each a leave-one-out query against all the other training
images). ``objective="nca"`` (the default): the mean log-probability that a query's
soft neighbours carry its label, ``log sum_{same label} exp(-d/T) - log sum exp(-d/T)``
over its candidates (neighbourhood components analysis, Goldberger et al. 2004), ``T`` =
``temperature`` x the start trunk's median gap between a query's nearest and k-th nearest
candidate. Smooth in the parameters, it rewards every query's whole neighbourhood, not the
handful of votes a small change flips, so what it gains on training queries reaches unseen
images (measured in docs/evolve.md: k-NN accuracy as fitness rose on its queries and fell on
the held-out ones). ``objective="accuracy"``: k-NN accuracy + ``share_weight`` x the mean
share of same-class labels among the k neighbours (the earlier fitness). Selection: every ``holdout_every``
generations the optimiser's candidate (CMA-ES: its mean; PSO: its global best) is scored on a
held-out split (the validation images, never in a fitness batch) against the training
references: ``select="nca"`` (the default) by the fitness's own NCA log-likelihood,
``select="accuracy"`` by k-NN accuracy. It replaces the held-out best only when it beats it
by at least ``min_improvement`` (default per score in ``SELECTIONS``: accuracy moves in whole
images, so 3 of 6,000 guard against the winner's curse of many held-out looks; NCA is smooth).
The start is the first held-out best. Every look records both scores. Why NCA: on 6,000 held-out
images the candidates' accuracies differ by a few images, so an accuracy-selected point is
mostly noise; the NCA selection returned a point with a better NCA on images it did not see
(docs/evolve.md, fourth round). ``patience`` stops after that many held-out scores without a
replacement.

Optimisers: pycma's full-covariance CMA-ES (128 dimensions need no diagonal restriction) or
edgekit's vectorised PSO (see :mod:`edgekit.compress.evolve`).
"""
import math
import time

import numpy as np

from edgekit.compress.evolve import OPTIMIZERS
from edgekit.compress.evolve.fitness import KnnFitness, RefIndex, set_trunk_weights, trunk_spec
from edgekit.errors import EdgekitError

METRICS = ("euclidean", "cosine")
OBJECTIVES = ("nca", "accuracy")
# held-out selection score -> its default min_improvement: accuracy (+ a tie-breaker) moves in
# whole images (0.0005 = 3 of 6,000), the NCA log-likelihood is smooth
SELECTIONS = {"nca": 0.0, "accuracy": 0.0005}
GAIN_BOUND = 1.5          # |log-gain| <= 1.5: gains in [0.22, 4.5]


def channel_layout(spec):
    """``(conv_index, pre_spec, n_channels)`` for a trunk ending conv -> ReLU -> max-pool/flatten.

    ``pre_spec`` is the spec with that ReLU removed, so that it outputs the pooled
    pre-activations ``maxpool(z)``; raises when the trunk's tail does not commute with a
    positive per-channel affine map (average pooling, batch norm or a second conv after it)."""
    convs = [i for i, e in enumerate(spec) if e["op"] == "conv"]
    if not convs:
        raise EdgekitError("the trunk has no Conv2D layer: nothing to evolve")
    i = convs[-1]
    relus = [spec[i]["activation"] == "relu"] + [e["op"] == "act" and e["activation"] == "relu"
                                                   for e in spec[i + 1:]]
    tail_ok = all(e["op"] in ("maxpool", "flatten") or (e["op"] == "act" and e["activation"] == "relu")
                  for e in spec[i + 1:])
    if spec[i]["activation"] not in ("relu", "linear") or sum(relus) != 1 or not tail_ok:
        raise EdgekitError("layer {}: channel evolution needs a trunk ending in its last conv -> ReLU -> "
                           "max pooling/flatten (got {})".format(
                               spec[i]["name"], " -> ".join([spec[i]["activation"]] +
                                                            [e["op"] for e in spec[i + 1:]])))
    pre = [dict(e) for e in spec if not (e["op"] == "act")]
    j = [k for k, e in enumerate(pre) if e["op"] == "conv"][-1]
    pre[j]["activation"] = "linear"
    return i, pre, int(spec[i]["kshape"][-1])


def pooled_preactivations(spec, w, x, chunk=2048):
    """``maxpool(z)`` of the last conv (before its ReLU) for images ``x``: (n, positions x C) float32."""
    _, pre, _ = channel_layout(spec)
    fit = KnnFitness(pre, np.asarray(x[:1], np.float32), np.zeros(1, np.int64),
                     np.asarray(x[:1], np.float32), np.zeros(1, np.int64), k=1)
    return np.concatenate([fit.features(w, np.asarray(x[s:s + chunk], np.float32))
                           for s in range(0, len(x), chunk)]) if len(x) else np.zeros((0, 0), np.float32)


def fold_channels(spec, w, u, v, scales):
    """The flat parameter vector with the last conv's filter ``c`` scaled by ``exp(u_c)`` and its
    bias set to ``exp(u_c) (b_c + v_c scales_c)`` (the trunk this search returns)."""
    i, _, n = channel_layout(spec)
    e = spec[i]
    if "bslice" not in e:
        raise EdgekitError("layer {}: channel evolution needs a conv bias (use_bias=True)".format(e["name"]))
    w = np.asarray(w, np.float32).copy()
    g = np.exp(np.asarray(u, np.float64))
    a, b = e["kslice"]
    w[a:b] = (w[a:b].reshape(-1, n) * g[None, :]).ravel()
    a, b = e["bslice"]
    w[a:b] = g * (w[a:b] + np.asarray(v, np.float64) * np.asarray(scales, np.float64))
    return w.astype(np.float32)


def unfold_channels(spec, w0, w, scales):
    """The search vector ``[u, v]`` that :func:`fold_channels` turned ``w0`` into ``w`` with
    (gains from the filters' kernel norms)."""
    i, _, n = channel_layout(spec)
    e = spec[i]
    a, b = e["kslice"]
    k0 = np.asarray(w0[a:b], np.float64).reshape(-1, n)
    k1 = np.asarray(w[a:b], np.float64).reshape(-1, n)
    g = np.linalg.norm(k1, axis=0) / np.maximum(np.linalg.norm(k0, axis=0), 1e-30)
    a, b = e["bslice"]
    v = (np.asarray(w[a:b], np.float64) / g - np.asarray(w0[a:b], np.float64)) / np.asarray(scales, np.float64)
    return np.concatenate([np.log(g), v])


def _nearest(q, r, k, metric, exclude=None, chunk=512):
    """Indices (Q, k) of each query's k nearest rows of ``r``, nearest first (exact search)."""
    index = RefIndex(r)
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), chunk):
        d = index.sq_distances(q[s:s + chunk])
        if exclude is not None:
            d[np.arange(len(d)), exclude[s:s + chunk]] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[s:s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def relu_features(P, metric):
    """k-NN features of pooled pre-activations at the start (g = 1, t = 0), normalised for cosine."""
    F = np.maximum(P, 0)
    if metric == "cosine":
        F = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
    return F


class ChannelKnnFitness:
    """k-NN fitness of (log-gain, threshold) vectors from tabulated per-channel products.

    ``P_ref`` (n, positions x C): pooled pre-activations of the reference images (training
    split), ``P_hold``: of the held-out queries. ``queries``: how many reference images serve
    as leave-one-out fitness queries (seeded; None: all) -- or, with ``P_query``/``y_query``,
    how many of those images are the fitness queries (not references); ``hard``: keep only those among whose
    ``hard`` nearest references (start trunk) one has another label -- the only queries whose
    vote a moderate change of the metric can flip. ``grid``: thresholds in units of each
    channel's pooled pre-activation std (``scales``: those stds, default from ``P_ref``).

    Another split scored the same way (a test curve): build one with ``search={"q_idx": [],
    "cand": empty, "cand_hold": its candidates}`` and the fitness's ``scales``; its
    :meth:`holdout_full` is then that split's re-ranked k-NN accuracy.
    """

    def __init__(self, P_ref, y_ref, P_hold, y_hold, n_channels, k=9, candidates=32, queries=10000,
                 batch_size=2000, grid=(-0.5, -0.25, 0.0, 0.25, 0.5), metric="cosine", seed=0,
                 share_weight=0.1, search=None, scales=None, hard=None, P_query=None, y_query=None,
                 objective="nca", temperature=0.3):
        if metric not in METRICS:
            raise EdgekitError("unknown metric {!r}: use one of {}".format(metric, ", ".join(METRICS)))
        if objective not in OBJECTIVES:
            raise EdgekitError("unknown objective {!r}: use one of {}".format(objective, ", ".join(OBJECTIVES)))
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise EdgekitError("temperature must be a number > 0, got {!r}".format(temperature))
        self.objective, self.temperature = objective, float(temperature)
        grid = sorted(float(t) for t in grid)
        if not grid or len(set(grid)) != len(grid) or 0.0 not in grid:
            raise EdgekitError("thresholds must be distinct numbers including 0, got {!r}".format(grid))
        n_ref = len(y_ref)
        if candidates < k or candidates >= n_ref:
            raise EdgekitError("candidates must be >= k ({}) and < the {} references, got {}".format(
                k, n_ref, candidates))
        self.k, self.metric, self.seed, self.hard = int(k), metric, int(seed), hard
        self.grid = np.asarray(grid, np.float64)
        self.share_weight = float(share_weight)
        self.C = int(n_channels)
        self.y_ref = np.asarray(y_ref, np.int64)
        self.y_hold = np.asarray(y_hold, np.int64)
        self.n_classes = int(max(self.y_ref.max(), self.y_hold.max()) + 1)
        P_ref = np.asarray(P_ref, np.float32)
        P_hold = np.asarray(P_hold, np.float32)
        self.scales = (np.maximum(P_ref.reshape(-1, self.C).std(axis=0), 1e-6).astype(np.float64)
                       if scales is None else np.asarray(scales, np.float64))
        t0 = time.time()
        own = P_query is not None      # fitness queries of their own, else leave-one-out references
        P_q = np.asarray(P_query, np.float32) if own else P_ref
        y_q = np.asarray(y_query, np.int64) if own else self.y_ref
        self.loo = not own
        if search is None:
            rng = np.random.default_rng([self.seed, 31])
            nq = len(y_q) if queries is None else int(min(queries, len(y_q)))
            self.q_idx = np.sort(rng.choice(len(y_q), nq, replace=False))
            F = relu_features(P_ref, metric)
            self.cand = _nearest(relu_features(P_q[self.q_idx], metric) if own else F[self.q_idx], F, candidates,
                                 metric, exclude=None if own else self.q_idx)
            self.cand_hold = _nearest(relu_features(P_hold, metric), F, candidates, metric)
            del F
        else:   # a search done before (same start trunk, metric and images): see :meth:`search`
            self.q_idx = np.asarray(search["q_idx"], np.int64)
            self.cand = np.asarray(search["cand"], np.int64).reshape(len(self.q_idx), -1)[:, :candidates] \
                if len(self.q_idx) else np.zeros((0, candidates), np.int64)
            self.cand_hold = np.asarray(search["cand_hold"])[:, :candidates]
        self.n_searched = int(len(self.q_idx))
        if hard:   # keep the queries whose `hard` nearest references are not all of their own label
            keep = np.any(self.y_ref[self.cand[:, :int(hard)]] != y_q[self.q_idx][:, None], axis=1)
            self.q_idx, self.cand = self.q_idx[keep], self.cand[keep]
        self.y_q = y_q[self.q_idx]
        self.batch_size = int(min(batch_size, len(self.q_idx)))
        self.search_s = time.time() - t0
        t0 = time.time()
        self.N_ref = self._norms(P_ref)
        self.N_hold = self._norms(P_hold)
        self.N_q = self._norms(P_q[self.q_idx])
        self.D = self._dots(P_q[self.q_idx], P_ref, self.cand)
        self.D_hold = self._dots(P_hold, P_ref, self.cand_hold)
        self.table_s = time.time() - t0
        self.dim = 2 * self.C if len(self.grid) > 1 else self.C
        self.w0 = self._weights(np.zeros(self.dim))
        d0 = self._distances(self.w0, self.N_q, self.D, self.cand) if len(self.q_idx) else \
            self._distances(self.w0, self.N_hold, self.D_hold, self.cand_hold)
        d0 = np.sort(d0, axis=1)
        gap = float(np.median(d0[:, min(self.k, d0.shape[1]) - 1] - d0[:, 0])) if d0.size else 0.0
        self.T = self.temperature * (gap if gap > 0 else 1.0)     # in the start trunk's distance units

    def search(self):
        """The candidate search (query indices, their candidates; after the ``hard`` filter): pass
        as ``search=`` to build another fitness on the same images without searching again."""
        return {"q_idx": self.q_idx, "cand": self.cand, "cand_hold": self.cand_hold}

    # -- tables ---------------------------------------------------------------------------
    def _relu_t(self, P, t):
        shift = (t * self.scales).astype(np.float32)
        return np.maximum(P.reshape(len(P), -1, self.C) + shift, 0)

    def _norms(self, P, chunk=4096):
        out = np.empty((len(P), self.C, len(self.grid)), np.float32)
        for s in range(0, len(P), chunk):
            for j, t in enumerate(self.grid):
                F = self._relu_t(P[s:s + chunk], t)
                out[s:s + chunk, :, j] = np.einsum("npc,npc->nc", F, F)
        return out

    def _dots(self, Pq, P_ref, cand, chunk=64):
        out = np.empty((len(Pq), cand.shape[1], self.C, len(self.grid)), np.float32)
        for s in range(0, len(Pq), chunk):
            idx = cand[s:s + chunk]
            Pr = P_ref[idx.ravel()]           # gathered once for every threshold
            for j, t in enumerate(self.grid):
                Fq = self._relu_t(Pq[s:s + chunk], t)
                Fr = self._relu_t(Pr, t).reshape(len(idx), idx.shape[1], -1, self.C)
                out[s:s + chunk, :, :, j] = np.einsum("qpc,qjpc->qjc", Fq, Fr)
        return out

    # -- parameters -----------------------------------------------------------------------
    def decode(self, x):
        """``(u, v)``: log-gains and thresholds (grid units) of a search vector, clipped to the box."""
        x = np.asarray(x, np.float64)
        u = np.clip(x[:self.C], -GAIN_BOUND, GAIN_BOUND)
        v = np.clip(x[self.C:], self.grid[0], self.grid[-1]) if self.dim > self.C else np.zeros(self.C)
        return u, v

    def _weights(self, x):
        """(C x T,) table weights: g_c^2 split between the two grid points around t_c."""
        u, v = self.decode(x)
        g2 = np.exp(2 * u)
        W = np.zeros((self.C, len(self.grid)))
        if len(self.grid) == 1:
            W[:, 0] = g2
        else:
            j = np.clip(np.searchsorted(self.grid, v, side="right") - 1, 0, len(self.grid) - 2)
            a = (v - self.grid[j]) / (self.grid[j + 1] - self.grid[j])
            W[np.arange(self.C), j] = g2 * (1 - a)
            W[np.arange(self.C), j + 1] += g2 * a
        return W.ravel().astype(np.float32)

    # -- scores ---------------------------------------------------------------------------
    def _distances(self, w, nq, D, cand):
        """(Q, candidates) distances of each query to its candidates under table weights ``w``
        (Euclidean: in units of the start's overall scale, so that a common gain changes nothing)."""
        a = nq.reshape(len(nq), -1) @ w
        b = (self.N_ref.reshape(len(self.N_ref), -1) @ w)[cand]
        dot = D.reshape(D.shape[0], D.shape[1], -1) @ w
        if self.metric == "cosine":
            return 1.0 - dot / np.sqrt(np.maximum(a[:, None] * b, 1e-30))
        return (a[:, None] + b - 2.0 * dot) * (float(self.w0.sum()) / max(float(w.sum()), 1e-30))

    def _nca(self, d, cand, y_query):
        """Each query's log-probability that its soft neighbours (weights exp(-d/T) over its
        candidates) carry its label; a query without a same-label candidate counts as log(1e-6)."""
        z = -(d - d.min(axis=1, keepdims=True)) / self.T
        p = np.exp(z)
        same = self.y_ref[cand] == y_query[:, None]
        return np.log(np.maximum((p * same).sum(axis=1), 1e-6 * p.sum(axis=1))) - np.log(p.sum(axis=1))

    def _knn(self, w, nq, D, cand, y_query, d=None):
        """(correct, same-label share of the k neighbours) of each query, from the tables."""
        if d is None:
            d = self._distances(w, nq, D, cand)
        k = self.k
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        nn = np.take_along_axis(cand, np.take_along_axis(part, order, axis=1), axis=1)
        labels = self.y_ref[nn]
        rank_w = 1.0 + 1e-3 * (k - np.arange(k)) / k      # ties go to the nearer neighbours
        votes = np.zeros((len(d), self.n_classes))
        np.add.at(votes, (np.repeat(np.arange(len(d)), k), labels.ravel()), np.tile(rank_w, len(d)))
        return votes.argmax(axis=1) == y_query, np.mean(labels == y_query[:, None], axis=1)

    def batch_indices(self, g):
        """Positions (into the fitness queries) of generation ``g``'s mini-batch, seeded by
        (batch_seed, g); ``batch_seed`` is the run's seed (evolve_channels sets it)."""
        rng = np.random.default_rng([getattr(self, "batch_seed", self.seed), int(g)])
        return np.sort(rng.choice(len(self.q_idx), self.batch_size, replace=False))

    def evaluate_full(self, X, batch=0):
        """``(P, 3)``: fitness (see ``objective``), k-NN accuracy, same-label share of each row of ``X``
        on batch ``batch``."""
        b = self.batch_indices(batch)
        nq, D, cand, y = self.N_q[b], self.D[b], self.cand[b], self.y_q[b]
        out = np.empty((len(X), 3))
        for i, x in enumerate(np.atleast_2d(X)):
            w = self._weights(x)
            d = self._distances(w, nq, D, cand)
            c, share = self._knn(w, nq, D, cand, y, d=d)
            acc, sh = float(np.mean(c)), float(np.mean(share))
            fit = float(np.mean(self._nca(d, cand, y))) if self.objective == "nca" else acc + self.share_weight * sh
            out[i] = (fit, acc, sh)
        return out

    def holdout_scores(self, x):
        """``(score, accuracy, share, nca)`` on the held-out queries from one distance table:
        :meth:`holdout_full`'s three and the NCA log-likelihood (see ``objective``), the
        fitness's own measure on images it never sees, smooth where accuracy moves in whole images."""
        w = self._weights(x)
        d = self._distances(w, self.N_hold, self.D_hold, self.cand_hold)
        c, share = self._knn(w, self.N_hold, self.D_hold, self.cand_hold, self.y_hold, d=d)
        acc, sh = float(np.mean(c)), float(np.mean(share))
        nca = float(np.mean(self._nca(d, self.cand_hold, self.y_hold)))
        return acc + 0.5 / len(self.y_hold) * sh, acc, sh, nca

    def holdout_full(self, x):
        """``(score, accuracy, share)`` on the held-out queries (score = accuracy + a tie-breaker
        smaller than one held-out image)."""
        return self.holdout_scores(x)[:3]


def split_half(P, y, seed):
    """``(P_a, y_a, P_b, y_b)``: a seeded class-stratified half of the validation images as fitness
    queries, the other half as the held-out split (``fitness_split="validation"``)."""
    y = np.asarray(y, np.int64)
    rng = np.random.default_rng([int(seed), 32])
    a = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        a[rng.permutation(idx)[:len(idx) // 2]] = True
    return P[a], y[a], P[~a], y[~a]


def evolve_channels(trunk_model, x_ref, y_ref, x_val, y_val, method="cma", k=9, metric="cosine",
                    thresholds=(-0.5, -0.25, 0.0, 0.25, 0.5), candidates=32, queries=10000, batch_size=2000,
                    population=None, sigma=0.2, generations=10 ** 6, time_budget=None, seed=0,
                    holdout_every=5, min_improvement=None, patience=None, share_weight=0.1,
                    candidate_hook=None, pooled=None, search=None, fitness=None, hard=None,
                    fitness_split="train", objective="nca", temperature=0.3, select="nca"):
    """Evolve the last conv layer's per-filter gain and bias of ``trunk_model`` for k-NN.

    ``x_ref``/``y_ref`` (training split): references and the fitness's leave-one-out queries;
    ``x_val``/``y_val``: the held-out split that picks the returned solution (never the test
    split). ``fitness_split="validation"``: the fitness queries are half of the validation
    images instead (images the CNN was not trained on, like the test images; against the
    training references), the held-out split the other half. ``time_budget`` (s) counts the optimisation, not the one-off tables
    (``logbook["setup_s"]``). ``pooled``: precomputed ``(P_ref, P_val)`` (must match the trunk);
    ``search``: a candidate search of an earlier run on the same trunk and images
    (:meth:`ChannelKnnFitness.search`); ``fitness``: a :class:`ChannelKnnFitness` built for this
    trunk and these images (its tables are reused; ``seed`` still seeds the batches and the
    optimiser, so runs with other seeds share the one-off cost).
    Returns ``(trunk_model, logbook)``; the trunk holds the held-out best, folded into plain
    conv kernels and biases. See the module docstring for the search space and the fitness.
    """
    if select not in SELECTIONS:
        raise EdgekitError("unknown selection {!r}: use one of {}".format(select, ", ".join(SELECTIONS)))
    if min_improvement is None:
        min_improvement = SELECTIONS[select]
    if method not in OPTIMIZERS:
        raise EdgekitError("unknown optimiser {!r}: use one of {}".format(method, ", ".join(OPTIMIZERS)))
    for name, val, lo in (("holdout_every", holdout_every, 1), ("batch_size", batch_size, 2),
                          ("k", k, 1), ("candidates", candidates, 2)):
        if not isinstance(val, int) or val < lo:
            raise EdgekitError("{} must be an integer >= {}, got {!r}".format(name, lo, val))
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise EdgekitError("patience must be an integer >= 1, got {!r}".format(patience))
    if not (min_improvement >= 0 and sigma > 0):
        raise EdgekitError("min_improvement must be >= 0 and sigma > 0")
    if time_budget is not None and not time_budget > 0:
        raise EdgekitError("time budget must be > 0 seconds, got {!r}".format(time_budget))
    spec, w0 = trunk_spec(trunk_model)
    conv_i, _, n_ch = channel_layout(spec)
    t0 = time.time()
    if fitness is not None:   # tables built for this trunk and these images before (other seeds)
        fit, t_pool = fitness, 0.0
        if fit.C != n_ch:
            raise EdgekitError("fitness tables have {} channels, the trunk's last conv {}".format(fit.C, n_ch))
    else:
        if pooled is None:
            pooled = (pooled_preactivations(spec, w0, x_ref), pooled_preactivations(spec, w0, x_val))
        t_pool = time.time() - t0
        P_hold, y_hold, P_q, y_q = pooled[1], np.asarray(y_val), None, None
        if fitness_split == "validation":
            P_q, y_q, P_hold, y_hold = split_half(pooled[1], y_val, seed)
        elif fitness_split != "train":
            raise EdgekitError("fitness_split must be train or validation, got {!r}".format(fitness_split))
        fit = ChannelKnnFitness(pooled[0], y_ref, P_hold, y_hold, n_ch, k=k, candidates=candidates,
                                queries=queries, batch_size=batch_size, grid=thresholds, metric=metric,
                                seed=seed, share_weight=share_weight, search=search, hard=hard,
                                P_query=P_q, y_query=y_q, objective=objective, temperature=temperature)
    fit.batch_seed = int(seed)
    setup = time.time() - t0
    x0 = np.zeros(fit.dim)
    pop = population or 4 + int(3 * math.log(fit.dim))
    opt = OPTIMIZERS[method](x0, np.ones(fit.dim), sigma, pop, 1 + 1000 * int(seed),
                             variant="full", noisy=True)
    def look(x):   # (selection score, held-out accuracy, share, held-out NCA)
        h = fit.holdout_scores(x)
        return (h[3] if select == "nca" else h[0],) + h[1:]

    h0 = look(x0)
    best_x, best, best_gen, since = x0.copy(), h0, 0, 0
    log = {"method": method, "space": "channel gain+bias" if fit.dim > n_ch else "channel gain",
           "layer": spec[conv_i]["name"], "n_search": int(fit.dim), "n_params": int(w0.size),
           "params": {"k": fit.k, "metric": fit.metric, "thresholds": list(fit.grid), "candidates": fit.cand.shape[1],
                      "queries": int(len(fit.q_idx)), "queries_searched": fit.n_searched,
                      "hard": fit.hard,
                      "batch_size": fit.batch_size, "population": int(pop),
                      "sigma": sigma, "seed": int(seed), "holdout_every": holdout_every,
                      "select": select, "min_improvement": min_improvement, "patience": patience,
                      "share_weight": fit.share_weight,
                      "objective": fit.objective, "temperature": fit.temperature, "temperature_abs": fit.T,
                      "holdout_queries": int(len(fit.y_hold)), "references": int(len(fit.y_ref))},
           "fitness_definition": (
               "mini-batch of {} of {} {} images{} per generation, each a {}query "
               "re-ranking its {} nearest training images (start trunk, {}): {}; selection: held-out {} "
               "of the optimiser's candidate ({} validation images, same re-ranking), replacing the best "
               "only when better by >= {:g}".format(
                   fit.batch_size, len(fit.q_idx), "training" if fit.loo else "validation",
                   " (the hard ones of {} searched: another label among their {} nearest)".format(
                       fit.n_searched, fit.hard) if fit.hard else "",
                   "leave-one-out " if fit.loo else "",
                   fit.cand.shape[1], fit.metric,
                   "NCA: mean log-probability of the own label under soft neighbours exp(-d/T), T = {:g} x the "
                   "start's median gap between the 1st and {}-th candidate".format(fit.temperature, fit.k)
                   if fit.objective == "nca" else
                   "k-NN (k={}) accuracy + {:g} x mean share of same-label neighbours".format(fit.k, fit.share_weight),
                   "NCA log-likelihood (same T)" if select == "nca" else "k-NN (k={}) accuracy".format(fit.k),
                   len(fit.y_hold), min_improvement)),
           "setup_s": round(setup, 1), "pool_s": round(t_pool, 1), "search_s": round(fit.search_s, 1),
           "table_s": round(fit.table_s, 1), "generations": [],
           "holdout": [{"gen": 0, "stage": 0, "accuracy": h0[1], "score": h0[0], "nca": h0[3]}],
           "fitness_before": {"fitness": h0[0], "accuracy": h0[1], "margin": h0[2], "nca": h0[3]}}
    if candidate_hook is not None:
        candidate_hook(0, fold_channels(spec, w0, *fit.decode(x0), fit.scales))
    t_start, gen, last, evals, stopped = time.time(), 0, 0.0, 1, "generations"
    while gen < generations:
        if time_budget is not None and time.time() - t_start + last > time_budget:
            stopped = "time_budget"
            break
        if patience and since >= patience:
            stopped = "early_stop"
            break
        tg = time.time()
        X = opt.ask()
        F = fit.evaluate_full(X, batch=gen)
        opt.tell(X, F[:, 0])
        evals += len(X)
        gen += 1
        rec = {"gen": gen, "stage": 0, "best": float(F[:, 0].max()), "mean": float(F[:, 0].mean()),
               "best_accuracy": float(F[:, 1].max()), "mean_accuracy": float(F[:, 1].mean())}
        if gen % holdout_every == 0:
            cand = np.asarray(opt.candidate(), np.float64)
            h = look(cand)
            log["holdout"].append({"gen": gen, "stage": 0, "accuracy": h[1], "score": h[0], "nca": h[3]})
            if h[0] >= best[0] + min_improvement:
                best_x, best, best_gen, since = cand.copy(), h, gen, 0
            else:
                since += 1
            rec.update(holdout=h[1], holdout_score=h[0])
            if candidate_hook is not None:
                candidate_hook(gen, fold_channels(spec, w0, *fit.decode(cand), fit.scales))
        rec["elapsed"] = round(time.time() - t_start, 3)
        log["generations"].append(rec)
        last = time.time() - tg
    u, v = fit.decode(best_x)
    set_trunk_weights(trunk_model, spec, fold_channels(spec, w0, u, v, fit.scales))
    log.update(selected_generation=best_gen, generations_run=gen, evaluations=evals, stopped=stopped,
               wall_time_s=round(time.time() - t_start, 3),
               fitness_after={"fitness": best[0], "accuracy": best[1], "margin": best[2], "nca": best[3]},
               gains=[round(float(g), 5) for g in np.exp(u)],
               thresholds=[round(float(t), 5) for t in v * fit.scales])
    log["params"]["optimizer"] = ({"library": "pycma", "covariance": "full", "returned": "held-out best mean"}
                                  if method == "cma" else
                                  {"library": "edgekit (vectorised gbest PSO)", "returned": "held-out best gbest",
                                   "note": "half the evaluations re-score the personal bests on each batch"})
    return trunk_model, log
