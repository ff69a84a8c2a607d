"""The Optuna study behind ``edgekit optimize``: propose, check cheap facts, evaluate, record.

* **Storage**: ``optuna.storages.RDBStorage`` on SQLite at ``DIR/study.db``. A second run with
  the same ``-o`` and settings resumes the same study; other settings are refused.
* **Objectives** (what the sampler sees): validation accuracy (maximise) and bytes on disk
  (minimise) -- both exact and repeatable. Latency is *measured* (noisy), so it is a limit
  (``--max-latency-ms``, as Optuna constraints) and a column of the front, not something the
  sampler steers on: that keeps a run's sequence of proposals a function of the seed.
* **Sampler**: multi-objective TPE, constraint-aware. A fresh ``TPESampler`` seeded with
  ``(seed, trial number)`` proposes each trial, so trial ``n`` depends only on the seed and
  the results of trials ``0..n-1``: an interrupted run, resumed, proposes what an
  uninterrupted one would have.
* **Batches**: trials are proposed ``batch`` at a time, evaluated (in turn, or on a Dask
  cluster at once), then recorded in trial order -- the same for every executor, so a cluster
  gives the local results. A run killed mid-batch finishes that batch first when resumed
  (trials left RUNNING are re-evaluated with their recorded parameters).
* **Cheap facts first**: params/MACs (exact) and a lower bound on bytes are checked against
  ``--max-params`` / ``--max-bytes`` before any training; a candidate that cannot fit is
  recorded as PRUNED (``optuna.TrialPruned`` semantics) in milliseconds.
* **Successive halving** of the training budget happens inside a candidate's evaluation
  (:mod:`edgekit.optimize.evaluate`): Optuna's pruners do not support multi-objective studies
  (``Trial.report`` raises for them), so the rung cut-offs (top ``1/eta`` of validation
  accuracy at each rung among earlier trials of the same training recipe) are computed here,
  per batch, and handed over.
* A parameter set already evaluated is not trained again: the trial records the same result.
* **Starting points**: a new study first evaluates a few candidates chosen from cheap facts
  (:func:`enqueue_starts`: the student with the most MACs that fits, with a teacher
  assistant, with a k-NN head), then the sampler explores.

Example::

    study = open_study("runs/opt", settings, seed=0)
    run(study, space, ctx, trials=20, budget=3600, batch=2, executor=LocalExecutor(ds))
"""
import json
import math
import os
import time
from pathlib import Path

from edgekit.errors import EdgekitError

STUDY_NAME = "edgekit-optimize"
STUDY_FILE = "study.db"
DIRECTIONS = ("maximize", "minimize")        # validation accuracy, bytes
N_STARTUP = 6


def _optuna():
    try:
        import optuna
    except ImportError:
        from edgekit.errors import MissingDependency
        raise MissingDependency("edgekit optimize needs optuna: pip install 'edgekit[search]'") \
            from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


SQLITE_MAGIC = b"SQLite format 3\x00"


def check_study_file(path):
    """Refuse (EdgekitError, one line) a ``study.db`` that is not an edgekit study -- random
    bytes, a truncated or damaged SQLite file, another program's database, another Optuna
    study -- before any work and before Optuna/SQLAlchemy touch it (their errors are
    tracebacks). Read-only: the file is never changed here."""
    import sqlite3
    path = Path(path)
    if not os.path.lexists(str(path)):
        return
    hint = "; --force starts anew (it replaces {})".format(path.parent)

    def bad(what):
        return EdgekitError("{} is not a usable edgekit study: {}{}".format(path, what, hint))
    if path.is_symlink() or not path.is_file():
        raise bad("not a regular file")
    with open(str(path), "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise bad("not a SQLite database ({})".format("empty" if not head else "unknown bytes"))
    try:
        con = sqlite3.connect("file:{}?mode=ro".format(path.resolve()), uri=True, timeout=10)
        try:
            check = con.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise bad("the database is damaged ({})".format(check))
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"studies", "trials"} <= tables:
                raise bad("a SQLite database of another program (no Optuna tables)")
            names = [r[0] for r in con.execute("SELECT study_name FROM studies")]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:  # truncated / malformed / not a database
        raise bad("the database is damaged or truncated ({})".format(exc)) from None
    if names and STUDY_NAME not in names:
        raise bad("it holds other Optuna studies ({}), not edgekit's".format(", ".join(names)))


