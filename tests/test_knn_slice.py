"""knn_slice: graph-found cuts, one search under a byte budget, predicted = built bytes,
Python/ONNX/OpenVINO agreement, functional models, bad input."""
import json
import subprocess

import numpy as np
import onnx
import pytest

from edgekit.compress.knn.onnx import check_standard_ops
from edgekit.compress.knn.slice import candidate_cuts, input_bytes, knn_slice, pick_cut
from edgekit.errors import EdgekitError
from tests.devices import ov2022_python

ACC_FLOOR = 0.85     # tiny CNN on 8x8 digits reaches ~0.9+; a broken head lands near 0.1
BYTES_SLACK = 300    # predicted vs built ONNX bytes


@pytest.fixture(scope="module")
def auto_art(tmp_path_factory, tiny_artifact, digits):
    out = tmp_path_factory.mktemp("knn") / "auto"
    return knn_slice(tiny_artifact.path, digits, out, cut="auto", int8=True, progress=False)


def _configs(art):
    return json.loads((art.path / "sweep.json").read_text())


def test_auto_searches_every_cut_and_config_and_follows_the_rule(auto_art, tiny_artifact):
    m = auto_art.manifest
    assert m["kind"] == "compressed" and m["method"]["name"] == "knn-slice"
    sw = _configs(auto_art)
    assert sw["sweep"] == m["metrics"]["sweep"]
    assert [r["layer"] for r in sw["sweep"]] == ["pool1", "pool2"]        # block ends only
    rows = sw["configs"]
    # the search covered dims x reference sets x k at every cut, all within the budget
    for layer in ("pool1", "pool2"):
        mine = [r for r in rows if r["layer"] == layer]
        assert {r["k"] for r in mine} == {1, 3, 5, 7, 9}
        assert len({r["dims"] for r in mine}) >= 2 and len({r["prototypes"] for r in mine}) >= 2
    budget = m["method"]["params"]["max_bytes"]
    assert budget == m["metrics"]["input_bytes"] == input_bytes(tiny_artifact.path) > 0
    assert m["method"]["params"]["max_bytes_source"] == "input model bytes"
    assert max(r["bytes"] for r in rows) <= budget
    # the choice is the rule applied to every configuration, and what was built
    best = max(r["val_accuracy"] for r in rows)
    assert sw["chosen"]["val_accuracy"] == best
    assert sw["chosen"]["bytes"] == min(r["bytes"] for r in rows if r["val_accuracy"] == best)
    p = m["method"]["params"]
    assert (p["cut"], p["k"], p["dims"], p["prototypes_per_class"]) == (
        sw["chosen"]["layer"], sw["chosen"]["k"], sw["chosen"]["dims"], sw["chosen"]["prototypes"])
    assert m["metrics"]["val_accuracy_search"] == best
    assert pick_cut(rows, "size")["bytes"] == min(
        r["bytes"] for r in rows if r["val_accuracy"] >= best - 0.005)


def test_bytes_are_predicted_then_built_and_honest(auto_art):
    m = auto_art.manifest["metrics"]
    onnx_path = auto_art.path / "model.onnx"
    assert m["bytes"] == onnx_path.stat().st_size == auto_art.manifest["files"]["model.onnx"]["bytes"]
    assert abs(m["bytes"] - m["bytes_predicted"]) <= BYTES_SLACK
    assert m["bytes"] <= m["input_bytes"]                        # default budget: never bigger
    parts = m["bytes_parts"]
    assert sum(parts.values()) == m["bytes"] and min(parts.values()) >= 0
    assert auto_art.manifest["files"]["trunk.h5"]["inference"] is False
    assert auto_art.manifest["files"]["model.onnx"]["inference"] is True
    n, d = m["prototypes"], m["dims"]
    assert parts["prototypes_labels"] == n * d + n + 4            # int8 + uint8 labels + scale
    assert m["accuracy"] > ACC_FLOOR
    assert m["agreement"] == 1.0
    assert m["accuracy_python"] == m["accuracy_onnx"]


