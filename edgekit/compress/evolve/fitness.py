"""Fast, deterministic k-NN fitness of a conv trunk whose weights come as a flat vector.

The trunk (a tf_keras model made of Conv2D / pooling / activation layers) is turned into a
plain *spec* (a list of small dicts) plus one flat float32 parameter vector holding every
conv kernel and bias. :class:`KnnFitness` then evaluates a whole population ``W`` of shape
``(P, D)`` with TensorFlow ops taking the weights as arguments (``tf.nn.conv2d`` on each
individual's kernels) — no Keras model is rebuilt per individual. The output of the layers
that are identical in every row of ``W`` (e.g. the frozen first conv in the "serial"
strategy's second stage) is computed once and cached.

Fitness (higher is better) = k-NN accuracy of the validation subset against the reference
subset on the flattened trunk features, plus a tie-breaker ``0.5/n_val * mean margin``
where the margin is ``(d_other - d_same) / (d_other + d_same)`` of the nearest reference
of another class vs. of the same class (in [-1, 1]). The tie-breaker is smaller than one
validation sample, so a higher fitness never means a lower k-NN accuracy; it gives the
rank-based optimisers a gradient-free signal where accuracy ties.

Every row is evaluated independently with fixed sample batches, so the result of one row
does not depend on which other rows are evaluated with it — the Dask executor's chunks
give exactly the local executor's numbers.
"""
import hashlib
import threading

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.keras_layers import flat_layers

SAMPLE_BATCH = 512
PRECISIONS = ("float32", "bfloat16")   # mini-batch fitness forward pass (held-out/test: float32)
ACTIVATIONS = ("linear", "relu", "relu6", "tanh", "sigmoid", "elu", "swish", "gelu")


def trunk_spec(model):
    """``(spec, x0)``: a picklable layer description and the flat conv parameter vector."""
    spec, chunks, offset = [], [], 0
    for layer in flat_layers(model):
        cls = type(layer).__name__
        cfg = layer.get_config()
        if cls == "InputLayer" or cls == "Dropout" or cls.startswith("Spatial"):
            continue
        if cls == "Conv2D":
            if cfg.get("groups", 1) != 1:
                raise EdgekitError("layer {}: grouped convolutions are not supported by evolve".format(
                    layer.name))
            act = _activation(layer, cfg.get("activation"))
            w = layer.get_weights()
            kernel = np.asarray(w[0], np.float32)
            bias = np.asarray(w[1], np.float32) if cfg.get("use_bias", True) else None
            entry = {"op": "conv", "name": layer.name, "kshape": list(kernel.shape),
                     "kslice": [offset, offset + kernel.size],
                     "strides": list(cfg["strides"]), "padding": cfg["padding"].upper(),
                     "dilations": list(cfg.get("dilation_rate", (1, 1))), "activation": act}
            chunks.append(kernel.ravel())
            offset += kernel.size
            if bias is not None:
                entry["bslice"] = [offset, offset + bias.size]
                chunks.append(bias.ravel())
                offset += bias.size
            spec.append(entry)
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            spec.append({"op": "maxpool" if cls.startswith("Max") else "avgpool", "name": layer.name,
                         "size": list(cfg["pool_size"]), "strides": list(cfg["strides"] or cfg["pool_size"]),
                         "padding": cfg["padding"].upper()})
        elif cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            spec.append({"op": "gap" if "Average" in cls else "gmp", "name": layer.name})
        elif cls in ("Activation", "ReLU"):
            act = "relu" if cls == "ReLU" else _activation(layer, cfg.get("activation"))
            spec.append({"op": "act", "name": layer.name, "activation": act})
        elif cls == "BatchNormalization":
            gamma, beta, mean, var = [np.asarray(a, np.float32) for a in _bn_weights(layer)]
            scale = gamma / np.sqrt(var + np.float32(cfg["epsilon"]))
            spec.append({"op": "affine", "name": layer.name, "scale": scale,
                         "shift": beta - mean * scale})
        elif cls == "Flatten":
            spec.append({"op": "flatten", "name": layer.name})
        else:
            raise EdgekitError("layer {} ({}) cannot be evolved: the trunk may hold only Conv2D, "
                               "pooling, activation, BatchNormalization, Dropout and Flatten layers"
                               .format(layer.name, cls))
    if not any(e["op"] == "conv" for e in spec):
        raise EdgekitError("the trunk has no Conv2D layer: nothing to evolve")
    return spec, (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32))


