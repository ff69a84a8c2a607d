"""Evolutionary kernel optimisation (issue 5): improvement, exact resume, Dask == local, bad input.

Small and real: the `tiny` CNN trained on digits (conftest), its conv trunk up to pool2,
pycma / the PSO on a few generations, a real dask.distributed LocalCluster.
"""
import json
import socket
import time

import numpy as np
import pytest

from edgekit.errors import EdgekitError

KW = dict(ref_samples=300, val_samples=143, progress=False, k=5)


@pytest.fixture(scope="module")
def trunk_and_data(tiny_artifact, digits):
    from edgekit.compress.evolve import slice_trunk
    from edgekit.models import load_model
    trunk = slice_trunk(load_model(tiny_artifact.path), "pool2")
    return trunk, digits


def _perturbed(trunk, scale=1.5, seed=0):
    """A copy of the trunk with big Gaussian noise added to every conv kernel."""
    from edgekit._tf import keras
    clone = keras().models.clone_model(trunk)
    rng = np.random.default_rng(seed)
    new = []
    for w in trunk.get_weights():
        new.append(w + scale * np.std(w) * rng.standard_normal(w.shape).astype(np.float32)
                   if w.ndim == 4 else w.copy())
    clone.set_weights(new)
    return clone


def _run(trunk, ds, **kw):
    from edgekit.compress.evolve import evolve_trunk
    from edgekit._tf import keras
    clone = keras().models.clone_model(trunk)
    clone.set_weights(trunk.get_weights())
    args = dict(KW)
    args.update(kw)
    return evolve_trunk(clone, ds.x_train, ds.y_train, ds.x_val, ds.y_val, **args)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def _strip_time(log):
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in log["generations"]]


