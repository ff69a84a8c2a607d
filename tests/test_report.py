"""`edgekit report`: real results from the device bench entry point -> Markdown with ratio
columns and real PNG plots; inputs that are not edgekit results are refused."""
import json
import re

import pytest


@pytest.fixture(scope="module")
def results_files(tmp_path_factory):
    """Three real results JSON files: the tiny model on onnxruntime, OpenVINO, LiteRT."""
    import numpy as np
    from edgekit.runtime.__main__ import TINY_ONNX, TINY_TFLITE, TINY_X, main, tiny_expected
    d = tmp_path_factory.mktemp("results")
    x = np.concatenate([TINY_X, -TINY_X])
    np.savez(str(d / "t.npz"), x=x, y=tiny_expected(x).argmax(1))
    files = []
    for rt, model in (("onnxruntime", TINY_ONNX), ("openvino", TINY_ONNX), ("litert", TINY_TFLITE)):
        f = d / "{}.json".format(rt)
        assert main(["bench", model, "--runtime", rt, "--iterations", "40", "--warmup", "5",
                     "--target", "laptop-cpu", "--npz", str(d / "t.npz"), "--json", str(f)]
                    + (["--device", "CPU"] if rt == "openvino" else [])) == 0
        files.append(f)
    return files


def _rows(md):
    return [line for line in md.splitlines() if line.startswith("| laptop-cpu")]


def test_report_markdown_ratios_and_pngs(results_files, run_cli, tmp_path):
    import matplotlib.pyplot as plt
    out = tmp_path / "rep"
    code, stdout, err = run_cli("report", *results_files, "-o", out, "--baseline", "onnxruntime")
    assert code == 0, err
    md = (out / "report.md").read_text()
    assert "x fastest" in md and "x baseline" in md
    rows = _rows(md)
    assert len(rows) == 3
    p50 = {}
    for f in results_files:
        r = json.loads(f.read_text())
        p50[r["runtime"]] = r["latency_ms"]["p50"]
    best = min(p50.values())
    fastest = min(p50, key=p50.get)
    assert "**fastest**" in rows[0] and fastest in rows[0]  # sorted by p50
    for row in rows:
        rt = re.search(r"laptop-cpu / (\w+)", row).group(1)
        ratios = re.findall(r"([\d.]+)x", row)
        assert float(ratios[0]) == pytest.approx(p50[rt] / best, abs=0.006)
        assert float(ratios[1]) == pytest.approx(p50[rt] / p50["onnxruntime"], abs=0.006)
    for name in ("latency.png", "accuracy_bytes.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert plt.imread(str(png)).shape[0] > 100
        assert "({})".format(name) in md


def test_report_refuses_files_that_are_not_ours(results_files, run_cli, tmp_path):
    cases = {"foreign.json": json.dumps({"model": "x", "latency": 3}),
             "text.json": "latency,3\n",
             "partial.json": json.dumps([{"target": "t", "runtime": "r", "runtime_version": "1",
                                          "batch": 1, "iterations": 3,
                                          "latency_ms": {"p50": 1.0}}])}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        code, _, err = run_cli("report", results_files[0], tmp_path / name, "-o", tmp_path / "o")
        assert code == 1, name
        assert err.startswith("error: {} is not an edgekit results file".format(tmp_path / name))
    assert not (tmp_path / "o" / "report.md").exists()  # nothing half-written
    code, _, err = run_cli("report", tmp_path / "missing.json", "-o", tmp_path / "o")
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli("report", results_files[0], "-o", tmp_path / "o", "--baseline", "ncs2")
    assert code == 1 and "--baseline 'ncs2' matches no result" in err