def set_trunk_weights(model, spec, vector):
    """Write a flat parameter vector back into the trunk's Conv2D layers (in place)."""
    layers = {layer.name: layer for layer in flat_layers(model)}
    vector = np.asarray(vector, np.float32)
    for e in spec:
        if e["op"] != "conv":
            continue
        a, b = e["kslice"]
        new = [vector[a:b].reshape(e["kshape"])]
        if "bslice" in e:
            a, b = e["bslice"]
            new.append(vector[a:b].copy())
        layers[e["name"]].set_weights(new)
    return model


def conv_slices(spec):
    """``[(layer_name, index array of its kernel+bias params, n_filters)]`` per conv layer."""
    out = []
    for e in spec:
        if e["op"] == "conv":
            idx = np.arange(*e["kslice"])
            if "bslice" in e:
                idx = np.concatenate([idx, np.arange(*e["bslice"])])
            out.append((e["name"], idx, e["kshape"][-1]))
    return out


def filter_groups(spec, n_groups_per_layer):
    """Split each conv layer's params by output filter into ``n`` groups (kernel[..., j] + bias[j])."""
    groups = []
    for e in spec:
        if e["op"] != "conv":
            continue
        n_out = e["kshape"][-1]
        a, _ = e["kslice"]
        kidx = (np.arange(int(np.prod(e["kshape"]))) + a).reshape(-1, n_out)
        n = max(1, min(int(n_groups_per_layer(e)), n_out))
        for j, filters in enumerate(np.array_split(np.arange(n_out), n)):
            idx = kidx[:, filters].ravel()
            if "bslice" in e:
                idx = np.concatenate([idx, e["bslice"][0] + filters])
            groups.append(("{}[{}:{}]".format(e["name"], filters[0], filters[-1] + 1), np.sort(idx)))
    return groups


def _activation(layer, act):
    if isinstance(act, dict):
        act = act.get("class_name") or act.get("config", {}).get("name")
    act = act or "linear"
    if act not in ACTIVATIONS:
        raise EdgekitError("layer {}: activation {!r} is not supported by evolve (use one of {})".format(
            layer.name, act, ", ".join(ACTIVATIONS)))
    return act


def _bn_weights(layer):
    cfg = layer.get_config()
    w = list(layer.get_weights())
    gamma = w.pop(0) if cfg.get("scale", True) else None
    beta = w.pop(0) if cfg.get("center", True) else None
    mean, var = w[0], w[1]
    if gamma is None:
        gamma = np.ones_like(mean)
    if beta is None:
        beta = np.zeros_like(mean)
    return gamma, beta, mean, var


