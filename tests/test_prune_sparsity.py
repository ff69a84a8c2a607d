"""``layer_sparsity`` counts every kernel of a layer (issue 35: a pruned SeparableConv2D read as
0% because only its first weight, the depthwise kernel, was looked at)."""
import numpy as np

from edgekit.compress.prune import layer_sparsity


def test_separable_counts_both_kernels():
    from edgekit._tf import keras
    k = keras()
    inp = k.layers.Input((8, 8, 4))
    x = k.layers.SeparableConv2D(8, 3, name="sep")(inp)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inp, k.layers.Dense(3, name="fc")(x))
    sep = model.get_layer("sep")
    depthwise, pointwise, bias = sep.get_weights()
    depthwise[:] = 1.0                       # dense depthwise kernel (what tfmot leaves alone)
    pointwise[:] = 1.0
    pointwise.reshape(-1)[: pointwise.size // 2] = 0.0  # half the pointwise kernel pruned
    sep.set_weights([depthwise, pointwise, bias])
    got = layer_sparsity(model, ["sep", "fc"])
    want = (pointwise.size // 2) / float(depthwise.size + pointwise.size)
    assert abs(got["sep"] - want) < 1e-9 and got["sep"] > 0.2  # the old reading: 0.0
    assert got["fc"] == float(np.mean(model.get_layer("fc").get_weights()[0] == 0))
