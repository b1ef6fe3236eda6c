"""The fairness section: cross-checks against fairlearn, invariants, planted bias, robustness and
explanation disparity read from earlier sections (no second attack pass)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fairness_helpers import SignalModel, context, fairlearn_frame, planted, signal_data
from hypothesis import given, settings
from hypothesis import strategies as st
from plugin_helpers import validate_section
from torch import nn

from audit.bootstrap import bootstrap, percentile_interval, stratified_resamples
from audit.context import AdversarialOutcome, AttributionSet
from audit.data import AuditData, load_resume_names_data
from audit.errors import ConfigError
from audit.fairness import NO_ADVERSARIAL, NO_ATTRIBUTIONS, NO_SENSITIVE, FairnessSection
from audit.fairness.estimates import Estimate
from audit.fairness.groups import (
    confusion_counts,
    disparities,
    encode_groups,
    group_means,
    metric_frame,
    metric_keys,
    metrics_from_counts,
    one_vs_rest,
)
from audit.model import TorchModelAdapter

TOL = 1e-9


# --- vectorized metrics == fairlearn ------------------------------------------------------------


def _random_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.7, y, 1 - y)
    return y, pred, rng.choice(["x", "y", "z"], n), rng.choice(["p", "q"], n)


@pytest.mark.parametrize("positive", [0, 1])
@pytest.mark.parametrize("intersect", [False, True])
def test_group_metrics_equal_metricframe(intersect: bool, positive: int) -> None:
    """Every rate with respect to the favourable label equals fairlearn's with pos_label set."""
    y, pred, s1, s2 = _random_binary(700, 1)
    columns = {"s1": s1, "s2": s2} if intersect else {"s1": s1}
    codes, groups = encode_groups(list(columns.values()))
    ours = metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2), positive)
    sf = np.stack(list(columns.values()), axis=1) if intersect else s1
    frame = fairlearn_frame(y, pred, sf, positive)
    for j, g in enumerate(groups):
        key = tuple(g.split(" & ")) if intersect else g
        for m in frame.by_group.columns:
            assert ours[m][j] == pytest.approx(frame.by_group.loc[key, m], abs=TOL), (g, m)
    dis = disparities(ours)
    for m in frame.by_group.columns:
        if m == "count":
            continue
        assert dis[f"{m}_difference"] == pytest.approx(frame.difference()[m], abs=TOL)
        assert dis[f"{m}_ratio"] == pytest.approx(frame.ratio()[m], abs=TOL)
        assert float(np.nanmin(ours[m])) == pytest.approx(frame.group_min()[m], abs=TOL)
    assert dis["demographic_parity_difference"] == pytest.approx(frame.difference()["selection_rate"], abs=TOL)
    assert dis["demographic_parity_ratio"] == pytest.approx(frame.ratio()["selection_rate"], abs=TOL)
    assert dis["equalized_odds_difference"] == pytest.approx(
        max(frame.difference()["true_positive_rate"], frame.difference()["false_positive_rate"]), abs=TOL)
    assert dis["equalized_odds_ratio"] == pytest.approx(
        min(frame.ratio()["true_positive_rate"], frame.ratio()["false_positive_rate"]), abs=TOL)
    # nnaudit's own MetricFrame wrapper (the section's reported values) agrees too
    wrapped = metric_frame(y, pred, columns, positive)
    for m in frame.by_group.columns:
        np.testing.assert_allclose(wrapped.by_group[m].to_numpy(float), frame.by_group[m].to_numpy(float), atol=TOL)
    if positive == 1:  # fairlearn's disparity functions fix pos_label to 1
        from fairlearn.metrics import (
            demographic_parity_difference,
            demographic_parity_ratio,
            equalized_odds_difference,
            equalized_odds_ratio,
        )

        for name, fn in (("demographic_parity_difference", demographic_parity_difference),
                         ("demographic_parity_ratio", demographic_parity_ratio),
                         ("equalized_odds_difference", equalized_odds_difference),
                         ("equalized_odds_ratio", equalized_odds_ratio)):
            assert dis[name] == pytest.approx(fn(y, pred, sensitive_features=sf), abs=TOL), name


def test_favourable_label_flips_selection_and_four_fifths() -> None:
    """With the other label favourable, selection rates are the complements, TPR becomes the old TNR:
    demographic parity and equalized odds differences stay, their ratios (the four-fifths rule) do not."""
    y, pred, s1, _ = _random_binary(900, 4)
    codes, groups = encode_groups([s1])
    conf = confusion_counts(codes, y, pred, len(groups), 2)
    one, zero = metrics_from_counts(conf, 1), metrics_from_counts(conf, 0)
    np.testing.assert_allclose(zero["selection_rate"], 1 - one["selection_rate"], atol=TOL)
    np.testing.assert_allclose(zero["true_positive_rate"], 1 - one["false_positive_rate"], atol=TOL)
    d1, d0 = disparities(one), disparities(zero)
    assert d0["demographic_parity_difference"] == pytest.approx(d1["demographic_parity_difference"], abs=TOL)
    assert d0["equalized_odds_difference"] == pytest.approx(d1["equalized_odds_difference"], abs=TOL)
    assert abs(d0["demographic_parity_ratio"] - d1["demographic_parity_ratio"]) > 0.01


