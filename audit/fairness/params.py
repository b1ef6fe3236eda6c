"""The ``fairness`` section's parameters (the computing modules read their thresholds from them)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from audit.plugin import Params

LABEL_TYPE = "give the favourable class's name (quoted in YAML, e.g. 'yes') or its index 0..K-1, not {kind}"


class FairnessParams(Params):
    features: list[str] | None = Field(None, description="sensitive columns to audit (default: all of data.sensitive)")
    intersections: bool = Field(False, description="also audit the intersection of all the sensitive columns")
    positive_label: str | int | None = Field(
        None, description="the favourable outcome: a class name or index. Selection rate, the four-fifths rule and "
                          "the true- and false-positive rates refer to it (default: the dataset's, e.g. COMPAS "
                          "'no recidivism'; else class 1)")
    n_resamples: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the intervals (0: none)")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="confidence level of the bootstrap intervals")
    min_rate_count: int = Field(30, ge=1, description="a rate computed from fewer rows (group size for accuracy and "
                                "selection rate, positives for the true-positive rate, negatives for the "
                                "false-positive rate) is marked; a gap resting on it is rated over the groups "
                                "with enough rows")
    dp_ratio_min: float = Field(0.8, gt=0, le=1, description="selection-rate ratio below this is flagged "
                                "(four-fifths rule)")
    dp_difference_max: float = Field(0.1, gt=0, le=1, description="demographic parity difference above this is flagged")
    eo_difference_max: float = Field(0.1, gt=0, le=1, description="equalized odds difference above this is flagged")
    accuracy_difference_max: float = Field(0.05, gt=0, le=1, description="accuracy gap between groups to flag")
    robust_accuracy_difference_max: float = Field(0.1, gt=0, le=1, description="robust accuracy gap to flag")
    attack_success_difference_max: float = Field(0.1, gt=0, le=1, description="attack success rate gap to flag")
    explanation_gap_max: float = Field(0.1, gt=0, le=1, description="gap in a feature's share of total |attribution| "
                                       "between groups to flag")
    error_ratio_min: float = Field(0.8, gt=0, le=1, description="regression: the best group's error (MAE, RMSE) / "
                                   "the worst group's below this is flagged")
    explanation_top_k: int = Field(10, ge=1, le=100, description="features shown in the explanation disparity table")

    # text (token inputs): audit.fairness.text
    identity_terms: dict[str, list[str]] | None = Field(
        None, description="text: identity subgroups as term lists, e.g. {female: [she, her, woman], male: [he, him, "
                          "man]}; a text mentioning any term (whole word, any case) is in the subgroup. Subgroup, "
                          "BPSN and BNSP AUCs (Borkan et al. 2019) per subgroup and per sensitive column value")
    auc_gap_max: float = Field(0.05, gt=0, le=1, description="text: a subgroup, BPSN or BNSP AUC this far below the "
                               "overall AUC is flagged")
    counterfactual: bool = Field(True, description="text: swap paired identity terms and compare predictions")
    counterfactual_pairs: list[tuple[str, str]] | None = Field(
        None, description="text: the swapped word pairs, e.g. [[he, she], [his, her]] (default: 31 gendered pairs, "
                          "docs/text-explain.md)")
    counterfactual_flip_max: float = Field(0.05, gt=0, le=1, description="text: prediction flip rate to flag")
    counterfactual_score_max: float = Field(0.05, gt=0, le=1, description="text: mean absolute change of the score "
                                            "to flag")

    @field_validator("identity_terms")
    @classmethod
    def _terms(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is not None:
            empty = [name for name, terms in value.items() if not [t for t in terms if str(t).strip()]]
            if empty or not value:
                raise ValueError(f"give each identity at least one term; {empty or 'none'} given without any")
        return value

    @field_validator("positive_label", mode="before")
    @classmethod
    def _name_or_index(cls, value: Any) -> Any:
        # YAML reads yes/no/true/false unquoted as booleans
        if isinstance(value, bool) or not (value is None or isinstance(value, (str, int))):
            raise ValueError(LABEL_TYPE.format(kind=f"a {type(value).__name__} ({value!r})"))
        return value


__all__ = ["LABEL_TYPE", "FairnessParams"]