class KnnFitness:
    """k-NN fitness of trunk parameter vectors (rows of ``W``) on fixed ref/val subsets.

    Picklable (the TF state is rebuilt lazily), so it can be scattered to Dask workers once.
    """

    def __init__(self, spec, x_ref, y_ref, x_val, y_val, k=9):
        self.spec = spec
        self.x = np.ascontiguousarray(np.concatenate([x_ref, x_val]).astype(np.float32))
        self.y_ref = np.asarray(y_ref, np.int64)
        self.y_val = np.asarray(y_val, np.int64)
        self.n_ref = len(x_ref)
        self.k = int(min(k, self.n_ref))
        self.n_classes = int(max(self.y_ref.max(), self.y_val.max()) + 1)
        self._lock = threading.Lock()
        self._cache = None  # (key, prefix output per sample batch)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------
    def __call__(self, W):
        return self.evaluate(W)

    def evaluate(self, W):
        """Fitness of each row of ``W`` (P, D) -> float64 array (P,)."""
        return self.evaluate_full(W)[:, 0]

    def evaluate_full(self, W):
        """``(P, 3)``: fitness, k-NN accuracy, mean margin for each row of ``W``."""
        W = np.atleast_2d(np.asarray(W, np.float32))
        with self._lock:
            start = self._first_varying_conv(W)
            prefix = self._prefix(W[0], start)
            out = np.empty((len(W), 3), np.float64)
            for i, w in enumerate(W):
                feats = np.concatenate([self._forward(w, start, p) for p in prefix])
                out[i] = self._score(feats)
            return out

    def features(self, w, x):
        """Flattened trunk features of images ``x`` under parameter vector ``w`` (numpy)."""
        tf = _tf()
        w = np.asarray(w, np.float32)
        res = []
        for s in range(0, len(x), SAMPLE_BATCH):
            res.append(self._forward(w, 0, tf.constant(x[s:s + SAMPLE_BATCH].astype(np.float32))))
        return np.concatenate(res)

    # -- internals ------------------------------------------------------------------------
    def _first_varying_conv(self, W):
        """Index in spec of the first layer whose output differs between rows of W."""
        if len(W) == 1:
            return 0
        for i, e in enumerate(self.spec):
            if e["op"] != "conv":
                continue
            idx = [np.arange(*e["kslice"])] + ([np.arange(*e["bslice"])] if "bslice" in e else [])
            idx = np.concatenate(idx)
            if np.any(W[:, idx] != W[0, idx]):
                return i
        return len(self.spec)

    def _prefix(self, w, start):
        """Output of spec[:start] for every sample batch (cached on the prefix weights)."""
        tf = _tf()
        used = [np.arange(*e[s]) for e in self.spec[:start] if e["op"] == "conv"
                for s in ("kslice", "bslice") if s in e]
        key = (start, hashlib.sha1(w[np.concatenate(used)].tobytes()).hexdigest() if used else "")
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        batches = []
        for s in range(0, len(self.x), SAMPLE_BATCH):
            xb = tf.constant(self.x[s:s + SAMPLE_BATCH])
            batches.append(self._run(w, xb, 0, start))
        self._cache = (key, batches)
        return batches

    def _forward(self, w, start, h):
        out = self._run(w, h, start, len(self.spec))
        return tf_to_2d(out)

    def _run(self, w, h, a, b):
        tf = _tf()
        dtype = getattr(self, "compute_dtype", "float32")
        if dtype != "float32":
            h = tf.cast(h, dtype)
        for e in self.spec[a:b]:
            op = e["op"]
            if op == "conv":
                k0, k1 = e["kslice"]
                kern = tf.constant(w[k0:k1].reshape(e["kshape"]), dtype=dtype)
                h = tf.nn.conv2d(h, kern, strides=[1] + e["strides"] + [1], padding=e["padding"],
                                 dilations=[1] + e["dilations"] + [1])
                if "bslice" in e:
                    b0, b1 = e["bslice"]
                    h = tf.nn.bias_add(h, tf.constant(w[b0:b1], dtype=dtype))
                h = _act(tf, h, e["activation"])
            elif op in ("maxpool", "avgpool"):
                fn = tf.nn.max_pool2d if op == "maxpool" else tf.nn.avg_pool2d
                h = fn(h, ksize=e["size"], strides=e["strides"], padding=e["padding"])
            elif op == "gap":
                h = tf.reduce_mean(h, axis=[1, 2])
            elif op == "gmp":
                h = tf.reduce_max(h, axis=[1, 2])
            elif op == "act":
                h = _act(tf, h, e["activation"])
            elif op == "affine":
                h = h * tf.constant(e["scale"], dtype=dtype) + tf.constant(e["shift"], dtype=dtype)
            elif op == "flatten":
                h = tf.reshape(h, [tf.shape(h)[0], -1])
        return h

    def _score(self, feats):
        """(fitness, accuracy, margin) of val features against ref features."""
        tf = _tf()
        f = tf.constant(feats)
        ref, val = f[:self.n_ref], f[self.n_ref:]
        rn = tf.reduce_sum(ref * ref, axis=1)
        vn = tf.reduce_sum(val * val, axis=1)
        d = vn[:, None] - 2.0 * tf.matmul(val, ref, transpose_b=True) + rn[None, :]
        d = tf.maximum(d, 0.0).numpy().astype(np.float64)
        nn = np.argsort(d, axis=1, kind="stable")[:, :self.k]
        labels = self.y_ref[nn]
        votes = np.zeros((len(val), self.n_classes))
        rank_w = 1.0 + 1e-3 * (self.k - np.arange(self.k)) / self.k  # ties -> the nearer neighbours
        np.add.at(votes, (np.arange(len(val))[:, None], labels), rank_w[None, :])
        acc = float(np.mean(np.argmax(votes, axis=1) == self.y_val))
        same = self.y_ref[None, :] == self.y_val[:, None]
        dist = np.sqrt(d)
        d_same = np.where(same, dist, np.inf).min(axis=1)
        d_other = np.where(same, np.inf, dist).min(axis=1)
        denom = d_same + d_other
        margin = np.where(denom > 0, (d_other - d_same) / np.where(denom > 0, denom, 1.0), 0.0)
        margin = np.where(np.isfinite(margin), margin, -1.0)
        m = float(np.mean(margin))
        return acc + 0.5 / len(self.y_val) * m, acc, m


def tf_to_2d(h):
    a = h.numpy().astype(np.float32, copy=False)
    return a.reshape(len(a), -1)


