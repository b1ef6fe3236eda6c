"""Text fairness: identity-term subgroup, BPSN and BNSP AUCs equal scikit-learn's roc_auc_score on the same subsets
(real fine-food reviews and their trained classifier), bootstrap intervals, findings, and counterfactual swaps of
paired identity terms checked against the model called on the swapped texts by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from text_helpers import text_problem

from audit.errors import ConfigError
from audit.fairness.identity import DEFAULT_PAIRS, mentions, rank_auc, subgroup_aucs, swap_map, swap_terms
from audit.fairness.section import FairnessSection

TERMS = {"female": ["she", "her", "wife", "woman", "mom", "daughter", "girl"],
         "male": ["he", "him", "his", "husband", "man", "dad", "son", "boy"]}


def test_rank_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(6, 40)).astype(float)  # many ties
    labels = rng.integers(0, 2, size=(6, 40))
    for row in range(6):
        assert rank_auc(scores[row], labels[row])[0] == pytest.approx(roc_auc_score(labels[row], scores[row]),
                                                                      abs=1e-12)
    assert np.isnan(rank_auc(scores[0], np.ones(40))[0])


def test_mentions_are_whole_words_in_any_case() -> None:
    texts = ["She loved it", "the shell broke", "HER favourite", "his-tea", "no one"]
    assert mentions(texts, ["she", "her", "his"]).tolist() == [True, False, True, True, False]


def test_swap_keeps_case_and_swaps_at_once() -> None:
    mapping = swap_map(DEFAULT_PAIRS)
    assert swap_terms("He said his Wife liked HIM; she agreed.", mapping) == \
        "She said her Husband liked HER; he agreed."
    assert swap_terms("shell and hershey", mapping) == "shell and hershey"


def test_subgroup_aucs_equal_sklearn_on_the_same_subsets() -> None:
    problem = text_problem()
    data = problem.data
    scores = problem.adapter.probabilities(data.x).numpy()[:, 1].astype(np.float64)
    positive = data.y == 1
    member = mentions(data.texts, TERMS["female"])  # type: ignore[arg-type]
    found = subgroup_aucs("female", member, scores, positive, n_resamples=300, seed=0)
    background = ~member
    expected = {"subgroup_auc": roc_auc_score(positive[member], scores[member]),
                "bpsn_auc": roc_auc_score(positive[(member & ~positive) | (background & positive)],
                                          scores[(member & ~positive) | (background & positive)]),
                "bnsp_auc": roc_auc_score(positive[(member & positive) | (background & ~positive)],
                                          scores[(member & positive) | (background & ~positive)])}
    for name, value in expected.items():
        assert found.values[name] == pytest.approx(value, abs=1e-12), name
        samples = found.samples[name]
        assert samples.shape == (300,) and np.isfinite(samples).all()  # defined in every resample: cells kept
        assert samples.std() > 0
    overall = roc_auc_score(positive, scores)
    assert np.median(found.samples["bpsn_auc_gap"]) == pytest.approx(overall - found.values["bpsn_auc"], abs=0.1)


def test_section_on_text_end_to_end(make_context: Any) -> None:
    from plugin_helpers import validate_section

    problem = text_problem()
    data = problem.data.subset(np.arange(200))
    data.sensitive = {"length": np.where(np.array([len(t) for t in data.texts]) > 400, "long", "short")}  # type: ignore[arg-type]
    ctx = make_context(problem.adapter, data)
    section = FairnessSection(identity_terms=TERMS, n_resamples=200, positive_label="great")
    section.check_supports(ctx)
    result = section(ctx)
    assert result.status == "ok", result.error
    validate_section(result, ctx)
    m = result.metrics
    scores = problem.adapter.probabilities(data.x).numpy()[:, 0].astype(np.float64)  # 'great' is class 0
    positive = data.y == 0
    assert m["fairness.overall.auc"] == pytest.approx(roc_auc_score(positive, scores), abs=1e-9)
    for grouping, name, member in [("identity", "female", mentions(data.texts, TERMS["female"])),  # type: ignore[arg-type]
                                   ("identity", "male", mentions(data.texts, TERMS["male"])),  # type: ignore[arg-type]
                                   ("length", "long", data.sensitive["length"] == "long")]:
        rows = (member & ~positive) | (~member & positive)
        key = f"fairness.{grouping}.group={name}"
        assert m[f"{key}.bpsn_auc"] == pytest.approx(roc_auc_score(positive[rows], scores[rows]), abs=1e-9)
        assert m[f"{key}.subgroup_auc"] == pytest.approx(roc_auc_score(positive[member], scores[member]), abs=1e-9)
        assert m[f"{key}.bnsp_auc.ci_low"] <= m[f"{key}.bnsp_auc"] <= m[f"{key}.bnsp_auc.ci_high"]
    # the usual group metrics of the sensitive column run too
    assert any(k.startswith("fairness.length.") and k.endswith("accuracy_difference") for k in m)
    # counterfactual swaps against the model on the swapped texts
    mapping = swap_map(DEFAULT_PAIRS)
    held = [i for i, t in enumerate(data.texts) if swap_terms(t, mapping) != t]  # type: ignore[arg-type]
    before = problem.adapter.predict(problem.adapter.encode([data.texts[i] for i in held]))  # type: ignore[index]
    after = problem.adapter.predict(problem.adapter.encode([swap_terms(data.texts[i], mapping) for i in held]))  # type: ignore[index]
    assert m["fairness.counterfactual.n_texts"] == len(held) > 20
    assert m["fairness.counterfactual.flip_rate"] == pytest.approx(float((before != after).mean()), abs=1e-12)
    assert m["fairness.counterfactual.mean_abs_score_change"] > 0


def test_a_subgroup_the_model_gets_wrong_is_a_finding(make_context: Any) -> None:
    problem = text_problem()
    data = problem.data.subset(np.arange(200))
    member = mentions(data.texts, TERMS["female"])  # type: ignore[arg-type]
    pred = problem.adapter.predict(data.x)
    data.y = np.where(member, 1 - pred, data.y)  # labels the model gets wrong on every 'female' text
    ctx = make_context(problem.adapter, data)
    result = FairnessSection(identity_terms=TERMS, n_resamples=200, counterfactual=False)(ctx)
    assert result.status == "ok", result.error
    assert result.metrics["fairness.identity.group=female.subgroup_auc"] == 0.0
    found = [f for f in result.findings if f.code == "fairness.subgroup_auc" and "'female'" in f.message]
    assert found and found[0].severity == "low"  # 19 texts: fewer than min_rate_count 30
    result = FairnessSection(identity_terms=TERMS, n_resamples=200, counterfactual=False, min_rate_count=10)(ctx)
    found = [f for f in result.findings if f.code == "fairness.subgroup_auc" and "'female'" in f.message]
    assert found and found[0].severity == "high"


def test_identity_terms_need_terms() -> None:
    with pytest.raises(ConfigError, match=r"sections\.fairness\.identity_terms"):
        FairnessSection(identity_terms={"female": []})


def test_identity_terms_share_of_the_attributions(make_context: Any) -> None:
    from explain.section import ExplanationsSection

    problem = text_problem()
    ctx = make_context(problem.adapter, problem.data)
    explained = ExplanationsSection(methods=["layer_ig"], n_samples=60, quality=[])(ctx)
    assert explained.status == "ok", explained.error
    result = FairnessSection(identity_terms=TERMS, n_resamples=0, counterfactual=False)(ctx)
    assert result.status == "ok", result.error
    found = ctx.attributions["layer_ig"]
    ids = ctx.data.x[found.index].astype(np.int64)
    pad = problem.adapter.tokenizer.pad_id
    shares, token_shares = [], []
    for row, tokens in zip(range(len(ids)), problem.adapter.tokens(ids), strict=True):
        hit = np.array([t in TERMS["male"] for t in tokens])  # the word-level tokenizer lower-cases
        values = found.values[row][ids[row] != pad]
        if hit.any():
            shares.append(np.abs(values[hit]).sum() / np.abs(values).sum())
            token_shares.append(hit.mean())
    assert len(shares) >= 3
    key = "fairness.identity.group=male.layer_ig"
    assert result.metrics[f"{key}.attribution_share"] == pytest.approx(np.mean(shares), rel=1e-12)
    assert result.metrics[f"{key}.token_share"] == pytest.approx(np.mean(token_shares), rel=1e-12)
    assert any(t.name == "identity_attributions" for t in result.tables)
