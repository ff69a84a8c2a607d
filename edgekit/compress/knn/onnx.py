"""Trunk + feature reduction + k-NN head as ONE ONNX graph of default-domain ops (opset 13).

The trunk is converted by :func:`edgekit.export.onnx.to_onnx`; this module appends:

``[Transpose NHWC->NCHW, AveragePool|MaxPool]`` -> ``Flatten`` -> ``[MatMul W + Add b]`` (PCA,
mean folded into the bias) -> L2 normalise (``Mul, ReduceSum, Max, Sqrt, Div``) ->
squared distances ``||a||^2 - 2 a.P^T + ||p||^2`` (``MatMul, Mul, Sub, Add, Max``; ``||p||^2``
computed in-graph from the stored prototypes) -> ``TopK`` (constant K, smallest) ->
``Gather`` labels -> ``Equal`` with the class range + ``Cast`` (+ ``Div`` weights) +
``ReduceSum`` -> votes ``scores`` (N, C) and ``ArgMax`` -> ``class_id`` (N,) int64.
int8 prototypes are an int8 initializer followed by ``Cast`` and ``Mul`` by their scale.
No ``ai.onnx.ml`` ops, no loops: onnxruntime, OpenVINO (2022.3 too) and TensorRT 8.2 parse it.
:class:`FeatureReducer` is the numpy twin of the reduction part (same op order, float32).

Example::

    build_knn_graph(trunk, reducer, head, "model.onnx")
"""
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.registry import ONNX_OPSET as OPSET
HEAD_MAX_OPSET = 21   # the head's ops (ReduceSum with axes input, TopK, ...) are unchanged 13..21
ALLOWED_DOMAINS = ("", "ai.onnx")
L2_EPS = 1e-12


def parse_pool(pool):
    """``None`` | ``"avg2"`` | ``"max3"`` | int (average) -> ``None`` or ``(mode, size)``."""
    if pool in (None, "", "none", 0, 1):
        return None
    if isinstance(pool, (int, np.integer)):
        return ("avg", int(pool))
    s = str(pool).strip().lower()
    for mode in ("avg", "max"):
        if s.startswith(mode) and s[len(mode):].isdigit() and int(s[len(mode):]) >= 1:
            return None if int(s[len(mode):]) == 1 else (mode, int(s[len(mode):]))
    if s.isdigit():
        return None if int(s) <= 1 else ("avg", int(s))
    raise EdgekitError("--pool must be avgN, maxN or N (pool size), got {!r}".format(pool))


def pool_name(pool):
    p = parse_pool(pool)
    return "none" if p is None else "{}{}".format(*p)


def l2_normalise(x):
    """Rows divided by their L2 norm (eps-guarded), float32: the graph's normalisation."""
    x = np.asarray(x, np.float32)
    sq = np.sum(x * x, axis=1, keepdims=True, dtype=np.float32)
    return (x / np.sqrt(np.maximum(sq, np.float32(L2_EPS)))).astype(np.float32)


