"""Channel groups and structured pruning on the architectures users bring (tests/zoo.py):
residual Add, Concatenate, depthwise/separable, nested keras.applications.MobileNetV2.

The rebuild is checked for real: at ratio 0 it must reproduce the model exactly, and removing
channels that no layer reads (their consumers' input weights zeroed first) must not change a
single output. Untrained (seeded) weights are enough for both: they are identities of the graph.
"""
import numpy as np
import pytest

from tests.zoo import build

SHAPE = (32, 32, 3)


def _x(n=6, shape=SHAPE):
    return np.random.RandomState(1).rand(n, *shape).astype(np.float32)


def _predict(model, x):
    return model(x, training=False).numpy()  # eager: no graph tracing per model


@pytest.fixture(scope="module")
def zoo():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(name, SHAPE, 10)
        return cache[name]
    return get


# -- the groups ----------------------------------------------------------------------------------
def test_mobilenetv2_groups_match_hand_written_blocks(zoo):
    """Blocks 1 and 2 of keras.applications.MobileNetV2 (nested in the user's model; block 2
    adds its output to block 1's): expand -> BN -> relu -> (pad) -> depthwise -> BN -> relu ->
    project -> BN; the two projections are one group through block_2_add, read by the next two
    expand convs."""
    from edgekit.compress.channels.groups import trace
    cg = trace(zoo("mobilenetv2"))

    def short(names):
        assert all(n.startswith("mobilenetv2_0.35_32/") for n in names), names
        return sorted(n.split("/", 1)[1] for n in names)
    for block in ("block_1", "block_2"):
        g = cg.group_of(block + "_expand")
        assert g.size == 48 and not g.fenced
        assert short(g.producers) == [block + "_expand"]
        assert short(g.followers) == [block + "_depthwise", block + "_depthwise_BN",
                                      block + "_expand_BN"]
        assert short(g.consumers) == [block + "_project"]
    g = cg.group_of("block_2_project")
    assert g is cg.group_of("block_1_project")
    assert g.size == 8 and not g.fenced
    assert short(g.producers) == ["block_1_project", "block_2_project"]
    assert short(g.followers) == ["block_1_project_BN", "block_2_project_BN"]
    assert short(g.consumers) == ["block_2_expand", "block_3_expand"]
    # the stem group flows through the first (expansion-free) block's depthwise
    stem = cg.group_of("Conv1")
    assert short(stem.followers) == ["bn_Conv1", "expanded_conv_depthwise",
                                     "expanded_conv_depthwise_BN"]
    assert short(stem.consumers) == ["expanded_conv_project"]
    # the last conv feeds global pooling and the user's classifier; the classifier's own
    # channels are the model output: kept whole
    assert cg.group_of("Conv_1").consumers == ["probs"]
    assert "model output" in cg.group_of("probs").fenced


def test_concat_maps_inputs_to_offset_ranges(zoo):
    from edgekit.compress.channels.groups import trace
    cg = trace(zoo("inception"))
    use = cg.uses["i2_1x1"]  # reads i1_concat (after max pooling): 8 + 8 + 4 channels
    groups = [cg.group(gid) for gid, _ in use.inputs[0]]
    assert [g.producers for g in groups] == [["i1_1x1"], ["i1_3x3"], ["i1_pool_1x1"]]
    kept = {groups[1].id: np.array([0, 5])}
    assert list(cg.indices(use.inputs[0], kept)) == list(range(8)) + [8, 13] + list(range(16, 20))


def test_lambda_fences_its_group_and_names_it():
    from edgekit._tf import keras
    from edgekit.compress.channels.prune import prune_channels
    k = keras()
    L = k.layers
    inp = L.Input(SHAPE)
    a = L.Conv2D(16, 3, padding="same", name="a")(inp)
    a = L.Lambda(lambda t: t * 2.0, name="double")(a)
    b = L.Conv2D(16, 3, padding="same", name="b")(a)
    out = L.Dense(3, name="out")(L.GlobalAveragePooling2D()(b))
    small, report = prune_channels(k.Model(inp, out), ratio=0.5)
    assert small.get_layer("a").filters == 16           # fenced: kept whole
    assert small.get_layer("b").filters == 8            # the rest is still pruned
    assert report["fenced"][0]["layers"] == ["a"]
    assert "double" in report["fenced"][0]["why"][0]


# -- the rebuild ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet", "inception", "separable", "mobilenetv2", "sequential"])
def test_ratio_zero_rebuild_is_exact(zoo, name):
    from edgekit.compress.channels.prune import prune_channels
    model = zoo(name)
    small, report = prune_channels(model, ratio=0.0)
    assert small is not model and report["kept"] == {}
    x = _x()
    np.testing.assert_array_equal(_predict(small, x), _predict(model, x))


def _zero_reads(model, cg, kept):
    """Zero every consumer's input weights on the channels ``kept`` drops: afterwards those
    channels are computed but never read, so removing them must change no output."""
    for name, use in cg.uses.items():
        if use.role != "produce":
            continue
        full = cg.indices(use.inputs[0], {})
        gone = np.setdiff1d(full, cg.indices(use.inputs[0], kept))
        if not len(gone):
            continue
        w = use.layer.get_weights()
        w[0][..., gone, :] = 0.0  # Conv/Dense kernel rows, or a separable's depthwise filters
        use.layer.set_weights(w)


