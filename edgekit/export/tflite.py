"""Keras -> TFLite float32 / float16 / full-integer int8 (representative data from training).

The files load in ai-edge-litert, tflite-runtime and tf.lite (builtin ops only: no Flex ops,
so a model the builtins cannot express is refused, naming the op).

Example::

    to_tflite(model, "model.int8.tflite", "int8", representative=x_train[:200])
"""
import re
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

PRECISIONS = ("fp32", "fp16", "int8")


def to_tflite(model, path, precision="fp32", representative=None, int8_io=False):
    """Convert a tf_keras model to a .tflite file at ``path``.

    ``fp16`` stores weights as float16 (computes in float32 on CPU); ``int8`` is full-integer
    post-training quantisation calibrated on ``representative`` images (N, H, W, C), with float
    input/output unless ``int8_io``. Intermediate tensor names are dropped
    (:func:`strip_internal_names`). Returns ``{"precision", "bytes"}``.
    """
    from edgekit._tf import tf as _tf
    tf = _tf()
    if precision not in PRECISIONS:
        raise EdgekitError("unknown TFLite precision {!r} (fp32, fp16, int8)".format(precision))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if representative is None or len(representative) == 0:
            raise EdgekitError("int8 TFLite needs calibration images (--calibration-samples >= 1)")
        rep = np.asarray(representative, dtype=np.float32)
        if rep.shape[1:] != tuple(model.input_shape[1:]):
            raise EdgekitError("calibration data has shape {} but the model expects {}".format(
                rep.shape[1:], tuple(model.input_shape[1:])))

        def gen():
            for i in range(len(rep)):
                yield [rep[i:i + 1]]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    from edgekit._tf import native_stderr_silenced
    try:
        with native_stderr_silenced():  # the converter logs "fully_quantize: 0, ..." to fd 2
            blob = conv.convert()
    except Exception as exc:  # ConverterError: the message lists the ops it could not map
        raise EdgekitError("TFLite cannot express {}".format(_ops_in(exc))) from None
    blob = strip_internal_names(blob)
    Path(path).write_bytes(blob)
    return {"precision": precision, "bytes": len(blob)}


def strip_internal_names(blob):
    """The flatbuffer ``blob`` without the names of its intermediate tensors.

    The converter names each fused tensor after every Keras op folded into it
    (``net/conv1_relu/Relu;net/conv1_bn/FusedBatchNormV3;net/conv1/Conv2D1``): about 1.4 KB of
    a 16 KB int8 file, and nothing an interpreter reads. The input and output tensors keep their
    names and the signature is kept, so runners and ``get_input_details`` see what they did.
    TensorFlow's own ``flatbuffer_utils.strip_strings`` drops those too; this keeps them.
    """
    from tensorflow.lite.tools import flatbuffer_utils as fbu
    model = fbu.read_model_from_bytearray(bytearray(blob))
    for sg in model.subgraphs:
        io = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
        for i, t in enumerate(sg.tensors):
            if i not in io:
                t.name = None
    return bytes(fbu.convert_object_to_bytearray(model))


def _ops_in(exc):
    text = str(exc)
    ops = sorted(set(re.findall(r"\b(tf\.[A-Z][A-Za-z0-9_]*)", text)))  # op names are CamelCase
    if ops:
        return "op {} (not a TFLite builtin{})".format(
            ", ".join(ops), "" if "int8" not in text.lower() else " / no int8 kernel")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "this model: " + (lines[0][:300] if lines else type(exc).__name__)