class FeatureReducer:
    """Pooling + flatten + optional PCA + L2 normalisation, in numpy float32.

    ``fit(feature_maps)`` learns the PCA (sklearn, seeded); ``transform`` mirrors the graph.
    """

    def __init__(self, pool=None, dims=None, random_state=0, int8=False):
        self.pool = parse_pool(pool)
        self.int8 = int8
        self.dims = dims
        self.random_state = random_state
        self.W = None
        self.b = None

    def pooled(self, fmap):
        """(N,H,W,C) feature maps -> (N, D) flattened (C,h,w order when pooled)."""
        f = np.asarray(fmap, np.float32)
        if f.ndim == 2:
            return f
        if f.ndim != 4:
            return f.reshape(len(f), -1)
        if self.pool is None:
            return f.reshape(len(f), -1)
        mode, s = self.pool
        n, h, w, c = f.shape
        if s > h or s > w:
            raise EdgekitError("pool size {} is larger than the {}x{} feature map at this cut"
                               .format(s, h, w))
        ho, wo = h // s, w // s
        x = f.transpose(0, 3, 1, 2)[:, :, :ho * s, :wo * s].reshape(n, c, ho, s, wo, s)
        x = x.max(axis=(3, 5)) if mode == "max" else x.mean(axis=(3, 5), dtype=np.float32)
        return x.reshape(n, -1).astype(np.float32)

    def in_dims(self, fmap_shape):
        shape = tuple(fmap_shape)
        if len(shape) != 3 or self.pool is None:
            return int(np.prod(shape))
        s = self.pool[1]
        return int(shape[2] * (shape[0] // s) * (shape[1] // s))

    def fit(self, fmap):
        x = self.pooled(fmap)
        if self.dims:
            if self.dims > min(x.shape):
                raise EdgekitError("--dims {} is larger than the {} features (or {} samples) "
                                   "available at this cut".format(self.dims, x.shape[1], len(x)))
            from sklearn.decomposition import PCA
            pca = PCA(n_components=int(self.dims), random_state=self.random_state,
                      svd_solver="randomized" if x.shape[1] > 500 else "full")
            pca.fit(x.astype(np.float64))
            self.W = pca.components_.T.astype(np.float32)             # (D, d)
            if self.int8:
                self.W = quantize_array(self.W, axis=1)
            self.b = (-(pca.mean_.astype(np.float32) @ self.W)).astype(np.float32)
        return self

    def transform(self, fmap):
        x = self.pooled(fmap)
        if self.W is not None:
            x = x @ self.W + self.b
        return l2_normalise(x)

    @classmethod
    def from_pca(cls, pool, mean, components, dims, int8=False):
        """A fitted reducer from a PCA fitted elsewhere: ``components`` (>= dims, D) rows
        sorted by variance, ``mean`` (D,); keeps the first ``dims`` (``None``: no PCA)."""
        red = cls(pool, dims, int8=int8)
        if dims:
            W = np.ascontiguousarray(np.asarray(components, np.float32)[:int(dims)].T)
            red.W = quantize_array(W, axis=1) if int8 else W
            red.b = (-(np.asarray(mean, np.float32) @ red.W)).astype(np.float32)
        return red

    def out_dims(self, fmap_shape):
        return int(self.dims) if self.W is not None else self.in_dims(fmap_shape)

    def storage_bytes(self):
        if self.W is None:
            return 0
        return int(self.W.size * (1 if self.int8 else 4) + self.b.nbytes)


def build_knn_graph(trunk, reducer, head, path, trunk_onnx=None, int8_weights=False):
    """Write trunk + reducer + head as one ONNX file at ``path``; returns part byte counts.

    ``trunk`` is the Keras sub-model up to the cut (converted with tf2onnx at opset 13)
    unless ``trunk_onnx`` (an ONNX file of it, or a ``ModelProto`` such as
    :func:`trunk_subgraph` returns) is given. ``int8_weights``: trunk kernels and the PCA
    matrix, already int8-exact (see :func:`quantize_keras_trunk` and
    ``FeatureReducer(int8=True)``), are stored as int8 initializers + ``Cast`` + ``Mul``.
    """
    import onnx

    path = Path(path)
    if trunk_onnx is None:
        from edgekit.export.onnx import to_onnx
        tmp = path.with_name("." + path.name + ".trunk.onnx")
        try:
            to_onnx(trunk, tmp, opset=OPSET)
            model = onnx.load(str(tmp))
        finally:
            if tmp.exists():
                tmp.unlink()
    elif hasattr(trunk_onnx, "graph"):
        model = onnx.ModelProto()
        model.CopyFrom(trunk_onnx)
    else:
        model = onnx.load(str(trunk_onnx))
    if int8_weights:
        quantize_initializers(model)
    trunk_bytes = int(sum(_tensor_bytes(t) for t in model.graph.initializer))
    arrays = head_arrays(reducer, head, int8_weights)
    _append_head(model, arrays, reducer.pool, int(head.n_neighbors), head.weights,
                 len(head.classes_))
    onnx.checker.check_model(model)
    check_standard_ops(model, max_opset=min(max(OPSET, graph_opset(model)), HEAD_MAX_OPSET))
    path.write_bytes(model.SerializeToString())
    red = [a for n, a in arrays.items() if n.startswith("pca_")]
    protos = [a for n, a in arrays.items() if n.startswith("protos") or n == "labels"]
    return {"trunk_weights": trunk_bytes,
            "reduction": int(sum(a.nbytes for a in red)),
            "prototypes_labels": int(sum(a.nbytes for a in protos)),
            "total": int(path.stat().st_size), "opset": graph_opset(model)}


def head_arrays(reducer, head, int8_weights=False):
    """The head's stored arrays (name -> numpy array), as :func:`build_knn_graph` writes them."""
    out = {}
    if reducer.W is not None:
        wq = int8_exact(reducer.W) if int8_weights else None
        if wq is not None:
            out["pca_w_int8"], out["pca_w_scale"] = wq
        else:
            out["pca_w"] = np.asarray(reducer.W, np.float32)
        out["pca_b"] = np.asarray(reducer.b, np.float32)
    if head.int8:
        out["protos_t_int8"] = np.ascontiguousarray(head.prototypes_int8_.T)
        out["protos_scale"] = np.array(head.scale_, np.float32)
    else:
        out["protos_t"] = np.ascontiguousarray(head.prototypes_.T)
    n_cls = len(head.classes_)
    out["labels"] = head.prototype_labels_.astype(np.uint8 if n_cls <= 255 else np.int32)
    return out


def head_array_specs(in_dims, dims, n_protos, n_classes, int8=False, int8_weights=False):
    """name -> (dtype, shape) of :func:`head_arrays` for a head of these sizes (no arrays made).

    ``dims=None``: no PCA. The PCA matrix is int8 when ``int8_weights`` and it has at least
    256 entries (what :func:`int8_exact` accepts).
    """
    out = {}
    d = in_dims
    if dims:
        d = int(dims)
        if int8_weights and in_dims * d >= 256:
            out["pca_w_int8"] = (np.int8, (in_dims, d))
            out["pca_w_scale"] = (np.float32, (1, d))
        else:
            out["pca_w"] = (np.float32, (in_dims, d))
        out["pca_b"] = (np.float32, (d,))
    if int8:
        out["protos_t_int8"] = (np.int8, (d, n_protos))
        out["protos_scale"] = (np.float32, ())
    else:
        out["protos_t"] = (np.float32, (d, n_protos))
    out["labels"] = (np.uint8 if n_classes <= 255 else np.int32, (n_protos,))
    return out


def predict_head_bytes(in_dims, dims, n_protos, n_classes, k, pool=None, int8=False,
                       int8_weights=False, weights="uniform", feat="feat"):
    """Bytes the head adds to the trunk's ONNX file, computed without building it.

    = the stored arrays (shape x dtype, plus each tensor's protobuf header) + the graph
    overhead of the head's nodes and outputs, measured once per structure on a tiny build.
    """
    specs = head_array_specs(in_dims, dims, n_protos, n_classes, int8, int8_weights)
    key = (tuple(sorted(specs)), parse_pool(pool), int(k), weights, int(n_classes), feat)
    if key not in _OVERHEAD:
        tiny = {n: np.zeros([1] * len(shape), dtype) for n, (dtype, shape) in specs.items()}
        _OVERHEAD[key] = _measured_overhead(tiny, parse_pool(pool), int(k), weights,
                                            int(n_classes), feat)
    return _OVERHEAD[key] + sum(_initializer_bytes("knn/" + n, dtype, shape)
                                for n, (dtype, shape) in specs.items())


_OVERHEAD = {}


def _measured_overhead(arrays, pool, k, weights, n_classes, feat):
    """Head bytes (nodes, outputs, constants) besides ``arrays``, from a real build."""
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["input"], [feat])], "trunk",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1])],
                          [])
    model = helper.make_model(g)
    _set_model_header(model)
    before = model.ByteSize()
    _append_head(model, arrays, pool, k, weights, n_classes, feat=feat)
    return int(model.ByteSize() - before - sum(
        _initializer_bytes("knn/" + n, a.dtype, a.shape) for n, a in arrays.items()))


