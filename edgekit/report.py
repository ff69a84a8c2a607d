"""``report``: results JSON files -> a Markdown comparison (with ratios) and PNG plots.

Example::

    report(["laptop.json", "ncs2.json"], "report/")   # report/report.md, latency.png, accuracy_bytes.png
"""
from pathlib import Path

from edgekit.bench import load_results
from edgekit.util import atomic_write_text


def _label(r):
    return "{} / {}{}".format(r["target"], r["runtime"],
                              " ({})".format(r["precision"]) if r.get("precision") else "")


def markdown(results):
    """A Markdown table: one row per result, p50 ratio vs the fastest, fastest marked."""
    best = min(r["latency_ms"]["p50"] for r in results)
    lines = ["| target / runtime | file | device | batch | p50 ms | p95 ms | p99 ms | mean ± std ms "
             "| throughput ips | cold start ms | accuracy | bytes | x fastest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["latency_ms"]["p50"]):
        L = r["latency_ms"]
        star = " **fastest**" if L["p50"] == best else ""
        lines.append("| {}{} | {} | {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} ± {:.3f} | {} | {} | {} | {} | {:.2f}x |".format(
            _label(r), star, r.get("file", ""), r.get("device", ""), r.get("batch"), L["p50"],
            L["p95"], L["p99"], L["mean"], L["std"],
            "{:.1f}".format(r["throughput_ips"]) if r.get("throughput_ips") else "-",
            "{:.1f}".format(r["cold_start_ms"]) if r.get("cold_start_ms") is not None else "-",
            "{:.2%}".format(r["accuracy"]) if r.get("accuracy") is not None else "-",
            "{:,}".format(r["bytes"]) if r.get("bytes") else "-",
            L["p50"] / best if best else 1.0))
    hosts = sorted({"{} ({})".format(r.get("host", "?"), r.get("timestamp", "")) for r in results})
    lines += ["", "Hosts: " + "; ".join(hosts),
              "", "`x fastest` = p50 latency / the lowest p50 in this table."]
    return "\n".join(lines) + "\n"


def plots(results, out_dir):
    """latency.png (p50 bars with p5-p95-like whiskers from p50..p99) and accuracy_bytes.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    labels = [_label(r) for r in results]
    p50 = [r["latency_ms"]["p50"] for r in results]
    lo = [r["latency_ms"]["p50"] - r["latency_ms"]["min"] for r in results]
    hi = [r["latency_ms"]["p99"] - r["latency_ms"]["p50"] for r in results]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(results) + 1.5))
    ax.barh(labels, p50, xerr=[lo, hi], color="#4477aa", capsize=4)
    ax.set_xlabel("latency ms (bar p50, whiskers min..p99)")
    ax.set_title("edgekit bench: latency per target / runtime")
    fig.tight_layout()
    files = [out_dir / "latency.png"]
    fig.savefig(files[0], dpi=100)
    plt.close(fig)
    pts = [(r["bytes"], r["accuracy"], _label(r)) for r in results
           if r.get("bytes") and r.get("accuracy") is not None]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for b, a, lab in pts:
            ax.scatter(b / 1024.0, 100 * a)
            ax.annotate(lab, (b / 1024.0, 100 * a), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("model bytes on disk (KiB, log)")
        ax.set_ylabel("test accuracy %")
        ax.set_title("accuracy vs bytes")
        fig.tight_layout()
        files.append(out_dir / "accuracy_bytes.png")
        fig.savefig(files[-1], dpi=100)
        plt.close(fig)
    return files


def report(result_files, out_dir):
    """Write ``report.md`` and PNG plots into ``out_dir``; returns the written paths."""
    results = load_results(result_files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    atomic_write_text(md, "# edgekit benchmark report\n\n" + markdown(results))
    return [md] + plots(results, out)
