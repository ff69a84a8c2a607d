"""After the search: the chosen candidate's student, trained again on every training image.

scikit-learn's ``refit=True`` after a parameter search, for ``edgekit optimize``: every
candidate's distilled student trains on the training split minus a held-out selection slice
(which chooses the epoch kept); once the search has chosen, that candidate's last distilled
student trains again from the same start (its seed) on the **whole** training split for the
epochs its selection chose (``distill --refit-epochs``), and the rest of its chain (int8 file,
k-NN head) is made again and measured like any candidate, as ``candidates/NNN-refit``. It
replaces the chosen candidate when it still meets the limits and ``--max-drop`` on
validation; the searched one stays in the table and the front either way.

One refit, not one per candidate: refitting every final rung doubled their training time
(a 60-minute MNIST search then had room for one student instead of three); the search's
budget rule keeps back the time of one final rung for it (:func:`reserve`).

Example::

    rec = refit_chosen(study, ctx, executor, limits, "accuracy", ds)
    rec["result"]["val_accuracy"]      # candidates/NNN-refit, measured on validation
"""
import json
import shutil
from pathlib import Path

from edgekit.errors import EdgekitError

ATTR = "refit"          # the study's user attribute: {"of": number, "epochs", "result"}


def plan(out, cand, number, ds):
    """``(epochs, None)`` to refit candidate ``number`` for, or ``(None, why not)``."""
    from edgekit.compress.guard import selection_fraction
    from edgekit.optimize.evaluate import candidate_id, split_chain
    head, _ = split_chain(cand.get("shrink") or [])
    if not head or head[-1]["method"] != "distill":
        return None, "its last trained step is not a distillation"
    if selection_fraction(len(ds.y_train), len(ds.y_val)) is None:
        return None, "no selection slice was held out (small training split): nothing to add"
    cid = candidate_id(number)
    base = Path(out) / "candidates"
    for d in (base / (cid + ".steps") / "{}-distill".format(len(head)), base / cid):
        mf = d / "manifest.json"
        if not mf.is_file():
            continue
        m = json.loads(mf.read_text())
        if m.get("method", {}).get("name") != "distill":
            continue
        p = m["method"].get("params") or {}
        epochs = p.get("best_epoch") or p.get("epochs_run")
        if isinstance(epochs, int) and epochs >= 1:
            return epochs, None
    return None, "its student's manifest records no chosen epoch"


def refit_chosen(study, ctx, executor, limits, objective, ds, say=lambda *a: None,
                 time_left=None):
    """Refit the chosen candidate (once per study: a resumed run reuses a finished refit of
    the same choice); returns the record kept in the study (None: nothing chosen).
    ``time_left``: seconds of ``--budget`` left; a refit predicted to take longer
    (:func:`reserve`) is skipped, and a resumed run with time for it does it then."""
    from edgekit.optimize.evaluate import REFIT_SUFFIX, candidate_id
    from edgekit.optimize.front import choose, study_rows, violations
    from edgekit.optimize.space import REFIT_CHOSEN
    best = choose([r for r in study_rows(study) if not violations(r, limits)], objective)
    if best is None or not REFIT_CHOSEN:
        return None
    old = study.user_attrs.get(ATTR)
    if old and old.get("of") == best["number"] and old.get("state") != "skipped":
        return old
    out = Path(ctx["out"])
    if old:     # a resumed search chose another candidate: the old refit is not it
        shutil.rmtree(out / "candidates" / (candidate_id(old["of"]) + REFIT_SUFFIX),
                      ignore_errors=True)
    epochs, why = plan(out, best["candidate"], best["number"], ds)
    takes = reserve(study)
    if epochs is not None and time_left is not None and time_left < takes:
        epochs, why = None, "--budget has {:.0f} s left; the refit takes about {:.0f} s".format(
            max(time_left, 0.0), takes)
    if epochs is None:
        rec = {"of": best["number"], "state": "skipped", "reason": why}
    else:
        say("refitting the chosen candidate {} ({}) on all {:,} training images for the {} "
            "epochs its selection chose".format(best["id"], best["label"], len(ds.y_train),
                                                epochs))
        res = executor.map([(best["candidate"], best["number"], dict(ctx, refit_epochs=epochs),
                             ())])[0]
        rec = {"of": best["number"], "epochs": epochs, "state": res.get("state"), "result": res}
    study.set_user_attr(ATTR, rec)
    return rec


def row(rec, rows):
    """The refit as a row of the table (``id`` NNN-refit), or None when it did not complete."""
    from edgekit.optimize.evaluate import REFIT_SUFFIX, candidate_id
    if not rec or rec.get("state") != "complete":
        return None
    of = next((r for r in rows if r["number"] == rec["of"]), None)
    if of is None:
        raise EdgekitError("the study's refit names candidate {} that is not in it".format(
            rec["of"]))
    from edgekit.optimize.front import result_row
    return result_row(rec["result"], candidate_id(rec["of"]) + REFIT_SUFFIX, rec["of"],
                      "{} +refit {} epochs".format(of["label"], rec["epochs"]),
                      of["candidate"], refit_of=of["id"])


def reserve(study):
    """Seconds kept back for the refit: the longest final rung a distilled student has taken
    in this study (the refit trains at most that many epochs on ~10% more images)."""
    from edgekit.optimize.evaluate import split_chain
    longest = 0.0
    for t in study.get_trials(deepcopy=False):
        res = t.user_attrs.get("result") or {}
        head, _ = split_chain((t.user_attrs.get("candidate") or {}).get("shrink") or [])
        if res.get("state") != "complete" or "same_as" in res or not head or \
                head[-1]["method"] != "distill" or not res.get("rungs"):
            continue
        longest = max(longest, float(res["rungs"][-1].get("seconds") or 0.0))
    return longest
