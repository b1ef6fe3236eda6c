"""The fairness section: cross-checks against fairlearn, invariants, planted bias, robustness and
explanation disparity read from earlier sections (no second attack pass)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from plugin_helpers import validate_section
from torch import nn

from audit.context import AdversarialOutcome, AttributionSet, AuditContext
from audit.data import AuditData, load_resume_names_data
from audit.errors import ConfigError
from audit.fairness import NO_ADVERSARIAL, NO_ATTRIBUTIONS, NO_SENSITIVE, FairnessSection
from audit.fairness_metrics import (
    BINARY_METRICS,
    bootstrap,
    confusion_counts,
    disparities,
    encode_groups,
    group_means,
    metric_frame,
    metrics_from_counts,
    one_vs_rest,
    percentile_interval,
)
from audit.model import AdaptedNetwork, SelectOutput, TorchModelAdapter

TOL = 1e-9


# --- helpers ------------------------------------------------------------------------------------


def _adapter(module: nn.Module, num_classes: int, cls: type[TorchModelAdapter] = TorchModelAdapter) -> Any:
    network = AdaptedNetwork(module, None, SelectOutput(None, "logits", False))
    return cls(network, num_classes=num_classes, output_kind="logits", bounds=None, device=torch.device("cpu"),
               batch_size=512, source="test", sha256="0" * 64)




class SignalModel(nn.Module):
    """Logit of class 1 = 4 * x[:, 0]; with ``flip``, predictions are flipped where x[:, 1] == 1
    (a planted bias against the group encoded in feature 1)."""

    def __init__(self, *, flip: bool) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 4.0 * x[:, 0]
        if self.flip:
            score = torch.where(x[:, 1] > 0.5, -score, score)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _signal_data(n: int, seed: int, *, noise: float = 0.35) -> AuditData:
    """Labels independent of the group; x0 = label signal + noise; x1 = group indicator; x2 = noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    group = rng.integers(0, 2, n)
    x = np.stack([(2 * y - 1) * 0.5 + rng.normal(0, noise, n), group, rng.normal(0, 1, n)], axis=1)
    return AuditData(name="signal", x=x, y=y, class_names=["no", "yes"], modality="tabular",
                     feature_names=["signal", "group", "noise"],
                     sensitive={"group": np.where(group == 1, "b", "a"), "site": rng.choice(["n", "s", "w"], n)})


def _ctx(module: nn.Module, data: AuditData, tmp_path: Path, **kwargs: Any) -> AuditContext:
    return AuditContext(model=kwargs.pop("adapter", None) or _adapter(module, data.num_classes), data=data,
                        run_dir=tmp_path / "run", seed=0, **kwargs)


# --- vectorized metrics == fairlearn ------------------------------------------------------------


def _random_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    pred = np.where(rng.random(n) < 0.7, y, 1 - y)
    return y, pred, rng.choice(["x", "y", "z"], n), rng.choice(["p", "q"], n)


