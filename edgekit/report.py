"""``report``: results JSON files -> a Markdown comparison (with ratios), PNG plots and a
self-contained interactive ``report.html`` (:mod:`edgekit.report_html`).

Ratios, not just raw milliseconds: every row's p50 latency divided by the fastest row's
(``x fastest``) and, with ``baseline=``, by a chosen row's (``x baseline``). Plots (matplotlib,
Agg backend): ``latency.png`` — the latency distribution per target/runtime as box plots
(box p25-p75, line p50, whiskers min..p99, dot max); ``accuracy_bytes.png`` — test accuracy
against bytes on disk.

Example::

    report(["laptop.json", "stick.json"], "report/")   # report.md, latency.png, accuracy_bytes.png, report.html
"""
import os
from pathlib import Path

from edgekit.bench import load_results
from edgekit.errors import EdgekitError
from edgekit.util import atomic_write_text


def label(r):
    """'target / runtime (precision)' (+ the method of a compressed model, + device when it
    is not the target's usual one)."""
    text = "{} / {}".format(r["target"], r["runtime"])
    if r.get("precision"):
        text += " ({})".format(r["precision"])
    if r.get("batch") not in (None, 1):
        text += " batch {}".format(r["batch"])
    if r.get("method") and r.get("method") not in ("train", "model"):
        text += " " + str(r["method"])
    if r.get("runtime") == "openvino" and r.get("device") and \
            r.get("device").split(".")[0] != _target_device(r.get("target")):
        text += " on {}".format(r["device"])
    return text


def _target_device(name):
    """The target's own device (targets/T.toml ``device``), or None for an unknown target."""
    from edgekit.targets import as_target
    try:
        return as_target(name)["device"]
    except EdgekitError:
        return None


class _Raw(str):
    """A cell already escaped (it carries edgekit's own Markdown: **fastest**)."""


_MD_SPECIAL = {"|": "\\|", "\\": "\\\\", "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ",
               "\r": " "}


def _cell(text):
    """``text`` from a results file as one Markdown table cell: ``|`` would split the row
    (``\\`` could undo its escape), HTML would be rendered (or run) by a viewer, a newline
    would end the table; all escaped."""
    if isinstance(text, _Raw):
        return text
    return "".join(_MD_SPECIAL.get(ch, ch) for ch in str(text))


def _unique_labels(results):
    """One label per row: clashing labels get their file's name, then a row number."""
    base = [label(r) for r in results]
    labels = []
    for i, lab in enumerate(base):
        if base.count(lab) > 1:
            extra = results[i].get("file") or results[i].get("source_file") or str(i)
            lab = "{} [{}]".format(lab, Path(str(extra)).name)
        labels.append(lab)
    for i, lab in enumerate(labels):
        if labels.count(lab) > 1:
            labels[i] = "{} #{}".format(lab, i + 1)
    return labels


def board_state(r):
    """The board state a result was measured in, as {fact: value} (empty when the device
    recorded none): a Jetson's power mode and clock lock, a Pi's throttling and governor, the
    NCS2's USB link speed (``device_identity.board_state``, stamped by the device)."""
    st = (r.get("device_identity") or {}).get("board_state") or {}
    facts = {}
    if st.get("jetson") is not None:
        facts["power mode"] = st["jetson"].get("power_mode")
        facts["clocks locked"] = st["jetson"].get("clocks_locked")
    if st.get("pi") is not None:
        facts["throttled"] = st["pi"].get("throttled")
        facts["governor"] = st["pi"].get("governor")
    if st.get("ncs2_usb"):
        facts["NCS2 USB Mbit/s"] = sorted(s.get("speed_mbps") or 0 for s in st["ncs2_usb"])
    return facts


def _state_text(facts):
    return ", ".join("{} {}".format(k, v) for k, v in facts.items()) or "state not recorded"


