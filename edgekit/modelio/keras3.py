"""Keras 3 models as tf_keras models, and back: translate the graph, copy the weights, check.

Why translate (and not run Keras 3 directly): pruning and quantization-aware training come from
tensorflow-model-optimization, which works on tf_keras (Keras 2) models only, and every
compression method, the exporters (tf2onnx, TFLiteConverter.from_keras_model) and the channel
surgery walk tf_keras layers. Keras 3 (``import keras``) and tf_keras coexist in one process
(``TF_USE_LEGACY_KERAS=1`` only changes what ``tf.keras`` is), so a Keras 3 file is loaded with
Keras 3 itself -- its own reader, every format it writes -- and the loaded model's *config* is
translated to the tf_keras dialect:

- ``InputLayer``: ``batch_shape`` -> ``batch_input_shape`` (``optional`` dropped);
- dtype policies (``{"class_name": "DTypePolicy", "config": {"name": "float32"}}``) -> the
  policy name (mixed policies -> tf_keras ``Policy``);
- serialized objects (``module`` / ``registered_name``, initializers, regularizers,
  constraints) -> tf_keras' ``{"class_name", "config"}`` with the arguments tf_keras knows;
- Functional ``inbound_nodes`` (Keras 3: ``{"args": [__keras_tensor__ ...], "kwargs"}``) ->
  tf_keras' ``[[layer, node, tensor, kwargs], ...]``; nested Functional / Sequential models
  are translated recursively;
- layer arguments tf_keras' class does not take (Keras 3 additions such as ``lora_rank``,
  ``quantization_config``) are dropped when they hold their off value (None / False) and
  refused otherwise.

Then every weight is copied layer by layer (matched by name, shapes checked) and the two
models must give the same outputs (max abs diff <= :data:`TOLERANCE`, relative to the
outputs' scale) on sample images in both pixel ranges users feed (0..1 and 0..255) -- or the
file is refused. A graph translation is exact or visibly wrong: a wrong axis, a dropped
argument that mattered or a misplaced weight changes the outputs on any input. What cannot
be translated (custom layers, ``Lambda`` code, subclassed models, layers tf_keras lacks) is
refused with one line naming the layer, before anything is built.

The way back (:func:`save_as_keras3`) translates a tf_keras model's config to Keras 3
(``batch_input_shape`` -> ``batch_shape``, arguments Keras 3 does not take dropped; Keras 3
reads the tf_keras node format itself), copies the weights, checks the outputs the same way
and saves a ``.keras`` file: artifacts made from a Keras 3 model carry a copy the user's own
``keras.models.load_model`` reads. (Keras 3's reader of tf_keras ``.h5`` files refuses
ordinary layers such as ``SeparableConv2D``, so it is not used.) Hand-written: no library
translates between the two Kerases' configs.
"""
import inspect

import numpy as np

from edgekit.errors import EdgekitError, MissingDependency

# max |out_k3 - out_k2| allowed, times max(1, max |out|): float32 noise of the same ops
TOLERANCE = 1e-4
MODEL_CLASSES = ("Functional", "Sequential", "Model")
# Layer.__init__ keyword arguments every layer class takes through **kwargs
_BASE_K2 = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
            "batch_input_shape", "batch_size", "weights", "activity_regularizer", "autocast"}
_BASE_K3 = {"name", "trainable", "dtype", "activity_regularizer", "autocast", "input_shape",
            "input_dim", "batch_size", "batch_shape"}
_OBJECT_KEYS = ("_initializer", "_regularizer", "_constraint")


def keras3():
    """Import and return Keras 3 (``import keras``) beside tf_keras."""
    from edgekit._tf import tf
    tf()
    try:
        import keras
    except ImportError:
        raise MissingDependency("Keras 3 is not installed (pip install 'keras>=3'): it reads "
                                "Keras 3 model files") from None
    if not str(keras.__version__).startswith("3"):
        raise MissingDependency("reading Keras 3 files needs Keras 3 (installed: keras {})".format(
            keras.__version__))
    return keras


# -- what can be translated (on the stored config, before anything is built) ------------------