def test_explicit_cut_finds_what_auto_found_for_that_cut(auto_art, tiny_artifact, digits,
                                                         tmp_path):
    """--cut auto runs the same search per cut as --cut NAME: same best configuration."""
    sweep = {r["layer"]: r for r in _configs(auto_art)["sweep"] if "skipped" not in r}
    other = "pool1" if auto_art.manifest["method"]["params"]["cut"] == "pool2" else "pool2"
    art = knn_slice(tiny_artifact.path, digits, tmp_path / "one", cut=other, int8=True,
                    progress=False, allow_drop=True)   # the other cut may be under the guard
    c = _configs(art)["chosen"]
    want = sweep[other]
    assert (c["val_accuracy"], c["dims"], c["prototypes"], c["int8"], c["k"]) == (
        want["val_accuracy"], want["dims"], want["prototypes"], want["int8"], want["k"])
    # the trunk alone is converted here, with every candidate as an output there
    assert abs(c["bytes"] - want["bytes"]) <= BYTES_SLACK
    assert c["val_accuracy"] <= _configs(auto_art)["chosen"]["val_accuracy"]


def test_graph_is_standard_ops_opset13_constant_k(auto_art):
    model = onnx.load(str(auto_art.path / "model.onnx"))
    assert check_standard_ops(model)
    assert [o.version for o in model.opset_import] == [13]
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert [o.name for o in model.graph.output] == ["class_id", "scores"]
    ops = {n.op_type for n in model.graph.node}
    assert {"TopK", "Gather", "ArgMax", "MatMul"} <= ops and not ops & {"Scan", "Loop"}


def _ort_pred(path, x):
    from edgekit.runtime.ort import OrtRunner
    with OrtRunner(path) as r:
        return r.predict(x)


def test_openvino_ir_identical_predictions(auto_art, digits, tmp_path):
    import openvino as ov
    path = auto_art.path / "model.onnx"
    ir = tmp_path / "knn.xml"
    ov.save_model(ov.convert_model(str(path)), str(ir))
    compiled = ov.Core().compile_model(str(ir), "CPU")
    res = compiled(digits.x_test)
    cid = res[compiled.outputs[0]]
    assert np.array_equal(cid.astype(np.int64), _ort_pred(path, digits.x_test))


