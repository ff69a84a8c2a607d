"""``edgekit optimize``: give the constraints, get the Pareto front and the model that fits.

One search over every method edgekit has -- structured pruning to MACs targets, distillation
to derived and built-in students, k-NN slicing, int8 / fp16 in the formats the target runs,
and chains of them -- against a target's rules and the user's limits, with Optuna
(:mod:`~edgekit.optimize.study`). Each candidate is a normal artifact, measured on the
target's runtime with the one benchmark protocol (:mod:`~edgekit.optimize.evaluate`).

Outputs in ``out``: ``candidates/NNN/`` (one artifact per finished trial, manifest and all;
a chain's earlier steps in ``candidates/NNN.steps/``), ``best/`` (a copy of the chosen one,
ready for ``export`` / ``deploy``), ``front.json``, ``front.png``, ``report.md`` (the front as
a Markdown section), ``report.html`` (the same front, interactive: :mod:`edgekit.report_html`), ``study.db`` (the Optuna study: the same ``out`` resumes it) and
``steps/`` (each trained step once, keyed by the chain up to it: candidates that share a
teacher assistant or a student copy it instead of training it again).

Example::

    from edgekit.optimize import optimize
    res = optimize("runs/seed", "mnist:../shared/datasets/mnist", "runs/opt",
                   target="laptop-cpu", max_bytes=16000, budget="60m")
    res["best"]["test_accuracy"], res["best"]["bytes"]
"""
import contextlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

from edgekit.deadline import BUDGET_UNITS, parse_budget  # noqa: F401 (API; compress --budget too)
from edgekit.errors import EdgekitError
from edgekit.optimize.front import result_row, study_rows as _rows  # noqa: F401 (API)

DEFAULT_TRIALS = 20
DEFAULT_BATCH = 2
RESULT_FILES = ("front.json", "front.png", "report.md", "report.html")


class NothingFits(EdgekitError):
    """No candidate met the limits (the message names the closest and what it breaks)."""


def _positive_int(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) and not (
            isinstance(v, float) and v.is_integer()):
        raise EdgekitError("{} must be a whole number >= 1, got {!r}".format(name, v))
    if int(v) < 1:
        raise EdgekitError("{} must be >= 1, got {}".format(name, v))
    return int(v)