def test_multiclass_one_vs_rest_equals_fairlearn() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 900)
    pred = np.where(rng.random(900) < 0.6, y, rng.integers(0, 4, 900))
    site = rng.choice(["a", "b", "c"], 900)
    codes, groups = encode_groups([site])
    conf = confusion_counts(codes, y, pred, len(groups), 4)
    per = metrics_from_counts(conf)
    for j, g in enumerate(groups):
        assert per["balanced_accuracy"][j] == pytest.approx(balanced_accuracy_score(y[site == g], pred[site == g]),
                                                            abs=TOL)
    for c in range(4):
        dis = disparities(one_vs_rest(conf, c))
        assert dis["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y == c, pred == c, sensitive_features=site), abs=TOL)
        assert dis["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y == c, pred == c, sensitive_features=site), abs=TOL)


def test_group_without_positives_is_undefined_not_zero(tmp_path: Path) -> None:
    """fairlearn's true_positive_rate says 0 for a group with no positives; we say null + note."""
    from fairlearn.metrics import true_positive_rate

    data = signal_data(400, 5)
    data.y[data.sensitive["group"] == "b"] = 0  # group b: no positives at all
    b = data.sensitive["group"] == "b"
    assert true_positive_rate(data.y[b], np.ones(b.sum(), int), pos_label=1) == 0.0  # the misleading 0
    result = FairnessSection(features=["group"], n_resamples=50)(context(SignalModel(flip=False), data, tmp_path))
    assert result.status == "ok", result.error
    assert "fairness.group.group=b.true_positive_rate" in result.metrics
    assert result.metrics["fairness.group.group=b.true_positive_rate"] is None
    assert result.metrics["fairness.group.group=a.true_positive_rate"] is not None
    assert any("true positive rate undefined (null) for ['b']" in note for note in result.notes)
    # with one defined group the true-positive-rate disparity (and equalized odds) is undefined too
    assert result.metrics["fairness.group.true_positive_rate_difference"] is None
    assert result.metrics["fairness.group.equalized_odds_difference"] is None


# --- invariants (hypothesis) --------------------------------------------------------------------


@st.composite
def _labelled(draw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    n = draw(st.integers(20, 150))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(2, 4))
    names = draw(st.lists(st.text("abcXYZ _-é", min_size=1, max_size=4), min_size=k, max_size=k, unique=True))
    return rng.integers(0, 2, n), rng.integers(0, 2, n), rng.choice(names, n), rng


def _keyed(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    codes, labels = encode_groups([groups])
    per = metrics_from_counts(confusion_counts(codes, y, pred, len(labels), 2), 1)
    by_group = {g: {m: float(v[j]) for m, v in per.items()} for j, g in enumerate(labels)}
    return by_group, {name: float(v) for name, v in disparities(per).items()}


@settings(max_examples=40, deadline=None)
@given(_labelled())
def test_metrics_invariant_to_row_order_and_group_names(case: Any) -> None:
    y, pred, groups, rng = case
    by_group, dis = _keyed(y, pred, groups)
    order = rng.permutation(len(y))
    shuffled_groups, shuffled_dis = _keyed(y[order], pred[order], groups[order])
    assert shuffled_groups.keys() == by_group.keys()
    for g in by_group:
        np.testing.assert_allclose(list(shuffled_groups[g].values()), list(by_group[g].values()), atol=TOL)
    np.testing.assert_allclose(list(shuffled_dis.values()), list(dis.values()), atol=TOL)
    uniques = sorted(set(groups))
    rename = dict(zip(uniques, [f"renamed {i}" for i in rng.permutation(len(uniques))], strict=True))
    renamed_groups, renamed_dis = _keyed(y, pred, np.array([rename[g] for g in groups]))
    for g in by_group:
        np.testing.assert_allclose(list(renamed_groups[rename[g]].values()), list(by_group[g].values()), atol=TOL)
    np.testing.assert_allclose(list(renamed_dis.values()), list(dis.values()), atol=TOL)


@settings(max_examples=15, deadline=None)
@given(_labelled())
def test_vectorized_matches_metricframe_on_random_cases(case: Any) -> None:
    y, pred, groups, _ = case
    by_group, _ = _keyed(y, pred, groups)
    frame = metric_frame(y, pred, {"g": groups}, 1)
    for g, values in by_group.items():
        for m, v in values.items():
            expected = float(frame.by_group.loc[g, m])
            assert (np.isnan(v) and np.isnan(expected)) or v == pytest.approx(expected, abs=TOL), (g, m)


def test_section_invariant_to_shuffle_and_rename(tmp_path: Path) -> None:
    data = signal_data(600, 2)
    base = FairnessSection(n_resamples=0)(context(SignalModel(flip=False), data, tmp_path))
    order = np.random.default_rng(0).permutation(data.n_samples)
    shuffled = data.subset(order)
    shuffled.sensitive["site"] = np.char.add("site ", shuffled.sensitive["site"])
    other = FairnessSection(n_resamples=0)(context(SignalModel(flip=False), shuffled, tmp_path))
    keys = [k for k in base.metrics if ".group=" not in k]
    assert keys and all(other.metrics[k] == pytest.approx(base.metrics[k], abs=TOL) for k in keys)


# --- bootstrap intervals ------------------------------------------------------------------------


def _width_and_contains(n: int, seed: int) -> tuple[dict[str, float], bool]:
    y, pred, s1, _ = _random_binary(n, seed)
    codes, groups = encode_groups([s1])

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        return disparities(metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2, index), 1))

    point = statistic(None)
    samples = bootstrap(codes, 500, 0, statistic)
    widths, contains = {}, True
    for name, value in point.items():
        interval = percentile_interval(samples[name], 0.95, float(value))
        widths[name] = interval.high - interval.low
        contains &= interval.low <= float(value) <= interval.high
    return widths, contains


def test_intervals_contain_estimate_and_shrink_with_more_data() -> None:
    small, small_ok = _width_and_contains(400, 7)
    large, large_ok = _width_and_contains(6400, 7)
    assert small_ok and large_ok
    for name in ("demographic_parity_difference", "equalized_odds_difference", "accuracy_ratio"):
        assert large[name] < 0.6 * small[name], name


def test_bootstrap_keeps_group_sizes_and_is_seeded() -> None:
    codes = np.array([0] * 5 + [1] * 30 + [2] * 2)
    chunks = list(stratified_resamples(codes, 64, seed=3))
    again = np.concatenate(list(stratified_resamples(codes, 64, seed=3)))
    index = np.concatenate(chunks)
    assert index.shape == (64, len(codes)) and np.array_equal(index, again)
    for row in index:
        assert np.array_equal(np.bincount(codes[row], minlength=3), [5, 30, 2])
    values = np.arange(len(codes), dtype=float)
    means = group_means(codes, values, 3, index)
    assert means.shape == (64, 3) and np.all(means[:, 2] >= 35) and np.all(means[:, 0] <= 4)


# --- the section: planted bias, findings, metric names --------------------------------------------


def test_planted_bias_flagged_and_unbiased_not(tmp_path: Path) -> None:
    data = signal_data(2000, 11)
    fair = FairnessSection(features=["group"], n_resamples=200)(context(SignalModel(flip=False), data, tmp_path))
    biased = FairnessSection(features=["group"], n_resamples=200)(context(SignalModel(flip=True), data, tmp_path))
    assert fair.status == biased.status == "ok"
    assert not [f for f in fair.findings if f.severity != "info"], [f.message for f in fair.findings]
    codes = {f.code for f in biased.findings if f.severity == "high"}
    assert {"fairness.equalized_odds_difference", "fairness.accuracy_difference"} <= codes
    eo = next(f for f in biased.findings if f.code == "fairness.equalized_odds_difference")
    assert eo.metric == "fairness.group.equalized_odds_difference" and eo.value is not None and eo.value > 0.5
    assert "95% CI" in eo.message and "'a'" in eo.message and "'b'" in eo.message
    low = biased.metrics["fairness.group.equalized_odds_difference.ci_low"]
    high = biased.metrics["fairness.group.equalized_odds_difference.ci_high"]
    assert low is not None and high is not None and low <= eo.value <= high


def test_section_point_estimates_equal_fairlearn_on_resume_names(resume_mlp: Any, resume_test: AuditData,
                                                                  tmp_path: Path) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        equalized_odds_ratio,
        selection_rate,
    )

    ctx = context(resume_mlp, resume_test, tmp_path)
    result = FairnessSection(intersections=True, n_resamples=300)(ctx)
    assert result.status == "ok", result.error
    y, pred = resume_test.y, ctx.clean_predictions()
    m = result.metrics
    for feature in ("gender", "ethnicity"):
        sf = resume_test.sensitive[feature]
        checks = {"demographic_parity_difference": demographic_parity_difference,
                  "demographic_parity_ratio": demographic_parity_ratio,
                  "equalized_odds_difference": equalized_odds_difference,
                  "equalized_odds_ratio": equalized_odds_ratio}
        for name, fn in checks.items():
            assert m[f"fairness.{feature}.{name}"] == pytest.approx(fn(y, pred, sensitive_features=sf), abs=TOL)
            low, high = m[f"fairness.{feature}.{name}.ci_low"], m[f"fairness.{feature}.{name}.ci_high"]
            value = m[f"fairness.{feature}.{name}"]
            assert low is not None and high is not None and value is not None and low <= value <= high
        frame = MetricFrame(metrics=selection_rate, y_true=y, y_pred=pred, sensitive_features=sf)
        for group, value in frame.by_group.items():
            assert m[f"fairness.{feature}.group={group}.selection_rate"] == pytest.approx(value, abs=TOL)
    both = np.stack([resume_test.sensitive["ethnicity"], resume_test.sensitive["gender"]], axis=1)
    assert m["fairness.ethnicity_x_gender.equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=both), abs=TOL)
    names = {t.name for t in result.tables}
    assert {"groups_gender", "groups_ethnicity", "groups_ethnicity_x_gender", "disparities"} <= names
    figure = next(f for f in result.figures if f["name"] == "groups")  # one panel per grouping
    assert figure["kind"] == "small_multiples" and len(figure["panels"]) == 3
    panel = next(p for p in figure["panels"] if p["xlabel"] == "gender")
    assert panel["kind"] == "bar" and all("yerr_low" in s and "yerr_high" in s for s in panel["series"])
    assert NO_ADVERSARIAL in result.notes and NO_ATTRIBUTIONS in result.notes
    validate_section(result, ctx)


def test_resume_names_flip_for_one_group_is_flagged(resume_mlp: Any, tmp_path: Path) -> None:
    """The demo MLP fed the gender columns too, with predictions flipped for women: flagged."""
    data = load_resume_names_data("test", sensitive_as_features=True)
    female = data.feature_names.index("gender=female") if data.feature_names else -1
    keep = [i for i, n in enumerate(data.feature_names or []) if not n.startswith(("gender=", "ethnicity="))]

    class FlipForWomen(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.inner(x[:, keep])
            return torch.where(x[:, female : female + 1] > 0.5, logits.flip(1), logits)

    result = FairnessSection(features=["gender"], n_resamples=200)(context(FlipForWomen(resume_mlp), data, tmp_path))
    high = [f for f in result.findings if f.severity == "high"]
    assert any(f.code == "fairness.demographic_parity_ratio" for f in high), [f.message for f in result.findings]
    assert any(f.code == "fairness.accuracy_difference" for f in high)


def test_multiclass_section_reports_worst_class(digits_cnn: Any, digits_test: AuditData, tmp_path: Path) -> None:
    from fairlearn.metrics import demographic_parity_difference

    data = digits_test.subset(np.arange(300))
    data.sensitive = {"scanner": np.random.default_rng(0).choice(["old", "new"], 300)}
    ctx = context(digits_cnn, data, tmp_path)
    result = FairnessSection(n_resamples=100)(ctx)
    assert result.status == "ok", result.error
    pred = ctx.clean_predictions()
    per_class = [demographic_parity_difference(data.y == c, pred == c, sensitive_features=data.sensitive["scanner"])
                 for c in range(10)]
    assert result.metrics["fairness.scanner.class=3.demographic_parity_difference"] == pytest.approx(per_class[3],
                                                                                                      abs=TOL)
    assert result.metrics["fairness.scanner.demographic_parity_difference"] == pytest.approx(max(per_class), abs=TOL)
    assert any("one-vs-rest" in note for note in result.notes)


def test_skipped_without_sensitive_columns(cancer_mlp: Any, cancer_test: AuditData, tmp_path: Path) -> None:
    result = FairnessSection()(context(cancer_mlp, cancer_test, tmp_path))
    assert result.status == "skipped" and result.notes == [NO_SENSITIVE]
    assert "data.sensitive" in NO_SENSITIVE


def test_unknown_feature_is_a_config_error(tmp_path: Path) -> None:
    result = FairnessSection(features=["age"])(context(SignalModel(flip=False), signal_data(100, 0), tmp_path))
    assert result.status == "error" and result.error is not None
    assert "['age'] are not sensitive columns" in result.error["message"]
    with pytest.raises(ConfigError, match="n_resamples"):
        FairnessSection(n_resamples=-1)


def test_small_groups_flagged_not_dropped(tmp_path: Path) -> None:
    data = signal_data(300, 4)
    data.sensitive["group"] = np.where(np.arange(300) < 12, "tiny", data.sensitive["group"])
    result = FairnessSection(features=["group"], n_resamples=50)(context(SignalModel(flip=False), data, tmp_path))
    table = next(t for t in result.tables if t.name == "groups_group")
    tiny = next(r for r in table.rows if r[0] == "tiny")
    column = table.columns.index
    assert tiny[column("count")] == 12 and tiny[column("too_few_rows")] == "every rate"
    assert tiny[column("positives")] == int(data.y[:12].sum())
    assert any(f.code == "fairness.small_group" and "'tiny' (n=12): every rate" in f.message and f.severity == "info"
               for f in result.findings)
    assert result.metrics["fairness.group.group=tiny.accuracy"] is not None


def test_default_params_deterministic(resume_mlp: Any, resume_test: AuditData, tmp_path: Path) -> None:
    runs = [FairnessSection()(context(resume_mlp, resume_test, tmp_path)) for _ in range(2)]
    assert runs[0].status == "ok", runs[0].error
    assert runs[0].metrics == runs[1].metrics
    assert [f.message for f in runs[0].findings] == [f.message for f in runs[1].findings]


# --- robustness disparity: read ctx.adversarial, never attack ---------------------------------------


class NoForwardAdapter(TorchModelAdapter):
    """forward (the gradient path every attack uses) raises; batched logits are counted."""

    rows_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forward called: the fairness section must not attack")

    def _logits_batch(self, x: torch.Tensor) -> torch.Tensor:
        NoForwardAdapter.rows_seen += len(x)
        return super()._logits_batch(x)


def _fgsm_outcomes(model: nn.Module, data: AuditData, grid: list[float]) -> dict[str, AdversarialOutcome]:
    """FGSM (L-inf) at each eps of a grid, computed here with torch.autograd.grad; min_eps = smallest eps
    of the grid that flips the prediction (inf if none, 0 if already wrong)."""
    x = torch.as_tensor(data.x)
    y = torch.as_tensor(data.y)
    x_req = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x_req), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_req)
    clean_correct = (model(x).argmax(1) == y).numpy()
    broken_at = np.where(clean_correct, np.inf, 0.0)
    found: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for eps in grid:
        x_adv = (x + eps * grad.sign()).detach()
        robust = (model(x_adv).argmax(1) == y).numpy() & clean_correct
        broken_at = np.where(clean_correct & ~robust & np.isinf(broken_at), eps, broken_at)
        found[eps] = (x_adv.numpy(), robust)
    return {f"linf:{eps}": AdversarialOutcome(norm="linf", eps=eps, attack="fgsm (test)", x_adv=found[eps][0],
                                              clean_correct=clean_correct, robust_correct=found[eps][1],
                                              min_eps=broken_at.copy())
            for eps in grid}


