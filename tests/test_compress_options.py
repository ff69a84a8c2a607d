"""Each compression option is declared once (edgekit.compress.options) and everything else is
derived from it: the ``edgekit compress`` flags and their help, ``METHOD_OPTIONS``, the method
functions' keyword arguments, and one check with one message for the CLI and the Python API.

No model is trained here: every bad value is refused before the model or the data is read.
"""
import inspect

import pytest

from edgekit.compress import METHOD_OPTIONS, METHODS, compress
from edgekit.compress.options import (EVOLVE_PARAMS, OPTIONS, PREPROCESS_PARTS, cli_options,
                                      resolve)
from edgekit.errors import EdgekitError

FIXED_FLAGS = {"model", "--method", "--data", "-o", "--out", "--force", "--resize", "--help", "-h"}


def _compress_command():
    import typer.main
    from edgekit.cli import app
    return typer.main.get_command(app).commands["compress"]


def test_cli_flags_and_help_are_the_declarations():
    cmd = _compress_command()
    by_name = {p.name: p for p in cmd.params}
    declared = cli_options()
    flags = set()
    for p in cmd.params:
        flags.update(p.opts + p.secondary_opts)
    want = set()
    for o in declared:
        want.update((o.flag or o.flag_name).split("/"))
    assert flags - FIXED_FLAGS == want
    for o in declared:
        assert by_name[o.name].help == o.help, o.name
    # one flag per name, whichever methods share it
    assert len({o.name for o in declared}) == len(declared)


def test_method_options_are_derived():
    assert set(METHOD_OPTIONS) == set(METHODS) == set(OPTIONS)
    for method, opts in OPTIONS.items():
        assert METHOD_OPTIONS[method] == {o.name for o in opts if o.cli}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_functions_take_exactly_the_declared_options(method):
    import importlib
    module, func = METHODS[method].split(":")
    fn = getattr(importlib.import_module(module), func)
    body = inspect.signature(inspect.unwrap(fn)).parameters.values()
    named = {p.name for p in body if p.kind == p.KEYWORD_ONLY} - {"force", "progress"}
    declared = {o.name for o in OPTIONS[method]} - set(PREPROCESS_PARTS)
    if any(p.kind == p.VAR_KEYWORD for p in body):   # knn-slice: evolution options passed on
        declared -= set(EVOLVE_PARAMS)
    assert named == declared
    # what help() shows: the declared defaults
    shown = inspect.signature(fn).parameters
    for o in OPTIONS[method]:
        assert shown[o.name].default == o.default, o.name


# (method, CLI args, Python params, message): the same bad value both ways
BAD = [
    ("prune", ["--sparsity", "1.5"], {"sparsity": 1.5}, "--sparsity must be between 0 and 1"),
    ("prune", ["--sparsity", "abc"], {"sparsity": "abc"}, "--sparsity must be a number, got 'abc'"),
    ("prune", ["--lr", "nan"], {"lr": float("nan")}, "--lr must be a number in (0, 10]"),
    ("prune", ["--batch-size", "0"], {"batch_size": 0}, "--batch-size must be >= 1"),
    ("prune", ["--epochs", "-1"], {"epochs": -1}, "--epochs must be an integer >= 0"),
    ("prune", ["--ratio", "0.5"], {"ratio": 0.5}, "--ratio/--keep/--target-macs need --structured"),
    ("prune", ["--keep", "conv1=x"], {"keep": "conv1=x"}, "--keep takes LAYER=N"),
    ("prune", ["--max-drop", "200"], {"max_drop": 200}, "--max-drop must be between 0 and 100"),
    ("prune", ["--preprocess", "bogus"], {"preprocess": "bogus"}, "unknown --preprocess 'bogus'"),
    ("prune", ["--scale", "0"], {"scale": 0}, "--scale must be > 0"),
    ("prune", ["--preprocess", "unit", "--std", "2"], {"preprocess": "unit", "std": "2"},
     "give --preprocess NAME or --scale/--mean/--std, not both"),
    ("quantize", ["--sparsity", "0.5"], {"sparsity": 0.5}, "--sparsity is not an option of "
     "--method quantize"),
    ("quantize", ["--precision", "fp32"], {"precision": "fp32"}, "--precision must be one of"),
    ("quantize", ["--calibration-samples", "0"], {"calibration_samples": 0},
     "--calibration-samples must be an integer >= 1"),
    ("quantize", ["--io", "int4"], {"io": "int4"}, "--io must be one of float, int8"),
    ("quantize", ["--formats", "tflite,caffe"], {"formats": ["tflite", "caffe"]},
     "unknown quantize format 'caffe'"),
    ("distill", ["--width", "0"], {"width": 0}, "--width must be in (0, 1], got 0"),
    ("distill", ["--alpha", "2"], {"alpha": 2}, "--alpha (weight of the hard-label loss) must be"),
    ("distill", ["--temperature", "-1"], {"temperature": -1}, "--temperature must be > 0"),
    ("distill", ["--refit-epochs", "0"], {"refit_epochs": 0},
     "--refit-epochs must be an integer >= 1, got 0"),
    ("distill", ["--refit-epochs", "2.5"], {"refit_epochs": "2.5"},
     "--refit-epochs must be an integer, got '2.5'"),
    ("knn-slice", ["--max-bytes", "lots"], {"max_bytes": "lots"},
     "--max-bytes must be an integer >= 1 or 'none', got 'lots'"),
    ("knn-slice", ["--max-bytes", "0"], {"max_bytes": 0}, "--max-bytes must be an integer >= 1"),
    ("knn-slice", ["--k", "0"], {"k": 0}, "--k must be an integer >= 1, got 0"),
    ("knn-slice", ["--dims", "-1"], {"dims": -1}, "--dims must be an integer >= 0"),
    ("knn-slice", ["--objective", "speed"], {"objective": "speed"}, "--objective must be one of"),
    ("knn-slice", ["--cut-candidates", "some"], {"cut_candidates": "some"},
     "--cut-candidates must be one of blocks, all"),
    ("knn-slice", ["--pool", "avgx"], {"pool": "avgx"}, "--pool must be avgN, maxN or N"),
    ("knn-slice", ["--min-accuracy", "1.5"], {"min_accuracy": 1.5}, "--min-accuracy must be in"),
    ("knn-slice", ["--evolve", "ga"], {"evolve": "ga"}, "--evolve must be one of cma, pso"),
    ("knn-slice", ["--population", "1"], {"population": 1}, "--population must be an integer >= 2"),
    ("knn-slice", ["--executor", "spark://x"], {"executor": "spark://x"},
     "--executor must be local or dask://HOST:PORT"),
    ("knn-slice", ["--epochs", "3"], {"epochs": 3}, "--epochs is not an option of --method "
     "knn-slice"),
]


