"""Facts about a Keras model's layers, stated once: its leaf layers (nested models opened up),
the layer that makes its output, and the multiply-accumulates of one inference.

Every place that walks a model's layers (preprocessing detection, pruning, the guard's
BatchNorm repair, the evolved trunk, k-NN cuts, the output convention) and both MAC counts (a whole model, and a
channel-pruned one before it is rebuilt) use these. Imports no tensorflow: works on any
model object it is handed.

Example::

    [l.name for l in flat_layers(model)]       # nested Sequential/Functional opened up
    count_macs(model)                          # Conv2D / DepthwiseConv2D / SeparableConv2D / Dense
"""
import numpy as np

# the layer classes whose multiply-accumulates count (everything else is cheap next to them)
MAC_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")


def is_graph_model(layer):
    """True for a nested functional / Sequential model (a graph whose layers can be replayed)."""
    return hasattr(layer, "_nodes_by_depth") and hasattr(layer, "layers") and \
        getattr(layer, "inputs", None) is not None


def flat_layers(model, graphs_only=False):
    """The leaf layers of ``model``, in order, every nested model opened up (recursively).
    ``graphs_only``: open only nested graph models (:func:`is_graph_model`), keep any other
    layer that holds layers whole (what a rebuilt graph can replay)."""
    for layer in model.layers:
        nested = is_graph_model(layer) if graphs_only else bool(getattr(layer, "layers", None))
        if nested:
            yield from flat_layers(layer, graphs_only)
        else:
            yield layer


def output_layer(model):
    """The layer that makes ``model``'s output: its last leaf (nested models opened up), tfmot's
    prune / quantize wrappers unwrapped; None for a model without layers."""
    layer = model if getattr(model, "layers", None) else None
    while layer is not None:
        if getattr(layer, "layers", None):              # a nested Model/Sequential last
            layer = list(flat_layers(layer))[-1]
        elif getattr(layer, "layer", None) is not None:  # tfmot's prune / quantize wrappers
            layer = layer.layer
        else:
            break
    return layer


def layer_macs(cls, out_shape, kernel_hw, cin, cout, multiplier=1):
    """Multiply-accumulates of one MAC layer: ``cls`` (one of :data:`MAC_LAYERS`), its output
    shape (NHWC; spatial size from it), kernel height x width, input and output channels (or
    Dense units), and the depthwise ``multiplier``. The one formula behind :func:`count_macs`
    and the channel-pruning estimate (:func:`edgekit.compress.channels.prune.estimate_macs`)."""
    if cls == "Dense":
        return int(cin) * int(cout)
    spatial = int(np.prod(out_shape[1:3]))
    if cls == "Conv2D":
        return spatial * int(kernel_hw) * int(cin) * int(cout)
    if cls == "DepthwiseConv2D":
        return spatial * int(kernel_hw) * int(cin) * int(multiplier)
    if cls == "SeparableConv2D":  # depthwise + pointwise
        return spatial * (int(kernel_hw) * int(cin) * int(multiplier)
                          + int(cin) * int(multiplier) * int(cout))
    raise ValueError("not a MAC layer: {}".format(cls))


def output_shape(layer):
    """A layer's (first) output shape."""
    out = layer.output_shape
    return out[0] if isinstance(out, list) else out


def count_macs(model):
    """Multiply-accumulates of one inference for Conv2D / DepthwiseConv2D / SeparableConv2D /
    Dense layers (nested models included)."""
    total = 0
    for layer in flat_layers(model):
        cls = type(layer).__name__
        if cls not in MAC_LAYERS:
            continue
        w = layer.get_weights()
        if not w:
            continue
        k = w[0].shape
        if cls == "Dense":
            total += layer_macs(cls, None, 1, k[0], k[1])
        elif cls == "SeparableConv2D":
            total += layer_macs(cls, output_shape(layer), np.prod(k[:-2]), k[-2], w[1].shape[-1],
                                k[-1])
        else:
            total += layer_macs(cls, output_shape(layer), np.prod(k[:-2]), k[-2], k[-1], k[-1])
    return int(total)


__all__ = ["MAC_LAYERS", "is_graph_model", "flat_layers", "output_layer", "layer_macs",
           "count_macs"]