def _margin_data(n: int, seed: int) -> AuditData:
    """Group 'b' sits closer to the decision boundary: same clean accuracy, easier to attack."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    group = rng.integers(0, 2, n)
    scale = np.where(group == 1, 0.12, 0.6)
    x0 = (2 * y - 1) * scale * (0.5 + rng.random(n))
    x = np.stack([x0, np.zeros(n), rng.normal(0, 1, n)], axis=1)
    return AuditData(name="margin", x=x, y=y, class_names=["no", "yes"], modality="tabular",
                     feature_names=["signal", "unused", "noise"], sensitive={"group": np.where(group == 1, "b", "a")})


def test_robustness_disparity_without_second_attack_pass(tmp_path: Path) -> None:
    data = _margin_data(800, 0)
    model = SignalModel(flip=False)
    adversarial = _fgsm_outcomes(model, data, [0.05, 0.1, 0.2])
    adapter = NoForwardAdapter.from_module(model, num_classes=2, batch_size=512)
    NoForwardAdapter.rows_seen = 0
    ctx = context(model, data, tmp_path, adapter=adapter)
    ctx.adversarial = adversarial
    result = FairnessSection(n_resamples=200)(ctx)
    assert result.status == "ok", result.error
    assert NoForwardAdapter.rows_seen == data.n_samples  # clean predictions once, nothing else
    b = data.sensitive["group"] == "b"
    outcome = adversarial["linf:0.1"]
    expected = {g: outcome.robust_correct[mask].mean() for g, mask in (("a", ~b), ("b", b))}
    m = result.metrics
    assert m["fairness.group.norm=linf.eps=0.1.group=a.robust_accuracy"] == pytest.approx(expected["a"], abs=TOL)
    assert m["fairness.group.norm=linf.eps=0.1.robust_accuracy_difference"] == pytest.approx(
        abs(expected["a"] - expected["b"]), abs=TOL)
    success_b = (~outcome.robust_correct[b & outcome.clean_correct]).mean()
    assert m["fairness.group.norm=linf.eps=0.1.group=b.attack_success_rate"] == pytest.approx(success_b, abs=TOL)
    assert outcome.min_eps is not None
    min_eps_b = outcome.min_eps[b & outcome.clean_correct]
    assert m["fairness.group.norm=linf.eps=0.1.group=b.mean_min_eps"] == pytest.approx(
        min_eps_b[np.isfinite(min_eps_b)].mean(), abs=TOL)
    worst = max(m[f"fairness.group.norm=linf.eps={e}.robust_accuracy_difference"] or 0 for e in (0.05, 0.1, 0.2))
    assert m["fairness.group.robust_accuracy_difference"] == pytest.approx(worst, abs=TOL)
    low = m["fairness.group.robust_accuracy_difference.ci_low"]
    high = m["fairness.group.robust_accuracy_difference.ci_high"]
    assert low is not None and high is not None and low <= worst <= high
    easier = [f for f in result.findings if f.code == "fairness.attack_success_rate_difference"]
    assert easier and "group 'b' is easier to attack" in easier[0].message
    assert easier[0].severity == "high"
    robust_gap = [f for f in result.findings if f.code == "fairness.robust_accuracy_difference"]
    assert robust_gap and "the attack success gap is above its tolerance" in robust_gap[0].message
    # clean accuracy is the same in both groups (every row is clean-correct): the gap is all attack
    assert m["fairness.group.norm=linf.eps=0.1.clean_accuracy_difference"] == 0.0
    assert NO_ADVERSARIAL not in result.notes
    assert any(t.name == "robustness_group" for t in result.tables)
    validate_section(result, ctx)


def test_robust_equal_groups_not_flagged(tmp_path: Path) -> None:
    data = signal_data(1500, 8)
    model = SignalModel(flip=False)
    ctx = context(model, data, tmp_path)
    ctx.adversarial = _fgsm_outcomes(model, data, [0.1])
    result = FairnessSection(features=["group"], n_resamples=100)(ctx)
    assert not [f for f in result.findings if f.code == "fairness.robust_accuracy_difference"]
    assert result.metrics["fairness.group.robust_accuracy_difference"] is not None


# --- explanation disparity -----------------------------------------------------------------------


def test_explanation_disparity_from_attributions(tmp_path: Path) -> None:
    """Gradient x input on a linear model; group 'b' has a large 'noise' feature, so it carries more
    of b's attribution: flagged as the top feature, per-group means equal a direct computation."""
    rng = np.random.default_rng(0)
    n = 600
    data = signal_data(n, 9)
    b = data.sensitive["group"] == "b"
    data.x[:, 2] = np.where(b, rng.normal(0, 2.0, n), rng.normal(0, 0.05, n)).astype(np.float32)
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-2.0, 0.0, -0.5], [2.0, 0.0, 0.5]]))
        linear.bias.zero_()
    index = np.arange(0, n, 2)
    x = torch.as_tensor(data.x[index]).requires_grad_(True)
    target = linear(x).argmax(1)
    (grad,) = torch.autograd.grad(linear(x).gather(1, target[:, None]).sum(), x)
    values = (grad * x).detach().numpy()
    ctx = context(linear, data, tmp_path)
    ctx.attributions = {"input_x_gradient": AttributionSet("input_x_gradient", index, target.numpy(), values)}
    result = FairnessSection(features=["group"], n_resamples=0)(ctx)
    assert result.status == "ok", result.error
    table = next(t for t in result.tables if t.name == "explanation_input_x_gradient_group")
    # b's attribution moves from 'signal' to 'noise': the two head the table with the same gap
    assert {table.rows[0][0], table.rows[1][0]} == {"noise", "signal"}
    noise = next(r for r in table.rows if r[0] == "noise")
    direct = np.abs(values[b[index]].astype(np.float64)).mean(axis=0)
    assert noise[table.columns.index("mean_abs[b]")] == pytest.approx(direct[2], abs=TOL)
    assert noise[table.columns.index("share[b]")] == pytest.approx(direct[2] / direct.sum(), abs=TOL)
    assert isinstance(noise[-1], float) and noise[-1] > 0.3
    assert any(f.code == "fairness.explanation_gap" for f in result.findings)
    assert result.metrics["fairness.group.explanation.input_x_gradient.max_importance_gap"] == pytest.approx(
        table.rows[0][-1], abs=TOL)
    figure = next(f for f in result.figures if f["name"] == "explanation_group")
    assert figure["kind"] == "small_multiples" and [p["title"] for p in figure["panels"]] == ["input_x_gradient"]
    assert NO_ATTRIBUTIONS not in result.notes
    validate_section(result, ctx)


