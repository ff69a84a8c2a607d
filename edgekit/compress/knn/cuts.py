"""Where a Keras CNN can be cut for k-NN slicing, found from its layer graph.

A *cut point* is a layer whose output is the only live tensor at that point of the graph
(every path from the input to the output goes through it): the trunk up to it is a
single-output model. In a Sequential model every layer qualifies; in a residual net only the
tensors between blocks do (inside a block the shortcut is live too).

From the cut points two candidate sets (``candidate_cuts(model, which)``):

* ``"all"``: the end of every compute *unit* (a conv / depthwise / separable / hidden dense /
  pooling / merge layer plus the batch-norm and activation layers that follow it);
* ``"blocks"`` (default): the units that end a block: after a merge (``Add``, ``Concatenate``
  ... : residual and inception blocks), after pooling (global pooling included), and the
  bottlenecks — a unit whose output has fewer values per image than the unit before and
  after it, which is where a strided / projection block ends (MobileNetV2's
  ``block_N_project_BN``). Expansions and the inside of blocks are left out.

The classifier (the last dense layer, the dropout before it and what follows it) is never a
candidate.

Example::

    cuts = candidate_cuts(model)                # layer indices into model.layers
    [model.layers[i].name for i in cuts]        # MobileNetV2: ..., 'block_2_add', ...
"""
import numpy as np

from edgekit.errors import EdgekitError
from edgekit.keras_layers import flat_layers, is_graph_model

CANDIDATE_SETS = ("blocks", "all")
# follow a compute layer without ending its unit (elementwise, per channel)
TAIL_LAYERS = {"BatchNormalization", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU",
               "ThresholdedReLU", "Softmax"}
# identity at inference: a unit ends before them, and the classifier may start with them
PASS_LAYERS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
               "GaussianDropout", "AlphaDropout", "ActivityRegularization"}
POOL_LAYERS = {"MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
               "GlobalMaxPooling2D"}
MERGE_LAYERS = {"Add", "Concatenate", "Multiply", "Average", "Maximum", "Minimum", "Subtract"}
COMPUTE_LAYERS = {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
                  "Dense"} | POOL_LAYERS | MERGE_LAYERS


def flatten_nested(model):
    """``model`` with nested functional / Sequential models (e.g. a
    ``keras.applications`` base called as one layer) opened up into their layers, so their
    blocks can be cut; weights are shared, not copied. ``model`` itself when nothing is
    nested, or when opening it up would clash layer names."""
    from edgekit._tf import keras, tf
    k = keras()
    if not any(is_graph_model(l) for l in model.layers):
        return model
    names = [l.name for l in flat_layers(model, graphs_only=True)]
    if len(names) != len(set(names)):
        return model
    inputs = [k.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0])
              for t in model.inputs]
    try:
        outputs = _apply_graph(model, inputs, tf())
        return k.Model(inputs, outputs, name=model.name)
    except (ValueError, TypeError, KeyError):   # an exotic call signature: keep it nested
        return model


def layer_output(model, layer):
    """The output tensor of ``layer`` (or ``model.layers[layer]``) in ``model``'s own graph.
    A layer opened up out of a nested model (:func:`flatten_nested`) belongs to two graphs,
    one node each, and ``layer.output`` is the first node's: the nested model's, which
    ``model``'s input cannot reach ("Graph disconnected")."""
    if isinstance(layer, int):
        layer = model.layers[layer]
    for nodes in getattr(model, "_nodes_by_depth", {}).values():
        for node in nodes:
            if node.layer is layer:
                return node.outputs
    return layer.output


def _apply_graph(model, inputs, tf):
    """Call ``model``'s layers (recursively for nested graph models) on ``inputs``."""
    tensors = {id(t): x for t, x in zip(model.inputs, inputs)}

    def swap(v):
        return tensors[id(v)] if id(v) in tensors else v
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args = tf.nest.map_structure(swap, node.call_args)
            kwargs = tf.nest.map_structure(swap, node.call_kwargs)
            layer = node.layer
            if is_graph_model(layer):
                kwargs.pop("training", None)
                kwargs.pop("mask", None)
                if kwargs:
                    raise ValueError("nested model called with {}".format(sorted(kwargs)))
                out = _apply_graph(layer, tf.nest.flatten(args), tf)
                out = out[0] if len(out) == 1 else out
            else:
                out = layer(*args, **kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(out)):
                tensors[id(old)] = new
    return [tensors[id(t)] for t in model.outputs]