def _positive_float(name, v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise EdgekitError("{} must be a number, got {!r}".format(name, v)) from None
    if not math.isfinite(f) or f <= 0:
        raise EdgekitError("{} must be > 0, got {}".format(name, v))
    return f


def parse_methods(methods):
    """``prune,distill`` / a list -> list of shrink kinds (None: all)."""
    from edgekit.optimize.space import KINDS
    if methods is None:
        return None
    items = [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    items = [m for m in items if m]
    bad = [m for m in items if m not in KINDS]
    if bad or not items:
        raise EdgekitError("--methods takes a comma list of {}, got {!r}".format(
            ", ".join(KINDS), methods))
    return list(dict.fromkeys(items))


def optimize(model, data, out, target=None, host=None, max_bytes=None, max_latency_ms=None,
             max_params=None, max_drop=None, objective="accuracy", budget=None, trials=None,
             executor="local", seed=0, force=False, methods=None, batch=DEFAULT_BATCH,
             max_epochs=None, bench_iterations=100, deploy_options=None, formats=None,
             progress=True):
    """Search compressions of ``model`` for ``target`` under the limits; returns a summary
    dict (``best``, ``front``, ``rows``, ``trials``, paths). Raises :class:`NothingFits`
    (no ``out/best``) when no candidate meets the limits.

    ``budget``: seconds or ``"45m"``; ``trials``: total trials of the study (default 20 without a
    budget, unlimited with one). ``methods``: shrink moves to try (``none,prune,distill,
    prune+distill,distill+distill,distill+knn,knn``). ``batch``: trials proposed at once (the
    same for every executor, so results do not depend on it). ``max_epochs``: cap on each training step's epochs (default:
    budgeted in optimizer steps). ``host``: time candidates on the device (``deploy --bench``;
    ``deploy_options``: identity, known_hosts, accept_new_host_key, remote_python, ...).
    """
    from edgekit.compress.guard import DEFAULT_MAX_DROP, check_max_drop
    from edgekit.optimize.executor import check_executor
    from edgekit.optimize.front import OBJECTIVES
    from edgekit.targets import default_target, load_target
    # -- every input checked before any work -------------------------------------------------
    t = load_target(target or default_target())
    target = t["name"]
    max_bytes = _positive_int("--max-bytes", max_bytes)
    max_params = _positive_int("--max-params", max_params)
    max_latency_ms = _positive_float("--max-latency-ms", max_latency_ms)
    max_drop = check_max_drop(DEFAULT_MAX_DROP if max_drop is None else max_drop)
    if objective not in OBJECTIVES:
        raise EdgekitError("--objective must be one of {}, got {!r}".format(
            ", ".join(OBJECTIVES), objective))
    budget_s = parse_budget(budget)
    trials = _positive_int("--trials", trials)
    if trials is None:
        trials = DEFAULT_TRIALS if budget_s is None else 10 ** 6
    batch = _positive_int("--batch", batch)
    max_epochs = _positive_int("--epochs", max_epochs)
    bench_iterations = _positive_int("--iterations", bench_iterations)
    executor = check_executor(executor)
    kinds = parse_methods(methods)
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    if formats is not None:
        bad = [f for f in formats if f not in t["formats"]]
        if bad or not formats:
            raise EdgekitError("--formats {!r}: {} runs {}".format(
                ",".join(formats), target, ",".join(t["formats"])))
    if host is not None:
        from edgekit.deploy.hosts import parse_host
        parse_host(host)
    elif max_latency_ms is not None or objective == "latency":
        from edgekit.targets import machine_check
        if not machine_check(t)["ready"]:
            raise EdgekitError("{} is not this machine: give --host [USER@]HOST to time "
                               "candidates on it ({} needs measured latency)".format(
                                   target, "--max-latency-ms" if max_latency_ms is not None
                                   else "--objective latency"))
    out = Path(out)
    with _owned_out(out, force) as owned:
        from edgekit.adapt import fit_data
        from edgekit.data import load_data
        from edgekit.models import keras_accuracy, load_model, model_sha256
        from edgekit.onnx_model import refuse_training
        refuse_training(model, "optimize")
        ds = load_data(data)
        net = load_model(model)
        from edgekit.modelio.savedmodel import require_graph
        require_graph(net, model, "optimize (it prunes, distills and slices)")
        fitted = fit_data(ds, net)
        from edgekit.models import check_model_fits
        check_model_fits(net, fitted)
        if host is not None:  # the device is checked before the training it will wait for
            from edgekit.deploy.verb import check_device
            dev = {k: v for k, v in (deploy_options or {}).items()
                   if k in ("identity", "known_hosts", "accept_new_host_key", "remote_python",
                            "remote_dir")}
            check_device(host, target, log=print if progress else (lambda msg: None), **dev)
        if force and out.exists():
            shutil.rmtree(out)
            owned.created = True  # the old study is gone: a failed start leaves nothing
        out.mkdir(parents=True, exist_ok=True)
        model_dir = _input_artifact(model, net, fitted, out)
        base_val = keras_accuracy(net, fitted.x_val, fitted.y_val)
        from edgekit.optimize.space import Space
        space = Space.for_model(net, t, kinds=kinds, data_shape=fitted.input_shape,
                                num_classes=fitted.num_classes,
                                preprocess_unit=(fitted.adapt or {}).get("preprocess", "unit") == "unit",
                                formats=formats)
        limits = {"max_bytes": max_bytes, "max_params": max_params, "max_latency_ms": max_latency_ms}
        settings = {"model_sha256": model_sha256(Path(model_dir)), "data": ds.spec,
                    "data_sha256": ds.fingerprint(), "target": target, "host": host,
                    "max_drop": max_drop, "seed": int(seed), "batch": batch,
                    "max_epochs": max_epochs, "space": space.describe(), "limits": limits,
                    "bench_iterations": bench_iterations}
        from edgekit.optimize.study import asked_trials, enqueue_starts, open_study, run
        study = open_study(out, settings)
        enqueue_starts(study, space, limits)
        ctx = {"model": str(Path(model_dir).resolve()), "data": ds.spec, "out": str(out.resolve()),
               "target": target, "host": host, "max_drop": max_drop, "base_val": base_val,
               "seed": int(seed), "max_epochs": max_epochs, "max_bytes": max_bytes,
               "bench": {"iterations": bench_iterations, "warmup": 10},
               "deploy": dict(deploy_options or {})}
        from edgekit.optimize.executor import open_executor
        from edgekit.progress import TrialProgress
        say = _say if progress else (lambda *a: None)
        say("optimize {} for {}: input {:.2%} validation accuracy; limits {}; --max-drop {:g}; "
            "{}; executor {}".format(model, target, base_val, _limits_text(limits), max_drop,
                                     _stop_text(trials, budget_s), executor))
        # finished ones only: trials a killed run left RUNNING are evaluated (and counted) again
        prior = sum(1 for t in asked_trials(study) if t.state.is_finished())
        best_text = [_best_text(study, limits)]

        stream = sys.stderr if progress else _Null()
        with open_executor(executor, ds=ds) as ex, TrialProgress(
                None if trials >= 10 ** 6 else trials, "optimize", stream=stream, done=prior) as bar:
            def on_trial(ft):
                owned.keep = True  # a finished trial: worth resuming, never removed on failure
                best_text[0] = _best_text(study, limits)
                bar.advance(_trial_text(ft), best=best_text[0])
            from edgekit.optimize.evaluate import _batch, steps_to_train
            from edgekit.optimize.refit import refit_chosen, reserve
            t_run = time.time()
            # the budget is a deadline: training stops there (edgekit.deadline), not after it
            ctx["deadline"] = None if budget_s is None else t_run + budget_s
            run(study, space, ctx, trials, budget_s, batch, ex, limits, seed, on_trial=on_trial,
                reserve=reserve, steps_to_train=lambda c: steps_to_train(
                    c, ctx, len(ds.y_train), _batch(ds)))
            rec = refit_chosen(study, ctx, ex, limits, objective, fitted, say, time_left=None
                               if budget_s is None else budget_s - (time.time() - t_run))
        ended = ctx["deadline"] is not None and time.time() >= ctx["deadline"]
        if ended:
            say("--budget {:g} s reached: the search stops here; the best candidate measured "
                "so far is written".format(budget_s))
        return finish(study, out, ds, target, limits, objective, max_drop, say, refit=rec,
                      budget_ended=ended)


class _Null(object):
    def write(self, *a):
        pass

    def flush(self):
        pass


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def _limits_text(limits):
    return ", ".join("{} {:,}".format(k.replace("_", "-"), v) if isinstance(v, int) else
                     "{} {:g}".format(k.replace("_", "-"), v)
                     for k, v in limits.items() if v is not None) or "none"


def _stop_text(trials, budget_s):
    parts = []
    if trials < 10 ** 6:
        parts.append("{} trials".format(trials))
    if budget_s is not None:
        parts.append("budget {:g} s".format(budget_s))
    return " or ".join(parts)


def _check_out(out, force):
    """``out`` may be new, an optimize directory to resume (it has study.db), or one to start
    over with ``force``; anything else (a non-empty directory of something else) is refused,
    ``force`` or not: optimize never deletes what it did not write."""
    from edgekit.optimize.study import STUDY_FILE
    from edgekit.util import check_output
    if out.exists() and not out.is_dir():
        raise EdgekitError("output {} exists and is not a directory".format(out))
    if out.exists() and not (out / STUDY_FILE).is_file() and any(out.iterdir()):
        raise EdgekitError("output {} exists and holds no optimize study: choose another -o "
                           "(--force replaces an optimize directory only)".format(out))
    if not out.exists():
        check_output(out, "dir", force=False)
    elif not force:  # resuming: the study must be one (not random bytes, not truncated)
        from edgekit.optimize.study import check_study_file
        check_study_file(out / STUDY_FILE)


class _Owned(object):
    keep = False     # a trial finished: the directory is worth resuming
    created = False  # this run made the directory (or --force removed the old one)


@contextlib.contextmanager
def _owned_out(out, force):
    """Hold ``out`` for this run (:func:`edgekit.util.output_lock`: a second optimize on the
    same ``-o`` is refused with one line, not a sqlalchemy IntegrityError), check it
    (:func:`_check_out`), and when the run fails before any trial finished remove the
    ``out`` it created: a failed start (a full disk, a bad executor) leaves no half study
    behind. A directory with finished trials is kept: the same ``-o`` resumes it."""
    from edgekit.util import output_lock
    owned = _Owned()
    with output_lock(out):
        _check_out(out, force)
        owned.created = not out.exists()
        try:
            yield owned
        except BaseException as exc:
            if owned.created and not owned.keep:
                shutil.rmtree(str(out), ignore_errors=True)
            from edgekit.util import write_failure
            message = write_failure(exc, output=out) if isinstance(exc, Exception) else None
            if message is not None:  # SQLite's "disk is full" names no file: name the -o
                raise EdgekitError(message) from None
            raise


def _input_artifact(model, net, ds, out):
    """The input as an artifact dir (compress and the copies read it): the given artifact
    itself, or ``out/input`` made once from a bare Keras file."""
    p = Path(model)
    if p.is_dir() and (p / "manifest.json").is_file():
        return p
    dst = out / "input"
    if not (dst / "manifest.json").is_file():
        from edgekit.models import model_sha256, save_keras_artifact
        from edgekit.modelio import source_fields
        src = dict({"model_sha256": model_sha256(p), "model": str(model), "data": ds.spec,
                    "data_sha256": ds.fingerprint()}, **source_fields(p))
        save_keras_artifact(net, dst, ds, "import", {"from": str(model)}, src, force=True)
    return dst


def _trial_text(ft):
    r = ft.user_attrs.get("result") or {}
    c = ft.user_attrs.get("candidate") or {}
    head = "{:03d} {}".format(ft.number, c.get("label", ""))
    if r.get("state") == "complete":
        lat = "" if r.get("latency_ms") is None else ", p50 {:.3f} ms".format(r["latency_ms"])
        return "{}: {:.2%} val, {:,} B{}{}".format(head, r["val_accuracy"], r["bytes"], lat,
                                                  " (same as {:03d})".format(r["same_as"])
                                                  if "same_as" in r else "")
    return "{}: {} ({})".format(head, r.get("state", ft.state.name.lower()), r.get("reason", ""))


def _best_text(study, limits):
    from edgekit.optimize.front import choose, violations
    rows = [r for r in _rows(study) if not violations(r, limits)]
    b = choose(rows, "accuracy")
    return None if b is None else "{} {:.2%} {:,} B".format(b["id"], b["val_accuracy"], b["bytes"])


def finish(study, out, ds, target, limits, objective, max_drop, say=_say, refit=None,
           budget_ended=False):
    """Front, choice, test accuracy (front + chosen only), front.json/png, report.md and
    ``out/best``; :class:`NothingFits` when nothing meets the limits. ``refit``: the chosen
    candidate's refit (:mod:`~edgekit.optimize.refit`), chosen in its place when it still
    meets the limits."""
    from edgekit.optimize.evaluate import test_accuracy
    from edgekit.optimize.front import choose, markdown, pareto, violations, write_png
    from edgekit.optimize.refit import row as refit_row
    from edgekit.util import atomic_write_text
    try:
        (out / "work").rmdir()           # evaluations' scratch space, empty once they are done
    except OSError:
        pass
    rows = _rows(study)
    feasible = [r for r in rows if not violations(r, limits)]
    best = choose(feasible, objective)
    rrow = refit_row(refit, rows) if best is not None and refit and \
        refit.get("of") == best["number"] else None
    if rrow is not None:
        rows.append(rrow)
        if not violations(rrow, limits):
            feasible.append(rrow)
            best = rrow
    front = pareto(rows)
    for r in front + ([best] if best is not None else []):
        if r.get("test_accuracy") is None:
            r["test_accuracy"] = test_accuracy(out / r["artifact"], target, ds)
    from edgekit.optimize.study import asked_trials
    trials = asked_trials(study)
    summary = {"target": target, "limits": limits, "objective": objective, "max_drop": max_drop,
               "trials": len(trials),
               "states": {s: sum(1 for t in trials if (t.user_attrs.get("result") or {}).get(
                   "state") == s) for s in ("complete", "pruned", "infeasible", "failed")},
               "front": [_public(r) for r in front],
               "study_front": [r["id"] for r in pareto(rows, latency=False)], "best": _public(best) if best else None,
               "feasible": [r["id"] for r in feasible], "rows": [_public(r) for r in rows],
               "refit": _refit_summary(refit),
               "out": str(out)}
    if budget_ended:
        cut = [r["id"] for r in rows if (r.get("candidate") or {}) and _cut(study, r["number"])]
        summary["note"] = ("the --budget ended the search: the best candidate measured so far "
                           "is written{}".format(
                               "; training was cut at the deadline for {}".format(", ".join(cut))
                               if cut else ""))
    atomic_write_text(out / "front.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_png(rows, front, out / "front.png", best=best, max_bytes=limits.get("max_bytes"),
              title="edgekit optimize: {} ({} trials)".format(target, len(trials)))
    atomic_write_text(out / "report.md", "# edgekit optimize\n\n" + markdown(
        front, best, limits, target))
    from edgekit.report_html import front_page
    atomic_write_text(out / "report.html", front_page(rows, front, best, target, limits))
    if best is None:
        if (out / "best").exists():
            shutil.rmtree(out / "best")
        raise NothingFits(closest_message(study, rows, limits, max_drop))
    _publish_best(out / best["artifact"], out / "best")
    summary["best_dir"] = str(out / "best")
    return summary


def _cut(study, number):
    """Whether trial ``number``'s training was stopped by the --budget deadline."""
    t = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    return bool(t is not None and (t.user_attrs.get("result") or {}).get("budget_cut"))


def _refit_summary(rec):
    if not rec:
        return None
    from edgekit.optimize.evaluate import candidate_id
    res = rec.get("result") or {}
    return {"of": candidate_id(rec["of"]), "state": rec.get("state"), "epochs": rec.get("epochs"),
            "reason": rec.get("reason") or res.get("reason"),
            "val_accuracy": res.get("val_accuracy")}


def _public(r):
    return {k: v for k, v in r.items() if k != "candidate"} if r else r


def _publish_best(src, dst):
    from edgekit.util import publish_dir, stage_dir_next_to
    tmp = stage_dir_next_to(dst)
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    publish_dir(tmp, dst)


def closest_message(study, rows, limits, max_drop):
    """One line: nothing met the limits, the closest candidate and which limit it breaks."""
    from edgekit.optimize.front import excess, violations
    from edgekit.optimize.study import asked_trials
    lead = "no candidate meets the limits ({}) in {} trials".format(
        _limits_text(limits), len(asked_trials(study)))
    if rows:
        r = min(rows, key=lambda r: (excess(r, limits), r["id"]))
        broken = "; ".join("{} {} > {} {}".format(_fmt(v), _unit(name), name, _fmt(lim))
                           for name, v, lim in violations(r, limits))
        return "{}: the closest is candidate {} ({}, {:.2%} validation accuracy): {}".format(
            lead, r["id"], r["label"], r["val_accuracy"], broken)
    others = []   # measured ones first (they fit the limits but lost accuracy), by drop;
    for ft in study.get_trials(deepcopy=False):   # then those known too big, by how much
        res = ft.user_attrs.get("result") or {}
        if res.get("state") in ("pruned", "infeasible", "failed"):
            if res.get("drop_pts") is not None and not violations(res, limits):
                score = (0, float(res["drop_pts"]))
            elif res.get("cheap") and res.get("bytes_low") is not None:
                score = (1, excess({"bytes": res["bytes_low"], "params": res.get("params")},
                                   limits))
            else:
                score = (2, 0.0)
            others.append((score, ft.number, ft.user_attrs["candidate"]["label"], res))
    if not others:
        return lead + ": no candidate was evaluated"
    _, num, lab, res = min(others, key=lambda o: (o[0], o[1]))
    return "{}: the closest is candidate {:03d} ({}): {}".format(lead, num, lab, res["reason"])


def _unit(name):
    return {"--max-bytes": "bytes", "--max-params": "params", "--max-latency-ms": "ms"}[name]


def _fmt(v):
    return "{:,}".format(v) if isinstance(v, int) else "{:.3f}".format(v)


__all__ = ["optimize", "parse_budget", "NothingFits"]