def check_config(config, path):
    """Refuse, naming the layer, what has no tf_keras twin: a subclassed model, a custom or
    ``Lambda`` layer, a layer class tf_keras lacks. ``config``: the file's stored
    ``{"class_name", "config", ...}``."""
    if not isinstance(config, dict):
        return
    cls = config.get("class_name")
    if cls not in MODEL_CLASSES:
        raise EdgekitError("{} holds a subclassed Keras model ({}): edgekit reads Functional and "
                           "Sequential models (no layer graph is stored for a subclass)".format(
                               path, cls))
    _check_layers(config.get("config") or {}, path)


def _check_layers(model_config, path):
    from edgekit._tf import keras
    k2 = keras()
    for entry in model_config.get("layers") or []:
        cls = entry.get("class_name")
        cfg = entry.get("config") or {}
        name = cfg.get("name") or entry.get("name")
        if cls in MODEL_CLASSES:
            _check_layers(cfg, path)
            continue
        module = entry.get("module") or "keras.layers"
        if cls == "Lambda":
            raise EdgekitError("{}: layer {!r} is a Lambda layer (Python code in the file): edgekit "
                               "cannot translate it -- replace it by built-in layers".format(
                                   path, name))
        if not module.startswith("keras") or (entry.get("registered_name") or cls) != cls:
            raise EdgekitError("{}: layer {!r} is a custom layer ({}): edgekit reads built-in "
                               "Keras layers only and cannot translate it".format(
                                   path, name, entry.get("registered_name") or cls))
        if not hasattr(k2.layers, cls):
            raise EdgekitError("{}: layer {!r} ({}) has no tf_keras twin: edgekit cannot translate "
                               "it (compression needs tf_keras)".format(path, name, cls))


def load_keras3(path):
    """The Keras 3 model in ``path`` (``.keras`` / Keras 3 ``.h5``), compile=False."""
    from edgekit.modelio.detect import raw_config
    check_config(raw_config(path), path)
    k3 = keras3()
    try:
        return k3.models.load_model(str(path), compile=False)
    except Exception as exc:  # a corrupt file, a class Keras 3 cannot locate
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EdgekitError("cannot load model {} with Keras 3: {}".format(path, msg)) from None


# -- Keras 3 -> tf_keras ------------------------------------------------------------------------

def to_tf_keras(model3, what="model"):
    """A tf_keras model equal to the Keras 3 ``model3`` (config translated, weights copied,
    outputs checked); EdgekitError naming the layer when that is not possible."""
    from edgekit._tf import keras
    k2 = keras()
    cls = type(model3).__name__
    if cls not in MODEL_CLASSES:
        raise EdgekitError("{} is a subclassed Keras model ({}): edgekit reads Functional and "
                           "Sequential models".format(what, cls))
    cfg = _model_to_k2("Sequential" if cls == "Sequential" else "Functional",
                       model3.get_config(), what)
    try:
        model2 = k2.models.model_from_config(cfg)
    except EdgekitError:
        raise
    except Exception as exc:
        raise EdgekitError("{}: tf_keras cannot rebuild the translated graph: {}".format(
            what, str(exc).splitlines()[0][:200])) from None
    copy_weights(model3, model2, what)
    check_same(model3, model2, what, "tf_keras")
    return model2


def _model_to_k2(cls, cfg, what):
    out = {"name": cfg.get("name")}
    if cls == "Sequential":
        out["layers"] = [_entry_to_k2(e, False, what) for e in cfg.get("layers", [])]
        shape = cfg.get("build_input_shape")
        if shape is not None:
            out["build_input_shape"] = shape
            if not out["layers"] or out["layers"][0]["class_name"] != "InputLayer":
                # built without an Input: give it one (a model with an InputLayer first is
                # what tf_keras' node numbering of nested models assumes)
                out["layers"].insert(0, {"class_name": "InputLayer", "config": {
                    "batch_input_shape": list(shape), "dtype": "float32",
                    "name": "{}_input".format(cfg.get("name") or "sequential")}})
    else:
        out["layers"] = [_entry_to_k2(e, True, what) for e in cfg.get("layers", [])]
        out["input_layers"] = _io_list(cfg.get("input_layers"))
        out["output_layers"] = [list(r) for r in _io_list(cfg.get("output_layers")) or []]
        _shift_nested_nodes(out, +1)
    return {"class_name": cls, "config": out}