def not_comparable(results, labels=None):
    """[(i, j, why)] for pairs of results of the same target measured in different board
    states (e.g. a Nano in MAXN with locked clocks vs one in 5W): their ratios mean nothing."""
    labels = labels or _unique_labels(results)
    out = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            if results[i].get("target") != results[j].get("target"):
                continue
            a, b = board_state(results[i]), board_state(results[j])
            if (a or b) and a != b:
                out.append((i, j, "`{}` ({}) vs `{}` ({})".format(
                    labels[i], _state_text(a), labels[j], _state_text(b))))
    return out


def _cold_start(r):
    """The cold start cell: a TensorRT engine build is shown beside it, never inside it."""
    if r.get("cold_start_ms") is None:
        return "-"
    text = "{:.1f}".format(r["cold_start_ms"])
    if r.get("engine_cached") is False:
        text += " (+ engine build {:.1f} s)".format((r.get("engine_build_ms") or 0) / 1e3)
    elif r.get("engine_cached") is True:
        text += " (cached engine)"
    return text


def _baseline_index(results, labels, baseline):
    if baseline is None:
        return None
    if isinstance(baseline, int):
        if not 0 <= baseline < len(results):
            raise EdgekitError("--baseline {} is out of range (0..{})".format(baseline, len(results) - 1))
        return baseline
    hits = [i for i, lab in enumerate(labels) if str(baseline).lower() in lab.lower()]
    if not hits:
        raise EdgekitError("--baseline {!r} matches no result (have: {})".format(
            baseline, "; ".join(labels)))
    return hits[0]


def markdown(results, baseline=None):
    """A Markdown table sorted by p50: ratios vs the fastest (and the baseline), fastest marked."""
    labels = _unique_labels(results)
    bi = _baseline_index(results, labels, baseline)
    best = min(r["latency_ms"]["p50"] for r in results)
    base = results[bi]["latency_ms"]["p50"] if bi is not None else None
    cols = ["target / runtime", "file", "device", "batch", "threads", "p50 ms", "p95 ms", "p99 ms",
            "mean ± std ms", "throughput /s", "cold start ms", "accuracy", "bytes", "x fastest"]
    if bi is not None:
        cols.append("x baseline")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    order = sorted(range(len(results)), key=lambda i: results[i]["latency_ms"]["p50"])
    apart = not_comparable(results, labels)
    flagged = {k for i, j, _ in apart for k in (i, j)} | \
        {i for i, r in enumerate(results) if r.get("warnings")}
    for i in order:
        r, L = results[i], results[i]["latency_ms"]
        name = _cell(labels[i]) + (" **fastest**" if L["p50"] == best else "") + \
            (" *(baseline)*" if i == bi else "") + (" (!)" if i in flagged else "")
        cells = [_Raw(name), str(r.get("file", "")), str(r.get("device", "")), str(r.get("batch")),
                 str(r.get("threads") or "default"),
                 "{:.3f}".format(L["p50"]), "{:.3f}".format(L["p95"]), "{:.3f}".format(L["p99"]),
                 "{:.3f} ± {:.3f}".format(L["mean"], L["std"]),
                 "{:.1f}".format(r["throughput_ips"]) if r.get("throughput_ips") else "-",
                 _cold_start(r),
                 "{:.2%}".format(r["accuracy"]) if r.get("accuracy") is not None else "-",
                 "{:,}".format(r["bytes"]) if r.get("bytes") else "-",
                 "{:.2f}x".format(L["p50"] / best if best else 1.0)]
        if bi is not None:
            cells.append("{:.2f}x".format(L["p50"] / base if base else 1.0))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    hosts = sorted({_cell("{} ({} {}, {})".format(r.get("host", "?"), r["runtime"],
                                                  r.get("runtime_version", "?"),
                                                  r.get("timestamp", "")))
                    for r in results})
    lines += ["", "`x fastest` = p50 latency / the lowest p50 in this table (1.00x = fastest)" +
              ("; `x baseline` = p50 / the baseline row's p50." if bi is not None else "."),
              "", "Measured on: " + "; ".join(hosts)]
    if apart:
        lines += ["", "**Not comparable** (same target, different board state; rows marked (!)):"]
        lines += ["- " + why for _, _, why in apart]
    warned = [(labels[i], w) for i, r in enumerate(results) for w in r.get("warnings") or []]
    if warned:
        lines += ["", "**Warnings** recorded with the results (rows marked (!)):"]
        lines += ["- {}: {}".format(_cell(lab), _cell(w)) for lab, w in warned]
    return "\n".join(lines) + "\n"