def _varint_len(n):
    n, size = int(n), 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _initializer_bytes(name, dtype, shape):
    """Serialized bytes of one raw-data initializer inside a GraphProto (tag + length + body)."""
    from onnx import TensorProto, helper
    t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                    dims=[int(d) for d in shape])
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    body = t.ByteSize() + 1 + _varint_len(nbytes) + nbytes
    return 1 + _varint_len(body) + body


def _append_head(model, arrays, pool, k, weights, n_cls, feat=None):
    """Add the reduction + k-NN head after the trunk's (first) output, in place."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    feat = feat or g.output[0].name
    del g.output[:]
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), "knn/" + name))
        return "knn/" + name

    def node(op, inputs, name, **attrs):
        out = "knn/" + name
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    x = feat
    if pool is not None:
        mode, s = pool
        x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
        x = node("AveragePool" if mode == "avg" else "MaxPool", [x], "pool",
                 kernel_shape=[s, s], strides=[s, s])
    x = node("Flatten", [x], "flat", axis=1)
    if "pca_w_int8" in arrays:
        w = node("Mul", [node("Cast", [const("pca_w_int8", arrays["pca_w_int8"])], "pca_w_f",
                              to=TensorProto.FLOAT), const("pca_w_scale", arrays["pca_w_scale"])],
                 "pca_w")
    elif "pca_w" in arrays:
        w = const("pca_w", arrays["pca_w"])
    if "pca_b" in arrays:
        x = node("MatMul", [x, w], "pca_mm")
        x = node("Add", [x, const("pca_b", arrays["pca_b"])], "pca")
    sq = node("ReduceSum", [node("Mul", [x, x], "x2"), const("axes1", np.array([1], np.int64))],
              "xsq", keepdims=1)
    nrm = node("Sqrt", [node("Max", [sq, const("l2eps", np.array(L2_EPS, np.float32))],
                             "xsq_eps")], "xnorm")
    a = node("Div", [x, nrm], "feat")

    # prototypes, stored transposed (d, M)
    if "protos_t_int8" in arrays:
        pq = const("protos_t_int8", arrays["protos_t_int8"])
        pt = node("Mul", [node("Cast", [pq], "protos_f", to=TensorProto.FLOAT),
                          const("protos_scale", arrays["protos_scale"])], "protos_t")
    else:
        pt = const("protos_t", arrays["protos_t"])
    psq = node("ReduceSum", [node("Mul", [pt, pt], "p2"), const("axes0", np.array([0], np.int64))],
               "psq", keepdims=1)                                          # (1, M)
    asq = node("ReduceSum", [node("Mul", [a, a], "a2"), "knn/axes1"], "asq", keepdims=1)
    ab = node("MatMul", [a, pt], "ab")
    d = node("Add", [node("Sub", [asq, node("Mul", [ab, const("two", np.array(2.0, np.float32))],
                                             "ab2")], "d0"), psq], "d1")
    d = node("Max", [d, const("zero", np.array(0.0, np.float32))], "dist")
    outs = ["knn/topk_d", "knn/topk_i"]
    nodes.append(helper.make_node("TopK", [d, const("k", np.array([k], np.int64))], outs,
                                  name="knn/topk", axis=1, largest=0, sorted=1))
    labels = const("labels", arrays["labels"])
    if arrays["labels"].dtype != np.int32:
        labels = node("Cast", [labels], "labels_i32", to=TensorProto.INT32)
    nl = node("Unsqueeze", [node("Gather", [labels, outs[1]], "nn_labels", axis=0),
                            "knn/axes_last"], "nn_labels3")
    const("axes_last", np.array([2], np.int64))
    hit = node("Cast", [node("Equal", [nl, const("class_range", np.arange(n_cls, dtype=np.int32))],
                             "hit_b")], "hit", to=TensorProto.FLOAT)      # (N, K, C)
    if weights == "distance":
        w = node("Div", [const("one", np.array(1.0, np.float32)),
                         node("Add", [outs[0], const("deps", np.array(1e-6, np.float32))],
                              "d_eps")], "w")
        hit = node("Mul", [hit, node("Unsqueeze", [w, "knn/axes_last"], "w3")], "whit")
    scores = node("ReduceSum", [hit, "knn/axes1"], "votes", keepdims=0)
    nodes.append(helper.make_node("Identity", [scores], ["scores"], name="scores"))
    nodes.append(helper.make_node("ArgMax", [scores], ["class_id"], name="class_id",
                                  axis=1, keepdims=0))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.output.extend([helper.make_tensor_value_info("class_id", TensorProto.INT64, [None]),
                     helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, n_cls])])
    _set_model_header(model)


def graph_opset(model):
    """The default-domain opset of ``model`` (0 if it declares none)."""
    return max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [0])


def _set_model_header(model):
    """Opset 13, or the trunk's own when it is newer (a user's ONNX at opset 17: the head's ops
    mean the same up to HEAD_MAX_OPSET; the Jetson's opset <= 13 check then says so)."""
    from onnx import helper
    opset = max(OPSET, graph_opset(model))
    ir = model.ir_version
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset == OPSET else max(int(ir), 8)
    model.producer_name = "edgekit-knn-slice"
    model.producer_version = ""