def test_mismatched_outcome_is_skipped_with_note(tmp_path: Path) -> None:
    data = signal_data(200, 1)
    ctx = context(SignalModel(flip=False), data, tmp_path)
    half = np.ones(100, bool)
    ctx.adversarial = {"linf:0.1": AdversarialOutcome("linf", 0.1, "test", data.x[:100], half, half)}
    result = FairnessSection(features=["group"], n_resamples=0)(ctx)
    assert result.status == "ok"
    assert any("covers 100 rows but the data has 200" in note for note in result.notes)


def test_outcome_on_a_subset_of_rows_uses_its_index(tmp_path: Path) -> None:
    """An outcome that carries ``index`` (rows of the data it attacked) is aligned through it."""
    data = _margin_data(600, 3)
    model = SignalModel(flip=False)
    rows = np.arange(0, 600, 3)
    outcome = _fgsm_outcomes(model, data.subset(rows), [0.1])["linf:0.1"]
    outcome.index = rows
    ctx = context(model, data, tmp_path)
    ctx.adversarial = {"linf:0.1": outcome}
    result = FairnessSection(features=["group"], n_resamples=50)(ctx)
    b = data.sensitive["group"][rows] == "b"
    assert result.metrics["fairness.group.norm=linf.eps=0.1.group=b.robust_accuracy"] == pytest.approx(
        outcome.robust_correct[b].mean(), abs=TOL)
    table = next(t for t in result.tables if t.name == "robustness_group")
    assert sum(int(r[2] or 0) for r in table.rows) == len(rows)


