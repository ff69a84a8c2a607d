"""Options that do nothing, and what the user reads (issue 34, classes 6 and 7).

Options that would be ignored or mean something else are refused with one line (``--round-to``
without ``--structured``, a ``--round-to`` that removes nothing, ``--target ''``, negative
``--warmup`` / ``--duration``, ``--eval-samples 0``, ``--device`` on a runtime that has none,
``eval --runtime foo``, a runtime whose file the artifact lacks: "export it first"); report
refuses p50 = 0 and escapes what results files say (``|``, HTML) in its Markdown table; the
bench table names the target it used.
"""
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from test_bad_input import GOOD_RESULT, World, assert_one_error_line, listing

BENCH = ["bench", "{onnx}", "--iterations", "2"]
CASES = [
    ("bench-warmup-negative", BENCH + ["--warmup", "-1"], r"--warmup must be >= 0"),
    ("bench-duration-negative", BENCH + ["--duration", "-1"], r"--duration must be >= 0"),
    ("bench-warmup-seconds-negative", BENCH + ["--warmup-seconds", "-0.5"],
     r"--warmup-seconds must be >= 0"),
    ("bench-eval-samples-0", BENCH + ["--eval-samples", "0"],
     r"--eval-samples must be >= 1, got 0 \(omit it"),
    ("bench-device-without-openvino", BENCH + ["--runtime", "onnxruntime", "--device", "MYRIAD"],
     r"--device MYRIAD picks an OpenVINO device, but this run uses onnxruntime"),
    ("bench-empty-target", BENCH + ["--target", ""], r"empty target name"),
    ("export-empty-target", ["export", "{keras}", "--format", "onnx", "--target", " "],
     r"empty target name"),
    ("eval-unknown-runtime", ["eval", "{onnx}", "--data", "digits", "--runtime", "foo"],
     r"unknown --runtime 'foo'"),
    ("eval-runtime-without-file", ["eval", "{keras}", "--data", "digits", "--runtime",
                                   "onnxruntime"],
     r"has no onnx file for --runtime onnxruntime: export it first: edgekit export .* --format onnx"),
    ("eval-litert-without-file", ["eval", "{keras}", "--data", "digits", "--runtime", "litert"],
     r"export it first: edgekit export .* --format tflite"),
    ("prune-round-to-unstructured", ["compress", "{keras}", "--method", "prune", "--data",
                                     "digits", "-o", "{tmp}/p", "--round-to", "8"],
     r"--round-to needs --structured"),
    ("prune-round-to-removes-nothing", ["compress", "{keras}", "--method", "prune", "--structured",
                                        "--data", "digits", "-o", "{tmp}/p", "--round-to", "1000"],
     r"removed no channel .*--round-to 1000: nothing written"),
    ("report-p50-zero", ["report", "{res_zero}", "-o", "{tmp}/rep"], r"latency_ms.p50 is 0"),
]


def _zero(w):
    r = json.loads(json.dumps(GOOD_RESULT))
    r["latency_ms"] = {k: 0.0 for k in r["latency_ms"]}
    p = w.tmp / "zero.json"
    p.write_text(json.dumps(r))
    return p


@pytest.mark.parametrize("args, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_options_that_would_do_nothing_are_refused(args, pattern, tmp_path, request, run_cli,
                                                    monkeypatch):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    world["res_zero"] = str(_zero(world))
    argv = [a.format_map(world) for a in args]
    monkeypatch.chdir(world.tmp)
    before = listing(world.tmp)
    code, out, err = run_cli(*argv)
    assert_one_error_line(code, err, 1, pattern, progress=True)
    assert listing(world.tmp) == before


def test_report_escapes_what_results_files_say(tmp_path, run_cli):
    rows = []
    for i, name in enumerate(["onnx|runtime", "<script>alert(1)</script>", "a\\|b"]):
        r = json.loads(json.dumps(GOOD_RESULT))
        r["runtime"] = name
        r["file"] = "m{}|x.onnx".format(i)
        r["latency_ms"] = {k: v + i for k, v in r["latency_ms"].items()}
        rows.append(r)
    (tmp_path / "r.json").write_text(json.dumps(rows))
    code, out, err = run_cli("report", tmp_path / "r.json", "-o", tmp_path / "rep")
    assert code == 0, err
    text = (tmp_path / "rep" / "report.md").read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("|")]
    unescaped = [len(re.findall(r"(?<!\\)\|", ln)) for ln in table]
    assert len(set(unescaped)) == 1, table  # every row has the header's number of cells
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_bench_table_names_the_target_it_used(tiny_onnx, run_cli):
    code, out, err = run_cli("bench", tiny_onnx.path, "--iterations", "2", "--warmup", "0")
    assert code == 0, err
    assert " on None" not in out and re.search(r"bench .* on [a-z0-9-]+", out), out


@settings(max_examples=80, deadline=None)
@given(warmup=st.integers(-5, 5), duration=st.floats(-10, 10, allow_nan=False),
       warmup_seconds=st.floats(-10, 10, allow_nan=False) | st.sampled_from([float("inf")]),
       eval_samples=st.none() | st.integers(-3, 3))
def test_protocol_numbers_are_taken_or_refused(warmup, duration, warmup_seconds, eval_samples):
    from edgekit.errors import EdgekitError
    from edgekit.runtime.bench import check_protocol
    bad = warmup < 0 or duration < 0 or not (0 <= warmup_seconds < float("inf")) or \
        (eval_samples is not None and eval_samples < 1)
    try:
        check_protocol(1, 5, duration, warmup, warmup_seconds, eval_samples)
    except EdgekitError:
        assert bad
    else:
        assert not bad
