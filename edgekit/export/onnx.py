"""Keras -> ONNX with tf2onnx, at an opset chosen by target, stable input/output names.

Example::

    info = to_onnx(model, "model.onnx", opset=13)          # dynamic batch
    info["input_name"], info["output_names"]
"""
from pathlib import Path

from edgekit.errors import EdgekitError, MissingDependency

DEFAULT_OPSET = 13
INPUT_NAME = "input"


def to_onnx(model, path, opset=DEFAULT_OPSET, batch=None, input_name=INPUT_NAME):
    """Convert a tf_keras model to an ONNX file at ``path``.

    ``batch=None`` keeps the batch dimension dynamic; an int fixes it (static shapes are what
    TensorRT and MYRIAD like best). Returns ``{"input_name", "output_names", "opset"}``.
    """
    from edgekit._tf import tf as _tf
    tf = _tf()
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependency("tf2onnx is not installed: pip install 'edgekit[compress]'") from None
    shape = (batch,) + tuple(model.input_shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32, name=input_name),)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=int(opset))
    except Exception as exc:  # tf2onnx raises plain ValueError/RuntimeError for unsupported ops
        raise EdgekitError("ONNX conversion failed at opset {}: {}".format(
            opset, str(exc).splitlines()[0][:300])) from None
    Path(path).write_bytes(proto.SerializeToString())
    return {"input_name": proto.graph.input[0].name,
            "output_names": [o.name for o in proto.graph.output],
            "opset": int(opset)}