def _shift_nested_nodes(model_config, by):
    """Node indices of calls to nested models: tf_keras counts a nested model's own
    construction as its node 0 (the first call is node 1), Keras 3 does not (node 0)."""
    nested = {e["name"] for e in model_config["layers"] if e["class_name"] in MODEL_CLASSES}
    if not nested:
        return

    def shift(ref):
        if ref[0] in nested:
            ref[1] = max(0, int(ref[1]) + by)
    for e in model_config["layers"]:
        for node in e.get("inbound_nodes") or []:
            for ref in node:
                shift(ref)
    for ref in model_config.get("output_layers") or []:
        shift(ref)


def _io_list(value):
    """``["x", 0, 0]`` (one tensor) -> ``[["x", 0, 0]]``; lists of them stay."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    return value


def _entry_to_k2(entry, functional, what):
    cls = entry["class_name"]
    cfg = dict(entry.get("config") or {})
    name = cfg.get("name") or entry.get("name")
    if cls in MODEL_CLASSES:
        out = _model_to_k2("Sequential" if cls == "Sequential" else "Functional", cfg, what)
    else:
        out = {"class_name": cls, "config": _layer_to_k2(cls, cfg, name, what)}
    if functional:
        out["name"] = entry.get("name", name)
        out["inbound_nodes"] = [_node_to_k2(n, name, what) for n in entry.get("inbound_nodes", [])]
    return out


def _layer_to_k2(cls, cfg, name, what):
    from edgekit._tf import keras
    k2 = keras()
    target = getattr(k2.layers, cls, None)
    if target is None:
        raise EdgekitError("{}: layer {!r} ({}) has no tf_keras twin: edgekit cannot translate "
                           "it".format(what, name, cls))
    if cls == "InputLayer":
        cfg["batch_input_shape"] = cfg.pop("batch_shape", None)
        cfg.pop("optional", None)
    cfg = {k: _object_to_k2(k, v, name, what) for k, v in cfg.items()}
    cfg = {k: v for k, v in cfg.items() if v is not _DROP}
    return _known_args(target, cfg, _BASE_K2, name, what, "tf_keras")


_DROP = object()
# arguments one Keras has and the other lacks, at values that change nothing
_HARMLESS = {("groups", 1)}


def _is_off(key, value):
    """True when dropping ``key=value`` changes nothing: None, False, empty, or harmless."""
    if value is None or value is False or (isinstance(value, (list, dict)) and not value):
        return True
    if key.endswith("_initializer"):   # the weights are copied: an initializer is moot
        return True
    try:
        return (key, value) in _HARMLESS
    except TypeError:   # an unhashable value
        return False


def _object_to_k2(key, value, name, what):
    """One config value in tf_keras' dialect (dtype policies, serialized objects)."""
    if key == "dtype" and isinstance(value, dict):
        policy = (value.get("config") or {}).get("name", "float32")
        return policy if not str(policy).startswith("mixed") else \
            {"class_name": "Policy", "config": {"name": policy}}
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        if key == "activation" or key.endswith(_OBJECT_KEYS):
            return _serialized_to_k2(key, value, name, what)
    return value


def _serialized_to_k2(key, value, name, what):
    from edgekit._tf import keras
    k2 = keras()
    cls = value["class_name"]
    family = {"_initializer": k2.initializers, "_regularizer": k2.regularizers,
              "_constraint": k2.constraints}.get(next((s for s in _OBJECT_KEYS if key.endswith(s)),
                                                      None))
    target = getattr(family, cls, None) if family is not None else None
    if target is None:
        if key.endswith("_initializer"):  # the weights are copied: the initializer is moot
            return _DROP
        raise EdgekitError("{}: layer {!r}: {} {} has no tf_keras twin: edgekit cannot translate "
                           "it".format(what, name, key, cls))
    cfg = {k: v for k, v in (value.get("config") or {}).items()
           if k in _params(target) and not (v is None and k != "seed")}
    return {"class_name": cls, "config": cfg}


