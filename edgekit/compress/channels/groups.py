"""Channel groups of a Keras graph: which layers' channels must be removed together.

Removing output channel ``c`` of a Conv2D also removes input channel ``c`` of every layer that
reads it, the ``c``-th entry of the BatchNorm after it, the ``c``-th filter of a DepthwiseConv2D
that follows, and — through an ``Add`` — channel ``c`` of the other branch, and of everything
*that* branch feeds. A **channel group** is one such set of coupled layers: the unit structured
pruning removes channels from (Torch-Pruning's DepGraph calls it a pruning group; this is the
same idea for tf_keras functional and Sequential graphs, including nested models).

:func:`trace` walks the graph once, in execution order, giving every tensor a **layout**: its
channel axis as a list of ``(group, size)`` segments. The rules:

* Conv1D/2D, SeparableConv1D/2D and Dense *produce* a new group (their filters / units) and
  *consume* the groups of their input on their kernel's input axis.
* BatchNormalization, LayerNormalization, PReLU and DepthwiseConv2D (depth multiplier 1)
  *follow* their input (per-channel weights, same layout out); activations, pooling, padding,
  cropping, up-sampling, dropout, noise, Rescaling with a scalar and Reshape that keeps the
  channel axis innermost pass the layout through unchanged.
* Add / Subtract / Multiply / Average / Maximum / Minimum *couple* their inputs: segment by
  segment, their groups become one.
* Concatenate on the channel axis maps each input to an offset range of the output: the
  output layout is the inputs' segments one after another.
* Flatten repeats the layout once per spatial position (Dense rows follow the channels);
  global pooling keeps it.
* Anything it cannot follow (Lambda, TF-op layers, custom layers, Reshape/Permute across the
  channel axis, grouped or channels-first convs, depth multipliers > 1) **fences** the groups
  it touches: kept whole and named in :meth:`ChannelGroups.summary`, instead of refusing the
  whole model. The model's inputs and outputs are fenced too (their channels are fixed).

Example::

    groups = trace(model)
    g = groups.group_of("block_2_project")
    g.producers, g.followers, g.consumers     # layer names
    print(groups.summary())
"""
import numpy as np

from edgekit.errors import EdgekitError

# the channel axis passes through unchanged and the layer has no per-channel weights
PASS = frozenset((
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Softmax",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing", "CenterCrop",
))
# per-channel weights along the last axis, same layout out
FOLLOW = frozenset(("BatchNormalization", "LayerNormalization", "PReLU", "DepthwiseConv2D",
                    "DepthwiseConv1D"))
# a kernel with an input and an output channel axis: consume the input layout, produce a group
PRODUCE = frozenset(("Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D",
                     "Dense"))
MERGE = frozenset(("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"))
NESTED = frozenset(("Functional", "Sequential", "Model"))


class Group(object):
    """One set of coupled channels: ``size`` channels shared by every member layer.

    ``producers``: layers whose output filters/units are these channels; ``followers``: layers
    with per-channel weights on them (BatchNorm, depthwise); ``consumers``: layers that read
    them on their kernel's input axis; ``fenced``: why the group must be kept whole (or None).
    """

    def __init__(self, gid, size):
        self.id, self.size = gid, int(size)
        self.producers, self.followers, self.consumers = [], [], []
        self.fenced = []

    @property
    def prunable(self):
        return not self.fenced and bool(self.producers)

    @property
    def members(self):
        return self.producers + self.followers + self.consumers

    def __repr__(self):
        return "Group({}, {} ch, producers={}, fenced={})".format(
            self.id, self.size, self.producers, self.fenced or None)


class LayerUse(object):
    """How one layer sits in the graph: its class, the layouts of its first call's inputs and
    output, and the layer object itself (the first call decides; shared layers are coupled)."""

    def __init__(self, layer, path, role, inputs, output):
        self.layer, self.path, self.role = layer, path, role
        self.inputs, self.output = inputs, output

    @property
    def name(self):
        return "/".join(self.path)

    @property
    def cls(self):
        return type(self.layer).__name__


