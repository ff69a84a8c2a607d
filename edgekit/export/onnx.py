"""Keras -> ONNX with tf2onnx, at an opset chosen by target, stable input/output names.

Example::

    info = to_onnx(model, "model.onnx", opset=13)          # dynamic batch
    info["input_name"], info["output_names"]
    to_onnx(model, "model.b1.onnx", opset=13, batch=1)     # static batch (TensorRT/MYRIAD)
"""
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency
from edgekit.runtime.registry import ONNX_OPSET as DEFAULT_OPSET
INPUT_NAME = "input"


def onnx_name(opset, batch=None):
    """The file name an export at this opset/batch gets, so several exports coexist."""
    return "model.opset{}{}.onnx".format(int(opset), "" if batch is None else ".b{}".format(batch))


def to_onnx(model, path, opset=DEFAULT_OPSET, batch=None, input_name=INPUT_NAME):
    """Convert a tf_keras model to an ONNX file at ``path``.

    ``batch=None`` keeps the batch dimension dynamic; an int fixes it (static shapes are what
    TensorRT and MYRIAD like best). Returns ``{"input_name", "output_names", "opset"}``.
    A conversion tf2onnx cannot do raises EdgekitError naming the op(s) it could not map.
    """
    from edgekit._tf import tf as _tf
    tf = _tf()
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependency("tf2onnx is not installed: pip install 'edgekit[compress]'") from None
    if batch is not None and int(batch) < 1:
        raise EdgekitError("--batch must be >= 1 (or use a dynamic batch)")
    shape = (None if batch is None else int(batch),) + tuple(model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=input_name),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=int(opset))
    except Exception as exc:  # tf2onnx raises plain ValueError/RuntimeError for unsupported ops
        raise EdgekitError("ONNX conversion failed at opset {}: {}".format(
            opset, _first_line(exc))) from None
    unsupported = _unconverted_ops(proto)
    if unsupported:
        raise EdgekitError("ONNX cannot express op {} (tf2onnx left it unconverted at opset {})"
                           .format(", ".join(sorted(unsupported)), opset))
    _drop_unused_domains(proto)
    drop_identity_reshapes(proto)
    Path(path).write_bytes(proto.SerializeToString())
    return {"input_name": proto.graph.input[0].name,
            "output_names": [o.name for o in proto.graph.output],
            "opset": int(opset)}


def drop_identity_reshapes(proto):
    """Remove the ``Reshape`` nodes that give their input's own shape; returns how many.

    tf2onnx puts a ``Reshape`` to ``[-1, C, 1, 1]`` between a Conv and its BatchNormalization
    wherever the feature map is 1x1 (the last blocks of a MobileNetV2 at 32x32). It changes
    nothing, but it keeps onnxruntime from folding the BatchNormalization into the Conv: with
    the 21 such nodes of a MobileNetV2 0.35 at 32x32 gone, p50 falls 1.27x (same outputs;
    ``benchmarks/onnx_reshapes.py``). Kept: a Reshape whose shape is computed, whose input's
    shape is not fully known past the batch dimension, or that is a graph output.
    """
    try:
        from onnx import numpy_helper, shape_inference
        inferred = shape_inference.infer_shapes(proto)
    except Exception:  # an exotic graph shape inference cannot read: leave it as it is
        return 0
    g = proto.graph
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                               for d in t.shape.dim]
    consts = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    rename = {}
    for n in list(g.node):
        if n.op_type != "Reshape" or n.output[0] in outputs or len(n.input) < 2 \
                or n.input[1] not in consts:
            continue
        s = shapes.get(n.input[0])
        t = [int(v) for v in numpy_helper.to_array(consts[n.input[1]]).ravel()]
        if s is None or len(s) != len(t) or len(s) < 2 or any(not v for v in s[1:]):
            continue
        if t[1:] == s[1:] and (t[0] == -1 or (s[0] is not None and t[0] == s[0])):
            rename[n.output[0]] = n.input[0]
            g.node.remove(n)
    if not rename:
        return 0
    for n in g.node:
        for i, name in enumerate(n.input):
            while name in rename:
                name = rename[name]
            n.input[i] = name
    used = {i for n in g.node for i in n.input} | outputs
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return len(rename)


def _drop_unused_domains(proto):
    """tf2onnx declares ai.onnx.ml etc. even when no node uses them; old parsers (TensorRT 8.2,
    OpenVINO 2022.3) are happier without the noise."""
    used = {n.domain for n in proto.graph.node} | {"", "ai.onnx"}
    keep = [imp for imp in proto.opset_import if imp.domain in used]
    if len(keep) != len(proto.opset_import):
        del proto.opset_import[:]
        proto.opset_import.extend(keep)


def _unconverted_ops(proto):
    """TensorFlow ops tf2onnx could not map: it leaves them as nodes of no ONNX domain it
    declares (they would fail to load anywhere)."""
    declared = {imp.domain for imp in proto.opset_import} | {"", "ai.onnx"}
    known = None
    try:
        import onnx.defs
        known = onnx.defs
    except ImportError:
        pass
    bad = set()
    for node in proto.graph.node:
        if node.domain not in declared:
            bad.add(node.op_type)
        elif node.domain in ("", "ai.onnx") and known is not None \
                and not known.has(node.op_type):
            bad.add(node.op_type)
    return bad


def _first_line(exc):
    text = str(exc).strip()
    return (text.splitlines()[0][:300] if text else type(exc).__name__)