def trunk_subgraph(model, output):
    """The part of ``model`` (a ``ModelProto``) that computes ``output`` (a name or an index
    into its outputs): one input, one output, only the nodes and initializers it needs.

    How a multi-output trunk (every candidate cut an output, converted once) yields each
    candidate's own trunk without converting again.
    """
    import onnx
    g = model.graph
    if isinstance(output, (int, np.integer)):
        output = g.output[int(output)].name
    producer = {o: n for n in g.node for o in n.output}
    need, stack, seen = set(), [output], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producer.get(t)
        if n is not None and id(n) not in need:
            need.add(id(n))
            stack.extend(i for i in n.input if i)
    sub = onnx.ModelProto()
    sub.CopyFrom(model)
    del sub.graph.node[:]
    sub.graph.node.extend(n for n in g.node if id(n) in need)
    del sub.graph.initializer[:]
    sub.graph.initializer.extend(t for t in g.initializer if t.name in seen)
    del sub.graph.value_info[:]
    del sub.graph.output[:]
    sub.graph.output.extend(o for o in g.output if o.name == output)
    inputs = [i for i in g.input if i.name in seen]
    del sub.graph.input[:]
    sub.graph.input.extend(inputs)
    cancel_transpose_pairs(sub.graph)
    return sub


def cancel_transpose_pairs(graph):
    """Remove ``Transpose`` pairs that undo each other (in place); returns how many.

    tf2onnx keeps NCHW inside and transposes every graph output back to NHWC; with every
    candidate cut an output, the path through an earlier candidate goes NCHW -> NHWC ->
    NCHW. Once that candidate is no longer an output (in its subgraph) the pair is dead
    weight: bytes and two copies per inference.
    """
    from onnx import helper
    removed = 0
    while True:
        producer = {o: n for n in graph.node for o in n.output}
        outputs = {o.name for o in graph.output}
        pair = None
        for b in graph.node:
            a = producer.get(b.input[0]) if b.op_type == "Transpose" and b.input else None
            if a is None or a.op_type != "Transpose":
                continue
            pa = list(helper.get_attribute_value(a.attribute[0])) if a.attribute else None
            pb = list(helper.get_attribute_value(b.attribute[0])) if b.attribute else None
            if pa and pb and len(pa) == len(pb) and \
                    [pa[pb[i]] for i in range(len(pb))] == list(range(len(pb))) and \
                    b.output[0] not in outputs:
                pair = (a, b)
                break
        if pair is None:
            return removed
        a, b = pair
        src, dead = a.input[0], b.output[0]
        for n in graph.node:
            for i, name in enumerate(n.input):
                if name == dead:
                    n.input[i] = src
        graph.node.remove(b)
        if not any(a.output[0] in n.input for n in graph.node) and a.output[0] not in outputs:
            graph.node.remove(a)
        removed += 1


