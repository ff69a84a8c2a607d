"""``report.html``: one self-contained page a user can sort, hover and compare in a browser.

Written beside ``report.md`` by ``edgekit report`` (bench results) and ``edgekit optimize``
(its Pareto front). Everything is inside the file -- Plotly's own ``plotly.min.js`` (shipped
in the ``plotly`` package) inline, the data as JSON -- so it opens from ``file://`` with no
network, mailed or archived as it is. Sections:

- **latency**: per target and runtime, the distribution as a box (p25-p75, p50 line, whiskers
  min..p99, max and p95 as points; results keep percentiles, not every sample);
- **accuracy vs bytes**: one point per row, the hover naming its artifact and file;
- **table**: every row, sortable by any column (click a header);
- **compare**: two rows side by side (by default the NCS2 row against its most comparable
  CPU row), the p50 ratio, and whether the two are comparable: same model file (sha256),
  batch, precision.

Every string from the results (a runtime called ``<b>`` or ``a|b``) is escaped: ``html.escape``
for the table, ``textContent`` in the page's script, entities for Plotly's labels.
"""
import html
import json
from pathlib import Path

from edgekit.errors import MissingDependency


def plotly_js():
    """The text of plotly.min.js from the installed ``plotly`` package (no network)."""
    try:
        import plotly
    except ImportError:
        raise MissingDependency("report.html needs plotly (its plotly.min.js is embedded): "
                                "pip install plotly")
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise MissingDependency("plotly is installed without package_data/plotly.min.js: "
                                "pip install --force-reinstall plotly")
    return path.read_text(encoding="utf-8").replace("</script", "<\\/script")


def _json_for_script(obj):
    """JSON safe inside <script>: no '<', '>' or '&' can end the element or open a comment."""
    text = json.dumps(obj, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _fmt(value, kind):
    if value is None:
        return "-"
    if kind == "pct":
        return "{:.2%}".format(value)
    if kind == "ms":
        return "{:.3f}".format(value)
    if kind == "int":
        return "{:,}".format(int(value))
    if kind == "ratio":
        return "{:.2f}x".format(value)
    if kind == "float":
        return "{:.1f}".format(value)
    return str(value)


def _table(columns, rows):
    """The sortable table: headers are buttons; each cell carries its sort value."""
    head = "".join(
        '<th data-type="{}" aria-sort="none"><button type="button">{}</button></th>'.format(
            "text" if c["kind"] == "text" else "num", html.escape(c["title"]))
        for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c["key"])
            sort = "" if v is None else (v if c["kind"] == "text" else repr(float(v)))
            cells.append('<td data-value="{}">{}</td>'.format(
                html.escape(str(sort), quote=True), html.escape(_fmt(v, c["kind"]))))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table id="results-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>'
            .format(head, "\n".join(body)))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