def open_study(out, settings):
    """Create or resume the study in ``out/study.db``; refuse one made with other settings
    (or a file that is not an edgekit study: :func:`check_study_file`)."""
    optuna = _optuna()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_study_file(out / STUDY_FILE)
    storage_url = "sqlite:///{}".format((out / STUDY_FILE).resolve())
    try:
        storage = optuna.storages.RDBStorage(storage_url)
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                    directions=list(DIRECTIONS), load_if_exists=True)
    except Exception as exc:  # sqlalchemy/alembic on a file that passed the checks above
        from edgekit.util import write_failure
        if write_failure(exc) is not None or isinstance(exc, EdgekitError):
            raise
        raise EdgekitError("{} is not a usable edgekit study: {}; --force starts anew (it "
                           "replaces {})".format(out / STUDY_FILE, str(exc).splitlines()[0][:200],
                                                 out)) from None
    stored = study.user_attrs.get("settings")
    text = json.loads(json.dumps(settings, sort_keys=True))
    if stored is None:
        study.set_user_attr("settings", text)
    elif stored != text:
        diff = sorted(k for k in set(stored) | set(text) if stored.get(k) != text.get(k))
        raise EdgekitError("{} holds a study with other settings ({}): resume with the same "
                           "options, or use another -o or --force to start over".format(
                               out, ", ".join(diff)))
    return study


def enqueue_starts(study, space, limits):
    """A new study's first trials: the space's starting points (:meth:`Space.starting_points`,
    from cheap facts), enqueued once (Optuna ``enqueue_trial``); the sampler takes over after
    them. Recorded as the ``starts`` attribute, so a resumed study does not enqueue again."""
    if "starts" in study.user_attrs or study.get_trials(deepcopy=False):
        return []
    points = space.starting_points(limits)
    for p in points:
        study.enqueue_trial(p)
    study.set_user_attr("starts", points)
    return points


def asked_trials(study):
    """The study's trials that have been asked: enqueued starting points wait with their
    numbers (0, 1, ...) until the run gets to them, and are not trials before that."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]


def sampler_for(seed, number):
    """The sampler that proposes trial ``number``: seeded by (seed, number). It reads the
    limits as each finished trial's constraints (:func:`_record`)."""
    import warnings
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=(int(seed) * 1000003 + int(number)) % (2 ** 31 - 1),
            n_startup_trials=N_STARTUP, multivariate=True, group=True)


def constraints(res, limits, max_drop=None):
    """{name: value} for Optuna (<= 0 feasible): relative overshoot of each limit given (bytes:
    the measured file, else the lower bound known before training) and of ``max_drop``."""
    out = {}
    for key, names in (("max_bytes", ("bytes", "bytes_low")), ("max_params", ("params",)),
                       ("max_latency_ms", ("latency_ms",))):
        lim = limits.get(key)
        v = next((res[n] for n in names if res.get(n) is not None), None)
        if lim is not None and v is not None:
            out[key] = float(v) / float(lim) - 1.0
    if max_drop is not None and res.get("drop_pts") is not None:
        out["max_drop"] = (float(res["drop_pts"]) - max_drop) / max(float(max_drop), 0.1)
    return out


