"""The one place edgekit imports TensorFlow, always with Keras 2 (``tf_keras``).

tensorflow-model-optimization only works with Keras 2, so ``TF_USE_LEGACY_KERAS=1`` must be
set before tensorflow is first imported; every host module calls :func:`keras` instead of
importing tensorflow itself.
"""
import contextlib
import os
import sys
import threading

from edgekit.errors import MissingDependency

_INSTALL = "pip install 'edgekit[compress]' (tensorflow, tf-keras, tensorflow-model-optimization, tf2onnx)"


def _env():
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


VERBOSE_ENV = "EDGEKIT_VERBOSE"


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while tensorflow's C++ code runs (its import, the
    TFLite converter).

    Importing tensorflow prints absl/XLA lines (``WARNING: All log messages before
    absl::InitializeLog()…``, ``cudart_stub.cc… Could not find cuda drivers``) straight to fd 2,
    before any Python logging setting can act; they would come before edgekit's own
    ``error:`` line. ``--verbose`` (``EDGEKIT_VERBOSE=1``) keeps them.
    """
    # fd 2 is process-wide: only the main thread swaps it, never while worker threads (Dask)
    # may be opening and closing descriptors of their own
    if os.environ.get(VERBOSE_ENV) == "1" or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tf():
    """Import and return tensorflow (Keras 2 mode)."""
    _env()
    import warnings
    warnings.filterwarnings("ignore", message=".*HDF5 file.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if os.environ.get(VERBOSE_ENV) != "1":   # one voice: the libraries' own Python warnings
        warnings.filterwarnings("ignore", module=r"(tf_keras|keras|tensorflow|"
                                                 r"tensorflow_model_optimization|tf2onnx)(\.|$)")
    try:
        if "tensorflow" in sys.modules:  # already loaded: never touch fd 2 again (threads)
            import tensorflow
        else:
            with native_stderr_silenced():
                import tensorflow
    except ImportError:
        raise MissingDependency("tensorflow is not installed: " + _INSTALL) from None
    try:
        import absl.logging
        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


def keras():
    """Import and return ``tf_keras`` (Keras 2), the Keras edgekit builds models with."""
    tf()
    try:
        import tf_keras
    except ImportError:
        raise MissingDependency("tf-keras is not installed: " + _INSTALL) from None
    return tf_keras


def tfmot():
    """Import and return tensorflow_model_optimization (needs tf_keras)."""
    keras()
    try:
        import tensorflow_model_optimization
    except ImportError:
        raise MissingDependency("tensorflow-model-optimization is not installed: " + _INSTALL) from None
    return tensorflow_model_optimization


def set_seed(seed):
    """Seed python, numpy and tensorflow for repeatable training."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    tf().random.set_seed(seed)