@pytest.mark.parametrize("name", ["resnet", "inception", "separable", "mobilenetv2", "sequential"])
def test_removing_unread_channels_changes_no_output(zoo, name):
    from edgekit.compress.channels.groups import trace
    from edgekit.compress.channels.prune import rebuild
    model = rebuild(zoo(name), trace(zoo(name)), {})  # a copy: its weights get zeroed below
    cg = trace(model)
    rs = np.random.RandomState(0)
    kept = {g.id: np.sort(rs.choice(g.size, max(1, g.size // 2), replace=False))
            for g in cg.prunable()}
    assert kept
    _zero_reads(model, cg, kept)
    small = rebuild(model, cg, kept)
    x = _x()
    np.testing.assert_allclose(_predict(small, x), _predict(model, x), rtol=1e-4, atol=1e-5)
    assert small.count_params() < model.count_params()


@pytest.mark.parametrize("name,fraction", [("mobilenetv2", 0.5), ("resnet", 0.5),
                                           ("inception", 0.6)])
def test_target_macs_is_reached(zoo, name, fraction):
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.models import count_macs
    model = zoo(name)
    small, report = prune_channels(model, target_macs=fraction)
    macs, before = count_macs(small), count_macs(model)
    assert report["macs"] == macs and report["macs_before"] == before
    assert macs <= fraction * before
    assert macs >= (fraction - 0.15) * before  # what the target needs (8-channel steps), no more
    assert report["kept"] and all(n % 8 == 0 for name, n in report["kept"].items()
                                  if report["original"][name] >= 8)  # CPU-kernel friendly


def test_round_to_keeps_multiples_of_16_where_the_target_allows(zoo):
    """MobileNetV2 0.35 at 32x32 reaches half its MACs in 16-channel steps (onnxruntime's block
    on AVX-512: BENCHMARKS.md, issue 11); the tiny zoo ResNet cannot, and falls back to 8."""
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.errors import EdgekitError
    _, rep = prune_channels(zoo("mobilenetv2"), target_macs=0.5)
    big = {n: k for n, k in rep["kept"].items() if rep["original"][n] >= 16}
    assert big and all(k % 16 == 0 for k in big.values()), big
    _, rep8 = prune_channels(zoo("mobilenetv2"), target_macs=0.5, round_to=8)
    assert any(k % 16 for k in rep8["kept"].values())        # 8 is a real, finer choice
    _, auto = prune_channels(zoo("resnet"), target_macs=0.5)
    assert all(k % 8 == 0 for k in auto["kept"].values()) and any(
        k % 16 for k in auto["kept"].values())
    with pytest.raises(EdgekitError, match="out of reach"):   # explicit: no fallback
        prune_channels(zoo("resnet"), target_macs=0.5, round_to=16)
    _, half = prune_channels(zoo("resnet"), ratio=0.5)           # a 16-channel group halves
    assert set(half["kept"].values()) <= {8, 16} and 8 in half["kept"].values()
    _, whole = prune_channels(zoo("resnet"), ratio=0.5, round_to=16)
    assert all(whole["original"][n] > 16 for n in whole["kept"])  # 16-groups kept whole


@pytest.mark.parametrize("name", ["resnet", "inception",
                                  pytest.param("mobilenetv2", marks=pytest.mark.slow)])
def test_pruned_model_exports_to_onnx_with_parity(zoo, tmp_path, name):
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.export.onnx import to_onnx
    from edgekit.export.parity import compare, run_file
    small, _ = prune_channels(zoo(name), target_macs=0.5)
    x = _x(32)
    to_onnx(small, tmp_path / "small.onnx")
    got = run_file("onnxruntime", tmp_path / "small.onnx", x)
    ref = _predict(small, x)
    fig = compare(ref, got, np.argmax(ref, axis=1), "fp32")
    assert fig["passed"] and fig["max_abs_diff"] < 1e-4, fig


@pytest.mark.parametrize("keep,match", [
    ("nope=3", "not a Conv2D / Dense layer"),
    ("stem=99", "has only 16 channels"),
    ("stem=4,b1_c2=8", "coupled"),
])
def test_bad_keep_refused(zoo, keep, match):
    from edgekit.compress.channels.prune import prune_channels
    from edgekit.compress.prune import parse_keep
    from edgekit.errors import EdgekitError
    with pytest.raises(EdgekitError, match=match):
        prune_channels(zoo("resnet"), keep=parse_keep(keep))


def test_target_macs_cli_on_a_residual_net(tmp_path, run_cli):
    import json
    model = build("resnet", (8, 8, 1), 10, head="logits")
    model.save(str(tmp_path / "resnet.h5"))
    out = tmp_path / "half"
    code, stdout, err = run_cli("compress", tmp_path / "resnet.h5", "--method", "prune",
                                "--structured", "--target-macs", "0.5", "--epochs", "0",
                                "--allow-drop",  # untrained: the guard is not what is tested
                                "--data", "digits", "-o", out)
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["metrics"]["macs"] <= 0.5 * m["metrics"]["before"]["macs"]
    assert m["method"]["params"]["target_macs"] == 0.5
    assert set(m["method"]["params"]["kept"]) <= {"stem", "b1_c1", "b1_c2", "b2_c1", "b2_c2",
                                                  "b2_proj"}
    assert m["method"]["params"]["kept"].get("stem") == m["method"]["params"]["kept"].get("b1_c2")
    code, _, err = run_cli("compress", tmp_path / "resnet.h5", "--method", "prune",
                           "--structured", "--target-macs", "1.5", "--data", "digits",
                           "-o", tmp_path / "bad")
    assert code == 1 and err.startswith("error: --target-macs") and not (tmp_path / "bad").exists()
