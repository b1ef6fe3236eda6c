"""The one bootstrap (audit/bootstrap.py): its callers' numbers pinned to what they were before the three
bootstraps (fairness, compare, explanation rankings) became one, so that merging them changed no result.

The pinned values were printed by the code before the merge on the same inputs; equality is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audit.bootstrap import Interval, bootstrap, paired_bootstrap, percentile_interval, resampled_means
from audit.fairness.estimates import Estimate, estimates
from explain.ranking import Estimate as RankEstimate
from explain.ranking import intervals, rank

ROOT = Path(__file__).resolve().parents[1]


def _inputs() -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng, rng.integers(0, 3, 50), rng.random(50) < 0.6


def test_stratified_bootstrap_and_intervals_pinned() -> None:
    _, codes, y = _inputs()

    def stat(index: np.ndarray | None) -> dict[str, np.ndarray]:
        assert index is not None
        v, g = y[index].astype(float), codes[index]
        rates = np.stack([(v * (g == k)).sum(1) / (g == k).sum(1) for k in range(3)], 1)
        return {"rates": rates, "diff": rates.max(1) - rates.min(1)}

    s = bootstrap(codes, 300, 11, stat)
    assert float(s["diff"].sum()) == 63.24385964912281
    assert float(s["rates"][5, 1]) == 0.6875
    point = np.array([y[codes == k].mean() for k in range(3)])
    assert percentile_interval(s["diff"], 0.9, float(point.max() - point.min())) == Interval(
        0.020890665089463648, 0.12171052631578949, 1.0)
    assert percentile_interval(s["diff"], 0.9) == Interval(0.05905701754385966, 0.4045175438596492, 1.0)
    assert estimates({"rates": point}, {"rates": s["rates"]}, 0.95)["rates"][2] == Estimate(
        0.631578947368421, 0.3684210526315789, 0.8421052631578947, 1.0)


def test_paired_bootstrap_pinned() -> None:
    rng, _, _ = _inputs()  # the same stream of draws as when the numbers were pinned
    a, b = rng.random(40) < 0.5, rng.random(40) < 0.7
    found = paired_bootstrap(a.astype(float), b.astype(float), resamples=500, seed=3)
    assert (found.delta, found.ci_low, found.ci_high, found.p_value) == (
        0.175, -0.03812499999999974, 0.38812499999999944, 0.12574850299401197)
    c = rng.normal(size=200)
    d = c + rng.normal(0.1, 0.5, 200)
    found = paired_bootstrap(c, d, resamples=400, seed=5)  # many distinct values: resamples the rows
    assert (found.delta, found.ci_low, found.ci_high, found.p_value) == (
        -0.008784251325447547, -0.06847650562710518, 0.05137582630249123, 0.8029925187032418)
    scores = {"ig": rng.random(30), "sal": rng.random(30) + 0.2}
    scores["sal"][3] = np.nan
    assert intervals(scores, n_resamples=400, seed=2) == {
        "ig": RankEstimate(0.5879983747256702, 0.4935197835242337, 0.6907301577728141),
        "sal": RankEstimate(0.678007795210998, 0.5745112411121455, 0.8026153724792056)}
    ranking = rank(scores, lower_is_better=True, n_resamples=400, seed=2)
    assert ranking.ranks == {"ig": 1, "sal": 1}
    assert ranking.differences == {
        ("ig", "sal"): RankEstimate(-0.08374438238759468, -0.22070102296430258, 0.04442295958530342)}


def test_resampled_means_are_paired_and_skip_nan() -> None:
    values = np.array([[1.0, 2.0, np.nan, 4.0], [2.0, 3.0, 5.0, 5.0]])
    out = resampled_means(values, n_resamples=64, seed=1)
    rng = np.random.default_rng(1)
    index = rng.integers(0, 4, size=(64, 4))
    for row in range(2):
        picked = [values[row, i][np.isfinite(values[row, i])] for i in index]
        expected = [p.mean() if p.size else np.nan for p in picked]
        np.testing.assert_array_equal(out[row], expected)


def test_one_bootstrap_in_the_package() -> None:
    """No module but audit/bootstrap.py defines a bootstrap or draws resample indices: the others call it."""
    markers = ("def bootstrap(", "def paired_bootstrap(", "def percentile_interval(", "def stratified_resamples(",
               ".multinomial(", "rng.integers(0, n", "class BootstrapResult")
    drawers = []
    for package in ("audit", "attacks", "explain", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if path != ROOT / "audit" / "bootstrap.py" and any(m in text for m in markers):
                drawers.append(str(path.relative_to(ROOT)))
    assert drawers == []