@pytest.mark.parametrize("method, args, params, message", BAD,
                         ids=["{}{}".format(m, "".join(a[:1])) + str(i)
                              for i, (m, a, _, _) in enumerate(BAD)])
def test_same_bad_value_same_error_from_cli_and_python(run_cli, tmp_path, method, args, params,
                                                       message):
    model = tmp_path / "never-read.h5"       # refused before the model or data is read
    code, _, err = run_cli("compress", model, "--method", method, "--data", "digits",
                           "-o", tmp_path / "cli", *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and lines and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    with pytest.raises(EdgekitError) as python:
        compress(model, method, "digits", tmp_path / "py", progress=False, **params)
    assert lines[0] == "error: " + str(python.value)
    assert message in str(python.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unknown_method_same_error(run_cli, tmp_path):
    code, _, err = run_cli("compress", tmp_path / "m.h5", "--method", "squeeze", "--data",
                           "digits", "-o", tmp_path / "o")
    with pytest.raises(EdgekitError) as python:
        compress(tmp_path / "m.h5", "squeeze", "digits", tmp_path / "o")
    assert code == 1 and err.splitlines()[0] == "error: " + str(python.value)
    assert "unknown compression method 'squeeze'" in err


def test_values_are_converted_and_defaults_filled():
    v = resolve("knn-slice", {"max_bytes": "74_000", "k": "5", "int8": False})
    assert v["max_bytes"] == 74000 and v["k"] == 5 and v["int8"] is False
    assert v["objective"] == "accuracy" and v["cut"] == "auto"
    assert resolve("knn-slice", {"max_bytes": "NONE"})["max_bytes"] == "none"
    q = resolve("quantize", {"formats": "TFLite, onnx"})
    assert q["formats"] == ["tflite", "onnx"] and q["lr"] == 1e-4 and q["calibration_samples"] == 200
    assert resolve("distill", {})["lr"] == 1e-3 and resolve("prune", {})["lr"] is None
    p = resolve("prune", {"scale": "0.5", "mean": "0.1"})
    assert p["preprocess"] == {"scale": 0.5, "mean": "0.1", "std": None}
    assert not set(PREPROCESS_PARTS) & set(p)


def test_a_new_declared_option_reaches_the_cli_and_the_check(monkeypatch):
    """Adding an option is one line in OPTIONS: the command grows the flag and the check runs."""
    from edgekit.compress import options as o
    extra = o.option("warmup_steps", o.INT, None, "prune: a new option.", o.at_least(1))
    monkeypatch.setitem(o.OPTIONS, "prune", o.OPTIONS["prune"] + (extra,))
    params = {p.name: p for p in o.cli_parameters()}
    assert params["warmup_steps"].default.param_decls[0] == "--warmup-steps"
    assert params["warmup_steps"].default.help == "prune: a new option."
    assert "warmup_steps" in o.method_options()["prune"]
    with pytest.raises(EdgekitError, match="--warmup-steps must be an integer >= 1, got 0"):
        resolve("prune", {"warmup_steps": "0"})
    assert resolve("prune", {"warmup_steps": "7"})["warmup_steps"] == 7