# --- metric keys: unique and readable for any group name ---------------------------------------------

SEGMENT = re.compile(r"[A-Za-z0-9_+\-<>]+")  # what the results schema allows in a segment, less '.' and '='


def test_metric_keys_unique_and_readable() -> None:
    names = ["<25", "25+", "a b", "a_b", "a.b", "a=b", "Zoë", "日本", "", "African-American"]
    keys = dict(zip(names, metric_keys(names), strict=True))
    assert len(set(keys.values())) == len(names)
    assert keys["<25"] == "<25" and keys["25+"] == "25+"  # German credit's age groups stay apart
    assert keys["a_b"] == "a_b" and keys["African-American"] == "African-American"
    for name in ("a b", "a.b", "a=b"):  # all sanitize to a_b: a suffix from their own hash keeps them apart
        assert keys[name].startswith("a_b_") and len(keys[name]) == len("a_b_") + 6
    assert keys["Zoë"] == "Zoe"  # accent dropped, no collision: no suffix
    assert keys["日本"].startswith("h") and keys[""].startswith("h")
    assert all(SEGMENT.fullmatch(k) for k in keys.values())
    assert metric_keys(list(reversed(names))) == list(reversed(metric_keys(names)))  # per name, not per order
    assert metric_keys(["overall", "sex"], reserved=("overall",))[0] != "overall"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aB1_+-<>. =éü日")), max_size=5), min_size=1, max_size=8,
                unique=True))