def trunk_file_bytes(sub, int8_weights=False):
    """Bytes the trunk ``sub`` contributes to a k-NN graph file (its output replaced by the head)."""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(sub)
    if int8_weights:
        quantize_initializers(m)
    del m.graph.output[:]
    _set_model_header(m)
    return int(m.ByteSize())


def int8_exact(w, min_size=256):
    """``(q int8, scale float32 broadcastable)`` if ``w`` is exactly q*scale along one axis."""
    w = np.asarray(w, np.float32)
    if w.size < min_size or w.ndim == 0:
        return None
    for axis in reversed(range(w.ndim)):
        other = tuple(a for a in range(w.ndim) if a != axis)
        amax = np.max(np.abs(w), axis=other, keepdims=True)
        sc = (amax / np.float32(127.0)).astype(np.float32)
        sc[sc == 0] = 1.0
        r = w / sc
        if np.max(np.abs(r - np.round(r))) < 1e-2 and np.max(np.abs(r)) <= 127.5:
            return np.round(r).astype(np.int8), sc
    return None


def quantize_array(w, axis=-1):
    """Symmetric per-channel int8 (along ``axis``) of a float array: returns q*scale, float32."""
    w = np.asarray(w, np.float32)
    axis = axis % w.ndim
    other = tuple(a for a in range(w.ndim) if a != axis)
    sc = (np.max(np.abs(w), axis=other, keepdims=True) / np.float32(127.0)).astype(np.float32)
    sc[sc == 0] = 1.0
    return (np.clip(np.round(w / sc), -127, 127) * sc).astype(np.float32)