nav a{margin-right:1rem}.note{color:#555;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:left;white-space:nowrap}
th button{all:unset;cursor:pointer;font-weight:600}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#f7f7f7}.scroll{overflow-x:auto}
#compare-verdict{font-weight:600;margin:.5rem 0}.ok{color:#176317}.bad{color:#a11}
select{max-width:45%;margin-right:1rem}
"""

_APP_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("edgekit-data").textContent);
  function esc(s) {  // Plotly reads labels as pseudo-HTML: show them as text
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }
  var config = {displaylogo: false, responsive: true};

  // latency distributions
  if (data.latency && data.latency.length && document.getElementById("latency-plot")) {
    var traces = [];
    data.latency.forEach(function (L) {
      var name = esc(L.label);
      if (L.p50 !== undefined && L.min !== undefined) {
        traces.push({type: "box", name: name, x: [name], q1: [L.p25], median: [L.p50],
                     q3: [L.p75], lowerfence: [L.min], upperfence: [L.p99], mean: [L.mean],
                     sd: [L.std], boxmean: true, showlegend: false,
                     hoverinfo: "y+name"});
        traces.push({type: "scatter", mode: "markers", x: [name, name], y: [L.p95, L.max],
                     text: ["p95", "max"], hovertemplate: "%{text}: %{y:.4f} ms<extra>" + name + "</extra>",
                     marker: {symbol: "circle-open", color: "#555"}, showlegend: false});
      } else {
        traces.push({type: "bar", name: name, x: [name], y: [L.p50], showlegend: false,
                     hovertemplate: "p50 %{y:.4f} ms<extra>" + name + "</extra>"});
      }
    });
    Plotly.newPlot("latency-plot", traces, {
      yaxis: {title: {text: "latency per batch, ms (log)"}, type: "log"},
      margin: {t: 20, b: 140}, height: 480}, config);
  }

  // accuracy vs bytes
  if (data.points && data.points.length && document.getElementById("front-plot")) {
    var groups = {};
    data.points.forEach(function (p) {
      var g = p.group || "results";
      (groups[g] = groups[g] || []).push(p);
    });
    var ptraces = Object.keys(groups).map(function (g) {
      var ps = groups[g];
      return {type: "scatter", mode: "markers", name: esc(g),
              x: ps.map(function (p) { return p.bytes; }),
              y: ps.map(function (p) { return 100 * p.accuracy; }),
              text: ps.map(function (p) { return esc(p.hover); }),
              hovertemplate: "%{text}<extra></extra>",
              marker: {size: ps.map(function (p) { return p.chosen ? 16 : 10; }),
                       line: {width: ps.map(function (p) { return p.chosen ? 3 : 0; })}}};
    });
    var front = data.points.filter(function (p) { return p.front; })
      .sort(function (a, b) { return a.bytes - b.bytes; });
    if (front.length > 1) {
      ptraces.push({type: "scatter", mode: "lines", name: "Pareto front", hoverinfo: "skip",
                    line: {shape: "hv", dash: "dot"},
                    x: front.map(function (p) { return p.bytes; }),
                    y: front.map(function (p) { return 100 * p.accuracy; })});
    }
    Plotly.newPlot("front-plot", ptraces, {
      xaxis: {title: {text: "bytes on disk (log)"}, type: "log"},
      yaxis: {title: {text: esc(data.accuracy_title || "accuracy %")}},
      margin: {t: 20}, height: 460}, config);
  }

  // sortable table
  var table = document.getElementById("results-table");
  if (table) {
    var ths = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(ths, function (o) { o.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var num = th.getAttribute("data-type") === "num";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].getAttribute("data-value"), y = b.cells[col].getAttribute("data-value");
          if (x === "" && y === "") return 0;
          if (x === "") return 1;   // missing values last, either way
          if (y === "") return -1;
          var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  // compare two rows
  var cmp = data.compare;
  var selA = document.getElementById("compare-a"), selB = document.getElementById("compare-b");
  if (cmp && selA && selB && data.rows.length > 1) {
    data.rows.forEach(function (r, i) {
      [selA, selB].forEach(function (sel) {
        var o = document.createElement("option");
        o.value = String(i);
        o.textContent = r.label;
        sel.appendChild(o);
      });
    });
    selA.value = String(cmp["default"][0]);
    selB.value = String(cmp["default"][1]);
    var out = document.getElementById("compare-table"), verdict = document.getElementById("compare-verdict");
    function show() {
      var a = data.rows[+selA.value], b = data.rows[+selB.value];
      while (out.rows.length) out.deleteRow(0);
      function line(name, va, vb, note) {
        var tr = out.insertRow();
        [name, va, vb, note || ""].forEach(function (v) { tr.insertCell().textContent = v; });
      }
      line("", a.label, b.label, "");
      cmp.fields.forEach(function (f) {
        line(f.title, a.text[f.key] === undefined ? "-" : a.text[f.key],
             b.text[f.key] === undefined ? "-" : b.text[f.key]);
      });
      var ma = a[cmp.metric], mb = b[cmp.metric];
      var ratio = (ma && mb) ? ma / mb : null;
      line(cmp.metric_title + " ratio (left / right)", ratio === null ? "-" : ratio.toFixed(2) + "x", "",
           ratio === null ? "" : (ratio > 1 ? "left is " + ratio.toFixed(2) + "x slower" :
                                  "left is " + (1 / ratio).toFixed(2) + "x faster"));
      var problems = [], unknown = [];
      cmp.checks.forEach(function (c) {
        var va = a[c.key], vb = b[c.key];
        if (va === null || va === undefined || vb === null || vb === undefined) {
          unknown.push(c.title);
        } else if (String(va) !== String(vb)) {
          problems.push(c.title + " differs (" + va + " vs " + vb + ")");
        }
      });
      verdict.className = problems.length ? "bad" : (unknown.length ? "" : "ok");
      verdict.textContent = problems.length ? "not comparable: " + problems.join("; ") :
        (unknown.length ? "comparable as far as recorded (not recorded: " + unknown.join(", ") + ")" :
         "comparable: same " + cmp.checks.map(function (c) { return c.title; }).join(", "));
    }
    selA.addEventListener("change", show);
    selB.addEventListener("change", show);
    show();
  }
  document.body.setAttribute("data-ready", "1");
})();
"""


def page(title, columns, rows, latency=None, points=None, compare=None, notes=(),
         accuracy_title="accuracy %"):
    """The whole HTML document as a string.

    ``columns``: [{"key", "title", "kind"}] (kind: text | ms | pct | int | ratio | float);
    ``rows``: dicts with ``label`` and the column keys (raw values; formatted here);
    ``latency``: [{"label", "min", "p25", "p50", ...}] (only p50: a bar); ``points``:
    [{"bytes", "accuracy", "hover", "group", "front", "chosen"}]; ``compare``: {"metric",
    "metric_title", "fields": [{"key", "title"}], "checks": [{"key", "title"}], "default": [i, j]}.
    """
    keys = ({c["key"] for c in compare["checks"]} | {compare["metric"]}) if compare else set()
    fields = compare["fields"] if compare else []
    data = {"latency": latency or [], "points": points or [], "compare": compare,
            "accuracy_title": accuracy_title,
            "rows": [dict({k: row.get(k) for k in keys}, label=row["label"],
                          text={f["key"]: _fmt(row.get(f["key"]), f.get("kind", "text"))
                                for f in fields})
                     for row in rows]}
    sections, nav = [], []
    if latency:
        nav.append(("latency", "Latency"))
        sections.append('<section id="latency"><h2>Latency per target and runtime</h2>'
                        '<p class="note">Box: p25-p75, line: p50, dashed: mean, whiskers: '
                        'min..p99, open circles: p95 and max (ms per batch, log scale).</p>'
                        '<div id="latency-plot"></div></section>')
    if points:
        nav.append(("front", "Accuracy vs bytes"))
        sections.append('<section id="front"><h2>Accuracy vs bytes</h2>'
                        '<p class="note">Hover a point for its artifact and file.</p>'
                        '<div id="front-plot"></div></section>')
    nav.append(("table", "Table"))
    sections.append('<section id="table"><h2>All rows</h2><p class="note">Click a column '
                    'header to sort; again to reverse.</p><div class="scroll">{}</div>'
                    '</section>'.format(_table(columns, rows)))
    if compare and len(rows) > 1:
        nav.append(("compare", "Compare"))
        sections.append('<section id="compare"><h2>Compare</h2><p class="note">{}</p>'
                        '<label>left <select id="compare-a"></select></label>'
                        '<label>right <select id="compare-b"></select></label>'
                        '<p id="compare-verdict"></p><div class="scroll">'
                        '<table id="compare-table"></table></div></section>'.format(
                            html.escape(compare.get("note", ""))))
    notes_html = "".join("<p class=\"note\">{}</p>".format(html.escape(n)) for n in notes)
    return """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><h1>{title}</h1><nav>{nav}</nav>{notes}
{sections}
<script>{plotly}</script>
<script type="application/json" id="edgekit-data">{data}</script>
<script>{app}</script>
</body></html>
""".format(title=html.escape(title), css=_CSS,
           nav="".join('<a href="#{}">{}</a>'.format(a, html.escape(t)) for a, t in nav),
           notes=notes_html, sections="\n".join(sections), plotly=plotly_js(),
           data=_json_for_script(data), app=_APP_JS)


# --- bench results (edgekit report) ------------------------------------------------------

RESULT_COLUMNS = [
    {"key": "label", "title": "target / runtime", "kind": "text"},
    {"key": "target", "title": "target", "kind": "text"},
    {"key": "runtime", "title": "runtime", "kind": "text"},
    {"key": "device", "title": "device", "kind": "text"},
    {"key": "precision", "title": "precision", "kind": "text"},
    {"key": "batch", "title": "batch", "kind": "int"},
    {"key": "file", "title": "file", "kind": "text"},
    {"key": "p50", "title": "p50 ms", "kind": "ms"},
    {"key": "p95", "title": "p95 ms", "kind": "ms"},
    {"key": "p99", "title": "p99 ms", "kind": "ms"},
    {"key": "throughput_ips", "title": "throughput /s", "kind": "float"},
    {"key": "cold_start_ms", "title": "cold start ms", "kind": "float"},
    {"key": "accuracy", "title": "accuracy", "kind": "pct"},
    {"key": "bytes", "title": "bytes", "kind": "int"},
    {"key": "x_fastest", "title": "x fastest", "kind": "ratio"},
    {"key": "model_sha", "title": "model sha256", "kind": "text"},
    {"key": "host", "title": "host", "kind": "text"},
]


def _default_pair(rows):
    """The NCS2 (on its stick when there is such a row) against its most comparable partner:
    a row of the same model file, batch and precision (the stick's FP16 file timed on a CPU),
    else a laptop-CPU row. Without an NCS2 row: the two fastest rows."""
    def same(a, b):
        return all(a.get(k) is not None and a.get(k) == b.get(k)
                   for k in ("model_sha256", "batch", "precision"))
    ncs2 = [i for i, r in enumerate(rows) if r["target"] == "ncs2"]
    if ncs2:
        a = next((i for i in ncs2 if str(rows[i].get("device") or "").startswith("MYRIAD")), ncs2[0])
        others = [i for i in range(len(rows)) if i != a]
        b = next((i for i in others if same(rows[a], rows[i])),
                 next((i for i in others if rows[i]["target"] == "laptop-cpu"), None))
        if b is not None:
            return [a, b]
    order = sorted(range(len(rows)), key=lambda i: rows[i]["p50"])
    return order[:2] if len(order) > 1 else [0, 0]


def results_page(results, labels, title="edgekit benchmark report"):
    """report.html for bench results (already validated by :func:`edgekit.bench.load_results`)."""
    best = min(r["latency_ms"]["p50"] for r in results)
    rows, latency, points = [], [], []
    for r, lab in zip(results, labels):
        L = r["latency_ms"]
        sha = r.get("model_sha256") or (r.get("bundle") or {}).get("model_sha256")
        row = {"label": lab, "target": r["target"],
               "runtime": "{} {}".format(r["runtime"], r.get("runtime_version") or "").strip(),
               "device": r.get("device"), "precision": r.get("precision"), "batch": r.get("batch"),
               "file": r.get("file"), "p50": L["p50"], "p95": L["p95"], "p99": L["p99"],
               "throughput_ips": r.get("throughput_ips"), "cold_start_ms": r.get("cold_start_ms"),
               "accuracy": r.get("accuracy"), "bytes": r.get("bytes"),
               "x_fastest": L["p50"] / best if best else 1.0,
               "model_sha256": sha, "model_sha": sha[:16] if sha else None,
               "host": r.get("host"), "artifact": r.get("artifact")}
        rows.append(row)
        latency.append(dict({k: L.get(k) for k in ("min", "p50", "p90", "p95", "p99", "max",
                                                   "mean", "std")},
                            label=lab, p25=L.get("p25", L["p50"]), p75=L.get("p75", L["p50"])))
        if r.get("bytes") and r.get("accuracy") is not None:
            points.append({"bytes": r["bytes"], "accuracy": r["accuracy"], "group": r["target"],
                           "hover": "{}: {:.2%}, {:,} B, file {}, artifact {}".format(
                               lab, r["accuracy"], r["bytes"], r.get("file") or "-",
                               r.get("artifact") or (r.get("bundle") or {}).get("artifact") or "-")})
    compare = {"metric": "p50", "metric_title": "p50 latency",
               "note": "Pick two rows (by default the NCS2 against its most comparable CPU row). They are "
                       "comparable when they ran the same model file (sha256), batch and "
                       "precision.",
               "fields": [{"key": k, "title": t, "kind": kind} for k, t, kind in (
                   ("target", "target", "text"), ("runtime", "runtime", "text"),
                   ("device", "device", "text"), ("file", "file", "text"),
                   ("model_sha256", "model sha256", "text"), ("batch", "batch", "int"),
                   ("precision", "precision", "text"), ("p50", "p50 ms", "ms"),
                   ("p99", "p99 ms", "ms"), ("accuracy", "accuracy", "pct"),
                   ("bytes", "bytes", "int"), ("host", "host", "text"))],
               "checks": [{"key": "model_sha256", "title": "model sha256"},
                          {"key": "batch", "title": "batch"},
                          {"key": "precision", "title": "precision"}],
               "default": _default_pair(rows)}
    return page(title, RESULT_COLUMNS, rows, latency=latency, points=points, compare=compare,
                notes=["x fastest = p50 / the lowest p50 here. Hosts: " + "; ".join(
                    sorted({str(r.get("host")) for r in results}))],
                accuracy_title="test accuracy %")


# --- optimize's front -------------------------------------------------------------------

FRONT_COLUMNS = [
    {"key": "id", "title": "id", "kind": "text"},
    {"key": "label", "title": "candidate", "kind": "text"},
    {"key": "val_accuracy", "title": "val acc", "kind": "pct"},
    {"key": "test_accuracy", "title": "test acc", "kind": "pct"},
    {"key": "bytes", "title": "bytes", "kind": "int"},
    {"key": "params", "title": "params", "kind": "int"},
    {"key": "p50", "title": "p50 ms", "kind": "ms"},
    {"key": "runtime", "title": "runtime", "kind": "text"},
    {"key": "file", "title": "file", "kind": "text"},
    {"key": "status", "title": "", "kind": "text"},
]


def front_page(rows, front, best, target, limits):
    """report.html for ``edgekit optimize``: every measured candidate, the front marked."""
    front_ids = {r["id"] for r in front}
    best_id = best["id"] if best else None
    table, points, latency = [], [], []
    for r in rows:
        status = "chosen" if r["id"] == best_id else ("front" if r["id"] in front_ids else "")
        lat = r.get("latency_ms")
        row = {"id": r["id"], "label": r["label"], "val_accuracy": r.get("val_accuracy"),
               "test_accuracy": r.get("test_accuracy"), "bytes": r.get("bytes"),
               "params": r.get("params"), "p50": lat, "runtime": r.get("runtime"),
               "file": r.get("file"), "status": status, "target": target}
        table.append(row)
        if r.get("bytes") and r.get("val_accuracy") is not None:
            points.append({"bytes": r["bytes"], "accuracy": r["val_accuracy"],
                           "group": "front" if r["id"] in front_ids else "other candidates",
                           "front": r["id"] in front_ids, "chosen": r["id"] == best_id,
                           "hover": "{} {}: {:.2%} validation, {:,} B, {}".format(
                               r["id"], r["label"], r["val_accuracy"], r["bytes"],
                               r.get("artifact") or r.get("file") or "-")})
        if lat is not None:
            latency.append({"label": "{} {}".format(r["id"], r["label"]), "p50": lat})
    lim = ", ".join("{} {}".format(k.replace("_", "-"), v) for k, v in sorted(limits.items())
                    if v is not None) or "none"
    compare = {"metric": "p50", "metric_title": "p50 latency",
               "note": "Pick two candidates. Their latencies are comparable when both ran on "
                       "the same target with the same runtime.",
               "fields": [{"key": k, "title": t, "kind": kind} for k, t, kind in (
                   ("label", "candidate", "text"), ("val_accuracy", "val acc", "pct"),
                   ("test_accuracy", "test acc", "pct"), ("bytes", "bytes", "int"),
                   ("p50", "p50 ms", "ms"), ("runtime", "runtime", "text"))],
               "checks": [{"key": "target", "title": "target"},
                          {"key": "runtime", "title": "runtime"}],
               "default": [0, 1]}
    if best_id is not None and len(table) > 1:
        bi = next(i for i, t in enumerate(table) if t["id"] == best_id)
        compare["default"] = [bi, 0 if bi else 1]
    return page("edgekit optimize: {} (limits: {})".format(target, lim), FRONT_COLUMNS, table,
                latency=latency, points=points, compare=compare,
                notes=["Validation accuracy chose; test accuracy was measured once, for the "
                       "front and the chosen candidate."],
                accuracy_title="validation accuracy %")