def test_metric_keys_property(names: list[str]) -> None:
    keys = metric_keys(names)
    assert len(set(keys)) == len(keys)
    assert all(SEGMENT.fullmatch(k) for k in keys)
    for name, key in zip(names, keys, strict=True):
        if SEGMENT.fullmatch(name) and "__" not in name and not name.startswith("_") and not name.endswith("_"):
            assert key == name  # a name that is a clean segment keeps its spelling


def test_colliding_group_names_keep_every_value(tmp_path: Path) -> None:
    """Names that collide once sanitized each get their own metric, equal to fairlearn's value."""
    names = np.array(["a b", "a_b", "a.b", "a=b", "<25", "25+", "日本"])
    rng = np.random.default_rng(5)
    n = 1400
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.75, y, 1 - y)
    group = names[np.arange(n) % len(names)]
    data = planted(y, pred, {"g": group})
    ctx = context(SignalModel(), data, tmp_path)
    result = FairnessSection(n_resamples=0)(ctx)
    assert result.status == "ok", result.error
    table = next(t for t in result.tables if t.name == "groups_g")
    key_of = {row[0]: row[1] for row in table.rows}
    assert set(key_of) == set(names) and len(set(key_of.values())) == len(names)
    assert key_of["<25"] == "<25" and key_of["25+"] == "25+" and key_of["a_b"] == "a_b"
    frame = fairlearn_frame(y, ctx.clean_predictions(), group, 1)
    for name, key in key_of.items():
        for m in ("selection_rate", "true_positive_rate", "accuracy"):
            assert result.metrics[f"fairness.g.group={key}.{m}"] == pytest.approx(frame.by_group.loc[name, m], abs=TOL)
    assert len([k for k in result.metrics if k.endswith(".selection_rate") and ".group=" in k]) == len(names)
    validate_section(result, ctx)  # every metric name fits the schema


# --- the favourable label ------------------------------------------------------------------------------