def _node_to_k2(node, name, what):
    """A Keras 3 call node -> tf_keras' ``[[layer, node_index, tensor_index, kwargs], ...]``."""
    if isinstance(node, list):  # already the tf_keras format
        return node
    args = node.get("args") or []
    kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
    if not args or any(_is_tensor(a) for a in args[1:]) or any(_is_tensor(v)
                                                               for v in kwargs.values()):
        raise EdgekitError("{}: layer {!r} is called with more than one tensor argument: edgekit "
                           "cannot translate that call".format(what, name))
    tensors = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
    out = []
    for t in tensors:
        if not _is_tensor(t):
            raise EdgekitError("{}: layer {!r} takes a non-tensor input: edgekit cannot translate "
                               "that call".format(what, name))
        layer, node_index, tensor_index = t["config"]["keras_history"]
        out.append([layer, node_index, tensor_index, kwargs])
    return out


def _is_tensor(v):
    if isinstance(v, (list, tuple)):
        return any(_is_tensor(x) for x in v)
    return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"


def _params(cls):
    """Named parameters of ``cls.__init__`` (and whether it takes ``**kwargs``)."""
    sig = inspect.signature(cls.__init__)
    return {p.name for p in sig.parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}


def _takes_kwargs(cls):
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def _accepted(target, base):
    """Arguments ``target(**cfg)`` takes: its own, and up its classes while ``**kwargs`` are
    passed on (tf_keras' ``BatchNormalization`` takes ``renorm`` through its base class), plus
    the base Layer's."""
    allowed = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        allowed |= _params(cls)
        if not _takes_kwargs(cls):
            return allowed
        if cls.__name__ == "Layer":
            break
    return allowed | base


def _known_args(target, cfg, base, name, what, dialect):
    """``cfg`` without the arguments ``target`` does not take; refuse one that is not off."""
    allowed = _accepted(target, base)
    out = {}
    for k, v in cfg.items():
        if k in allowed:
            out[k] = v
        elif not _is_off(k, v):
            raise EdgekitError("{}: layer {!r} ({}) sets {}={!r}, which {} has no argument for: "
                               "edgekit cannot translate it".format(
                                   what, name, target.__name__, k, v, dialect))
    return out


# -- weights and the check ----------------------------------------------------------------------

def _named_layers(model, prefix=""):
    """{path: layer} of every layer holding weights, nested models walked (``outer/inner``)."""
    out = {}
    for layer in model.layers:
        path = prefix + layer.name
        if getattr(layer, "layers", None) and type(layer).__name__ in MODEL_CLASSES:
            out.update(_named_layers(layer, path + "/"))
        elif layer.weights:
            out[path] = layer
    return out


def copy_weights(src, dst, what):
    """Copy every layer's weights from ``src`` to ``dst`` (either Keras), matched by layer
    name; refuse a layer missing on one side or holding weights of other shapes."""
    a, b = _named_layers(src), _named_layers(dst)
    if set(a) != set(b):
        missing = sorted(set(a) ^ set(b))
        raise EdgekitError("{}: layer {!r} holds weights in one Keras and not the other: edgekit "
                           "cannot translate it".format(what, missing[0]))
    for name, layer in a.items():
        w = [np.asarray(x) for x in layer.get_weights()]
        want = [tuple(x.shape) for x in b[name].get_weights()]
        if [tuple(x.shape) for x in w] != want:
            raise EdgekitError("{}: layer {!r} holds weights of shapes {} where the translation "
                               "has {}: edgekit cannot translate it".format(
                                   what, name, [tuple(x.shape) for x in w], want))
        b[name].set_weights(w)


def sample_inputs(model, n=8, seed=0):
    """``2n`` images for the input shape of ``model``: n in 0..1, n in 0..255 (users feed
    either; a model with its own ``Rescaling`` wants the second)."""
    shape = tuple(int(d) if d is not None else 8 for d in _input_shape(model)[1:])
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(n,) + shape).astype(np.float32)
    return np.concatenate([x, x * 255.0])