@pytest.mark.parametrize("method", ["cma", "pso"])
def test_fitness_improves_on_perturbed_trunk(trunk_and_data, method, tmp_path):
    trunk, ds = trunk_and_data
    noisy = _perturbed(trunk)
    before = _weights(noisy)
    evolved, log = _run(noisy, ds, method=method, strategy="serial", generations=8, population=10,
                        seed=1, checkpoint=tmp_path / "ck")
    gens = log["generations"]
    assert len(gens) == 8 and log["generations_run"] == 8
    so_far = [r["best_so_far"] for r in gens]
    assert so_far == sorted(so_far), "best-so-far must never decrease"
    assert log["fitness_after"]["fitness"] > log["fitness_before"]["fitness"]
    assert log["fitness_after"]["accuracy"] >= log["fitness_before"]["accuracy"]
    assert log["evaluations"] == 1 + 8 * 10
    assert not _same_weights(before, _weights(evolved)), "best weights must be written into the trunk"
    # the logbook is JSON and names its plot: a real PNG
    json.dumps(log)
    png = open(log["plot_png"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert json.loads((tmp_path / "ck" / "logbook.json").read_text())["evaluations"] == log["evaluations"]
    # the evolved trunk's own fitness (recomputed from the model) equals the logbook's
    from edgekit.compress.evolve import _subsample
    from edgekit.compress.evolve.fitness import KnnFitness, trunk_spec
    spec, w = trunk_spec(evolved)
    xr, yr = _subsample(ds.x_train, ds.y_train, KW["ref_samples"], 1, "r")
    xv, yv = _subsample(ds.x_val, ds.y_val, KW["val_samples"], 2, "v")
    f = KnnFitness(spec, xr, yr, xv, yv, k=KW["k"]).evaluate(w[None, :])[0]
    assert f == pytest.approx(log["fitness_after"]["fitness"], abs=1e-9)


@pytest.mark.parametrize("method,strategy", [("cma", "parallel"), ("pso", "serial")])
def test_resume_equals_uninterrupted(trunk_and_data, tmp_path, method, strategy):
    from edgekit.compress.evolve import EvolutionInterrupted
    trunk, ds = trunk_and_data
    noisy = _perturbed(trunk, seed=3)
    common = dict(method=method, strategy=strategy, generations=6, population=6, seed=7, groups=2)
    full, log_full = _run(noisy, ds, checkpoint=tmp_path / "a", **common)

    def kill_at_3(rec):
        if rec["gen"] == 3:
            raise EvolutionInterrupted("simulated kill")
    with pytest.raises(EvolutionInterrupted):
        _run(noisy, ds, checkpoint=tmp_path / "b", callback=kill_at_3, **common)
    # scramble the global RNGs as a fresh process would have them
    np.random.seed(12345)
    resumed, log_res = _run(noisy, ds, checkpoint=tmp_path / "b", **common)
    assert _same_weights(_weights(full), _weights(resumed))
    assert log_res["fitness_after"] == log_full["fitness_after"]
    assert _strip_time(log_res) == _strip_time(log_full)
    assert log_res["evaluations"] == log_full["evaluations"]


def test_checkpoint_from_other_data_or_settings_is_refused(trunk_and_data, tmp_path):
    trunk, ds = trunk_and_data
    common = dict(method="cma", strategy="serial", generations=2, population=4, seed=0,
                  checkpoint=tmp_path / "ck")
    _run(trunk, ds, **common)
    from edgekit.compress.evolve import evolve_trunk
    with pytest.raises(EdgekitError, match="another model or data set"):
        evolve_trunk(trunk, ds.x_train, ds.y_train, ds.x_val[::-1].copy(), ds.y_val[::-1].copy(),
                     **dict(KW, **common))
    with pytest.raises(EdgekitError, match="another model or data set"):
        _run(_perturbed(trunk), ds, **common)
    with pytest.raises(EdgekitError, match="other settings.*method='cma' not 'pso'"):
        _run(trunk, ds, **dict(common, method="pso"))


def test_dask_executor_equals_local(trunk_and_data):
    import distributed
    trunk, ds = trunk_and_data
    noisy = _perturbed(trunk, seed=5)
    common = dict(method="cma", strategy="parallel", generations=3, population=6, seed=2, groups=2)
    local, log_local = _run(noisy, ds, **common)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        remote, log_dask = _run(noisy, ds, executor=address, **common)
    assert log_dask["params"]["executor"] == address
    assert _same_weights(_weights(local), _weights(remote))
    assert _strip_time(log_dask) == _strip_time(log_local)


def test_unreachable_dask_address_fails_fast(trunk_and_data):
    trunk, ds = trunk_and_data
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = time.time()
    with pytest.raises(EdgekitError, match="cannot reach the Dask scheduler"):
        _run(trunk, ds, executor="dask://127.0.0.1:{}".format(port), generations=1, dask_timeout=2)
    assert time.time() - t < 30


def test_dask_scheduler_without_workers_fails_fast(trunk_and_data):
    import distributed
    trunk, ds = trunk_and_data
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        t = time.time()
        with pytest.raises(EdgekitError, match="has no workers"):
            _run(trunk, ds, executor=address, generations=1, dask_timeout=2)
        assert time.time() - t < 30


@pytest.mark.parametrize("kw,msg", [
    (dict(method="ga"), "unknown optimiser 'ga'"),
    (dict(strategy="diagonal"), "unknown strategy 'diagonal'"),
    (dict(population=1), "population must be an integer >= 2"),
    (dict(generations=0), "generations must be"),
    (dict(init="zeros"), "unknown init"),
    (dict(executor="ray://x:1"), "unknown executor"),
    (dict(executor="dask://nohostport"), "is not valid"),
    (dict(time_budget=0), "time budget must be > 0"),
])
def test_bad_input(trunk_and_data, kw, msg):
    trunk, ds = trunk_and_data
    with pytest.raises(EdgekitError, match=msg):
        _run(trunk, ds, **kw)


def test_time_budget_stops_cleanly_and_keeps_start(trunk_and_data):
    trunk, ds = trunk_and_data
    before = _weights(trunk)
    t = time.time()
    evolved, log = _run(trunk, ds, method="pso", generations=10 ** 6, population=4, time_budget=3)
    assert time.time() - t < 30 and log["wall_time_s"] < 15
    assert log["stopped"] == "time_budget" and log["generations_run"] < 10 ** 6
    assert log["fitness_after"]["fitness"] >= log["fitness_before"]["fitness"]
    if log["fitness_after"]["fitness"] == log["fitness_before"]["fitness"]:
        assert _same_weights(before, _weights(evolved))


def test_standalone_wrapper_writes_out_dir(tiny_artifact, digits, tmp_path):
    from edgekit.compress.evolve import evolve
    res = evolve(tiny_artifact.path, digits, cut="pool2", out=tmp_path / "evo", method="pso",
                 strategy="parallel", generations=2, population=4, groups=2, progress=False,
                 ref_samples=300, val_samples=143, k=5, test_ref_samples=500)
    log = res["logbook"]
    assert 0.5 < res["test_accuracy_before"] <= 1.0 and 0.5 < res["test_accuracy_after"] <= 1.0
    assert log["test_accuracy_after"] == res["test_accuracy_after"]
    assert sorted(p.name for p in (tmp_path / "evo").iterdir()) == ["convergence.png", "logbook.json", "trunk.h5"]
    saved = json.loads((tmp_path / "evo" / "logbook.json").read_text())
    assert saved["plot_png"] == "convergence.png" and saved["evaluations"] == log["evaluations"]
    with pytest.raises(EdgekitError, match="already exists"):
        evolve(tiny_artifact.path, digits, cut="pool2", out=tmp_path / "evo", generations=1, progress=False)
    with pytest.raises(EdgekitError, match="no layer 'nope'"):
        evolve(tiny_artifact.path, digits, cut="nope", generations=1, progress=False)


# --------------------------------------------------------------------------- mini-batch mode (issue 31)
MB = dict(batch_size=128, holdout_refs=400, val_samples=None, ref_samples=None, k=5, progress=False)


def _run_mb(trunk, ds, **kw):
    return _run(trunk, ds, **dict(MB, **kw))


@pytest.mark.parametrize("method", ["cma", "pso"])
def test_minibatch_returns_the_held_out_best(trunk_and_data, method):
    """The returned weights are the candidate with the best held-out score — not the last
    candidate and not the generation whose batch fitness was best — and the held-out split
    never enters a fitness batch."""
    from edgekit.compress.evolve import _subsample
    from edgekit.compress.evolve.fitness import BatchKnnFitness, trunk_spec
    trunk, ds = trunk_and_data
    noisy = _perturbed(trunk, scale=1.0, seed=4)
    cands = {}
    evolved, log = _run_mb(noisy, ds, method=method, strategy="serial", generations=10, population=6,
                           seed=3, sigma=1.5, holdout_every=1,
                           candidate_hook=lambda g, v: cands.__setitem__(g, v))
    ho = log["holdout"]
    assert [h["gen"] for h in ho] == list(range(0, 11)) and sorted(cands) == list(range(0, 11))
    scores = [h["score"] for h in ho]
    best = int(np.argmax(scores))                      # first maximum: later ties do not replace it
    assert log["selected_generation"] == ho[best]["gen"]
    assert log["fitness_after"]["fitness"] == scores[best] >= scores[0]
    # this seeded run is one where selection matters: the last candidate is worse on the held-out split
    assert log["selected_generation"] != log["generations_run"] and scores[-1] < scores[best]
    fit_best = max(log["generations"], key=lambda r: r["best"])["gen"]
    assert log["selected_generation"] != fit_best
    # the trunk holds exactly that candidate, and its held-out score recomputes to the logged one
    spec, w = trunk_spec(evolved)
    np.testing.assert_array_equal(w, cands[log["selected_generation"]])
    xr, yr = _subsample(ds.x_train, ds.y_train, MB["holdout_refs"], 5, "r")
    f = BatchKnnFitness(spec, ds.x_train, ds.y_train, ds.x_val, ds.y_val, xr, yr, k=MB["k"], batch_size=128, seed=3)
    assert f.holdout_full(w)[0] == pytest.approx(scores[best], abs=1e-9)
    # batches are fresh per generation, drawn from the training split only
    b0, b1 = f.batch_indices(0), f.batch_indices(1)
    assert len(b0) == 128 and not np.array_equal(b0, b1) and b0.max() < len(ds.x_train)
    np.testing.assert_array_equal(b0, f.batch_indices(0))
    json.dumps(log)


def test_minibatch_early_stop_and_resume(trunk_and_data, tmp_path):
    """patience stops a stage after that many held-out scores without improvement; a killed
    mini-batch run resumes to the uninterrupted result."""
    from edgekit.compress.evolve import EvolutionInterrupted
    trunk, ds = trunk_and_data
    common = dict(method="cma", strategy="serial", generations=16, population=4, seed=0, sigma=3.0,
                  holdout_every=1, patience=2)
    full, log_full = _run_mb(trunk, ds, checkpoint=tmp_path / "a", **common)
    stops = log_full["early_stops"]
    assert stops and log_full["generations_run"] < 16
    for st in stops:   # each early stop came `patience` held-out scores after that stage's best
        stage_scores = [h for h in log_full["holdout"] if h["stage"] == st["stage"]]
        assert [h["gen"] for h in stage_scores][-1] == st["gen"]

    def kill_at_3(rec):
        if rec["gen"] == 3:
            raise EvolutionInterrupted("simulated kill")
    with pytest.raises(EvolutionInterrupted):
        _run_mb(trunk, ds, checkpoint=tmp_path / "b", callback=kill_at_3, **common)
    resumed, log_res = _run_mb(trunk, ds, checkpoint=tmp_path / "b", **common)
    assert _same_weights(_weights(full), _weights(resumed))
    assert _strip_time(log_res) == _strip_time(log_full) and log_res["holdout"] == log_full["holdout"]


@pytest.mark.parametrize("kw,msg", [
    (dict(batch_size=2), "batch_size must be an integer >= 3"),
    (dict(batch_size=64, patience=0), "patience must be"),
    (dict(batch_size=64, cma_variant="full"), "unknown cma_variant"),
    (dict(batch_size=64, precision="int4"), "unknown fitness precision"),
    (dict(batch_size=64, stage_share=(1.0,)), "stage_share has 1 numbers for 2 stages"),
])
def test_minibatch_bad_input(trunk_and_data, kw, msg):
    trunk, ds = trunk_and_data
    with pytest.raises(EdgekitError, match=msg):
        _run(trunk, ds, **kw)


# --------------------------------------------------------------------------- channel gain/bias (issue 31)
def test_channel_fold_and_tables_are_exact(trunk_and_data):
    """The folded trunk computes relu(g (maxpool(z) + t)) (the identity the search rests on), and
    the tabulated distances equal the distances of the folded trunk's own features (grid points)."""
    from edgekit.compress.evolve.channels import (ChannelKnnFitness, fold_channels, pooled_preactivations,
                                                  unfold_channels)
    from edgekit.compress.evolve.fitness import KnnFitness, trunk_spec
    trunk, ds = trunk_and_data
    spec, w0 = trunk_spec(trunk)
    P, Pv = pooled_preactivations(spec, w0, ds.x_train), pooled_preactivations(spec, w0, ds.x_val)
    n_ch = spec[[i for i, e in enumerate(spec) if e["op"] == "conv"][-1]]["kshape"][-1]
    rng = np.random.default_rng(0)
    for metric in ("cosine", "euclidean"):
        fit = ChannelKnnFitness(P, ds.y_train, Pv, ds.y_val, n_ch, k=5, candidates=12, queries=200,
                                batch_size=100, grid=(-0.5, 0.0, 0.5), metric=metric)
        u = rng.uniform(-1, 1, n_ch)
        v = rng.choice(fit.grid, n_ch)                    # thresholds on grid points: tables exact
        w = fold_channels(spec, w0, u, v, fit.scales)
        feats = KnnFitness(spec, ds.x_train[:1], ds.y_train[:1], ds.x_val[:1], ds.y_val[:1]).features
        F, Fv = feats(w, ds.x_train), feats(w, ds.x_val)
        np.testing.assert_allclose(F, np.maximum(np.exp(u) * (P.reshape(len(P), -1, n_ch) + v * fit.scales), 0)
                                   .reshape(len(P), -1), rtol=1e-4, atol=1e-4)
        x = np.concatenate([u, v])
        np.testing.assert_allclose(unfold_channels(spec, w0, w, fit.scales), x, atol=1e-4)
        wt = fit._weights(x)
        if metric == "cosine":
            F, Fv = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in (F, Fv)]
        exact = ((Fv[:, None, :] - F[fit.cand_hold]) ** 2).sum(-1)
        a, b = fit.N_hold.reshape(len(Fv), -1) @ wt, (fit.N_ref.reshape(len(F), -1) @ wt)[fit.cand_hold]
        dot = fit.D_hold.reshape(len(Fv), fit.cand_hold.shape[1], -1) @ wt
        table = 2 - 2 * dot / np.sqrt(a[:, None] * b) if metric == "cosine" else a[:, None] + b - 2 * dot
        np.testing.assert_allclose(table, exact, rtol=1e-3, atol=1e-3)


def test_channel_nca_fitness_is_the_soft_neighbour_log_likelihood(trunk_and_data):
    """The NCA fitness of a batch equals log sum_same exp(-d/T) - log sum exp(-d/T), computed here
    from the folded trunk's own features; Euclidean NCA ignores a common gain (only the metric's
    shape counts), and accuracy is still reported beside it."""
    from edgekit.compress.evolve.channels import ChannelKnnFitness, fold_channels, pooled_preactivations
    from edgekit.compress.evolve.fitness import KnnFitness, trunk_spec
    trunk, ds = trunk_and_data
    spec, w0 = trunk_spec(trunk)
    P = pooled_preactivations(spec, w0, ds.x_train)
    Pv = pooled_preactivations(spec, w0, ds.x_val)
    n_ch = spec[[i for i, e in enumerate(spec) if e["op"] == "conv"][-1]]["kshape"][-1]
    rng = np.random.default_rng(1)
    feats = KnnFitness(spec, ds.x_train[:1], ds.y_train[:1], ds.x_val[:1], ds.y_val[:1]).features
    for metric in ("cosine", "euclidean"):
        fit = ChannelKnnFitness(P, ds.y_train, Pv, ds.y_val, n_ch, k=5, candidates=12, queries=200,
                                batch_size=100, grid=(0.0,), metric=metric, temperature=0.5)
        assert fit.T > 0
        u = rng.uniform(-0.7, 0.7, n_ch)
        F = feats(fold_channels(spec, w0, u, np.zeros(n_ch), fit.scales), ds.x_train)
        if metric == "cosine":
            F = F / np.linalg.norm(F, axis=1, keepdims=True)
        b = fit.batch_indices(3)
        q, cand, y = fit.q_idx[b], fit.cand[b], fit.y_q[b]
        d = ((F[q][:, None, :] - F[cand]) ** 2).sum(-1)
        d = d / 2 if metric == "cosine" else d * float(fit.w0.sum()) / float(np.exp(2 * u).sum())
        z = -(d - d.min(axis=1, keepdims=True)) / fit.T
        same = ds.y_train[cand] == y[:, None]
        want = np.mean(np.log(np.maximum((np.exp(z) * same).sum(1), 1e-6 * np.exp(z).sum(1))) - np.log(np.exp(z).sum(1)))
        got = fit.evaluate_full(u[None], batch=3)[0]
        assert got[0] == pytest.approx(want, rel=1e-3, abs=1e-4)
        assert 0 <= got[1] <= 1 and got[0] <= 0
        shifted = fit.evaluate_full((u + 0.5)[None], batch=3)[0]          # every gain x e^0.5 (in the box)
        assert shifted[0] == pytest.approx(got[0], rel=1e-4, abs=1e-5)
    with pytest.raises(EdgekitError, match="unknown objective"):
        ChannelKnnFitness(P, ds.y_train, Pv, ds.y_val, n_ch, candidates=12, objective="margin")
    for bad in (0, -1.0, float("nan"), "hot"):
        with pytest.raises(EdgekitError, match="temperature must be a number > 0"):
            ChannelKnnFitness(P, ds.y_train, Pv, ds.y_val, n_ch, candidates=12, temperature=bad)


def test_channel_evolution_returns_the_held_out_best(trunk_and_data):
    """Gain/bias search: every replacement of the held-out best beat it by min_improvement, the
    trunk holds the selected candidate, and the held-out queries are never fitness queries."""
    from edgekit._tf import keras
    from edgekit.compress.evolve.channels import evolve_channels
    from edgekit.compress.evolve.fitness import trunk_spec
    trunk, ds = trunk_and_data
    sels = {}
    for method, select, mi in (("cma", "nca", 0.0005), ("pso", "nca", 0.0005), ("pso", "accuracy", 0.001)):
        clone = keras().models.clone_model(trunk)
        clone.set_weights(trunk.get_weights())
        cands = {}
        evolved, log = evolve_channels(clone, ds.x_train, ds.y_train, ds.x_val, ds.y_val, method=method, k=5,
                                       candidates=16, queries=None, batch_size=150, generations=30, sigma=0.3,
                                       holdout_every=1, min_improvement=mi, seed=0, select=select,
                                       candidate_hook=lambda g, v: cands.__setitem__(g, v))
        ho = log["holdout"]
        # the selection score is the chosen held-out measure (accuracy: plus a sub-image tie-breaker)
        for h in ho:
            if select == "nca":
                assert h["score"] == h["nca"] and h["nca"] <= 0
            else:
                assert 0 <= h["score"] - h["accuracy"] < 1.0 / len(ds.y_val)
        assert [h["gen"] for h in ho] == list(range(31)) and log["generations_run"] == 30
        best, sel = ho[0]["score"], 0
        for h in ho[1:]:                      # replay the rule: replace only when better by >= mi
            if h["score"] >= best + mi:
                best, sel = h["score"], h["gen"]
        assert log["selected_generation"] == sel and log["fitness_after"]["fitness"] == best
        assert max(h["score"] for h in ho) >= best, json.dumps(ho)
        sels[(method, select)] = (sel, log["generations_run"],
                                  max(log["generations"], key=lambda r: r["best"])["gen"])
        np.testing.assert_array_equal(trunk_spec(evolved)[1], cands[sel])
        assert log["n_search"] == 2 * 16 and log["n_params"] == trunk_spec(trunk)[1].size
        json.dumps(log)
    # these seeded runs are ones where selection matters: the returned generation is not the
    # start, nor the last one, nor the one with the best batch fitness
    for sel, last, fit_best in sels.values():
        assert 0 < sel and sel not in (last, fit_best), sels


def test_channel_evolution_bad_input(trunk_and_data):
    from edgekit.compress.evolve.channels import channel_layout, evolve_channels
    trunk, ds = trunk_and_data
    with pytest.raises(EdgekitError, match="unknown metric"):
        evolve_channels(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, metric="manhattan", generations=1)
    with pytest.raises(EdgekitError, match="thresholds must be distinct numbers including 0"):
        evolve_channels(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, thresholds=(0.5,), generations=1)
    with pytest.raises(EdgekitError, match="unknown selection 'test'"):
        evolve_channels(trunk, ds.x_train, ds.y_train, ds.x_val, ds.y_val, select="test", generations=1)
    spec = [{"op": "conv", "name": "c", "activation": "relu", "kshape": [3, 3, 1, 4]},
            {"op": "avgpool", "name": "p"}]
    with pytest.raises(EdgekitError, match="last conv -> ReLU -> max pooling"):
        channel_layout(spec)
