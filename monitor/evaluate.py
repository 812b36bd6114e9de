"""Window evaluation: every configured statistic of one window against the reference.

Inputs are sketches only (the window pane and the reference profile), so an evaluation
costs O(features x bins + groups), never a rescan of events. Drift tests run vectorised
over all numeric features at once.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from detectors.attribution import attribution_drift
from detectors.cbpe import ScoreCalibrator, estimate_performance
from detectors.fairness import evaluate_fairness, group_rates
from detectors.performance import (
    classification_metrics,
    expected_calibration_error,
    loss_metrics,
    regression_metrics,
    roc_auc,
)
from detectors.reconstruction import reconstruction_change, reconstruction_error
from detectors.reference import ReferenceProfile
from detectors.registry import get_test
from detectors.slices import degraded_subgroup, rank_slices
from detectors.wasserstein import bin_points
from monitor.panes import Layout, Pane
from monitor.policy import FAIRNESS_METRICS, Evaluation
from monitor.security import SecurityLayout, TrafficWatch, security_evaluations
from monitor.slicing import SliceLayout

log = logging.getLogger("driftline.evaluate")

__all__ = ["Evaluator", "layout_from_profile"]

_DEFAULT_DRIFT = ("psi",)
_PREDICTION_FAIRNESS = ("demographic_parity_difference", "disparate_impact_ratio")


def layout_from_profile(model_cfg, profile: ReferenceProfile, sample_per_pane: int = 0) -> Layout:
    """The pane layout of a model: feature order from the config, edges and vocabularies from the profile."""
    numeric = [f.name for f in model_cfg.features if f.type == "numeric"]
    categorical = [f.name for f in model_cfg.features if f.type == "categorical"]
    missing = [n for n in numeric if n not in profile.numeric] + [c for c in categorical if c not in profile.categorical]
    if missing:
        raise ValueError(f"reference profile of model {model_cfg.name!r} lacks features {missing}")
    groups = []
    for a in model_cfg.sensitive:
        if a not in profile.sensitive:
            raise ValueError(f"reference profile of model {model_cfg.name!r} lacks sensitive attribute {a!r}")
        groups.append(list(profile.sensitive[a].groups.categories))
    n_classes = 2 if model_cfg.task != "multiclass" else max(2, len(model_cfg.classes))
    recon = profile.reconstruction if model_cfg.multivariate.enabled else None
    if recon is not None and not set(recon.features) <= set(numeric):
        log.warning("model %s: the reference's multivariate model covers %s, not the configured numeric "
                    "features; multivariate drift is off", model_cfg.name, list(recon.features))
        recon = None
    attribution = []
    if model_cfg.attributions.enabled:
        if profile.attribution is None:
            log.warning("model %s: attributions.enabled but the reference has no attribution importance "
                        "(build it with attribution columns); attribution drift is off", model_cfg.name)
        else:
            attribution = [f.name for f in model_cfg.features]
    slicing = None
    if model_cfg.slices.enabled and model_cfg.task != "regression":
        try:
            slicing = SliceLayout.build(
                model_cfg.slices, numeric, [profile.numeric[n].edges for n in numeric], categorical,
                [list(profile.categorical[c].categories) for c in categorical], list(model_cfg.sensitive), groups,
            )
        except ValueError as e:  # too many cells for max_cells, with this reference's bins
            raise ValueError(f"model {model_cfg.name!r}: [models.slices]: {e}") from None
    # Scores calibrated on the reference (isotonic over its score bins), when it has
    # labels: the label-free estimates and the slices' expected errors both use them.
    calibrator = None
    if profile.score is not None and profile.score_labelled and model_cfg.task != "regression":
        try:
            calibrator = ScoreCalibrator.fit(profile.score)
        except ValueError as e:
            log.warning("model %s: no score calibration (%s); estimates assume calibrated scores",
                        model_cfg.name, e)
    security = (SecurityLayout.build(model_cfg.security, profile, numeric, categorical)
                if model_cfg.security.enabled else None)
    return Layout(
        model=model_cfg.name,
        task=model_cfg.task,
        n_classes=n_classes,
        numeric=numeric,
        numeric_edges=[profile.numeric[n].edges for n in numeric],
        categorical=categorical,
        vocabularies=[list(profile.categorical[c].categories) for c in categorical],
        sensitive=list(model_cfg.sensitive),
        groups=groups,
        intersections=[list(x) for x in model_cfg.intersections],
        has_score=profile.score is not None,
        score_bins=profile.score_bins,
        sample_per_pane=sample_per_pane,
        reconstruction=recon,
        attribution_features=attribution,
        slicing=slicing,
        calibrator=calibrator,
        security=security,
    )


class Evaluator:
    """Evaluates windows of one model; holds the reference counts in the window's layout."""

    def __init__(self, model_cfg, profile: ReferenceProfile, layout: Layout):
        self.cfg = model_cfg
        self.profile = profile
        self.layout = layout
        L = layout
        self.ref_num = None
        if L.numeric:
            # reference counts in config order, padded like the window's HistogramBank
            width = max(max(profile.numeric[n].edges.size for n in L.numeric), 1) + 1
            self.ref_num = np.zeros((len(L.numeric), width), dtype=np.int64)
            for k, n in enumerate(L.numeric):
                c = profile.numeric[n].histogram.counts
                self.ref_num[k, : c.size] = c
            # Wasserstein places each bin's mass at its reference mean (bin centre when the
            # reference bin is empty); padded bins repeat the last point (empty on both sides)
            self.bin_points = np.zeros((len(L.numeric), width))
            for k, n in enumerate(L.numeric):
                prof = profile.numeric[n]
                e = prof.edges
                if e.size >= 2:
                    centres = bin_points(e)
                elif e.size == 1:  # two open bins either side of one edge
                    centres = np.array([e[0] - 1.0, e[0] + 1.0])
                else:  # one bin: every distance is 0 anyway
                    centres = np.zeros(1)
                pts = np.where(np.isnan(prof.bin_means), centres, prof.bin_means)
                pts = np.maximum.accumulate(pts)
                self.bin_points[k, : pts.size] = pts
                self.bin_points[k, pts.size :] = pts[-1]
            self.ref_std = np.array([math.sqrt(max(float(profile.numeric[n].moments.variance[0]), 0.0)) for n in L.numeric])
        self.ref_cats = [profile.categorical[c].with_unseen() for c in L.categorical]
        self.ref_score = profile.score.counts.sum(axis=0) if profile.score is not None else None
        drift = {r.metric for r in model_cfg.rules if r.scope == "feature"}
        self.drift_tests = sorted(drift | set(_DEFAULT_DRIFT))
        self.confidence = 0.95
        # label-free estimates from the reference's calibration (None: the raw scores are
        # taken as calibrated)
        self.calibrator = L.calibrator
        # the standing subgroup rule judges errors beyond what the calibrated scores expect
        # (binary models with a labelled reference), else plain error rates
        self.error_view = "excess_error" if (L.calibrator is not None and L.task == "binary") else "error"
        self.ref_attribution = (
            np.array([profile.attribution[f] for f in L.attribution_features], dtype=np.float64)
            if L.attribution_features else None
        )
        # the seasonal traffic baseline, learned from the panes this evaluator is given
        self.traffic = TrafficWatch(model_cfg.security, model_cfg.pane_seconds) if L.security is not None else None

    # -------------------------------------------------------------------------------------
    def evaluate(self, window: Pane, window_start: float, window_end: float,
                 pane: Pane | None = None) -> list[Evaluation]:
        """The window's evaluations; ``pane`` (the window's newest pane) is judged against
        the traffic baseline and then learned by it, so give each pane once, in order."""
        out: list[Evaluation] = []
        ev = lambda metric, scope, value, n, **kw: out.append(  # noqa: E731
            Evaluation(self.cfg.name, metric, scope, value, window_start, window_end, int(round(float(n))), **kw)
        )
        self._drift(window, ev)
        self._quality(window, ev)
        self._performance(window, ev)
        self._fairness(window, ev)
        self._multivariate(window, ev)
        self._attribution(window, ev)
        self._subgroups(window, ev)
        if self.layout.security is not None:
            security_evaluations(window, pane, self.traffic, self.layout.security, self.confidence, ev)
        return out

    def _drift(self, w: Pane, ev) -> None:
        L = self.layout
        if w.hist is not None:
            cur = w.hist.counts
            n_cur = cur.sum(axis=1)
            for name in self.drift_tests:
                t = get_test(name)
                if "numeric" not in t.kinds:
                    continue
                res = t.rows_function(self.ref_num, cur, **self._extra(name))
                for k, feat in enumerate(L.numeric):
                    ev(name, feat, float(res.statistic[k]), n_cur[k],
                       p_value=None if res.p_value is None else float(res.p_value[k]))
        for k, feat in enumerate(L.categorical):
            cur = w.cats[k].with_unseen()
            for name in self.drift_tests:
                t = get_test(name)
                if "categorical" not in t.kinds:
                    continue
                r = t.function(self.ref_cats[k], cur)
                ev(name, feat, float(r.statistic), cur.sum(), p_value=r.p_value)
        if self.ref_score is not None and w.pred_scores is not None:
            cur = w.pred_scores.counts.sum(axis=0)
            r = get_test("psi").function(self.ref_score, cur)
            ev("score_psi", "model", float(r.statistic), cur.sum())

    def _extra(self, name: str) -> dict:
        if name == "wasserstein":
            return {"points": self.bin_points, "ref_std": self.ref_std}
        return {}

    def _quality(self, w: Pane, ev) -> None:
        L = self.layout
        if w.hist is not None:
            n = w.hist.counts.sum(axis=1) + w.hist.missing
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(n > 0, w.hist.missing / np.maximum(n, 1), np.nan)
            for k, feat in enumerate(L.numeric):
                ev("missing_rate", feat, float(rate[k]), n[k])
        for k, feat in enumerate(L.categorical):
            c = w.cats[k]
            total = c.n + c.missing
            ev("missing_rate", feat, c.missing / total if total else float("nan"), total)
            ev("unseen_rate", feat, c.unseen / c.n if c.n else float("nan"), c.n)
        if self.cfg.task != "regression" or w.n_joined:
            cov = w.n_joined / w.n_predictions if w.n_predictions else float("nan")
            ev("label_coverage", "model", min(cov, 1.0) if cov == cov else cov, w.n_predictions)

    def _performance(self, w: Pane, ev) -> None:
        def put(results) -> None:
            for name, m in results.items():
                ev(name, "model", m.value, m.n, ci_low=m.ci_low, ci_high=m.ci_high)

        task = self.cfg.task
        if task == "regression":
            if w.loss.count[0] > 0:
                put(regression_metrics(w.loss, self.confidence))
            return
        realised: dict = {}
        if w.n_joined:
            average = "binary" if task == "binary" else "macro"
            realised.update(classification_metrics(w.confusion, average=average, confidence=self.confidence))
            if w.scores is not None and w.scores.counts.sum() > 0:
                if task == "binary":
                    realised["roc_auc"] = roc_auc(w.scores, self.confidence)
                realised["ece"] = expected_calibration_error(w.scores, confidence=self.confidence)
            if task == "binary" and w.loss.count[0] > 0:
                realised.update(loss_metrics(w.loss, self.confidence))
        if w.pred_scores is not None and w.pred_scores.counts.sum() > 0:
            est = estimate_performance(w.pred_scores, self.calibrator, self.cfg.decision_threshold,
                                       self.confidence, task=task)
            for name, m in est.items():
                # the realised value of the same window (labels joined by label time), where known
                real = realised.get(name.removeprefix("estimated_"))
                details = None
                if real is not None and real.value == real.value:
                    details = {"realised": real.value, "realised_n": int(real.n)}
                ev(name, "model", m.value, m.n, ci_low=m.ci_low, ci_high=m.ci_high, details=details)
        put(realised)

    def _multivariate(self, w: Pane, ev) -> None:
        rec = self.layout.reconstruction
        if w.recon is None or w.recon.count[0] == 0:
            return
        for m in (reconstruction_error(w.recon, rec, self.confidence), reconstruction_change(w.recon, rec, self.confidence)):
            ev(m.name, "model", m.value, m.n, ci_low=m.ci_low, ci_high=m.ci_high,
               details={"reference_mean": rec.ref_mean_error, "components": int(rec.n_components_)})

    def _attribution(self, w: Pane, ev) -> None:
        if w.attr is None or w.attr.n == 0:
            return
        L = self.layout
        k = min(self.cfg.attributions.k, len(L.attribution_features))
        r = attribution_drift(self.ref_attribution, w.attr, k=k, confidence=self.confidence)
        details = {"top_reference": list(r.top_reference), "top_current": list(r.top_current), "ndcg": r.ndcg}
        ev("attribution_shift", "model", r.statistic, r.n, ci_low=r.ci_low, ci_high=r.ci_high, details=details)
        ev("attribution_rank_correlation", "model", r.spearman, r.n)
        mean = w.attr.mean_abs()
        for j, f in enumerate(L.attribution_features):
            ev("mean_abs_attribution", f, float(mean[j]), w.attr.n,
               details={"reference": float(self.ref_attribution[j])})

    def _subgroups(self, w: Pane, ev) -> None:
        """The standing degraded-subgroup statistics: the worst significant slice's gap."""
        if w.slices is None:
            return
        sc = self.cfg.slices
        todo = [("subgroup_error_gap", self.error_view, "above", w.n_joined)]
        if self.cfg.task == "binary":
            todo.append(("subgroup_selection_gap", "selection", "either", w.n_predictions))
        for name, what, direction, n in todo:
            if n == 0:
                continue
            value, worst = degraded_subgroup(w.slices, what=what, min_size=sc.min_size, confidence=self.confidence,
                                             fdr=sc.fdr, direction=direction)
            details = {"slice": worst.to_dict()} if worst is not None else None
            ev(name, "model", value, n, details=details)

    def top_slices(self, w: Pane, what: str, direction: str) -> list[dict]:
        """The slices that contribute most to a drop (for an alert's details), as dicts."""
        if w.slices is None:
            return []
        sc = self.cfg.slices
        ranked = rank_slices(w.slices, what=what, min_size=sc.min_size, confidence=self.confidence,
                             fdr=sc.fdr, top=sc.top, direction=direction)
        return [r.to_dict() for r in ranked]

    def _fairness(self, w: Pane, ev) -> None:
        if self.cfg.task != "binary":
            return
        mg = self.cfg.min_group_size
        for k, (scope, names, _) in enumerate(self.layout.scopes):
            sel = w.selection[k]
            pred_report = evaluate_fairness(sel, min_group_size=mg, confidence=self.confidence)
            lab_report = evaluate_fairness(w.group_confusion[k], min_group_size=mg, confidence=self.confidence)
            for metric in sorted(FAIRNESS_METRICS):
                rep = pred_report if metric in _PREDICTION_FAIRNESS else lab_report
                r = rep.metrics[metric]
                n = int(sel.counts.sum()) if metric in _PREDICTION_FAIRNESS else int(w.group_confusion[k].counts.sum())
                details = {"groups": list(r.groups)} if r.groups else None
                ev(metric, scope, r.value, n, ci_low=r.ci_low, ci_high=r.ci_high, status=r.status, details=details)
            rates = group_rates(sel, confidence=self.confidence)
            for g, name in enumerate(names):
                n = int(rates.n[g])
                if n:
                    ev("selection_rate", f"{scope}={name}", float(rates.value[0, g]), n,
                       ci_low=float(rates.ci_low[0, g]), ci_high=float(rates.ci_high[0, g]))
            lab = group_rates(w.group_confusion[k], confidence=self.confidence)
            for g, name in enumerate(names):
                for ri, rname in ((1, "tpr"), (2, "fpr")):
                    t = float(lab.trials[ri, g])
                    if t:
                        ev(rname, f"{scope}={name}", float(lab.value[ri, g]), t,
                           ci_low=float(lab.ci_low[ri, g]), ci_high=float(lab.ci_high[ri, g]))