def test_positive_label_section_equals_fairlearn(tmp_path: Path) -> None:
    data = signal_data(1500, 21)
    ctx = context(SignalModel(flip=True), data, tmp_path)
    by_name = FairnessSection(features=["group"], positive_label="no", n_resamples=100)(ctx)
    by_index = FairnessSection(features=["group"], positive_label=0, n_resamples=100)(ctx)
    data.positive_class = 0  # a dataset whose favourable outcome is class 0 (COMPAS: no recidivism)
    by_default = FairnessSection(features=["group"], n_resamples=100)(ctx)
    assert by_name.metrics == by_index.metrics == by_default.metrics
    pred, sf = ctx.clean_predictions(), data.sensitive["group"]
    frame = fairlearn_frame(data.y, pred, sf, 0)
    m = by_name.metrics
    for g in ("a", "b"):
        for rate in ("selection_rate", "true_positive_rate", "false_positive_rate", "precision"):
            assert m[f"fairness.group.group={g}.{rate}"] == pytest.approx(frame.by_group.loc[g, rate], abs=TOL)
    assert m["fairness.group.demographic_parity_ratio"] == pytest.approx(frame.ratio()["selection_rate"], abs=TOL)
    assert m["fairness.group.demographic_parity_difference"] == pytest.approx(
        frame.difference()["selection_rate"], abs=TOL)
    assert m["fairness.group.equalized_odds_difference"] == pytest.approx(
        max(frame.difference()["true_positive_rate"], frame.difference()["false_positive_rate"]), abs=TOL)
    # class 1 favourable gives other selection rates and another four-fifths ratio
    data.positive_class = None
    other = FairnessSection(features=["group"], n_resamples=0)(ctx).metrics
    selected_a = m["fairness.group.group=a.selection_rate"]
    assert selected_a is not None
    assert other["fairness.group.group=a.selection_rate"] == pytest.approx(1 - selected_a, abs=TOL)
    assert other["fairness.group.demographic_parity_ratio"] != pytest.approx(
        m["fairness.group.demographic_parity_ratio"], abs=1e-3)
    setup = {row[0]: row[1] for row in next(t for t in by_name.tables if t.name == "setup").rows}
    assert setup["favourable outcome (positive_label)"] == "'no' (class 0)"
    assert setup["source"] == "set by sections.fairness.positive_label"
    assert any(n.startswith("favourable outcome: 'no' (class 0), set by sections.fairness.positive_label")
               for n in by_name.notes)
    assert any("favourable outcome: 'no' (class 0), the default of signal" in n for n in by_default.notes)
    validate_section(by_name, ctx)