def layer_graph(model):
    """``consumers[i]``: indices (into ``model.layers``) of the layers fed by layer ``i``."""
    layers = model.layers
    index = {id(l): i for i, l in enumerate(layers)}
    network_nodes = getattr(model, "_network_nodes", None)
    consumers = [set() for _ in layers]
    for j, layer in enumerate(layers):
        for n, node in enumerate(getattr(layer, "_inbound_nodes", [])):
            key = "{}_ib-{}".format(layer.name, n)
            if network_nodes is not None and key not in network_nodes:
                continue
            for t in getattr(node, "keras_inputs", []):
                src = getattr(t, "_keras_history", None)
                if src is not None and id(src.layer) in index:
                    consumers[index[id(src.layer)]].add(j)
    if not any(consumers) and len(layers) > 1:       # a Sequential without a built graph
        consumers = [{i + 1} for i in range(len(layers) - 1)] + [set()]
    return consumers


def cut_points(model):
    """Indices of layers whose output is the only live tensor there (single path)."""
    layers = model.layers
    consumers = layer_graph(model)
    outputs = {id(t._keras_history.layer) for t in model.outputs}
    n = len(layers)
    last_use = []
    for i, l in enumerate(layers):
        last = max(consumers[i]) if consumers[i] else i
        if id(l) in outputs:
            last = n
        last_use.append(last)
    if any(c <= i for i, cs in enumerate(consumers) for c in cs):
        raise EdgekitError("the model's layers are not in topological order: give --cut")
    expire = np.zeros(n + 1, int)
    points = []
    live = 0
    for i in range(n):
        live -= expire[i]            # tensors whose last consumer is layer i die here
        if last_use[i] > i:
            live += 1
            expire[last_use[i]] += 1
            if live == 1 and _one_output(layers[i]):
                points.append(i)
    return points


def _one_output(layer):
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return False
    return not isinstance(out, (list, tuple))


def _values(layer):
    shape = layer.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(np.prod([d for d in shape[1:] if d is not None]))


def head_start(model):
    """Index of the classifier's first layer: the last Dense and the tail after it."""
    layers = model.layers
    i = len(layers) - 1
    while i > 0 and type(layers[i]).__name__ in TAIL_LAYERS:
        i -= 1
    if type(layers[i]).__name__ != "Dense":
        return len(layers) - 1
    while i > 0 and type(layers[i - 1]).__name__ in PASS_LAYERS:
        i -= 1
    return i


def candidate_cuts(model, which="blocks"):
    """Layer indices to try as cuts (see the module docstring), in graph order."""
    if which not in CANDIDATE_SETS:
        raise EdgekitError("--cut-candidates must be one of {}, got {!r}".format(
            ", ".join(CANDIDATE_SETS), which))
    layers = model.layers
    head = head_start(model)
    points = [i for i in cut_points(model) if i < head]
    consumers = layer_graph(model)
    units = []                       # (end index, kind of the unit's first layer)
    kind = None
    point_set = set(points)
    for i in range(head):
        name = type(layers[i]).__name__
        if name in COMPUTE_LAYERS:
            kind = name
        if kind is None or i not in point_set:
            continue
        nxt = sorted(consumers[i])
        if len(nxt) == 1 and nxt[0] < head and type(layers[nxt[0]]).__name__ in TAIL_LAYERS:
            continue                 # the unit goes on (batch-norm, activation, dropout)
        units.append((i, kind))
        kind = None
    if which == "all":
        return [i for i, _ in units]
    in_shape = model.input_shape[0] if isinstance(model.input_shape, list) else model.input_shape
    sizes = [int(np.prod(in_shape[1:]))] + [_values(layers[i]) for i, _ in units] + [np.inf]
    out = []
    for u, (i, kind) in enumerate(units):
        bottleneck = sizes[u + 1] < sizes[u] and sizes[u + 1] <= sizes[u + 2]
        if kind in MERGE_LAYERS or kind in POOL_LAYERS or bottleneck:
            out.append(i)
    return out
