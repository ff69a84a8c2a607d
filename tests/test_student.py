"""Derived distillation students on functional teachers (tests/zoo.py): width by channel
group, depthwise-separable convs, and the resolution multiplier as an in-graph resize."""
import numpy as np
import pytest

from tests.zoo import build


@pytest.fixture(scope="module")
def resnet():
    return build("resnet", (32, 32, 3), 10)


def test_width_halves_every_group_and_keeps_the_shortcuts(resnet):
    from edgekit.compress.student import derive
    net = derive(resnet, width=0.5)
    filters = {l.name: l.filters for l in net.layers if hasattr(l, "filters")}
    assert filters == {"stem": 8, "b1_c1": 8, "b1_c2": 8, "b2_c1": 16, "b2_c2": 16,
                       "b2_proj": 16}
    assert [type(l).__name__ for l in net.layers].count("Add") == 2
    assert net.get_layer("probs").output_shape == (None, 10)


def test_depthwise_turns_spatial_convs_after_the_first_separable(resnet):
    from edgekit.compress.student import derive
    net = derive(resnet, width=1.0, depthwise=True)
    kinds = {l.name: type(l).__name__ for l in net.layers}
    assert kinds["stem"] == "Conv2D"                 # sees the raw image
    assert kinds["b2_proj"] == "Conv2D"              # 1x1 shortcut projection: nothing to split
    assert {kinds[n] for n in ("b1_c1", "b1_c2", "b2_c1", "b2_c2")} == {"SeparableConv2D"}
    assert net.get_layer("b2_c1").strides == (2, 2)


def test_resolution_resizes_inside_the_graph_and_exports(resnet, tmp_path):
    from edgekit.compress.student import derive
    from edgekit.export.onnx import to_onnx
    from edgekit.export.parity import compare, run_file
    from edgekit.models import count_macs, count_params
    net = derive(resnet, width=1.0, resolution=0.75)
    assert net.input_shape == resnet.input_shape     # takes what the teacher takes ...
    assert net.layers[1].name == "student_resize"
    assert net.get_layer("stem").output_shape[1:3] == (24, 24)   # ... and convolves 24x24
    assert count_params(net) == count_params(resnet)
    assert 0.5 < count_macs(net) / float(count_macs(resnet)) < 0.6   # ~0.75^2
    x = np.random.RandomState(0).rand(16, 32, 32, 3).astype(np.float32)
    to_onnx(net, tmp_path / "s.onnx")
    ref = net(x, training=False).numpy()
    fig = compare(ref, run_file("onnxruntime", tmp_path / "s.onnx", x), np.argmax(ref, 1))
    assert fig["passed"] and fig["max_abs_diff"] < 1e-4, fig


def test_resolution_a_fixed_size_layer_cannot_take_is_refused():
    from edgekit._tf import keras
    from edgekit.compress.student import derive
    from edgekit.errors import EdgekitError
    k = keras()
    L = k.layers
    inp = L.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same")(inp)
    out = L.Dense(3)(L.Reshape((8 * 8 * 4,))(x))
    with pytest.raises(EdgekitError, match="--resolution 0.5 gives 4x4 inputs"):
        derive(k.Model(inp, out), resolution=0.5)


def test_distill_resolution_cli_records_the_student_input(tmp_path, run_cli):
    import json
    build("resnet", (8, 8, 1), 10, head="logits").save(str(tmp_path / "t.h5"))
    out = tmp_path / "r"
    code, _, err = run_cli("compress", tmp_path / "t.h5", "--method", "distill",
                           "--resolution", "0.75", "--epochs", "1", "--data", "digits",
                           "-o", out)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    p = m["method"]["params"]
    assert p["resolution"] == 0.75 and p["student_input"] == [6, 6] and p["width"] == 1.0
    assert m["metrics"]["macs"] < 0.6 * m["metrics"]["before"]["macs"]
    assert m["input"]["shape"][1:] == [8, 8, 1]


def test_width_student_starts_from_the_teachers_strongest_channels():
    """A width-1 student (no resolution) inherits every weight: same outputs as the teacher;
    a width-0.5 one keeps the L1-strongest channels of each group, sliced; random init differs."""
    from edgekit.compress.student import derive
    from tests.zoo import build
    t = build("resnet", (16, 16, 1), 10)
    x = np.random.RandomState(0).rand(4, 16, 16, 1).astype(np.float32)
    same = derive(t, width=1.0)
    assert np.allclose(same.predict(x, verbose=0), t.predict(x, verbose=0), atol=1e-5)
    half = derive(t, width=0.5)
    stem_t, stem_s = t.get_layer("stem").get_weights()[0], half.get_layer("stem").get_weights()[0]
    assert stem_s.shape[-1] * 2 == stem_t.shape[-1]
    cols = [np.where(np.all(np.isclose(stem_t, stem_s[..., [j]]), axis=(0, 1, 2)))[0] for j in range(stem_s.shape[-1])]
    assert all(len(c) == 1 for c in cols)          # every kept filter is one of the teacher's
    fresh = derive(t, width=0.5, init="random")
    assert not np.allclose(fresh.get_layer("stem").get_weights()[0], stem_s)


def test_report_names_the_layers_that_start_fresh():
    """A teacher-initialised student reports the layers it could not slice from the teacher:
    none at the teacher's resolution; the Dense after Flatten at a new one (its input size
    changed). Those layers' weights are not the teacher's."""
    from edgekit.compress.student import derive
    from tests.zoo import build
    t = build("sequential", (16, 16, 1), 10)
    same = {}
    derive(t, width=0.5, report=same)
    assert same == {"fresh_layers": []}
    small = {}
    net = derive(t, width=0.5, resolution=0.5, report=small)
    assert small["fresh_layers"] == ["fc"]
    fc_in = [m.get_layer("fc").get_weights()[0].shape[0] for m in (net, t)]
    assert fc_in[0] != fc_in[1]
    rnd = {}
    derive(t, width=0.5, init="random", report=rnd)
    assert rnd == {}                 # nothing inherited, nothing to report