def thresholds(study, eta, of_recipe=None):
    """Successive-halving cut-offs per rung from finished trials of the training recipe
    ``of_recipe`` (:func:`edgekit.optimize.evaluate.recipe`): the ``1/eta``-quantile of the
    validation accuracies they reached at that rung (None until ``eta`` trials got there)."""
    from edgekit.optimize.evaluate import recipe
    per = {}
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or "candidate" not in t.user_attrs:
            continue
        if recipe(t.user_attrs["candidate"]) != of_recipe:
            continue
        for r in (t.user_attrs.get("result") or {}).get("rungs") or []:
            per.setdefault(r["rung"], []).append(r["val_accuracy"])
    out = []
    for r in range(max(per) + 1 if per else 0):
        accs = sorted(per.get(r, []), reverse=True)
        out.append(accs[int(math.ceil(len(accs) / float(eta))) - 1] if len(accs) >= eta else None)
    return out


def _key(cand):
    return json.dumps([cand["shrink"], cand["finish"]], sort_keys=True)


def run(study, space, ctx, trials, budget, batch, executor, limits, seed, on_trial=None,
        reserve=None, steps_to_train=None):
    """Propose and evaluate until ``trials`` trials exist in the study or ``budget`` seconds
    of this run would be overrun: a new batch starts only if the time left is at least the
    longest batch this run has taken so far (a started batch always finishes) plus
    ``reserve(study)`` seconds kept for what follows the search (the chosen one's refit).
    A next batch of enqueued (known) candidates is predicted from ``steps_to_train(cand)``:
    a candidate with every student trained already (a k-NN head on an earlier trial's
    student) at the longest a trial has spent outside training, one with N students to
    train (a student and its teacher assistant: 2) at N times the longest batch.
    ``on_trial(frozen_trial)`` is called as each is recorded. Returns the number of trials
    recorded in this run."""
    _optuna()
    from optuna.trial import FixedTrial, TrialState
    t0 = time.time()
    done_here = 0
    longest = 0.0
    while True:
        all_trials = asked_trials(study)
        running = [t for t in all_trials if t.state == TrialState.RUNNING]
        n = len(all_trials)
        left = None if budget is None else budget - (time.time() - t0)
        keep = 0.0 if reserve is None or left is None else float(reserve(study))
        need = longest
        if left is not None and not running and steps_to_train is not None and longest > 0:
            nxt = _enqueued(study, space, n, min((n // batch + 1) * batch, trials))
            counts = [steps_to_train(c) for c in nxt or []]
            if counts and None not in counts:
                need = (longest * max(counts) if max(counts) else
                        min(longest, _untrained_seconds(study, longest)))
        if not running and (n >= trials or (left is not None and
                                            left < max(need, 1e-9) + keep)):
            break
        todo = [(t.number, space.suggest(FixedTrial(t.params))) for t in running]
        # the batch holding the first unfinished trial: [k * batch, (k + 1) * batch); its
        # missing trials are asked before anything of it is recorded (as in one run)
        first = min(t.number for t in running) if running else n
        end = min((first // batch + 1) * batch, trials)
        while n < end:
            study.sampler = sampler_for(seed, n)
            trial = study.ask()
            todo.append((trial.number, space.suggest(trial)))
            n += 1
        if not todo:
            break
        tb = time.time()
        results = _evaluate_batch(study, space, ctx, todo, executor, limits)
        longest = max(longest, time.time() - tb)
        for number, cand in todo:
            res, facts = results[number]
            ft = _record(study, number, cand, facts, res, limits, ctx["max_drop"])
            done_here += 1
            if on_trial is not None:
                on_trial(ft)
    return done_here


def _enqueued(study, space, start, end):
    """The candidates of trials ``start..end-1`` if all are enqueued (WAITING), else None."""
    from optuna.trial import FixedTrial, TrialState
    waiting = {t.number: t for t in study.get_trials(deepcopy=False,
                                                     states=(TrialState.WAITING,))}
    if any(k not in waiting for k in range(start, end)):
        return None
    return [space.suggest(FixedTrial(waiting[k].system_attrs.get("fixed_params") or {}))
            for k in range(start, end)]


def _untrained_seconds(study, default):
    """The longest a finished trial spent outside its trained steps (finish, measurement,
    a k-NN head), from its recorded seconds and its rungs' ``default`` if none finished."""
    spent = []
    for t in study.get_trials(deepcopy=False):
        r = t.user_attrs.get("result") or {}
        if r.get("state") != "complete" or "same_as" in r or r.get("seconds") is None:
            continue
        training = sum(float(g.get("seconds") or 0.0) for g in r.get("rungs") or [])
        spent.append(float(r["seconds"]) - training)
    return max(spent) if spent else default


def _evaluate_batch(study, space, ctx, todo, executor, limits):
    """{number: (result, facts)}: cheap facts first, duplicates reused, the rest evaluated."""
    from edgekit.optimize.evaluate import ETA, recipe
    seen = {}
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and "candidate" in t.user_attrs and "result" in t.user_attrs:
            seen.setdefault(_key(t.user_attrs["candidate"]), (t.number, t.user_attrs["result"]))
    out, jobs = {}, []
    for number, cand in todo:
        try:
            facts = space.cheap_facts(cand, limits.get("max_bytes"))
        except EdgekitError as exc:      # e.g. a MACs target the model's groups cannot reach
            out[number] = ({"state": "infeasible", "reason": str(exc), "cheap": True}, {})
            continue
        why = cheap_violation(facts, limits)
        if why:
            out[number] = ({"state": "pruned", "reason": why, "cheap": True,
                            "bytes_low": facts.get("bytes_low"), "params": facts.get("params")},
                           facts)
        elif _key(cand) in seen:
            first, res = seen[_key(cand)]
            out[number] = (dict(res, same_as=first), facts)
        else:
            jobs.append((number, cand, facts))
    for (number, cand, facts), res in zip(jobs, executor.map(
            [(cand, number, ctx, thresholds(study, ETA, recipe(cand)))
             for number, cand, _ in jobs])):
        if res.get("params") is None:
            res["params"] = facts.get("params")
        res.setdefault("macs", facts.get("macs"))
        out[number] = (res, facts)
    return out


def cheap_violation(facts, limits):
    """Why a candidate cannot meet the limits, from facts known before training (or None)."""
    p, b = facts.get("params"), facts.get("bytes_low")
    if facts.get("unfit"):
        return facts["unfit"]
    if limits.get("max_params") is not None and p is not None and p > limits["max_params"]:
        return "{:,} parameters > --max-params {:,} (known before training)".format(
            p, limits["max_params"])
    if limits.get("max_bytes") is not None and b is not None and b > limits["max_bytes"]:
        return "{} {:,} bytes ({:,} params) > --max-bytes {:,} (known before training)".format(
            "its file has" if facts.get("bytes_exact") else "at least", b, p, limits["max_bytes"])
    return None


def _record(study, number, cand, facts, res, limits, max_drop):
    """Record a trial: its candidate and result as user attributes, its limits as Optuna
    constraints, then COMPLETE (values: accuracy, bytes), PRUNED (could not fit, cut at a
    rung, or over --max-drop: the sampler learns from these as infeasible) or FAIL."""
    from optuna.trial import Trial, TrialState
    ft = study.get_trials(deepcopy=False)[number]
    trial = Trial(study, ft._trial_id)
    trial.set_user_attr("candidate", cand)
    trial.set_user_attr("facts", facts)
    trial.set_user_attr("result", res)
    state = res["state"]
    if state == "failed":
        return study.tell(number, state=TrialState.FAIL)
    for k, v in constraints(res, limits, max_drop).items():
        trial.set_constraint(k, v)
    if state == "complete":
        return study.tell(number, [float(res["val_accuracy"]), float(res["bytes"])])
    return study.tell(number, state=TrialState.PRUNED)
