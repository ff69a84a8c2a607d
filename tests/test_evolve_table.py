"""benchmarks/evolve_table.py's derived figures (issue 31): the per-run correlations between the
held-out and test curves are computed from the stored curves, so ``--replot`` can fill them in
for a results JSON and redraw its two-panel plots without running anything again."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def et():
    spec = importlib.util.spec_from_file_location("evolve_table", str(REPO / "benchmarks" / "evolve_table.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(png, nca=True, flat_test_accuracy=False):
    """A channel run record as the benchmark writes it: held-out looks every 5 generations,
    test points at some of them; held-out NCA rises with test NCA and test accuracy."""
    gens = list(range(0, 60, 5))
    rng = np.random.default_rng(0)
    ho, curve = [], []
    for i, g in enumerate(gens):
        h = {"gen": g, "stage": 0, "accuracy": 0.98 + 0.001 * rng.standard_normal(), "score": 0.0}
        if nca:
            h["nca"] = h["score"] = -0.05 + 0.001 * i
        ho.append(h)
        if i % 2 == 0:
            c = {"gen": g, "accuracy": 0.985 if flat_test_accuracy else 0.985 + 0.0002 * i}
            if nca:
                c["nca"] = -0.06 + 0.001 * i + 0.0001 * rng.standard_normal()
            curve.append(c)
    fit = [{"gen": g, "stage": 0, "mean": -0.05, "best": -0.04, "mean_accuracy": 0.98, "best_accuracy": 0.99}
           for g in range(1, 60)]
    return {"method": "cma", "seed": 0, "space": "channel gain", "generations": 59, "wall_s": 1.0,
            "test_accuracy": 0.986, "selected_generation": 40, "params": {"objective": "nca"},
            "holdout_curve": ho, "test_curve": curve, "fitness_curve": fit, "plot_png": str(png),
            "curve_backprop_accuracy": 0.985}


def test_curve_correlations_from_the_stored_curves(et, tmp_path):
    got = et.curve_correlations(_run(tmp_path / "a.png"))
    assert got["holdout_test_nca_correlation"] > 0.99          # both rise by construction
    assert got["holdout_nca_test_accuracy_correlation"] == pytest.approx(1.0)
    assert -1 <= got["holdout_test_correlation"] <= 1
    # a flat curve has no correlation (None, not nan); runs without NCA get only the accuracy one
    assert et.curve_correlations(_run(tmp_path / "b.png", flat_test_accuracy=True))[
        "holdout_nca_test_accuracy_correlation"] is None
    assert set(et.curve_correlations(_run(tmp_path / "c.png", nca=False))) == {"holdout_test_correlation"}


def test_replot_fills_the_correlations_and_draws_both_panels(et, tmp_path):
    runs = [_run(tmp_path / "nca.png"), _run(tmp_path / "acc.png", nca=False)]
    res = {"columns": [{"column": "60k-5ep", "backprop_test_accuracy": 0.985, "runs": runs}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    et.replot(str(path))
    out = json.loads(path.read_text())["columns"][0]["runs"]
    assert out[0]["holdout_test_nca_correlation"] > 0.99 and "holdout_test_nca_correlation" not in out[1]
    from PIL import Image
    two, one = Image.open(tmp_path / "nca.png"), Image.open(tmp_path / "acc.png")
    assert two.size[0] == one.size[0] and two.size[1] > 1.5 * one.size[1]     # the NCA panel below
