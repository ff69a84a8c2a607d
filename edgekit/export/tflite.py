"""Keras -> TFLite float32 / float16 / full-integer int8 (representative data from training)."""
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError


def to_tflite(model, path, precision="fp32", representative=None, int8_io=False):
    """Convert a tf_keras model to a .tflite file; int8 needs ``representative`` images."""
    from edgekit._tf import tf as _tf
    tf = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if representative is None or len(representative) == 0:
            raise EdgekitError("int8 TFLite needs calibration images (representative data)")
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
    elif precision != "fp32":
        raise EdgekitError("unknown TFLite precision {!r} (fp32, fp16, int8)".format(precision))
    try:
        blob = conv.convert()
    except Exception as exc:  # converter errors name the unsupported op
        raise EdgekitError("TFLite conversion failed: {}".format(str(exc).splitlines()[0][:300])) from None
    Path(path).write_bytes(blob)
    return {"precision": precision}
