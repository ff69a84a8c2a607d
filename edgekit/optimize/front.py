"""The Pareto front of an optimize run: accuracy x bytes x latency, as table, PNG and Markdown.

Rows are finished candidates (dicts with ``val_accuracy``, ``bytes``, ``latency_ms`` or None,
``label``, ``id`` ...). A row is on the front when no other row is at least as good on every
objective and better on one: validation accuracy (higher), bytes on disk (lower), latency p50
(lower; only when every row has one -- a latency nobody measured is not compared). Latency is
measured, so it is noisy: p50s within :data:`LATENCY_TOLERANCE` of each other count as equal.
Accuracy and bytes are exact, so :func:`pareto` with ``latency=False`` (the study's own
front) is the same in every run of the same seed; the 3-D front may gain or lose a row whose
latency sits at the edge of the tolerance.

Example::

    front = pareto(rows)
    best = choose([r for r in rows if fits(r, limits)], "accuracy")
    write_png(rows, front, "runs/opt/front.png")
"""
from edgekit.errors import EdgekitError

OBJECTIVES = ("accuracy", "bytes", "latency")


LATENCY_TOLERANCE = 0.10       # relative: p50s closer than this are a tie


def study_rows(study):
    """Finished candidates of ``study`` (one row per distinct candidate) as dicts."""
    rows = []
    for ft in study.get_trials(deepcopy=False):
        r = ft.user_attrs.get("result") or {}
        if r.get("state") != "complete" or "same_as" in r:
            continue
        c = ft.user_attrs["candidate"]
        rows.append(result_row(r, "{:03d}".format(ft.number), ft.number, c["label"], c))
    return rows


def result_row(res, id, number, label, cand, **extra):
    """A finished evaluation's result as a row of the table (front, report, front.json)."""
    row = {k: res.get(k) for k in ("val_accuracy", "bytes", "params", "macs", "latency_ms",
                                   "runtime", "file", "artifact", "drop_pts", "rungs",
                                   "seconds", "latency_note", "latency_host")}
    row.update(id=id, number=number, label=label, candidate=cand, latency=res.get("latency"),
               **extra)
    return row


def _better(o, r, latency):
    """-1 / 0 / 1: is ``o`` worse, tied or better than ``r`` on each objective."""
    cmp = [(o["val_accuracy"] > r["val_accuracy"]) - (o["val_accuracy"] < r["val_accuracy"]),
           (o["bytes"] < r["bytes"]) - (o["bytes"] > r["bytes"])]
    if latency:
        a, b = o["latency_ms"], r["latency_ms"]
        cmp.append(0 if abs(a - b) <= LATENCY_TOLERANCE * max(a, b) else (a < b) - (a > b))
    return cmp


def pareto(rows, latency=True):
    """The non-dominated rows, in the order given (``latency=False``: accuracy x bytes)."""
    latency = latency and bool(rows) and all(r.get("latency_ms") is not None for r in rows)
    out = []
    for r in rows:
        dominated = False
        for o in rows:
            if o is r:
                continue
            c = _better(o, r, latency)
            if min(c) >= 0 and max(c) > 0:
                dominated = True
                break
        if not dominated:
            out.append(r)
    return out


def violations(row, limits):
    """[(limit name, value, limit)] a row breaks; ``limits``: max_bytes, max_params,
    max_latency_ms (None: no limit)."""
    out = []
    for key, name, val in (("max_bytes", "--max-bytes", row.get("bytes")),
                           ("max_params", "--max-params", row.get("params")),
                           ("max_latency_ms", "--max-latency-ms", row.get("latency_ms"))):
        lim = limits.get(key)
        if lim is not None and val is not None and val > lim:
            out.append((name, val, lim))
    return out


def excess(row, limits):
    """How far a row is from meeting every limit: the sum of relative overshoots."""
    return sum(float(v) / float(lim) - 1.0 for _, v, lim in violations(row, limits))


def choose(rows, objective="accuracy"):
    """The chosen row among feasible ``rows``: ``accuracy``: most accurate (ties: fewer bytes,
    then lower latency); ``bytes``: fewest bytes (ties: more accurate); ``latency``: lowest p50
    (ties: more accurate)."""
    if objective not in OBJECTIVES:
        raise EdgekitError("--objective must be one of {}, got {!r}".format(
            ", ".join(OBJECTIVES), objective))
    if not rows:
        return None
    inf = float("inf")

    def lat(r):
        return inf if r.get("latency_ms") is None else r["latency_ms"]
    if objective == "accuracy":
        key = (lambda r: (-r["val_accuracy"], r["bytes"], lat(r), r["id"]))
    elif objective == "bytes":
        key = (lambda r: (r["bytes"], -r["val_accuracy"], lat(r), r["id"]))
    else:
        key = (lambda r: (lat(r), -r["val_accuracy"], r["bytes"], r["id"]))
    return min(rows, key=key)


def _pct(x):
    return "-" if x is None else "{:.2f}%".format(100.0 * x)


def _ms(x):
    return "-" if x is None else "{:.3f}".format(x)


COLUMNS = ["id", "candidate", "val acc", "test acc", "bytes", "params", "p50 ms", ""]


def table_rows(rows, best=None):
    return [(r["id"], r["label"], _pct(r["val_accuracy"]), _pct(r.get("test_accuracy")),
             "{:,}".format(r["bytes"]), "-" if r.get("params") is None else
             "{:,}".format(r["params"]), _ms(r.get("latency_ms")),
             "chosen" if best is not None and r["id"] == best["id"] else "") for r in rows]


def markdown(front, best, limits, target):
    """The report section: the front as a Markdown table, the chosen model named."""
    lim = ", ".join("{} {}".format(k.replace("_", "-"), v) for k, v in sorted(limits.items())
                    if v is not None) or "none"
    lines = ["## Pareto front ({}; limits: {})".format(target, lim), "",
             "| " + " | ".join(c or "chosen" for c in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in table_rows(front, best):
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    lines.append("")
    if best is not None:
        lines.append("Chosen: candidate {} ({}), {} validation / {} test accuracy, {:,} bytes."
                     .format(best["id"], best["label"], _pct(best["val_accuracy"]),
                             _pct(best.get("test_accuracy")), best["bytes"]))
    lines.append("Validation accuracy chose; test accuracy was measured once, for these rows.")
    return "\n".join(lines) + "\n"


def write_png(rows, front, path, best=None, max_bytes=None, title="edgekit optimize"):
    """Scatter of every finished candidate (bytes, log scale, vs validation accuracy), the
    front joined by a line, the chosen one circled, --max-bytes as a vertical line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from edgekit.util import atomic_write_bytes
    import io
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["bytes"] for r in rows], [100 * r["val_accuracy"] for r in rows],
               c="0.6", s=18, label="candidates")
    f = sorted(front, key=lambda r: r["bytes"])
    ax.plot([r["bytes"] for r in f], [100 * r["val_accuracy"] for r in f], "o-", c="C0",
            label="Pareto front")
    for r in f:
        ax.annotate(r["id"], (r["bytes"], 100 * r["val_accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if best is not None:
        ax.scatter([best["bytes"]], [100 * best["val_accuracy"]], s=160, facecolors="none",
                   edgecolors="C3", linewidths=2, label="chosen")
    if max_bytes:
        ax.axvline(max_bytes, c="C3", ls="--", lw=1, label="--max-bytes")
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk (target's file)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
