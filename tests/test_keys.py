"""The one metric-key builder and parser (audit/keys.py): the keys the sections write are byte-identical to
the ones results.json held before the builder (pinned here), and the readers take them apart without regexes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.keys import metric_key, parse_metric_key, qualifier
from audit.results import SectionResult

ROOT = Path(__file__).resolve().parents[1]

# (parts, the key results.json held for them before the builder); relative keys get the section in front
PINNED = [
    (("robustness", "worst_case", "linf", ("eps", 0.1), "robust_accuracy"),
     "robustness.worst_case.linf.eps=0.1.robust_accuracy"),
    (("worst_case", "l2", ("eps", 0.5), "robust_accuracy"), "worst_case.l2.eps=0.5.robust_accuracy"),
    (("apgd_ce", "linf", ("eps", 8 / 255), "attack_success_rate"), "apgd_ce.linf.eps=0.0313725.attack_success_rate"),
    (("escalation", "linf", ("eps", np.float64(0.3)), "robust_accuracy_before"),
     "escalation.linf.eps=0.3.robust_accuracy_before"),
    (("gaussian_noise", ("severity", 3), "accuracy"), "gaussian_noise.severity=3.accuracy"),
    (("corruptions", "brightness", ("severity", 5), "accuracy"), "corruptions.brightness.severity=5.accuracy"),
    (("sex", ("norm", "linf"), ("eps", 0.1), ("group", "female"), "robust_accuracy"),
     "sex.norm=linf.eps=0.1.group=female.robust_accuracy"),
    (("age", ("class", 2), "true_positive_rate"), "age.class=2.true_positive_rate"),
    ((("class", "T-shirt_top"), "recall"), "class=T-shirt_top.recall"),
    (("squeeze", "linf", ("eps", 1.0), "adaptive_robust_accuracy"), "squeeze.linf.eps=1.adaptive_robust_accuracy"),
    (("smoothing", ("sigma", 0.25), "certificate_violations"), "smoothing.sigma=0.25.certificate_violations"),
    (("explanations", "ig", "faithfulness_rank"), "explanations.ig.faithfulness_rank"),
    (("sex.demographic_parity_difference", "ci_low"), "sex.demographic_parity_difference.ci_low"),
]


@pytest.mark.parametrize(("parts", "key"), PINNED)
def test_builder_writes_the_keys_results_held(parts: tuple[object, ...], key: str) -> None:
    assert metric_key(*parts) == key  # type: ignore[arg-type]
    parsed = parse_metric_key(key)
    assert parsed.key == key and ".".join(parsed.segments) == key
    assert len(parsed.segments) == sum(1 if isinstance(p, tuple) else len(p.split(".")) for p in parts)


def test_section_result_prefixes_the_section() -> None:
    result = SectionResult("robustness", "robustness")
    result.metric(metric_key("worst_case", "linf", ("eps", 0.05), "robust_accuracy"), 0.5)
    assert list(result.metrics) == ["robustness.worst_case.linf.eps=0.05.robust_accuracy"]


def test_qualifier_spells_numbers_as_the_results_did() -> None:
    assert qualifier("eps", 0.1) == "eps=0.1"  # %g, as f"{eps:g}" wrote it
    assert qualifier("eps", 2.0) == "eps=2"
    assert qualifier("eps", 1e-05) == "eps=1e-05"
    assert qualifier("severity", 3) == "severity=3"  # an int as it is, as f"{s}" wrote it
    assert qualifier("group", "<25") == "group=<25"
    for bad in ("", "a.b", "a=b"):
        with pytest.raises(ValueError, match="qualifier name"):
            qualifier(bad, 1)
    with pytest.raises(ValueError, match="empty or dangling"):
        metric_key("robustness", "", "x")
    with pytest.raises(ValueError, match="empty or dangling"):
        metric_key("robustness.", "x")


def test_parser_keeps_decimal_qualifiers_whole() -> None:
    key = parse_metric_key("robustness.worst_case.linf.eps=0.0313725.robust_accuracy")
    assert key.segments == ("robustness", "worst_case", "linf", "eps=0.0313725", "robust_accuracy")
    assert (key.section, key.name) == ("robustness", "robust_accuracy")
    assert key.path == ("worst_case", "linf", "eps=0.0313725")
    assert key.qualifiers == {"eps": "0.0313725"}
    assert key.matches("robustness", "worst_case", None, "eps=", "robust_accuracy") == {"2": "linf", "eps": "0.0313725"}
    assert key.matches("robustness", "worst_case", None, "severity=", "robust_accuracy") is None
    assert key.matches("robustness", "worst_case", "linf", "eps=") is None  # length differs
    # a class index after a qualifier stays its own segment when what follows is not a number's fraction
    assert parse_metric_key("fairness.age.class=2.tpr").segments == ("fairness", "age", "class=2", "tpr")
    assert parse_metric_key("shift.fog.severity=3.accuracy").qualifiers == {"severity": "3"}
    assert parse_metric_key("f.sex.norm=linf.eps=1e-05.group=a.x").qualifiers == {
        "norm": "linf", "eps": "1e-05", "group": "a"}


def test_readers_parse_keys_without_regexes() -> None:
    """The headline, the store's history labels and the shift section read keys through parse_metric_key."""
    for path in ("reports/headline.py", "audit/engine/store_record.py", "audit/shift/record.py"):
        text = (ROOT / path).read_text()
        assert "parse_metric_key" in text and "import re\n" not in text, path
