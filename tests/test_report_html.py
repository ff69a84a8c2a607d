"""report.html in a real headless browser (Debian's chromium driven by Playwright): loads from
file:// with no console error and no network request, the table sorts, the compare view
judges comparability, every string is escaped; a screenshot is kept in test-artifacts/.

Needs `apt-get install chromium` (`make system-deps`) and `pip install playwright` (the dev
extra); never `playwright install`. Missing either fails loudly.
"""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
NASTY = "open|vino <b>x</b>"


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), "no {}: apt-get install -y chromium (make system-deps)".format(CHROMIUM)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _open(browser, path, screenshot=None):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(Path(path).resolve().as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=60000)
    assert problems == []
    assert requests == [Path(path).resolve().as_uri()], requests  # the file itself, nothing else
    if screenshot:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    return page


def _column(page, index):
    return page.eval_on_selector_all(
        "#results-table tbody tr", "(rows, i) => rows.map(r => r.cells[i].getAttribute('data-value'))",
        index)


@pytest.fixture(scope="module")
def report_dir(tiny_onnx, tmp_path_factory):
    """`edgekit report` on real bench results of the tiny digits CNN, plus the same result
    relabelled as an NCS2 row (FP16, a runtime name with `|` and `<b>`): the compare view's
    default pair, and the escaping test."""
    from edgekit.bench import bench
    from edgekit.report import report
    tmp = tmp_path_factory.mktemp("report-html")
    laptop = tmp / "laptop.json"
    bench(tiny_onnx.path, "laptop-cpu", runtime="onnxruntime", iterations=50, json_path=laptop)
    one = json.loads(laptop.read_text())
    assert one["model_sha256"] == tiny_onnx.files[one["file"]]["sha256"]
    batch8 = dict(one, batch=8, latency_ms={k: v * 3 for k, v in one["latency_ms"].items()})
    on_cpu = dict(one, target="ncs2", runtime="openvino", device="CPU", precision="fp16",
                  latency_ms={k: v * 4 for k, v in one["latency_ms"].items()})
    stick = dict(one, target="ncs2", runtime=NASTY, device="MYRIAD", precision="fp16",
                 latency_ms={k: v * 2 for k, v in one["latency_ms"].items()})
    names = []
    for name, res in (("batch8", batch8), ("ncs2-cpu", on_cpu), ("ncs2", stick)):
        (tmp / (name + ".json")).write_text(json.dumps(res))
        names.append(tmp / (name + ".json"))
    written = report([laptop] + names, tmp / "report")
    assert tmp / "report" / "report.html" in written
    return tmp / "report"


def test_report_html_loads_offline_sorts_and_compares(browser, report_dir):
    page = _open(browser, report_dir / "report.html", screenshot="report-html.png")
    assert page.locator("#latency-plot .main-svg").count() > 0
    assert page.locator("#front-plot .main-svg").count() > 0
    heads = page.eval_on_selector_all("#results-table th", "ths => ths.map(t => t.innerText)")
    p50 = heads.index("p50 ms")
    page.click("#results-table th:nth-child({}) button".format(p50 + 1))
    values = [float(v) for v in _column(page, p50)]
    assert values == sorted(values) and len(values) == 4
    assert page.get_attribute("#results-table th:nth-child({})".format(p50 + 1), "aria-sort") == "ascending"
    page.click("#results-table th:nth-child({}) button".format(p50 + 1))
    assert [float(v) for v in _column(page, p50)] == sorted(values, reverse=True)
    target = heads.index("target")
    page.click("#results-table th:nth-child({}) button".format(target + 1))
    assert _column(page, target) == sorted(_column(page, target))
    # compare, by default: the stick (left) against the same FP16 file on a CPU (right)
    assert NASTY in page.eval_on_selector("#compare-a", "s => s.selectedOptions[0].textContent")
    assert page.inner_text("#compare-verdict").startswith("comparable: same model sha256")
    assert "0.50x" in page.inner_text("#compare-table")
    # the stick against the laptop's fp32 run of the same file: fp16 vs fp32
    page.select_option("#compare-b", index=0)
    verdict = page.inner_text("#compare-verdict")
    assert verdict.startswith("not comparable") and "precision differs (fp16 vs fp32)" in verdict
    assert "model sha256" not in verdict  # the same file: that check passes
    assert "2.00x" in page.inner_text("#compare-table")
    # two laptop rows of the same file, batch 1 vs 8
    page.select_option("#compare-a", index=0)
    page.select_option("#compare-b", index=1)
    assert "batch differs (1 vs 8)" in page.inner_text("#compare-verdict")


def test_every_string_is_escaped(browser, report_dir):
    page = _open(browser, report_dir / "report.html")
    assert page.locator("#results-table b").count() == 0
    assert NASTY in page.inner_text("#results-table")
    assert NASTY in page.inner_text("#compare-table")
    options = page.eval_on_selector_all("#compare-a option", "os => os.map(o => o.textContent)")
    assert any(NASTY in o for o in options)
    assert len(set(options)) == len(options) == 4  # every row tellable apart (batch 8 named)
    assert any("batch 8" in o for o in options)
    md = (report_dir / "report.md").read_text()
    assert "open\\|vino &lt;b&gt;x&lt;/b&gt;" in md


def test_optimize_front_page_in_the_browser(browser, tmp_path):
    """The page `edgekit optimize` writes, on the rows of a real MNIST search."""
    from edgekit.report_html import front_page
    run = json.loads((REPO / "benchmarks" / "results" /
                      "optimize_mnist_74k_refit_chosen_20261201.json").read_text())
    path = tmp_path / "report.html"
    path.write_text(front_page(run["rows"], run["front"], run["best"], "laptop-cpu",
                               {"max_bytes": 74000}), encoding="utf-8")
    page = _open(browser, path, screenshot="optimize-report-html.png")
    text = page.inner_text("#results-table")
    assert run["best"]["id"] in text and "chosen" in text
    assert page.locator("#front-plot .main-svg").count() > 0
    heads = page.eval_on_selector_all("#results-table th", "ths => ths.map(t => t.innerText)")
    col = heads.index("bytes")
    page.click("#results-table th:nth-child({}) button".format(col + 1))
    values = [float(v) for v in _column(page, col) if v]
    assert values == sorted(values) and len(values) == len(run["rows"])