@pytest.mark.parametrize("intersect", [False, True])
def test_group_metrics_equal_metricframe(intersect: bool) -> None:
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        equalized_odds_ratio,
    )

    y, pred, s1, s2 = _random_binary(700, 1)
    columns = {"s1": s1, "s2": s2} if intersect else {"s1": s1}
    codes, groups = encode_groups(list(columns.values()))
    ours = metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2))
    frame = metric_frame(y, pred, columns, binary=True)
    for j, g in enumerate(groups):
        key = tuple(g.split(" & ")) if intersect else g
        for m in BINARY_METRICS:
            assert ours[m][j] == pytest.approx(frame.by_group.loc[key, m], abs=TOL), (g, m)
    dis = disparities(ours)
    for m in BINARY_METRICS[1:]:
        assert dis[f"{m}_difference"] == pytest.approx(frame.difference()[m], abs=TOL)
        assert dis[f"{m}_ratio"] == pytest.approx(frame.ratio()[m], abs=TOL)
        assert float(ours[m].min()) == pytest.approx(frame.group_min()[m], abs=TOL)
    sf = np.stack(list(columns.values()), axis=1) if intersect else s1
    assert dis["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=sf), abs=TOL)
    assert dis["demographic_parity_ratio"] == pytest.approx(
        demographic_parity_ratio(y, pred, sensitive_features=sf), abs=TOL)
    assert dis["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=sf), abs=TOL)
    assert dis["equalized_odds_ratio"] == pytest.approx(equalized_odds_ratio(y, pred, sensitive_features=sf), abs=TOL)


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

    data = _signal_data(400, 5)
    data.y[data.sensitive["group"] == "b"] = 0  # group b: no positives at all
    b = data.sensitive["group"] == "b"
    assert true_positive_rate(data.y[b], np.ones(b.sum(), int), pos_label=1) == 0.0  # the misleading 0
    result = FairnessSection(features=["group"], n_resamples=50)(_ctx(SignalModel(flip=False), data, tmp_path))
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
    per = metrics_from_counts(confusion_counts(codes, y, pred, len(labels), 2))
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
    frame = metric_frame(y, pred, {"g": groups}, binary=True)
    for g, values in by_group.items():
        for m, v in values.items():
            expected = float(frame.by_group.loc[g, m])
            assert (np.isnan(v) and np.isnan(expected)) or v == pytest.approx(expected, abs=TOL), (g, m)


def test_section_invariant_to_shuffle_and_rename(tmp_path: Path) -> None:
    data = _signal_data(600, 2)
    base = FairnessSection(n_resamples=0)(_ctx(SignalModel(flip=False), data, tmp_path))
    order = np.random.default_rng(0).permutation(data.n_samples)
    shuffled = data.subset(order)
    shuffled.sensitive["site"] = np.char.add("site ", shuffled.sensitive["site"])
    other = FairnessSection(n_resamples=0)(_ctx(SignalModel(flip=False), shuffled, tmp_path))
    keys = [k for k in base.metrics if ".group=" not in k]
    assert keys and all(other.metrics[k] == pytest.approx(base.metrics[k], abs=TOL) for k in keys)


# --- bootstrap intervals ------------------------------------------------------------------------


def _width_and_contains(n: int, seed: int) -> tuple[dict[str, float], bool]:
    y, pred, s1, _ = _random_binary(n, seed)
    codes, groups = encode_groups([s1])

    def statistic(index: np.ndarray | None) -> dict[str, np.ndarray]:
        return disparities(metrics_from_counts(confusion_counts(codes, y, pred, len(groups), 2, index)))

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
    from audit.fairness_metrics import stratified_resamples

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
    data = _signal_data(2000, 11)
    fair = FairnessSection(features=["group"], n_resamples=200)(_ctx(SignalModel(flip=False), data, tmp_path))
    biased = FairnessSection(features=["group"], n_resamples=200)(_ctx(SignalModel(flip=True), data, tmp_path))
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

    ctx = _ctx(resume_mlp, resume_test, tmp_path)
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
    figure = next(f for f in result.figures if f["name"] == "groups_gender")
    assert figure["kind"] == "bar" and all("yerr_low" in s and "yerr_high" in s for s in figure["series"])
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

    result = FairnessSection(features=["gender"], n_resamples=200)(_ctx(FlipForWomen(resume_mlp), data, tmp_path))
    high = [f for f in result.findings if f.severity == "high"]
    assert any(f.code == "fairness.demographic_parity_ratio" for f in high), [f.message for f in result.findings]
    assert any(f.code == "fairness.accuracy_difference" for f in high)


def test_multiclass_section_reports_worst_class(digits_cnn: Any, digits_test: AuditData, tmp_path: Path) -> None:
    from fairlearn.metrics import demographic_parity_difference

    data = digits_test.subset(np.arange(300))
    data.sensitive = {"scanner": np.random.default_rng(0).choice(["old", "new"], 300)}
    ctx = _ctx(digits_cnn, data, tmp_path)
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
    result = FairnessSection()(_ctx(cancer_mlp, cancer_test, tmp_path))
    assert result.status == "skipped" and result.notes == [NO_SENSITIVE]
    assert "data.sensitive" in NO_SENSITIVE


def test_unknown_feature_is_a_config_error(tmp_path: Path) -> None:
    result = FairnessSection(features=["age"])(_ctx(SignalModel(flip=False), _signal_data(100, 0), tmp_path))
    assert result.status == "error" and result.error is not None
    assert "['age'] are not sensitive columns" in result.error["message"]
    with pytest.raises(ConfigError, match="n_resamples"):
        FairnessSection(n_resamples=-1)


def test_small_groups_flagged_not_dropped(tmp_path: Path) -> None:
    data = _signal_data(300, 4)
    data.sensitive["group"] = np.where(np.arange(300) < 12, "tiny", data.sensitive["group"])
    result = FairnessSection(features=["group"], n_resamples=50)(_ctx(SignalModel(flip=False), data, tmp_path))
    table = next(t for t in result.tables if t.name == "groups_group")
    tiny = next(r for r in table.rows if r[0] == "tiny")
    assert tiny[1] == 12 and tiny[2] is True
    assert any(f.code == "fairness.small_group" and "'tiny' (n=12)" in f.message for f in result.findings)
    assert result.metrics["fairness.group.group=tiny.accuracy"] is not None


def test_default_params_fast_and_deterministic(resume_mlp: Any, resume_test: AuditData, tmp_path: Path) -> None:
    import time

    runs = []
    for _ in range(2):
        start = time.perf_counter()
        result = FairnessSection()(_ctx(resume_mlp, resume_test, tmp_path))
        runs.append(result)
        assert time.perf_counter() - start < 10.0
    assert runs[0].metrics == runs[1].metrics


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
    adapter = _adapter(model, 2, NoForwardAdapter)
    NoForwardAdapter.rows_seen = 0
    ctx = _ctx(model, data, tmp_path, adapter=adapter)
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
    flagged = [f for f in result.findings if f.code == "fairness.robust_accuracy_difference"]
    assert flagged and "group 'b' is easier to attack" in flagged[0].message
    assert NO_ADVERSARIAL not in result.notes
    assert any(t.name == "robustness_group" for t in result.tables)
    validate_section(result, ctx)


def test_robust_equal_groups_not_flagged(tmp_path: Path) -> None:
    data = _signal_data(1500, 8)
    model = SignalModel(flip=False)
    ctx = _ctx(model, data, tmp_path)
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
    data = _signal_data(n, 9)
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
    ctx = _ctx(linear, data, tmp_path)
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
    assert any(f["name"] == "explanation_input_x_gradient_group" for f in result.figures)
    assert NO_ATTRIBUTIONS not in result.notes
    validate_section(result, ctx)


def test_mismatched_outcome_is_skipped_with_note(tmp_path: Path) -> None:
    data = _signal_data(200, 1)
    ctx = _ctx(SignalModel(flip=False), data, tmp_path)
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
    outcome.index = rows  # type: ignore[attr-defined]
    ctx = _ctx(model, data, tmp_path)
    ctx.adversarial = {"linf:0.1": outcome}
    result = FairnessSection(features=["group"], n_resamples=50)(ctx)
    b = data.sensitive["group"][rows] == "b"
    assert result.metrics["fairness.group.norm=linf.eps=0.1.group=b.robust_accuracy"] == pytest.approx(
        outcome.robust_correct[b].mean(), abs=TOL)
    table = next(t for t in result.tables if t.name == "robustness_group")
    assert sum(int(r[2] or 0) for r in table.rows) == len(rows)
