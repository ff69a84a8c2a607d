"""A zoo of the kinds of CNN users bring (none designed by edgekit), built in seconds.

Every model is a plain tf_keras model as a user would write it: functional graphs with
residual (``Add``), concat (``Concatenate``) and depthwise-separable blocks, BatchNorm, a
``keras.applications.MobileNetV2`` (``weights=None``, alpha 0.35), a Sequential CNN; each with
a ``softmax`` head (what most users ship) or a ``logits`` head; ``rescaling=True`` puts the
model's own ``Rescaling`` layer inside (the model then wants raw 0..255 pixels).

``build(..., keras3=True)`` builds the same architectures with Keras 3 itself (``import
keras``: what ``pip install tensorflow`` >= 2.16 gives) and :func:`save_keras3` saves them as
a Keras 3 user does (``.keras``, Keras 3 ``.h5``, ``model.export()`` SavedModel).

Example::

    from tests.zoo import build, save_all
    model = build("resnet", (16, 16, 3), 10, head="softmax")
    paths = save_all(model, tmp_path / "resnet")     # {"h5": ..., "keras": ..., "savedmodel": ..., "onnx": ...}
    k3 = save_keras3(build("resnet", (8, 8, 1), 10, keras3=True), tmp_path / "r3")
    # {"keras3": r3.keras, "h5_keras3": r3.h5, "export": r3_export/}
"""
from pathlib import Path

HEADS = ("softmax", "logits")


_FLAVOUR = []   # [keras module] while building with Keras 3 (see build(..., keras3=True))


def _keras():
    if _FLAVOUR:
        return _FLAVOUR[-1]
    from edgekit._tf import keras
    return keras()


def _keras_of(model):
    """The Keras that built ``model``: Keras 3 (``keras.*`` classes) or tf_keras."""
    if type(model).__module__.startswith("keras"):
        from edgekit.modelio.keras3 import keras3
        return keras3()
    from edgekit._tf import keras
    return keras()


def _head(L, x, num_classes, head, separate_softmax=False):
    """Dense classifier: softmax as the Dense's activation, as a Softmax layer, or logits."""
    if head == "logits":
        return L.Dense(num_classes, name="logits")(x)
    if separate_softmax:
        return L.Softmax(name="probs")(L.Dense(num_classes, name="logits")(x))
    return L.Dense(num_classes, activation="softmax", name="probs")(x)


def _stem(L, inp, rescaling):
    return L.Rescaling(1.0 / 255, name="rescale")(inp) if rescaling else inp


def mobilenetv2(input_shape, num_classes, head="softmax", rescaling=False):
    """``keras.applications.MobileNetV2`` alpha 0.35, ``weights=None`` (BatchNorm momentum 0.999
    as shipped). Needs >= 32x32 input."""
    k = _keras()
    L = k.layers
    base = k.applications.MobileNetV2(input_shape=tuple(input_shape), alpha=0.35, weights=None,
                                      include_top=False, pooling="avg")
    inp = L.Input(tuple(input_shape), name="image")
    x = base(_stem(L, inp, rescaling))
    out = _head(L, x, num_classes, head)
    return k.Model(inp, out, name="mobilenetv2_035")


def mobilenetv2_flat(input_shape, num_classes, head="softmax"):
    """The same network with its layers at top level (``include_top=True``), as
    ``keras.applications.MobileNetV2(..., classes=N)`` gives it."""
    k = _keras()
    return k.applications.MobileNetV2(input_shape=tuple(input_shape), alpha=0.35, weights=None,
                                      classes=num_classes,
                                      classifier_activation="softmax" if head == "softmax" else None)


def _conv_bn(L, x, filters, name, strides=1, kernel=3, relu=True):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = L.BatchNormalization(name=name + "_bn")(x)
    return L.ReLU(name=name + "_relu")(x) if relu else x