class ChannelGroups(object):
    """The result of :func:`trace`: the groups, and every layer's input/output layouts."""

    def __init__(self):
        self._parent = {}
        self._groups = {}
        self.uses = {}        # layer name (path joined by "/") -> LayerUse
        self.order = []       # layer names in execution order

    # -- union-find over group ids ------------------------------------------------------------
    def new(self, size, fenced=None):
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = Group(gid, size)
        if fenced:
            self._groups[gid].fenced.append(fenced)
        return gid

    def find(self, gid):
        while self._parent[gid] != gid:
            self._parent[gid] = self._parent[self._parent[gid]]
            gid = self._parent[gid]
        return gid

    def group(self, gid):
        return self._groups[self.find(gid)]

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        ga, gb = self._groups[a], self._groups[b]
        if ga.size != gb.size:  # cannot happen for a graph Keras built; keep both whole
            self.fence(a, "coupled to a group of another size")
            self.fence(b, "coupled to a group of another size")
            return a
        self._parent[b] = a
        for attr in ("producers", "followers", "consumers", "fenced"):
            mine = getattr(ga, attr)
            setattr(ga, attr, mine + [x for x in getattr(gb, attr) if x not in mine])
        del self._groups[b]
        return a

    def fence(self, gid, why):
        g = self.group(gid)
        if why not in g.fenced:
            g.fenced.append(why)

    # -- queries ------------------------------------------------------------------------------
    @property
    def groups(self):
        """Every group, in the order they were created."""
        return [self._groups[g] for g in sorted(self._groups)]

    def prunable(self):
        return [g for g in self.groups if g.prunable]

    def fenced(self):
        return [g for g in self.groups if g.fenced and g.producers]

    def group_of(self, layer_name):
        """The group a layer produces (or, for a follower, follows)."""
        use = self.uses.get(layer_name) or self._by_short_name(layer_name)
        if use is None:
            raise EdgekitError("no layer named {!r} in the model".format(layer_name))
        if not use.output:
            raise EdgekitError("layer {} has no channel axis to prune".format(layer_name))
        return self.group(use.output[0][0])

    def _by_short_name(self, name):
        hits = [u for u in self.uses.values() if u.path[-1] == name]
        return hits[0] if len(hits) == 1 else None

    def layout_sizes(self, layout, kept=None):
        """Channels of a tensor with ``layout`` when group g keeps ``kept[g]`` channels."""
        return int(sum(self._kept_n(g, n, kept) for g, n in layout))

    def _kept_n(self, gid, n, kept):
        if kept is None:
            return n
        k = kept.get(self.find(gid))
        return n if k is None else len(k)

    def indices(self, layout, kept):
        """Indices along a tensor's channel axis that survive when group g keeps ``kept[g]``."""
        out, offset = [], 0
        for gid, n in layout:
            k = kept.get(self.find(gid))
            out.append(offset + (np.arange(n) if k is None else np.asarray(k, dtype=np.int64)))
            offset += n
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def summary(self):
        """Human-readable lines: prunable groups and the fenced ones with the reason."""
        lines = []
        for g in self.groups:
            if not g.producers:
                continue
            head = "{} ch: {}".format(g.size, ", ".join(g.producers))
            if g.fenced:
                lines.append("kept whole ({}): {}".format("; ".join(g.fenced), head))
            else:
                lines.append("prunable: " + head)
        return "\n".join(lines)


def trace(model):
    """Trace a tf_keras functional or Sequential ``model`` into :class:`ChannelGroups`."""
    if not getattr(model, "_is_graph_network", False):
        raise EdgekitError("{} is a subclassed Keras model: channel groups need a functional or "
                           "Sequential graph".format(model.name))
    cg = ChannelGroups()
    layouts = {}
    for t in model.inputs:
        layouts[str(id(t))] = [(cg.new(_channels(t), "model input"), _channels(t))]
    _walk(cg, model, layouts, ())
    for t in model.outputs:
        for gid, _ in layouts[str(id(t))]:
            cg.fence(gid, "model output")
    return cg


def _walk(cg, model, layouts, prefix):
    depth_keys = sorted(model._nodes_by_depth.keys(), reverse=True)
    for depth in depth_keys:
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            ins = [layouts[i] for i in node.flat_input_ids]
            outs = node.flat_output_ids
            layer = node.layer
            path = prefix + (layer.name,)
            cls = type(layer).__name__
            if cls in NESTED and getattr(layer, "_is_graph_network", False):
                inner = {}
                for t, lay in zip(layer.inputs, ins):
                    inner[str(id(t))] = lay
                _walk(cg, layer, inner, path)
                for oid, t in zip(outs, layer.outputs):
                    layouts[oid] = inner[str(id(t))]
                continue
            out = _layer_rule(cg, layer, cls, path, ins, node)
            name = "/".join(path)
            if name in cg.uses:  # a shared layer: its weights couple every call
                prev = cg.uses[name]
                for a, b in zip(prev.inputs, ins):
                    _couple(cg, [a, b], "shared layer " + name)
                _couple(cg, [prev.output, out], "shared layer " + name)
                out = prev.output
            else:
                cg.uses[name] = LayerUse(layer, path, _role(cls, layer), ins, out)
                cg.order.append(name)
            if len(outs) > 1:  # several outputs: only the first one is followed
                for oid in outs[1:]:
                    layouts[oid] = [(cg.new(1, "extra output of " + name), 1)]
                _fence_layout(cg, out, "layer {} ({}) has several outputs".format(name, cls))
            layouts[outs[0]] = out


def _role(cls, layer):
    if cls in PRODUCE:
        return "produce"
    if cls in FOLLOW:
        return "follow"
    return "other"


