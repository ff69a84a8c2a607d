"""Cut points of an ONNX model from any framework, for k-NN slicing without tensorflow.

An ONNX graph has no layers, only tensors. A cut is a tensor: the output of a block end
(``Add`` / ``Sum`` / channel ``Concat``, pooling, global pooling; with ``"all"`` every
activation too) or the features the classifier reads (the data input of the last
``Gemm`` / ``MatMul``). Convolutions compute NCHW whatever the input layout, so 4-D
tensors are known NCHW when they come from ``Conv`` / pooling / ``BatchNormalization`` through
element-wise ops; only those are offered (a 4-D tensor of unknown layout is not a cut).

:func:`candidate_graph` adds every candidate as a graph output — NCHW ones through a
``Transpose`` to NHWC, the layout edgekit's pooling / PCA / k-NN head read — so one
onnxruntime session streams every candidate's features (:class:`OrtMulti`, which answers
``predict_on_batch`` / ``output_shape`` as the Keras multi-output model does), and each
candidate's own trunk is its subgraph (``knn_onnx.trunk_subgraph``).

Example::

    g = onnx.load("resnet.onnx")
    cands = onnx_candidates(g)                  # [Cut(tensor, node, op, shape), ...]
    multi = OrtMulti(candidate_graph(g, cands), layout="NCHW")
"""
import numpy as np

from edgekit.errors import EdgekitError

BLOCK_OPS = ("Add", "Sum", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
             "GlobalMaxPool")
UNIT_OPS = BLOCK_OPS + ("Relu", "Clip", "LeakyRelu", "HardSwish", "Sigmoid", "Elu", "Selu",
                        "PRelu", "Mul", "BatchNormalization", "Conv")
# ops whose output is NCHW by ONNX's definition
NCHW_SOURCES = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                "BatchNormalization", "LRN", "InstanceNormalization")
# element-wise ops: the output keeps the layout of its (non-constant) inputs
ELEMENTWISE = ("Relu", "Clip", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid",
               "HardSwish", "Tanh", "PRelu", "Add", "Sum", "Mul", "Sub", "Div", "Max", "Min",
               "Dropout", "Identity", "BatchNormalization")
HEAD_TAIL = ("Softmax", "LogSoftmax", "Identity", "Flatten", "Reshape", "Squeeze", "Add")
SUFFIX = "__edgekit_nhwc"


class Cut(object):
    """One candidate: ``tensor`` (its name in the graph), the ``node`` that makes it, its
    ``op``, per-image ``shape`` as edgekit reads it (NHWC ``(H, W, C)`` or ``(D,)``)."""

    def __init__(self, tensor, node, op, shape, nchw):
        self.tensor, self.node, self.op = tensor, node, op
        self.shape, self.nchw = tuple(int(d) for d in shape), bool(nchw)

    @property
    def output(self):
        return self.tensor + SUFFIX if self.nchw else self.tensor

    def __repr__(self):
        return "Cut({}, {}, {})".format(self.node, self.op, "x".join(map(str, self.shape)))