def test_multiclass_positive_label_is_the_headline(digits_cnn: Any, digits_test: AuditData, tmp_path: Path) -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    data = digits_test.subset(np.arange(300))
    data.sensitive = {"scanner": np.random.default_rng(0).choice(["old", "new"], 300)}
    ctx = context(digits_cnn, data, tmp_path)
    result = FairnessSection(n_resamples=50, positive_label="3")(ctx)
    assert result.status == "ok", result.error
    pred, sf = ctx.clean_predictions(), data.sensitive["scanner"]
    assert result.metrics["fairness.scanner.demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(data.y == 3, pred == 3, sensitive_features=sf), abs=TOL)
    assert result.metrics["fairness.scanner.equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(data.y == 3, pred == 3, sensitive_features=sf), abs=TOL)
    assert any("the headline value is the favourable class '3'" in n for n in result.notes)


# --- small groups: judged by the rows each rate is computed from ---------------------------------------


def _tiny_groups() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t1: 5 rows, all right (TPR 1, FPR 0); t2: 3 rows, all wrong (TPR 0, FPR 1): equalized odds 1.0."""
    y = np.array([1, 1, 1, 0, 0, 1, 1, 0])
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    return y, pred, np.array(["t1"] * 5 + ["t2"] * 3)


def test_equalized_odds_from_tiny_groups_is_not_rated_high(tmp_path: Path) -> None:
    from fairlearn.metrics import equalized_odds_difference

    y, pred, group = _tiny_groups()
    result = FairnessSection(n_resamples=200)(context(SignalModel(), planted(y, pred, {"g": group}), tmp_path))
    assert result.metrics["fairness.g.equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=group), abs=TOL) == 1.0
    eo = next(f for f in result.findings if f.code == "fairness.equalized_odds_difference")
    assert eo.severity == "low"
    for part in ("'t2' has 2 positives for the true positive rate", "'t1' has 3 positives for the true positive rate",
                 "'t2' has 1 negative for the false positive rate", "fewer than min_rate_count 30",
                 "fewer than two groups have enough rows", "CI of zero width at 1.000", "not informative"):
        assert part in eo.message, part
    assert "whole interval" not in eo.message
    assert not [f for f in result.findings if f.severity in ("medium", "high")]
    assert result.metrics["fairness.g.equalized_odds_difference.enough_rows"] is None


def test_tiny_groups_beside_large_ones_are_judged_on_the_large(tmp_path: Path) -> None:
    from fairlearn.metrics import equalized_odds_difference

    big = signal_data(2000, 13)
    y_t, pred_t, group_t = _tiny_groups()
    results = {}
    for flip in (False, True):
        ctx_big = context(SignalModel(flip=flip), big, tmp_path)
        pred_big = ctx_big.clean_predictions()
        y = np.r_[big.y, y_t]
        pred = np.r_[pred_big, pred_t]
        group = np.r_[big.sensitive["group"], group_t]
        results[flip] = FairnessSection(n_resamples=200)(context(SignalModel(), planted(y, pred, {"g": group}),
                                                                 tmp_path))
        m = results[flip].metrics
        assert m["fairness.g.equalized_odds_difference"] == 1.0
        large = np.isin(group, ["a", "b"])
        assert m["fairness.g.equalized_odds_difference.enough_rows"] == pytest.approx(
            equalized_odds_difference(y[large], pred[large], sensitive_features=group[large]), abs=TOL)
    fair = next(f for f in results[False].findings if f.code == "fairness.equalized_odds_difference")
    assert fair.severity == "low" and "within tolerance" in fair.message
    biased = next(f for f in results[True].findings if f.code == "fairness.equalized_odds_difference")
    assert biased.severity == "high" and "still above the tolerance" in biased.message


def test_min_rate_count_is_the_threshold(tmp_path: Path) -> None:
    """With min_rate_count 1 nothing is too small; the zero-width interval still keeps it from 'high'."""
    y, pred, group = _tiny_groups()
    result = FairnessSection(n_resamples=200, min_rate_count=1)(
        context(SignalModel(), planted(y, pred, {"g": group}), tmp_path))
    eo = next(f for f in result.findings if f.code == "fairness.equalized_odds_difference")
    assert eo.severity == "medium" and "the interval cannot confirm it" in eo.message
    assert "too few rows" not in eo.message and "whole interval" not in eo.message
    assert not [f for f in result.findings if f.code == "fairness.small_group"]


def test_zero_width_interval_is_not_informative() -> None:
    zero = Estimate(0.0, 0.0, 0.0)  # a rate of 0 out of 3: 0 in every resample
    assert zero.has_interval and not zero.informative
    assert "not informative" in zero.ci_text(0.95)
    one = Estimate(1.0, 1.0, 1.0)
    assert one.beyond(0.1, is_ratio=False) and not one.wholly_beyond(0.1, is_ratio=False)
    assert not Estimate(0.0, 0.0, 0.0).wholly_beyond(0.8, is_ratio=True)
    assert Estimate(0.5, 0.3, 0.6).wholly_beyond(0.8, is_ratio=True)
    samples = np.zeros(500)  # what the bootstrap gives for 0 out of 3
    interval = percentile_interval(samples, 0.95, 0.0)
    assert interval.low == interval.high == 0.0


# --- robustness disparity: the clean gap is not "easier to attack" --------------------------------------


def test_robust_gap_from_clean_accuracy_is_not_easier_to_attack(tmp_path: Path) -> None:
    """a: 95% clean-correct, b: 60%; the attack breaks exactly 20% of the clean-correct rows in both.
    Robust accuracy differs by 0.28, all of it from clean accuracy: an info finding, no 'easier'."""
    n = 400
    group = np.array(["a"] * n + ["b"] * n)
    clean = np.r_[np.arange(n) < 380, np.arange(n) < 240]
    robust = np.r_[np.arange(n) < 304, np.arange(n) < 192]
    data = planted(np.zeros(2 * n, int), np.zeros(2 * n, int), {"group": group})
    ctx = context(SignalModel(), data, tmp_path)
    ctx.adversarial = {"linf:0.1": AdversarialOutcome("linf", 0.1, "test", data.x, clean, robust)}
    result = FairnessSection(n_resamples=200)(ctx)
    m = result.metrics
    prefix = "fairness.group.norm=linf.eps=0.1"
    assert m[f"{prefix}.clean_accuracy_difference"] == pytest.approx(0.35, abs=TOL)
    assert m[f"{prefix}.attack_success_rate_difference"] == pytest.approx(0.0, abs=TOL)
    assert m[f"{prefix}.robust_accuracy_difference"] == pytest.approx(304 / 400 - 192 / 400, abs=TOL)
    assert not [f for f in result.findings if f.code == "fairness.attack_success_rate_difference"]
    gap = next(f for f in result.findings if f.code == "fairness.robust_accuracy_difference")
    assert gap.severity == "info"
    assert "clean accuracy gap 0.350, attack success rate gap 0.000" in gap.message
    assert "no group is easier to attack" in gap.message
    assert not any("is easier to attack" in f.message and "no group" not in f.message for f in result.findings)


def test_robustness_small_groups_judged_by_clean_correct_rows(tmp_path: Path) -> None:
    """'b' has 400 rows but only 6 clean-correct ones: its attack success rate rests on 6 rows."""
    n = 400
    group = np.array(["a"] * n + ["b"] * n)
    clean = np.r_[np.ones(n, bool), np.arange(n) < 6]
    robust = np.r_[np.arange(n) < 360, np.zeros(n, bool)]  # a: 10% broken, b: every clean-correct row broken
    data = planted(np.zeros(2 * n, int), np.zeros(2 * n, int), {"group": group})
    ctx = context(SignalModel(), data, tmp_path)
    ctx.adversarial = {"linf:0.1": AdversarialOutcome("linf", 0.1, "test", data.x, clean, robust)}
    result = FairnessSection(n_resamples=200)(ctx)
    success = next(f for f in result.findings if f.code == "fairness.attack_success_rate_difference")
    assert success.severity == "low"
    assert "'b' has 6 clean-correct rows for the attack success rate" in success.message
    assert "too few rows to say that group 'b' is easier to attack" in success.message


# --- progress -----------------------------------------------------------------------------------------


def test_progress_goes_through_ctx_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = signal_data(600, 3)
    model = SignalModel()
    ctx = context(model, data, tmp_path)
    ctx.adversarial = _fgsm_outcomes(model, data, [0.1])
    seen: list[tuple[str, int | None, int]] = []

    def recording(iterable: Any, *, desc: str, total: int | None = None) -> Any:
        items = list(iterable)
        seen.append((desc, total, len(items)))
        return iter(items)

    plain = FairnessSection(n_resamples=300)(ctx)
    monkeypatch.setattr(ctx, "progress", recording)
    reported = FairnessSection(n_resamples=300)(ctx)
    assert reported.metrics == plain.metrics
    descs = {d: (total, count) for d, total, count in seen}
    assert descs["fairness: group metrics"] == (2, 2)
    assert descs["fairness: bootstrap by group (300 resamples)"] == (1, 1)
    assert descs["fairness: bootstrap by site (300 resamples)"] == (1, 1)
    assert descs["fairness: robustness by group"] == (1, 1)
    assert descs["fairness: bootstrap linf:0.1 by group (300 resamples)"] == (1, 1)
    assert descs["fairness: bootstrap linf:0.1 by site (300 resamples)"] == (1, 1)