def _input_shape(model):
    shape = model.inputs[0].shape
    return tuple(shape.as_list() if hasattr(shape, "as_list") else shape)


def max_abs_diff(a, b, x):
    """max |a(x) - b(x)| and the outputs' scale (inference mode: BatchNorm's moving stats)."""
    oa = [np.asarray(o) for o in _flat(a(x, training=False))]
    ob = [np.asarray(o) for o in _flat(b(x, training=False))]
    if len(oa) != len(ob) or any(p.shape != q.shape for p, q in zip(oa, ob)):
        return float("inf"), 1.0
    diff = max(float(np.max(np.abs(p - q))) for p, q in zip(oa, ob))
    scale = max(1.0, max(float(np.max(np.abs(p))) for p in oa))
    return diff, scale


def _flat(out):
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def check_same(ref, other, what, dialect):
    """Refuse unless ``other`` gives ``ref``'s outputs on :func:`sample_inputs`."""
    diff, scale = max_abs_diff(ref, other, sample_inputs(ref))
    if not diff <= TOLERANCE * scale:
        raise EdgekitError("{}: the {} translation does not give the same outputs (max abs diff "
                           "{:.3g}): edgekit refuses it".format(what, dialect, diff))
    return diff


# -- tf_keras -> Keras 3 ------------------------------------------------------------------------

def to_keras3(model2, what="model"):
    """A Keras 3 model equal to the tf_keras ``model2`` (outputs checked)."""
    k3 = keras3()
    cls = "Sequential" if type(model2).__name__ == "Sequential" else "Functional"
    cfg = _model_to_k3(cls, model2.get_config(), what)
    try:
        model3 = (k3.Sequential if cls == "Sequential" else k3.Model).from_config(cfg["config"])
    except Exception as exc:
        raise EdgekitError("{}: Keras 3 cannot rebuild the graph: {}".format(
            what, str(exc).splitlines()[0][:200])) from None
    copy_weights(model2, model3, what)
    check_same(model2, model3, what, "Keras 3")
    return model3


def _model_to_k3(cls, cfg, what):
    out = dict(cfg)
    functional = cls != "Sequential"
    out["layers"] = [_entry_to_k3(e, functional, what) for e in cfg.get("layers", [])]
    if functional:
        out["output_layers"] = [list(r) for r in _io_list(cfg.get("output_layers")) or []]
        _shift_nested_nodes(out, -1)
    return {"class_name": cls, "config": out}


def _entry_to_k3(entry, functional, what):
    k3 = keras3()
    cls = entry["class_name"]
    cfg = dict(entry.get("config") or {})
    name = cfg.get("name") or entry.get("name")
    if cls in MODEL_CLASSES:
        out = _model_to_k3("Sequential" if cls == "Sequential" else "Functional", cfg, what)
    else:
        target = getattr(k3.layers, cls, None)
        if target is None:
            raise EdgekitError("{}: layer {!r} ({}) has no Keras 3 twin".format(what, name, cls))
        if cls == "InputLayer":
            cfg["batch_shape"] = cfg.pop("batch_input_shape", None)
        cfg = {k: _strip_module(v) for k, v in cfg.items()}
        out = {"class_name": cls, "config": _known_args(target, cfg, _BASE_K3, name, what,
                                                        "Keras 3")}
    if functional:
        out["name"] = entry.get("name", name)
        out["inbound_nodes"] = [[list(ref) for ref in node]
                                for node in entry.get("inbound_nodes", [])]
    return out


def _strip_module(value):
    """tf_keras' serialized objects name ``tf_keras.*`` modules Keras 3 cannot import: keep
    ``class_name`` / ``config`` (Keras 3 finds built-ins by class name)."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        return {"class_name": value["class_name"],
                "config": {k: _strip_module(v) for k, v in (value["config"] or {}).items()}}
    return value


def save_as_keras3(model2, path, what="model"):
    """Write the tf_keras ``model2`` as a Keras 3 ``.keras`` file (checked equal) at ``path``."""
    model3 = to_keras3(model2, what)
    model3.save(str(path))
    return path