def _layer_rule(cg, layer, cls, path, ins, node):
    """The output layout of one call, updating groups (membership, coupling, fences)."""
    name = "/".join(path)
    out_shape = _shape(node.outputs)
    x = ins[0] if ins else []
    cfg = layer.get_config()
    channels_last = cfg.get("data_format", "channels_last") in (None, "channels_last")
    if cls in PASS:
        if cls == "Softmax" and cfg.get("axis", -1) not in (-1, len(out_shape) - 1):
            return _fence_new(cg, x, out_shape, "{} (Softmax over a non-channel axis)".format(name))
        if not channels_last:
            return _fence_new(cg, x, out_shape, "{} ({} channels_first)".format(name, cls))
        return x
    if cls == "Rescaling":
        if np.ndim(cfg.get("scale", 1.0)) or np.ndim(cfg.get("offset", 0.0)):
            _fence_layout(cg, x, "{} (per-channel Rescaling)".format(name))
        return x
    if cls in FOLLOW:
        if cls in ("DepthwiseConv2D", "DepthwiseConv1D"):
            if int(cfg.get("depth_multiplier", 1)) != 1 or not channels_last:
                return _fence_new(cg, x, out_shape, "{} (depth multiplier {})".format(
                    name, cfg.get("depth_multiplier")))
        elif cls in ("BatchNormalization", "LayerNormalization"):
            axis = cfg.get("axis", -1)
            axis = axis if isinstance(axis, (list, tuple)) else [axis]
            if [a % len(out_shape) for a in axis] != [len(out_shape) - 1]:
                return _fence_new(cg, x, out_shape, "{} ({} over axis {})".format(name, cls, axis))
        for gid, _ in x:
            _add(cg.group(gid).followers, name)
        return x
    if cls in PRODUCE:
        if not channels_last or int(cfg.get("groups", 1)) != 1:
            return _fence_new(cg, x, out_shape, "{} ({} with groups/channels_first)".format(
                name, cls))
        for gid, _ in x:
            _add(cg.group(gid).consumers, name)
        n = int(out_shape[-1])
        gid = cg.new(n)
        cg.group(gid).producers.append(name)
        return [(gid, n)]
    if cls in MERGE:
        wide = [lay for lay in ins if cg.layout_sizes(lay) > 1] or ins
        return _couple(cg, wide, "{} ({}) joins inputs it cannot align".format(name, cls))
    if cls == "Concatenate":
        rank = len(out_shape)
        if cfg.get("axis", -1) % rank == rank - 1:
            return [seg for lay in ins for seg in lay]
        return _couple(cg, ins, "{} (Concatenate across a non-channel axis)".format(name))
    if cls == "Flatten":
        in_shape = _shape(node.keras_inputs[0])
        if not channels_last:
            return _fence_new(cg, x, out_shape, "{} (Flatten channels_first)".format(name))
        positions = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
        return list(x) * positions
    if cls == "Reshape":
        in_shape = _shape(node.keras_inputs[0])
        if in_shape[-1] == out_shape[-1] and \
                np.prod(in_shape[1:-1]) == np.prod(out_shape[1:-1]):
            return x
        return _fence_new(cg, x, out_shape, "{} (Reshape across the channel axis)".format(name))
    why = "{} ({}{})".format(name, cls, ": edgekit cannot follow channels through it"
                             if cls not in ("Lambda", "TFOpLambda", "SlicingOpLambda")
                             else "")
    return _fence_new(cg, [seg for lay in ins for seg in lay], out_shape, why)


def _couple(cg, layouts, why):
    """Make the i-th segment of every layout one group; fence everything if they don't align."""
    first = layouts[0]
    same = all(len(lay) == len(first) and all(n == m for (_, n), (_, m) in zip(lay, first))
               for lay in layouts)
    if not same:
        for lay in layouts:
            _fence_layout(cg, lay, why)
        return first
    for lay in layouts[1:]:
        for (a, _), (b, _) in zip(first, lay):
            cg.union(a, b)
    return [(cg.find(g), n) for g, n in first]


def _fence_layout(cg, layout, why):
    for gid, _ in layout:
        cg.fence(gid, why)


def _fence_new(cg, layout, out_shape, why):
    """Fence the input groups; the output gets a new (fenced) group of its own."""
    _fence_layout(cg, layout, why)
    n = int(out_shape[-1]) if out_shape and out_shape[-1] is not None else 1
    return [(cg.new(n, why), n)]


def _add(seq, item):
    if item not in seq:
        seq.append(item)


def _channels(t):
    return int(t.shape[-1]) if t.shape.rank and t.shape[-1] is not None else 1


def _shape(t):
    if isinstance(t, (list, tuple)):
        t = t[0]
    return tuple(t.shape.as_list())


__all__ = ["trace", "ChannelGroups", "Group", "PASS", "FOLLOW", "PRODUCE", "MERGE"]