def _act(tf, h, act):
    if act == "linear":
        return h
    if act == "relu6":
        return tf.nn.relu6(h)
    if act == "swish":
        return tf.nn.silu(h)
    return getattr(tf.nn, act)(h)


def _tf():
    from edgekit._tf import tf
    return tf()


def knn_scores(d, y_query, y_ref, k, n_classes, margin=True):
    """``(correct (Q,) bool, margin (Q,))`` of a k-NN vote from squared distances ``d`` (Q, R).

    Neighbours are the ``k`` smallest entries of each row (``np.inf`` entries never vote: a
    leave-one-out caller puts ``inf`` on the diagonal); ties in the vote go to the nearer
    neighbours. The margin is ``(d_other - d_same) / (d_other + d_same)`` of the nearest
    reference of another class vs. of the same class (Euclidean distances, in [-1, 1]);
    ``margin=False`` skips it (None).
    """
    d = np.asarray(d)
    k = int(min(k, d.shape[1]))
    part = np.argpartition(d, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
    nn = np.take_along_axis(part, order, axis=1)
    rows = np.arange(len(d))[:, None]
    valid = np.isfinite(d[rows, nn])
    rank_w = (1.0 + 1e-3 * (k - np.arange(k)) / k)[None, :] * valid
    votes = np.zeros((len(d), n_classes))
    np.add.at(votes, (np.broadcast_to(rows, nn.shape), y_ref[nn]), rank_w)
    correct = np.argmax(votes, axis=1) == y_query
    if not margin:
        return correct, None
    same = y_ref[None, :] == y_query[:, None]
    dist = np.sqrt(np.maximum(d, 0))
    d_same = np.where(same, dist, np.inf).min(axis=1)
    d_other = np.where(same, np.inf, dist).min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = (d_other - d_same) / (d_other + d_same)
    margin = np.where(np.isfinite(margin), margin, np.where(np.isinf(d_same), -1.0, 0.0))
    return correct, margin


def sq_distances(q, r):
    """Squared Euclidean distances (Q, R) between feature rows (float32), clipped at 0.

    The product goes through TensorFlow's matmul, not numpy's: numpy's OpenBLAS threads
    busy-wait against TensorFlow's on a loaded 2-core machine (measured: 256 x 9,216 Gram
    matrix 0.30-0.45 s with OpenBLAS' 2 threads, 0.06 s with 1, 0.09 s in TensorFlow).
    """
    tf = _tf()
    q = tf.constant(np.asarray(q, np.float32))
    r = tf.constant(np.asarray(r, np.float32))
    d = (tf.reduce_sum(q * q, axis=1)[:, None] - 2.0 * tf.matmul(q, r, transpose_b=True)
         + tf.reduce_sum(r * r, axis=1)[None, :])
    return np.maximum(d.numpy(), 0.0)


class RefIndex:
    """Reference rows held once as a TensorFlow constant with their squared norms, for many
    chunks of queries: :func:`sq_distances` converts its references on every call, which for
    60,000 x 9,216 floats is a 2.2 GB copy per chunk of queries."""

    def __init__(self, r):
        tf = _tf()
        self.r = tf.constant(np.asarray(r, np.float32))
        self.r_sq = tf.reduce_sum(self.r * self.r, axis=1)

    def sq_distances(self, q):
        """Squared Euclidean distances (Q, R) of query rows ``q`` to the references, clipped at 0."""
        tf = _tf()
        q = tf.constant(np.asarray(q, np.float32))
        d = tf.reduce_sum(q * q, axis=1)[:, None] - 2.0 * tf.matmul(q, self.r, transpose_b=True) + self.r_sq[None, :]
        return np.maximum(d.numpy(), 0.0)


class BatchKnnFitness(KnnFitness):
    """A fitness that generalises: leave-one-out k-NN on a fresh mini-batch each generation.

    ``evaluate_full(W, batch=g)`` scores every row of ``W`` on mini-batch ``g``: ``batch_size``
    images drawn (seeded by ``(seed, g)``, without replacement) from the pool ``x_pool`` (the
    training split); every image of the batch is a query against the other ``batch_size - 1``
    (leave-one-out), so each computed feature serves as query *and* reference. All rows of one
    generation see the same batch (paired comparison: the ranking noise is that of the
    *differences* between individuals, not of their absolute accuracies), and each generation
    sees new images, so what the optimiser climbs is the expected k-NN accuracy, not one
    subset's. Fitness = LOO accuracy + ``margin_weight`` x mean margin (the margin is
    continuous, so it ranks individuals that the accuracy on a few hundred images ties).

    ``holdout_full(w)`` scores one vector on the held-out split: ``x_hold`` queries against
    ``x_hold_ref`` references (a fixed training subset), the held-out split never being in any
    batch. The caller picks the returned solution and the early stop on it.
    """

    def __init__(self, spec, x_pool, y_pool, x_hold, y_hold, x_hold_ref, y_hold_ref, k=9,
                 batch_size=512, seed=0, margin_weight=0.25, precision="float32"):
        if precision not in PRECISIONS:
            raise EdgekitError("unknown fitness precision {!r}: use one of {}".format(
                precision, ", ".join(PRECISIONS)))
        self.precision = precision
        self.compute_dtype = "float32"
        self.spec = spec
        self.pool = np.ascontiguousarray(np.asarray(x_pool, np.float32))
        self.y_pool = np.asarray(y_pool, np.int64)
        self.x_hold = np.ascontiguousarray(np.concatenate([x_hold_ref, x_hold]).astype(np.float32))
        self.y_hold_ref = np.asarray(y_hold_ref, np.int64)
        self.y_hold = np.asarray(y_hold, np.int64)
        self.batch_size = int(min(batch_size, len(self.pool)))
        self.seed = int(seed)
        self.margin_weight = float(margin_weight)
        self.k = int(min(k, self.batch_size - 1))
        self.k_hold = int(min(k, len(self.y_hold_ref)))
        self.n_classes = int(max(self.y_pool.max(), self.y_hold.max(), self.y_hold_ref.max()) + 1)
        self._lock = threading.Lock()
        self._cache = None
        self._hold_cache = None

    def __getstate__(self):
        state = super().__getstate__()
        state["_hold_cache"] = None
        return state

    def batch_indices(self, g):
        """Indices into the pool of generation ``g``'s mini-batch (sorted, seeded by (seed, g))."""
        rng = np.random.default_rng([self.seed, int(g)])
        return np.sort(rng.choice(len(self.pool), self.batch_size, replace=False))

    def evaluate_full(self, W, batch=0):
        """``(P, 3)``: fitness, LOO k-NN accuracy, mean margin of each row on mini-batch ``batch``."""
        W = np.atleast_2d(np.asarray(W, np.float32))
        idx = self.batch_indices(batch)
        y = self.y_pool[idx]
        with self._lock:
            self.compute_dtype = self.precision
            try:
                start = self._first_varying_conv(W)
                prefix = self._batch_prefix(W[0], start, ("batch", int(batch)), self.pool[idx], "_cache")
                feats = [np.concatenate([self._forward(w, start, p) for p in prefix]) for w in W]
            finally:
                self.compute_dtype = "float32"
            out = np.empty((len(W), 3), np.float64)
            for i, f in enumerate(feats):
                d = sq_distances(f, f)
                np.fill_diagonal(d, np.inf)
                correct, margin = knn_scores(d, y, y, self.k, self.n_classes)
                acc, m = float(np.mean(correct)), float(np.mean(margin))
                out[i] = (acc + self.margin_weight * m, acc, m)
            return out

    def holdout_full(self, w):
        """``(score, accuracy, margin)`` of vector ``w`` on the held-out split (score = accuracy
        + a tie-breaker smaller than one held-out image)."""
        w = np.asarray(w, np.float32)
        with self._lock:
            prefix = self._batch_prefix(w, 0, ("hold",), self.x_hold, "_hold_cache")
            f = np.concatenate([self._forward(w, 0, p) for p in prefix])
        n_ref = len(self.y_hold_ref)
        d = sq_distances(f[n_ref:], f[:n_ref])
        correct, margin = knn_scores(d, self.y_hold, self.y_hold_ref, self.k_hold, self.n_classes)
        acc, m = float(np.mean(correct)), float(np.mean(margin))
        return acc + 0.5 / len(self.y_hold) * m, acc, m

    def _batch_prefix(self, w, start, tag, x, attr):
        """Output of spec[:start] on images ``x`` per sample batch, cached on (tag, prefix weights)."""
        tf = _tf()
        used = [np.arange(*e[s]) for e in self.spec[:start] if e["op"] == "conv"
                for s in ("kslice", "bslice") if s in e]
        key = (tag, start, hashlib.sha1(w[np.concatenate(used)].tobytes()).hexdigest() if used else "")
        cached = getattr(self, attr)
        if cached is not None and cached[0] == key:
            return cached[1]
        batches = [self._run(w, tf.constant(x[s:s + SAMPLE_BATCH]), 0, start)
                   for s in range(0, len(x), SAMPLE_BATCH)]
        setattr(self, attr, (key, batches))
        return batches