def resnet(input_shape, num_classes, head="softmax", rescaling=False):
    """ResNet-style: stem, an identity block (Add), a strided block with a 1x1 projection
    shortcut (Add), GAP, a softmax head as a separate ``Softmax`` layer."""
    k = _keras()
    L = k.layers
    inp = L.Input(tuple(input_shape), name="image")
    x = _conv_bn(L, _stem(L, inp, rescaling), 16, "stem")
    y = _conv_bn(L, x, 16, "b1_c1")
    y = _conv_bn(L, y, 16, "b1_c2", relu=False)
    x = L.ReLU(name="b1_out")(L.Add(name="b1_add")([x, y]))
    y = _conv_bn(L, x, 32, "b2_c1", strides=2)
    y = _conv_bn(L, y, 32, "b2_c2", relu=False)
    s = _conv_bn(L, x, 32, "b2_proj", strides=2, kernel=1, relu=False)
    x = L.ReLU(name="b2_out")(L.Add(name="b2_add")([s, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, _head(L, x, num_classes, head, separate_softmax=True), name="resnet_small")


def resnet_deep(input_shape, num_classes, head="softmax", rescaling=False):
    """A deeper ResNet-style net for full-size data (benchmarks, not the default tests):
    stem 24, then three residual stages (24, 48 /2, 96 /2; projection shortcuts where the
    shape changes), GAP, softmax as a separate layer. ~0.2M parameters."""
    k = _keras()
    L = k.layers
    inp = L.Input(tuple(input_shape), name="image")
    x = _conv_bn(L, _stem(L, inp, rescaling), 24, "stem")
    for n, (width, stride) in enumerate(((24, 1), (48, 2), (96, 2)), 1):
        b = "s{}".format(n)
        y = _conv_bn(L, x, width, b + "_c1", strides=stride)
        y = _conv_bn(L, y, width, b + "_c2", relu=False)
        s = x if stride == 1 else _conv_bn(L, x, width, b + "_proj", strides=stride, kernel=1,
                                           relu=False)
        x = L.ReLU(name=b + "_out")(L.Add(name=b + "_add")([s, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, _head(L, x, num_classes, head, separate_softmax=True), name="resnet_deep")


def inception(input_shape, num_classes, head="softmax", rescaling=False):
    """Inception-style: two blocks of parallel 1x1 / 3x3 / pool-1x1 branches joined by
    ``Concatenate``, max pooling between them, GAP."""
    k = _keras()
    L = k.layers
    inp = L.Input(tuple(input_shape), name="image")
    x = _conv_bn(L, _stem(L, inp, rescaling), 16, "stem")
    for b, width in (("i1", 8), ("i2", 16)):
        a = _conv_bn(L, x, width, b + "_1x1", kernel=1)
        c = _conv_bn(L, x, width, b + "_3x3")
        p = L.MaxPooling2D(3, strides=1, padding="same", name=b + "_pool")(x)
        p = _conv_bn(L, p, width // 2, b + "_pool_1x1", kernel=1)
        x = L.Concatenate(name=b + "_concat")([a, c, p])
        if b == "i1":
            x = L.MaxPooling2D(2, name="pool")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, _head(L, x, num_classes, head), name="inception_small")


def inception_deep(input_shape, num_classes, head="softmax", rescaling=False):
    """A bigger Inception-style net for the benchmarks: three blocks of parallel 1x1 / 3x3 /
    double-3x3 / pool-1x1 branches joined by ``Concatenate``, max pooling after the first
    two, GAP."""
    k = _keras()
    L = k.layers
    inp = L.Input(tuple(input_shape), name="image")
    x = _conv_bn(L, _stem(L, inp, rescaling), 32, "stem")
    for b, width in (("i1", 16), ("i2", 32), ("i3", 48)):
        a = _conv_bn(L, x, width, b + "_1x1", kernel=1)
        c = _conv_bn(L, _conv_bn(L, x, width, b + "_3x3_reduce", kernel=1), width, b + "_3x3")
        d = _conv_bn(L, _conv_bn(L, x, width // 2, b + "_dbl_reduce", kernel=1), width,
                     b + "_dbl_a")
        d = _conv_bn(L, d, width, b + "_dbl_b")
        p = L.MaxPooling2D(3, strides=1, padding="same", name=b + "_pool")(x)
        p = _conv_bn(L, p, width // 2, b + "_pool_1x1", kernel=1)
        x = L.Concatenate(name=b + "_concat")([a, c, d, p])
        if b != "i3":
            x = L.MaxPooling2D(2, name=b + "_down")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, _head(L, x, num_classes, head), name="inception_deep")


def separable(input_shape, num_classes, head="softmax", rescaling=False):
    """A depthwise-separable CNN (``SeparableConv2D`` and ``DepthwiseConv2D`` blocks)."""
    k = _keras()
    L = k.layers
    inp = L.Input(tuple(input_shape), name="image")
    x = _conv_bn(L, _stem(L, inp, rescaling), 16, "stem")
    x = L.SeparableConv2D(32, 3, padding="same", activation="relu", name="sep1")(x)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    x = L.BatchNormalization(name="dw2_bn")(x)
    x = L.ReLU(name="dw2_relu")(x)
    x = L.Conv2D(48, 1, activation="relu", name="pw2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return k.Model(inp, _head(L, x, num_classes, head), name="separable_small")


def sequential(input_shape, num_classes, head="softmax", rescaling=False):
    """A Sequential CNN with BatchNorm, Dropout and a softmax activation on its last Dense."""
    k = _keras()
    L = k.layers
    layers = [L.InputLayer(input_shape=tuple(input_shape), name="image")]
    if rescaling:
        layers.append(L.Rescaling(1.0 / 255, name="rescale"))
    layers += [L.Conv2D(16, 3, padding="same", activation="relu", name="c1"),
               L.BatchNormalization(name="c1_bn"),
               L.MaxPooling2D(2, name="p1"),
               L.Conv2D(32, 3, padding="same", activation="relu", name="c2"),
               L.Flatten(name="flat"),
               L.Dropout(0.3, name="drop"),
               L.Dense(32, activation="relu", name="fc"),
               L.Dense(num_classes, activation="softmax" if head == "softmax" else None,
                       name="probs" if head == "softmax" else "logits")]
    return k.Sequential(layers, name="sequential_small")


# name -> builder(input_shape, num_classes, head=..., rescaling=...). A plain dict.
ZOO = {
    "mobilenetv2": mobilenetv2,
    "resnet": resnet,
    "inception": inception,
    "separable": separable,
    "sequential": sequential,
}
MIN_SIDE = {"mobilenetv2": 32}
# bigger models for the benchmarks (benchmarks/your_cnn.py); not in the tests' ZOO sweep
BENCH_MODELS = {"resnet-deep": resnet_deep, "inception-deep": inception_deep}


# the zoo models a Keras 3 user builds the same way (build(..., keras3=True))
KERAS3_ZOO = ("sequential", "resnet", "inception", "separable")


def build(name, input_shape=(16, 16, 3), num_classes=10, head="softmax", rescaling=False, seed=0,
          keras3=False):
    """A fresh (untrained) zoo model; seeded so two calls give the same weights.

    ``keras3=True`` builds the same architecture with Keras 3 (``import keras``), as a user of
    ``pip install tensorflow`` >= 2.16 does (:data:`KERAS3_ZOO`)."""
    from edgekit._tf import set_seed
    if head not in HEADS:
        raise ValueError("head must be one of {}".format(HEADS))
    set_seed(seed)
    builder = ZOO.get(name) or BENCH_MODELS[name]
    if not keras3:
        return builder(tuple(input_shape), int(num_classes), head=head, rescaling=rescaling)
    from edgekit.modelio.keras3 import keras3 as import_keras3
    k3 = import_keras3()
    k3.utils.set_random_seed(seed)
    _FLAVOUR.append(k3)
    try:
        return builder(tuple(input_shape), int(num_classes), head=head, rescaling=rescaling)
    finally:
        _FLAVOUR.pop()


def compile_plain(model, lr=1e-3):
    """Compile as a user would: Adam, sparse CE matching the head (probabilities or logits)."""
    k = _keras_of(model)
    from_logits = model.layers[-1].name == "logits"
    model.compile(optimizer=k.optimizers.Adam(lr),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                  metrics=["accuracy"])
    return model


def train_plain(model, x, y, epochs=10, batch_size=32, lr=3e-3, seed=0):
    """Train with plain ``model.fit`` (what a user does before coming to edgekit)."""
    from edgekit._tf import set_seed
    set_seed(seed)
    if type(model).__module__.startswith("keras"):
        _keras_of(model).utils.set_random_seed(seed)
    compile_plain(model, lr)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return model


FORMATS = ("h5", "keras", "savedmodel", "onnx")


def save_all(model, stem, formats=FORMATS):
    """Save ``model`` as ``stem.h5``, ``stem.keras``, ``stem_savedmodel/`` and ``stem.onnx``
    (tf2onnx, opset 13); returns {format: path}."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    if "h5" in formats:
        out["h5"] = stem.with_suffix(".h5")
        model.save(str(out["h5"]), include_optimizer=False)
    if "keras" in formats:
        out["keras"] = stem.with_suffix(".keras")
        model.save(str(out["keras"]))
    if "savedmodel" in formats:
        out["savedmodel"] = stem.parent / (stem.name + "_savedmodel")
        model.save(str(out["savedmodel"]), include_optimizer=False, save_format="tf")
    if "onnx" in formats:
        from edgekit.export.onnx import to_onnx
        out["onnx"] = stem.with_suffix(".onnx")
        to_onnx(model, out["onnx"], opset=13)
    return out


# how a Keras 3 user saves a model: model.save("m.keras"), model.save("m.h5"), model.export(dir)
KERAS3_FORMATS = ("keras3", "h5_keras3", "export")


def save_keras3(model, stem, formats=KERAS3_FORMATS):
    """Save a Keras 3 ``model`` as a Keras 3 user does: ``stem.keras`` (the default format),
    ``stem.h5`` (Keras 3's legacy HDF5 writer) and ``stem_export/`` (``model.export()``, a
    SavedModel of TF functions with no Keras graph); returns {format: path}."""
    import contextlib
    import io
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    if "keras3" in formats:
        out["keras3"] = stem.with_suffix(".keras")
        model.save(str(out["keras3"]))
    if "h5_keras3" in formats:
        out["h5_keras3"] = stem.with_suffix(".h5")
        model.save(str(out["h5_keras3"]))
    if "export" in formats:
        out["export"] = stem.parent / (stem.name + "_export")
        with contextlib.redirect_stdout(io.StringIO()):   # export() prints the endpoint
            model.export(str(out["export"]))
    return out