def quantize_keras_trunk(trunk):
    """A copy of a Keras trunk whose conv/dense kernels are int8-exact (per output channel)."""
    from edgekit._tf import keras
    clone = keras().models.clone_model(trunk)
    weights = []
    for layer in trunk.layers:
        ws = layer.get_weights()
        if type(layer).__name__ in ("Conv2D", "Dense", "DepthwiseConv2D") and ws:
            axis = -2 if type(layer).__name__ == "DepthwiseConv2D" else -1
            ws = [quantize_array(ws[0], axis)] + ws[1:]
        weights.extend(ws)
    clone.set_weights(weights)
    return clone


def quantize_initializers(model):
    """Replace int8-exact float initializers by int8 + Cast + Mul (dequantised in-graph)."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    keep, new_nodes = [], []
    for t in g.initializer:
        arr = numpy_helper.to_array(t)
        res = int8_exact(arr) if arr.dtype == np.float32 else None
        if res is None:
            keep.append(t)
            continue
        q, sc = res
        keep.append(numpy_helper.from_array(q, t.name + "_int8"))
        keep.append(numpy_helper.from_array(sc, t.name + "_scale"))
        new_nodes.append(helper.make_node("Cast", [t.name + "_int8"], [t.name + "_f"],
                                          to=TensorProto.FLOAT, name=t.name + "_cast"))
        new_nodes.append(helper.make_node("Mul", [t.name + "_f", t.name + "_scale"], [t.name],
                                          name=t.name + "_dequant"))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)


def _tensor_bytes(t):
    from onnx import numpy_helper
    return int(numpy_helper.to_array(t).nbytes)


def check_standard_ops(model_or_path, max_opset=OPSET):
    """Refuse non-default domains, opset > 13 or a TopK whose K is not a constant."""
    import onnx
    model = onnx.load(str(model_or_path)) if not hasattr(model_or_path, "graph") else model_or_path
    for op in model.opset_import:
        if op.domain not in ALLOWED_DOMAINS:
            raise EdgekitError("graph imports non-default domain {!r}".format(op.domain))
        if op.version > max_opset:
            raise EdgekitError("graph opset {} > {}".format(op.version, max_opset))
    consts = {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        if n.domain not in ALLOWED_DOMAINS:
            raise EdgekitError("graph uses {}::{}".format(n.domain, n.op_type))
        if n.op_type in ("Loop", "Scan", "If"):
            raise EdgekitError("graph uses control flow op {}".format(n.op_type))
        if n.op_type == "TopK" and n.input[1] not in consts:
            raise EdgekitError("TopK's K is not a constant initializer")
    return True