def test_openvino_2022_loads_and_agrees(auto_art, digits, tmp_path):
    path = auto_art.path / "model.onnx"
    np.save(tmp_path / "x.npy", digits.x_test)
    code = ("import numpy as np, sys\n"
            "from openvino.runtime import Core\n"
            "c = Core(); m = c.read_model(sys.argv[1])\n"
            # f32 as edgekit's runner asks: 2022.3.1's CPU default is bf16 where AMX exists
            "cm = c.compile_model(m, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})\n"
            "x = np.load(sys.argv[2]); r = cm.infer_new_request({0: x})\n"
            "np.save(sys.argv[3], r[cm.outputs[0]].astype(np.int64))\n")
    subprocess.run([ov2022_python(), "-c", code, str(path), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, timeout=120)
    assert np.array_equal(np.load(tmp_path / "y.npy"), _ort_pred(path, digits.x_test))


def test_no_limit_lifts_the_default_budget(tiny_artifact, digits, tmp_path):
    """Every training vector, un-reduced, is bigger than the input model: refused by default,
    built with --max-bytes none (and then the bytes are still predicted right)."""
    kw = dict(cut="pool1", k=3, dims=0, reduction="all", progress=False)
    with pytest.raises(EdgekitError, match="smallest reachable is"):
        knn_slice(tiny_artifact.path, digits, tmp_path / "capped", **kw)
    assert not (tmp_path / "capped").exists()
    full = knn_slice(tiny_artifact.path, digits, tmp_path / "full", max_bytes="none", **kw)
    fm = full.manifest["metrics"]
    assert fm["prototypes"] == len(digits.y_train)
    assert fm["bytes"] > fm["input_bytes"]
    assert full.manifest["method"]["params"]["max_bytes"] is None
    assert abs(fm["bytes"] - fm["bytes_predicted"]) <= BYTES_SLACK
    assert fm["agreement"] == 1.0 and fm["accuracy"] > ACC_FLOOR


def test_budget_rungs_fill_what_fits():
    """The rungs a budget adds past the base grid: ladder rungs that fit, then the largest
    per-class count that fits (capped), nothing when the base grid already reaches it."""
    from edgekit.compress.knn.search import budget_rungs
    base = [10, 30, 100]
    assert budget_rungs(lambda p: p <= 700, 2435, base) == [300, 700]
    assert budget_rungs(lambda p: True, 2435, base) == [300, 1000, 2435]      # capped
    assert budget_rungs(lambda p: p <= 55, 2435, base) == [55]
    assert budget_rungs(lambda p: p <= 55, 40, base) == [40]
    assert budget_rungs(lambda p: p <= 30, 2435, base) == []                 # base reaches it
    assert budget_rungs(lambda p: False, 2435, base) == []                   # nothing fits
    assert budget_rungs(lambda p: True, None, base) == []                    # not searched
    from edgekit.compress.knn.search import head_options
    counts = np.array([4870, 5400])
    assert head_options(None, None, None, None, None, 54000, counts)["fill"] == 2435
    assert head_options(None, 50, None, None, None, 54000, counts)["fill"] is None   # fixed
    assert head_options(None, None, None, None, "all", 54000, counts)["fill"] is None
    assert head_options(None, None, None, None, None, 30, np.array([15, 15]))["fill"] is None


def test_a_larger_budget_grows_the_prototype_grid(tiny_artifact, digits, tmp_path):
    """The default search spends the byte budget it has: past PROTO_GRID, the k-means
    prototypes per class grow to the largest count that fits, so a larger --max-bytes tries
    more prototypes than a smaller one, each within (and filling) its own budget."""
    from edgekit.compress.knn.search import PROTO_GRID
    dims, C = 16, digits.num_classes
    step = C * (dims + 1)                 # bytes of one more int8 prototype (+ label) per class
    kw = dict(cut="pool2", k=1, dims=dims, int8=True, progress=False, allow_drop=True)

    def kmeans_rows(budget, name):
        art = knn_slice(tiny_artifact.path, digits, tmp_path / name, max_bytes=budget, **kw)
        rows = [r for r in _configs(art)["configs"] if r["reduction"] == "kmeans"]
        assert rows and max(r["bytes"] for r in rows) <= budget
        return {r["prototypes"]: r["bytes"] for r in rows}

    big = input_bytes(tiny_artifact.path)
    large = kmeans_rows(big, "large")
    smallest_class = int(min(np.bincount(digits.y_train)))
    most = smallest_class // 2
    # the budget pays past the base grid: the fill (capped at half the smallest class)
    assert max(large) > max(p for p in PROTO_GRID if 2 * p <= smallest_class)
    assert max(large) == most or large[max(large)] + step > big
    # a budget that pays for 20 per class (and half a step more): the grid stops there
    small_budget = large[10] + 10 * step + step // 2
    small = kmeans_rows(small_budget, "small")
    assert max(small) == 20 and 20 not in PROTO_GRID
    assert small[20] <= small_budget < small[20] + step
    assert max(large) > max(small)
    assert set(small) <= set(large) | {20}


def test_candidate_cuts_skip_the_output(tiny_artifact):
    from edgekit.models import load_model
    m = load_model(tiny_artifact.path)
    assert [m.layers[i].name for i in candidate_cuts(m)] == ["pool1", "pool2"]
    assert [m.layers[i].name for i in candidate_cuts(m, "all")] == ["conv1", "pool1", "conv2",
                                                                    "pool2"]


@pytest.mark.parametrize("kwargs, match", [
    ({"cut": "nope"}, "no such layer"),
    ({"cut": "logits"}, "output layer"),
    ({"cut": "99"}, "out of range"),
    ({"cut": "pool2", "k": 50, "prototypes": 2}, "larger than the prototype count"),
    ({"cut": "pool2", "prototypes": 500}, "larger than the smallest class"),
    ({"cut_candidates": "some"}, "--cut-candidates must be one of"),
    ({"max_bytes": "lots"}, "--max-bytes must be an integer >= 1 or 'none'"),
    ({"max_bytes": 0}, "--max-bytes must be an integer >= 1 or 'none'"),
    ({"objective": "speed"}, "--objective must be one of"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tiny_artifact, digits, tmp_path, kwargs,
                                                       match):
    out = tmp_path / "out"
    with pytest.raises(EdgekitError, match=match):
        knn_slice(tiny_artifact.path, digits, out, progress=False, **kwargs)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_max_bytes_nothing_meets_exit_1_after_printing_the_sweep(run_cli, tiny_artifact,
                                                                    tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice", "--data",
                           "digits", "-o", out, "--cut", "auto", "--prototypes", "2",
                           "--max-bytes", "2000")
    assert code == 1
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "smallest reachable is" in line[0] and "--max-bytes" in line[0]
    assert err.splitlines()[-1] == line[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("value, ok", [("none", True), ("NONE", True), ("74_000", True),
                                       ("abc", False), ("-5", False), ("0", False)])
def test_cli_max_bytes_parses_counts_and_none(value, ok):
    from edgekit.compress.options import resolve
    if ok:
        assert resolve("knn-slice", {"max_bytes": value})["max_bytes"] in ("none", 74000)
    else:
        with pytest.raises(EdgekitError, match="--max-bytes must be"):
            resolve("knn-slice", {"max_bytes": value})


def test_cli_prints_each_candidate_as_it_is_scored(run_cli, tiny_artifact, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice",
                                "--data", "digits", "-o", out, "--cut", "auto",
                                "--cut-candidates", "all", "--max-bytes", "none", "--k", "3",
                                "--prototypes", "10", "--int8", "--allow-drop")
    assert code == 0, err
    lines = err.splitlines()
    lines = [l.split("] ", 1)[-1] for l in lines]          # drop the "[ 12.3 s]" prefix
    scored = [l for l in lines if l.startswith("cut ")]
    assert [l.split()[2] for l in scored] == ["conv1", "pool1", "conv2", "pool2"]
    assert [l.split()[1] for l in scored] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("val with" in l and " B [" in l for l in scored)
    assert lines.index(scored[-1]) < [i for i, l in enumerate(lines) if l.startswith("chosen:")][0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"]["params"]["cut_candidates"] == "all"
    assert m["method"]["params"]["max_bytes"] is None


# -- functional models (tests/zoo.py) on digits upsampled to 16x16x3 -------------------

@pytest.fixture(scope="module")
def digits16(tmp_path_factory):
    """digits as 16x16x3 uint8 images (nearest upsampling, grey in 3 channels), as an npz."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.repeat(np.repeat(d.images, 2, axis=1), 2, axis=2)
    x = np.repeat((x * 15).astype(np.uint8)[..., None], 3, axis=3)
    path = tmp_path_factory.mktemp("d16") / "digits16.npz"
    np.savez(path, x=x, y=d.target)
    return "npz:" + str(path)


@pytest.fixture(scope="module")
def resnet_h5(tmp_path_factory, digits16):
    """The zoo's ResNet-style net (Add shortcuts, BatchNorm, softmax head), trained briefly."""
    from edgekit.data import load_data
    from tests.zoo import build, train_plain
    ds = load_data(digits16)
    model = train_plain(build("resnet", ds.input_shape, 10, head="softmax"), ds.x_train,
                        ds.y_train, epochs=6)
    path = tmp_path_factory.mktemp("resnet") / "resnet.h5"
    model.save(str(path), include_optimizer=False)
    acc = float(np.mean(np.argmax(model.predict(ds.x_test, verbose=0), 1) == ds.y_test))
    return path, acc


def test_functional_resnet_is_cut_at_block_ends_and_stays_within_its_bytes(resnet_h5, digits16,
                                                                           tmp_path):
    path, keras_acc = resnet_h5
    art = knn_slice(path, digits16, tmp_path / "knn", cut="auto", int8=True, progress=False)
    m = art.manifest
    sweep = m["metrics"]["sweep"]
    assert [r["layer"] for r in sweep] == ["b1_out", "b2_out", "gap"]  # after each Add; the GAP
    for r in sweep:     # a wide cut needs a PCA matrix bigger than the whole input model
        if "skipped" in r:
            assert r["smallest_bytes"] > path.stat().st_size and r["in_dims"] > 512
        else:
            assert r["bytes"] <= path.stat().st_size and r["configs"] > 0
    assert m["method"]["params"]["cut"] in [r["layer"] for r in sweep if "skipped" not in r]
    assert m["metrics"]["bytes"] <= path.stat().st_size
    assert abs(m["metrics"]["bytes"] - m["metrics"]["bytes_predicted"]) <= BYTES_SLACK
    assert m["metrics"]["agreement"] == 1.0
    assert m["metrics"]["accuracy"] >= keras_acc - 0.05, (m["metrics"]["accuracy"], keras_acc)


@pytest.mark.parametrize("name, blocks, absent", [
    ("resnet", ["b1_out", "b2_out", "gap"], ["stem_relu", "b1_c1_relu", "b2_proj_bn"]),
    ("inception", ["i1_concat", "pool", "i2_concat", "gap"], ["i1_3x3_relu", "stem_relu"]),
    ("separable", ["pool1", "gap"], ["dw2_relu"]),
    ("sequential", ["p1", "fc"], ["c1_bn", "drop"]),
])
@pytest.mark.parametrize("head", ["softmax", "logits"])
def test_candidate_cuts_are_block_ends_found_from_the_graph(name, blocks, absent, head):
    from tests.zoo import build
    m = build(name, (16, 16, 3), 10, head=head)
    got = [m.layers[i].name for i in candidate_cuts(m)]
    assert got == blocks
    every = [m.layers[i].name for i in candidate_cuts(m, "all")]
    assert set(blocks) <= set(every) and not set(absent) & set(got)
    head_names = {"probs", "logits"}
    assert not head_names & set(every)


def test_nested_mobilenetv2_is_opened_up_and_cut_after_blocks():
    """keras.applications.MobileNetV2 called as one layer: its blocks become candidates (the
    residual Adds, the strided / projection block ends, the global pooling), its insides
    (expand / depthwise activations) do not; the opened-up model computes the same."""
    from edgekit.compress.knn.cuts import flatten_nested
    from tests.zoo import build
    m = build("mobilenetv2", (32, 32, 3), 10)
    flat = flatten_nested(m)
    x = np.random.RandomState(0).rand(3, 32, 32, 3).astype(np.float32)
    assert np.allclose(m.predict(x, verbose=0), flat.predict(x, verbose=0), atol=1e-5)
    got = [flat.layers[i].name for i in candidate_cuts(flat)]
    assert got[-1].startswith("global_average_pooling2d")
    adds = [n for n in got if n.endswith("_add")]
    assert len(adds) == 10                                        # MobileNetV2's residual blocks
    assert "block_1_project_BN" in got and "block_13_project_BN" in got
    assert not [n for n in got if "_expand_" in n or "depthwise" in n]    # inside blocks
    assert len(candidate_cuts(flat, "all")) > len(got)
    # a model with every cut as an output is built from the opened-up graph's own nodes
    # (layer.output is the nested graph's node: "Graph disconnected")
    from edgekit.compress.knn.features import multi_output_model
    cuts = candidate_cuts(flat)
    multi = multi_output_model(flat, cuts)
    outs = multi.predict(x, verbose=0)
    assert len(outs) == len(cuts) and outs[-1].shape == (3, flat.layers[cuts[-1]].output_shape[-1])


@pytest.mark.slow
def test_mobilenetv2_knn_slice_end_to_end(tmp_path):
    """MobileNetV2 (nested, softmax head) trained briefly on digits at 32x32x3: cut auto."""
    from sklearn.datasets import load_digits
    from edgekit.data import load_data
    from tests.zoo import build, train_plain
    d = load_digits()
    x = np.repeat(np.repeat(d.images, 4, axis=1), 4, axis=2)
    x = np.repeat((x * 15).astype(np.uint8)[..., None], 3, axis=3)
    np.savez(tmp_path / "d32.npz", x=x, y=d.target)
    ds = load_data("npz:" + str(tmp_path / "d32.npz"))
    model = train_plain(build("mobilenetv2", ds.input_shape, 10), ds.x_train, ds.y_train,
                        epochs=3)
    model.save(str(tmp_path / "m.h5"), include_optimizer=False)
    art = knn_slice(tmp_path / "m.h5", ds, tmp_path / "knn", progress=False)
    m = art.manifest["metrics"]
    assert m["bytes"] <= (tmp_path / "m.h5").stat().st_size
    assert abs(m["bytes"] - m["bytes_predicted"]) <= BYTES_SLACK
    assert m["agreement"] == 1.0 and len(m["sweep"]) >= 10


def test_pca_groups_under_a_memory_cap_give_the_same_features(tiny_artifact, digits, monkeypatch):
    """Candidates whose PCA fit matrices do not fit FIT_MEMORY together are fitted in groups
    (the trunk runs once per group); the features do not depend on the grouping."""
    from edgekit.compress.knn import features as kf
    from edgekit.models import load_model
    m = load_model(tiny_artifact.path)
    cuts = candidate_cuts(m)
    multi = kf.multi_output_model(m, cuts)
    spec = [(j, i, m.layers[i].name) for j, i in enumerate(cuts)]
    x_ref, y_ref, x_val = digits.x_train, digits.y_train, digits.x_val

    def run():
        said = []
        feats = kf.cut_features(multi, spec, x_ref, y_ref, x_val, max_dims=32, fit_samples=300,
                                say=said.append)
        return feats, said
    one, said_one = run()
    widest = max(f.in_dims for f in one)
    monkeypatch.setattr(kf, "FIT_MEMORY", 4 * widest * 300 + 1)
    two, said_two = run()
    assert not [s for s in said_one if "group" in s]
    assert [s for s in said_two if "group 2/2" in s]
    for a, b in zip(one, two):
        assert a.fit_samples == b.fit_samples and 290 <= a.fit_samples <= 300
        assert np.allclose(a.ref["pca"], b.ref["pca"], atol=1e-5)
        assert np.allclose(a.val["pca"], b.val["pca"], atol=1e-5)
        assert a.ref["pca"].shape == (len(x_ref), 32) and a.val["pca"].shape == (len(x_val), 32)
        assert a.ref["raw"].shape == (len(x_ref), a.in_dims)     # narrow: kept un-reduced too


# -- --evolve: the trunk evolved for the k-NN before the head is fitted ------------------

def test_cli_evolve_channels_writes_the_held_out_best_trunk(run_cli, tiny_artifact, tmp_path):
    """`--evolve cma` (default space: the last conv's per-filter gains) runs, the artifact carries
    the logbook and its plot, and the manifest says which space was searched."""
    out = tmp_path / "out"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice", "--data", "digits",
                           "-o", out, "--cut", "pool2", "--k", "3", "--max-bytes", "none",
                           "--evolve", "cma", "--time-budget", "4", "--seed", "1", "--allow-drop")
    assert code == 0, err
    assert "per-filter gains" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"]["params"]["evolve"] == "cma"
    assert m["method"]["params"]["evolve_params"]["evolve_space"] == "channels"
    log = json.loads((out / "logbook.json").read_text())
    assert log["space"] == "channel gain" and log["params"]["objective"] == "nca"
    assert log["params"]["metric"] == "cosine"          # the head L2-normalises its features
    assert log["selected_generation"] in [h["gen"] for h in log["holdout"]]
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra, words", [
    (["--checkpoint", "ck"], "--checkpoint applies to --evolve-space kernels only"),
    (["--evolve-space", "genes"], "--evolve-space must be one of channels, kernels"),
])
def test_cli_evolve_refusals_are_one_line(run_cli, tiny_artifact, tmp_path, extra, words):
    out = tmp_path / "out"
    args = ["compress", tiny_artifact.path, "--method", "knn-slice", "--data", "digits", "-o", out,
            "--k", "3", "--max-bytes", "none", "--evolve", "cma", "--time-budget", "2"]
    code, _, err = run_cli(*(args + ["--cut", "pool2"] + extra))
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert code == 1 and len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_cli_evolve_kernels_space_still_runs_evolve_trunk(run_cli, tiny_artifact, tmp_path):
    """`--evolve-space kernels` goes to evolve_trunk (every conv weight), with its own options."""
    out = tmp_path / "out"
    code, _, err = run_cli("compress", tiny_artifact.path, "--method", "knn-slice", "--data", "digits",
                           "-o", out, "--cut", "pool2", "--k", "3", "--max-bytes", "none",
                           "--evolve", "pso", "--evolve-space", "kernels", "--generations", "2",
                           "--population", "4", "--strategy", "serial", "--allow-drop")
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["method"]["params"]["evolve_params"]["evolve_space"] == "kernels"
    log = json.loads((out / "logbook.json").read_text())
    assert log["method"] == "pso" and log["strategy"] == "serial" and log["generations"]
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_evolve_channels_refuses_a_cut_after_batch_norm_in_one_line(run_cli, tmp_path):
    """A Keras 3 Sequential saved with model.save (tests/zoo.py): its block conv -> ReLU ->
    BatchNorm -> max-pool does not commute with per-filter gains, so --evolve-space channels is
    refused at that cut in one line, naming the way out, and nothing is written."""
    from edgekit.data import load_data
    from tests.zoo import build, save_keras3, train_plain
    ds = load_data("digits")
    m = build("sequential", ds.x_train.shape[1:], 10, keras3=True)
    train_plain(m, ds.x_train, ds.y_train, epochs=3)
    path = save_keras3(m, tmp_path / "seq", formats=("keras3",))["keras3"]
    out = tmp_path / "out"
    code, _, err = run_cli("compress", path, "--method", "knn-slice", "--data", "digits", "-o", out,
                           "--cut", "p1", "--k", "3", "--max-bytes", "none", "--evolve", "cma",
                           "--time-budget", "2", "--allow-drop")
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert "last conv -> ReLU -> max pooling" in lines[0] and "--evolve-space kernels" in lines[0]
    assert "Traceback" not in err and not out.exists()