def _shapes(model):
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow: no shapes
        return {}
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _nchw_tensors(graph):
    consts = {t.name for t in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    nchw = set()
    for n in graph.node:
        data = [i for i in n.input if i and i not in consts]
        if n.op_type in NCHW_SOURCES:
            nchw.update(n.output[:1])
        elif n.op_type in ELEMENTWISE and data and all(i in nchw for i in data):
            nchw.update(n.output[:1])
        elif n.op_type == "Concat" and data and all(i in nchw for i in data):
            axis = [a.i for a in n.attribute if a.name == "axis"]
            if axis and axis[0] == 1:
                nchw.update(n.output[:1])
    return nchw


def head_features(graph):
    """``(features, logits)``: the tensor the classifier reads — the data input of the last
    Gemm / MatMul / Conv before the graph output (through Softmax / Flatten / bias Add) — and
    the tensors from there to the output (never cuts); ``(None, set())`` if not found."""
    producer = {o: n for n in graph.node for o in n.output}
    consts = {t.name for t in graph.initializer}
    t, tail = graph.output[0].name, set()
    while t in producer and len(tail) < 16:
        n = producer[t]
        tail.add(t)
        data = [i for i in n.input if i and i not in consts]
        if n.op_type in ("Gemm", "MatMul", "Conv"):
            return (data[0] if data else None), tail
        if n.op_type not in HEAD_TAIL or not data:
            return None, tail
        t = data[0]
    return None, tail


def _downstream(graph, tensor):
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out, stack = set(), [tensor]
    while stack:
        for n in consumers.get(stack.pop(), ()):
            for o in n.output:
                if o not in out:
                    out.add(o)
                    stack.append(o)
    return out


def onnx_candidates(model, which="blocks"):
    """Candidate cuts of ``model`` (a ``ModelProto``) in graph order: ``"blocks"`` (block
    ends and the classifier's input) or ``"all"`` (every activation / conv too)."""
    g = model.graph
    ops = BLOCK_OPS if which == "blocks" else UNIT_OPS
    shapes = _shapes(model)
    nchw = _nchw_tensors(g)
    feat, logits = head_features(g)
    after_head = (_downstream(g, feat) if feat else set()) | logits
    outputs = {o.name for o in g.output}
    cands = []
    for n in g.node:
        t = n.output[0] if n.output else None
        if not t or t in after_head or t in outputs:
            continue
        shape = shapes.get(t)
        if t == feat and shape and len(shape) == 2 and shape[1]:
            cands.append(Cut(t, n.name or t, n.op_type, (shape[1],), False))
            continue
        if n.op_type not in ops or t not in nchw or not shape or len(shape) != 4 \
                or not all(shape[1:]):
            continue
        if n.op_type == "Concat" and not any(a.name == "axis" and a.i == 1 for a in n.attribute):
            continue
        c, h, w = shape[1:]
        cands.append(Cut(t, n.name or t, n.op_type, (h, w, c), True))
    if which == "blocks" and not cands:
        return onnx_candidates(model, "all")
    return cands


def resolve_onnx_cut(cands, cut, model):
    """The candidate named by ``cut`` (node name, tensor name or index into ``cands``)."""
    if isinstance(cut, str) and cut.lstrip("-").isdigit():
        cut = int(cut)
    if isinstance(cut, (int, np.integer)):
        if not -len(cands) <= int(cut) < len(cands):
            raise EdgekitError("--cut {} is out of range: the ONNX model has {} candidate cuts "
                               "(0..{}: {})".format(cut, len(cands), len(cands) - 1,
                                                    ", ".join(c.node for c in cands)))
        return cands[int(cut)]
    for c in cands:
        if cut in (c.node, c.tensor):
            return c
    for c in onnx_candidates(model, "all"):
        if cut in (c.node, c.tensor):
            return c
    raise EdgekitError("--cut {!r}: no such cut point in the ONNX graph (a node or tensor name "
                       "at a block end); candidates: {}".format(
                           cut, ", ".join(c.node for c in cands)))


def candidate_graph(model, cands, int8_weights=False):
    """A copy of ``model`` whose outputs are the candidates (NCHW ones transposed to NHWC),
    its conv / dense weights int8-exact when ``int8_weights``."""
    import onnx
    from onnx import TensorProto, helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    del g.output[:]
    for c in cands:
        if c.nchw:
            g.node.append(helper.make_node("Transpose", [c.tensor], [c.output], perm=[0, 2, 3, 1],
                                           name=c.node + "/to_nhwc"))
        g.output.append(helper.make_tensor_value_info(c.output, TensorProto.FLOAT,
                                                      [None] + list(c.shape)))
    if int8_weights:
        int8_exact_weights(m)
    return m


def int8_exact_weights(model):
    """Conv / Gemm / MatMul weights of ``model`` replaced (in place) by their per-output-channel
    int8 values times scale, so the features are the ones the int8-stored trunk computes."""
    from onnx import numpy_helper
    from edgekit.compress.knn.onnx import quantize_array
    axis_of = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            axis_of[n.input[1]] = 0
        elif n.op_type == "Gemm" and len(n.input) > 1:
            trans = [a.i for a in n.attribute if a.name == "transB"]
            axis_of[n.input[1]] = 0 if trans and trans[0] else -1
        elif n.op_type == "MatMul" and len(n.input) > 1:
            axis_of[n.input[1]] = -1
    for i, t in enumerate(model.graph.initializer):
        if t.name in axis_of:
            arr = numpy_helper.to_array(t)
            if arr.dtype == np.float32 and arr.ndim >= 2 and arr.size >= 256:
                model.graph.initializer[i].CopyFrom(
                    numpy_helper.from_array(quantize_array(arr, axis_of[t.name]), t.name))
    return model


def float_params(sub):
    """Weights of a trunk subgraph: elements of its float initializers."""
    from onnx import TensorProto
    return int(sum(int(np.prod(t.dims)) for t in sub.graph.initializer
                   if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)))


class OrtMulti(object):
    """An onnxruntime session over a candidate graph that quacks like the Keras trunk the k-NN
    search streams: ``predict_on_batch(x)`` (NHWC images in, NHWC features out, a list when
    there are several outputs) and ``output_shape``."""

    def __init__(self, model, layout):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        # a fixed batch (torch.onnx.export's default is 1): fed that many images at a time
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
        self.outputs = [o.name for o in model.graph.output]
        self.layout = layout
        shapes = []
        for o in model.graph.output:
            dims = o.type.tensor_type.shape.dim
            shapes.append(tuple([None] + [d.dim_value for d in list(dims)[1:]]))
        self.output_shape = shapes if len(shapes) > 1 else shapes[0]

    def predict_on_batch(self, x):
        from edgekit.onnx_model import to_model_layout
        x = to_model_layout(np.asarray(x, np.float32), self.layout)
        if self.batch is None:
            out = self.session.run(self.outputs, {self.input: x})
        else:
            n, b = len(x), self.batch
            parts = []
            for s in range(0, n, b):
                chunk = x[s:s + b]
                if len(chunk) < b:  # pad the last chunk to the fixed batch
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - len(chunk), 0)])
                parts.append([o[:min(b, n - s)] for o in self.session.run(self.outputs,
                                                                          {self.input: chunk})])
            out = [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]
        return out if len(out) > 1 else out[0]