def plots(results, out_dir):
    """Write latency.png (box plots per target/runtime) and accuracy_bytes.png; returns paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    labels = _unique_labels(results)
    stats = []
    for r, lab in zip(results, labels):
        L = r["latency_ms"]
        stats.append({"label": lab, "med": L["p50"], "q1": L.get("p25", L["p50"]),
                      "q3": L.get("p75", L["p50"]), "whislo": L["min"], "whishi": L["p99"],
                      "fliers": [L["max"]], "mean": L["mean"]})
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(results) + 1.8))
    ax.bxp(stats, vert=False, showmeans=True, showfliers=True)
    ax.set_xscale("log")
    ax.set_xlabel("latency per batch, ms (log): box p25-p75, line p50, whiskers min..p99, o max, ^ mean")
    ax.set_title("edgekit bench: latency distribution per target / runtime")
    fig.tight_layout()
    files = [out_dir / "latency.png"]
    fig.savefig(str(files[0]), dpi=100)
    plt.close(fig)
    pts = [(r["bytes"], r["accuracy"], lab) for r, lab in zip(results, labels)
           if r.get("bytes") and r.get("accuracy") is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for b, a, lab in pts:
            ax.scatter(b / 1024.0, 100 * a, s=30)
            ax.annotate(lab, (b / 1024.0, 100 * a), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("bytes on disk (KiB, log)")
        ax.set_ylabel("test accuracy %")
        ax.set_title("accuracy vs bytes")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        files.append(out_dir / "accuracy_bytes.png")
        fig.savefig(str(files[-1]), dpi=100)
        plt.close(fig)
    return files


def report(result_files, out_dir, baseline=None, title="edgekit benchmark report", force=False):
    """Write ``report.md``, PNG plots and ``report.html`` into a new ``out_dir``; returns the
    written paths.

    Like an artifact, the report is staged beside ``out_dir`` and renamed into place only
    when complete; an existing ``out_dir`` is refused unless ``force`` (then replaced whole).
    Refuses (EdgekitError) any input that is not an edgekit results JSON
    (:func:`edgekit.bench.load_results` checks each against the contract's schema).
    """
    from edgekit.util import check_output, staged_dir
    if not result_files:
        raise EdgekitError("no results files given: pass one or more `edgekit bench --json` files")
    out = Path(out_dir)
    check_output(out, "dir", force=force)
    results = load_results(result_files)
    body = markdown(results, baseline=baseline)
    with staged_dir(out, force=force) as tmp:
        written = [out / p.name for p in plots(results, tmp)]
        figs = "\n".join("![{}]({})".format(p.stem, p.name) for p in written)
        # relative to the report: stays right when the report and its results move together
        sources = "\n".join("- `{}`".format(os.path.relpath(os.path.abspath(str(f)),
                                                            os.path.abspath(str(out))))
                            for f in dict.fromkeys(str(f) for f in result_files))
        atomic_write_text(tmp / "report.md", "# {}\n\n{}\n{}\n\nResults files:\n{}\n".format(
            title, body, figs, sources))
        from edgekit.report_html import results_page
        atomic_write_text(tmp / "report.html", results_page(results, _unique_labels(results),
                                                             title=title))
    return [out / "report.md"] + written + [out / "report.html"]
