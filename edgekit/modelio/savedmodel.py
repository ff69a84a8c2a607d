"""A SavedModel with no Keras graph (Keras 3's ``model.export()``, ``tf.saved_model.save``)
as a tf_keras model that calls its serving function.

Such a directory holds TF functions and variables only: no layers, no config, nothing to
translate or rebuild (rebuilding would mean guessing the architecture from a traced graph).
So edgekit wraps the serving endpoint (``serve``, which ``export()`` writes, else the
``serving_default`` signature) in one tf_keras layer inside a one-input functional model:

- eval, quantize (TFLite and ONNX int8: both converters trace through the function),
  and ``bench`` / ``export`` of the artifacts made from it work as on any Keras model;
- knn-slice runs on its ONNX conversion (made in compress.knn.slice), as on any ONNX file: the
  cut points are found in the converted graph;
- the verbs that need the layer graph -- prune and distill (they retrain layers), optimize
  (it runs those) and ``quantize --qat`` -- are refused with one line saying to save the
  model with ``model.save("m.keras")`` (:func:`require_graph`).

The wrapper's weights are the SavedModel's variables (so params are counted); it is never
written back as a Keras file (the refused verbs are the ones that would).
"""
from edgekit.errors import EdgekitError

WRAPPER_LAYER = "saved_model_function"


def load_function_model(path):
    """The tf_keras wrapper model of the SavedModel directory ``path``."""
    from edgekit._tf import keras, tf
    t, k = tf(), keras()
    try:
        loaded = t.saved_model.load(str(path))
    except Exception as exc:
        raise EdgekitError("cannot load SavedModel {}: {}".format(
            path, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)) from None
    fn, spec, input_name = _endpoint(loaded, path)
    if spec.shape.rank != 4:
        raise EdgekitError("{}: the serving function takes input of shape {}: edgekit reads image "
                           "models (N, H, W, C)".format(path, spec.shape))
    inp = k.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=_safe_name(input_name))
    layer = _layer_class()(loaded, fn, name=WRAPPER_LAYER)
    model = k.Model(inp, layer(inp), name="exported_savedmodel")
    return model


def _safe_name(name):
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name or "input")) or "input"


def _endpoint(loaded, path):
    """(callable taking one tensor and returning one tensor, its input TensorSpec, name)."""
    serve = getattr(loaded, "serve", None)
    if serve is not None and hasattr(serve, "concrete_functions") and serve.concrete_functions:
        cf = serve.concrete_functions[0]
        args = [a for a in cf.structured_input_signature[0]]
        if len(args) == 1 and not cf.structured_input_signature[1]:
            spec = args[0]
            return (lambda x: _single(serve(x), path)), spec, getattr(spec, "name", None)
    sig = loaded.signatures.get("serving_default")
    if sig is None:
        raise EdgekitError("{}: the SavedModel has no 'serve' function or 'serving_default' "
                           "signature to call".format(path))
    kwargs = sig.structured_input_signature[1]
    if len(kwargs) != 1 or sig.structured_input_signature[0]:
        raise EdgekitError("{}: the serving signature takes {} inputs: edgekit reads one-input "
                           "image models".format(path, len(kwargs) + len(
                               sig.structured_input_signature[0])))
    (name, spec), = kwargs.items()
    return (lambda x: _single(sig(**{name: x}), path)), spec, name


def _single(out, path):
    if isinstance(out, dict):
        if len(out) != 1:
            raise EdgekitError("{}: the serving function returns {} outputs: edgekit reads "
                               "one-output classifiers".format(path, len(out)))
        return next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise EdgekitError("{}: the serving function returns {} outputs: edgekit reads "
                               "one-output classifiers".format(path, len(out)))
        return out[0]
    return out


_CLASS = []


def _layer_class():
    """The wrapper layer class (made once, after tf_keras is imported)."""
    if _CLASS:
        return _CLASS[0]
    from edgekit._tf import keras

    class SavedModelFunction(keras().layers.Layer):
        """Calls a restored SavedModel function; holds its variables as weights."""

        def __init__(self, loaded, fn, **kwargs):
            super().__init__(trainable=False, **kwargs)
            self._loaded = loaded
            self._fn = fn
            self._restored = list(loaded.variables)

        def call(self, x):
            return self._fn(x)

        def get_config(self):
            raise NotImplementedError("a SavedModel function wrapper is not serialisable")

    _CLASS.append(SavedModelFunction)
    return SavedModelFunction


def is_function_model(model):
    """True for the wrapper :func:`load_function_model` builds."""
    return any(l.name == WRAPPER_LAYER and type(l).__name__ == "SavedModelFunction"
               for l in getattr(model, "layers", []))


def require_graph(model, path, verb):
    """Refuse ``verb`` (one line) on a wrapped SavedModel: it needs the Keras layer graph."""
    if model is not None and is_function_model(model):
        raise EdgekitError("{} is a SavedModel without a Keras graph (Keras 3 model.export() / "
                           "tf.saved_model.save keep only TF functions): {} needs the layers -- "
                           "save the model with model.save(\"m.keras\") and give that file; on "
                           "this SavedModel edgekit runs eval, compress --method quantize and "
                           "knn-slice".format(
                               path, verb))


def is_graphless_savedmodel(path):
    """True for a SavedModel directory without a Keras graph (no ``keras_metadata.pb``)."""
    from pathlib import Path
    p = Path(str(path))
    return p.is_dir() and (p / "saved_model.pb").is_file() and \
        not (p / "keras_metadata.pb").exists() and not (p / "manifest.json").exists()


# how knn-slice read a SavedModel without a Keras graph (the manifest's source)
ONNX_READ = {"keras_version": None, "keras3": True,
             "loaded_as": "ONNX (tf2onnx) of the SavedModel's serving function (no Keras graph)"}
