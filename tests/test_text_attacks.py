"""Text attacks (attacks/text/): DeepWordBug, WordNet synonyms and HotFlip on the fine-food review model, their
constraints, the robustness section on text data, and the cross-check of DeepWordBug against an independent
reference of TextAttack's recipe on the same model, samples and budget."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from deepwordbug_reference import edit_distance, reference_deepwordbug
from system import need
from text_helpers import text_problem

from attacks.text.base import Constraints, Words, levenshtein, stopwords
from attacks.text.charedit import DeepWordBug
from attacks.text.evaluate import WORST, evaluate_text
from attacks.text.hotflip import HotFlip
from attacks.text.wordnet import wordnet_missing
from audit.errors import ConfigError

N_ATTACKED = 40  # clean-correct reviews the per-attack tests use


@pytest.fixture(scope="module")
def problem() -> Any:
    p = text_problem()
    pred = p.adapter.logits(p.data.x).argmax(dim=1).numpy()
    ok = np.flatnonzero(pred == p.data.y)
    return p, pred, ok


def _predict(adapter: Any, texts: list[str]) -> np.ndarray:
    return adapter.text_logits(texts).argmax(dim=1).numpy()


def _check_word_result(p: Any, r: Any, label: int, c: Constraints) -> None:
    """What every word-level result must satisfy, checked from the texts themselves."""
    a, b = Words.of(r.original), Words.of(r.adversarial)
    assert len(a) == len(b) and a.seps == b.seps  # only words changed, separators kept
    diff = [i for i, (x, y) in enumerate(zip(a.words, b.words, strict=True)) if x != y]
    assert diff == r.changed
    assert len(diff) <= c.max_changes(len(a))
    assert all(c.modifiable(a.words[i]) for i in diff)  # no stopword, no protected word
    assert r.success == (int(_predict(p.adapter, [r.adversarial])[0]) != label)
    assert r.queries <= c.query_budget


def test_words_and_levenshtein() -> None:
    text = "Don't buy it -- the  co-op's coffee (2 bags) was stale!"
    w = Words.of(text)
    assert w.text == text
    assert w.words == ("Don't", "buy", "it", "the", "co-op's", "coffee", "2", "bags", "was", "stale")
    assert w.replace(9, "fresh").text == text.replace("stale", "fresh")
    for a, b, d in [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("same", "same", 0),
                    ("ab", "ba", 2)]:
        assert levenshtein(a, b) == d == edit_distance(a, b)
    assert Constraints(max_words_fraction=0.25).max_changes(3) == 1  # at least one word
    assert Constraints(max_words_fraction=0.25).max_changes(40) == 10


def test_deepwordbug_constraints_and_determinism(problem: Any) -> None:
    p, _, ok = problem
    rows = ok[:N_ATTACKED]
    c = Constraints(max_words_fraction=0.2, max_edit_distance=6, protected=frozenset({"great"}))
    out = DeepWordBug(c, seed=5).run(p.adapter, p.data.texts, p.data.y, rows.tolist())
    assert sorted(out.results) == rows.tolist()
    for row, r in out.results.items():
        _check_word_result(p, r, int(p.data.y[row]), c)
        assert edit_distance(r.original, r.adversarial) <= 6
        a, b = Words.of(r.original), Words.of(r.adversarial)
        assert all(a.words[i].lower() != "great" for i in r.changed)
        assert all(levenshtein(a.words[i], b.words[i]) <= 2 for i in r.changed)  # one character edit per word
    rate = np.mean([r.success for r in out.results.values()])
    assert rate > 0.2, rate  # a real attack on a bag-of-words model: unknown words remove the evidence
    again = DeepWordBug(c, seed=5).run(p.adapter, p.data.texts, p.data.y, rows.tolist())
    assert [r.adversarial for r in again.results.values()] == [r.adversarial for r in out.results.values()]


def test_synonym_swap_uses_wordnet_synonyms(problem: Any) -> None:
    need(wordnet_missing())
    from attacks.text.wordnet import SynonymSwap, synonyms, wordnet

    assert wordnet().get_version() == "3.0"
    assert {"awful", "dreadful", "horrific"} <= set(synonyms("terrible"))
    assert "splendid" in synonyms("Excellent") and "excellent" not in synonyms("excellent")
    p, _, ok = problem
    c = Constraints(max_words_fraction=0.2)
    out = SynonymSwap(c, seed=0).run(p.adapter, p.data.texts, p.data.y, ok[:N_ATTACKED].tolist())
    successes = 0
    for row, r in out.results.items():
        _check_word_result(p, r, int(p.data.y[row]), c)
        a, b = Words.of(r.original), Words.of(r.adversarial)
        for i in r.changed:
            assert b.words[i].lower() in synonyms(a.words[i]), (a.words[i], b.words[i])
        successes += r.success
    assert successes > 0.2 * len(out.results)


def test_hotflip_first_order_estimate_and_verified_text(problem: Any) -> None:
    p, _, ok = problem
    adapter = p.adapter
    # the estimate HotFlip ranks flips by is the directional derivative of the loss along E[v] - E[x_i]
    ids = torch.as_tensor(adapter.tokenizer.encode([p.data.texts[int(ok[0])]]))
    label = torch.tensor([int(p.data.y[int(ok[0])])])
    emb = adapter.embed(ids).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(adapter.forward_embeddings(ids, emb), label)
    (grad,) = torch.autograd.grad(loss, emb)
    matrix = adapter.embedding_matrix
    emb = emb.detach()

    def loss_at(e: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(adapter.forward_embeddings(ids, e), label))

    for pos, token in [(0, 7), (3, 100), (5, 2500)]:
        direction = torch.zeros_like(emb)
        direction[0, pos] = matrix[token] - matrix[ids[0, pos]]
        h = 1e-2  # central difference: error O(h^2)
        slope = (loss_at(emb + h * direction) - loss_at(emb - h * direction)) / (2 * h)
        assert slope == pytest.approx(float((grad * direction).sum()), rel=2e-2, abs=2e-3)
    c = Constraints(max_words_fraction=0.1)
    out = HotFlip(c, seed=0).run(adapter, p.data.texts, p.data.y, ok[:N_ATTACKED].tolist())
    for row, r in out.results.items():
        assert r.unit == "token" and len(r.changed) <= c.max_changes(r.n_units)
        assert r.success == (int(_predict(adapter, [r.adversarial])[0]) != int(p.data.y[row]))
        differ = [i for i, (x, y) in enumerate(zip(r.original_units, r.adversarial_units, strict=True)) if x != y]
        assert differ == r.changed
        assert all(c.modifiable(r.original_units[i]) for i in r.changed)
    assert np.mean([r.success for r in out.results.values()]) > 0.3


def test_worst_case_and_metrics(problem: Any) -> None:
    p, pred, _ok = problem
    rows = np.arange(60)
    texts = [p.data.texts[i] for i in rows]
    c = Constraints(max_words_fraction=0.1)
    ev = evaluate_text(p.adapter, texts, p.data.y[rows], pred[rows], [DeepWordBug(c), HotFlip(c)])
    ok_rows = ev.clean_correct
    deep, hot, worst = ev.summary("deepwordbug"), ev.summary("hotflip"), ev.summary(WORST)
    fooled_any = ev.outputs["deepwordbug"].success(60) | ev.outputs["hotflip"].success(60)
    assert worst.robust_accuracy == pytest.approx(float((ok_rows & ~fooled_any).mean()))
    assert worst.robust_accuracy <= min(deep.robust_accuracy, hot.robust_accuracy)
    assert deep.attack_success_rate == pytest.approx(
        sum(r.success for r in ev.outputs["deepwordbug"].results.values()) / ok_rows.sum())
    assert worst.queries_per_sample == pytest.approx(deep.queries_per_sample + hot.queries_per_sample)
    assert ev.worst and ev.clean_correct[list(ev.worst)].all()  # only clean-correct samples are attacked
    successes = [r for r in ev.outputs["hotflip"].results.values() if r.success]
    assert hot.mean_words_changed == pytest.approx(np.mean([len(r.changed) / r.n_units for r in successes]))


def test_deepwordbug_agrees_with_the_independent_reference(problem: Any) -> None:
    """Same model, same clean-correct samples, same budget (word fraction, edit distance 30, query budget):
    the success rates agree within sampling error. The tolerance is 3 binomial standard errors of the difference
    of two rates over n samples (independent draws; pairing on the same samples only shrinks the true spread)."""
    p, _, ok = problem
    fraction, budget = 0.25, 2000
    c = Constraints(max_words_fraction=fraction, max_edit_distance=30, query_budget=budget)
    ours = DeepWordBug(c, seed=11).run(p.adapter, p.data.texts, p.data.y, ok.tolist())
    proba = p.adapter.text_predict_proba
    ref = [reference_deepwordbug(proba, p.data.texts[i], int(p.data.y[i]), seed=1000 + int(i), stop=stopwords(),
                                 max_words_fraction=fraction, max_distance=30, budget=budget) for i in ok]
    n = len(ok)
    ours_rate = np.mean([ours.results[int(i)].success for i in ok])
    ref_rate = np.mean([s for s, *_ in ref])
    pooled = (ours_rate + ref_rate) / 2
    se = math.sqrt(2 * max(pooled * (1 - pooled), 1 / n) / n)
    assert abs(ours_rate - ref_rate) <= 3 * se, (ours_rate, ref_rate, se)
    for (success, text, _changed, queries), i in zip(ref, ok, strict=True):  # the reference keeps the budget too
        assert edit_distance(p.data.texts[i], text) <= 30 and queries <= budget
        assert success == (int(_predict(p.adapter, [text])[0]) != int(p.data.y[i]))


def test_robustness_section_on_text(problem: Any, tmp_path: Any) -> None:
    from plugin_helpers import validate_section

    from attacks.section import RobustnessSection
    from audit.context import AuditContext
    from audit.preflight import preflight

    p, _, _ = problem
    data = p.data.subset(np.arange(40))
    ctx = AuditContext(model=p.adapter, data=data, run_dir=tmp_path / "run", seed=0, batch_size=64)
    attacks = ["deepwordbug", "hotflip"] + (["synonym"] if wordnet_missing() is None else [])
    section = RobustnessSection(text={"attacks": attacks, "max_words_fraction": 0.15, "protected": ["Great"],
                                      "examples": 3, "embedding_eps": [0.5]})
    preflight(ctx, [section])  # token inputs are supported; no L-p key was given
    result = section(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    for name in [*attacks, WORST]:
        for metric in ("robust_accuracy", "attack_success_rate", "mean_words_changed", "queries_per_sample"):
            assert f"robustness.{name}.text.{metric}" in m
        assert m[f"robustness.{WORST}.text.robust_accuracy"] <= m[f"robustness.{name}.text.robust_accuracy"]
    assert m["robustness.clean_accuracy"] == pytest.approx(
        float((p.adapter.logits(data.x).argmax(1).numpy() == data.y).mean()))
    tables = {t.name: t for t in result.tables}
    assert {"text_attacks", "text_constraints", "text_examples", "embedding_pgd"} <= set(tables)
    # the embedding-space bound is reported apart: it never enters the text worst case
    fooled_by_text = 1 - m[f"robustness.{WORST}.text.robust_accuracy"] / m["robustness.clean_accuracy"]
    assert m[f"robustness.{WORST}.text.attack_success_rate"] == pytest.approx(fooled_by_text)
    assert 0 <= m["robustness.embedding_pgd.eps=0.5.attack_success_rate_upper_bound"] <= 1
    assert all(row[2] == 0.15 and row[4] == "great" for row in tables["text_constraints"].rows)
    examples = tables["text_examples"].rows
    assert 0 < len(examples) <= 3 and all("⟦" in row[4] and "⟦" in row[5] for row in examples)
    lines = [json.loads(line) for line in (ctx.run_dir / result.artifacts["text_adversarial"]).read_text(
        encoding="utf-8").splitlines()]
    assert {line["attack"] for line in lines} == set(attacks)
    for line in lines:
        assert line["original"] == data.texts[line["sample"]] and line["label"] == int(data.y[line["sample"]])
        assert line["success"] == (line["adversarial_prediction"] != line["label"])
        joined = {k: "".join(t for t, _ in line["segments"][k]) for k in ("original", "adversarial")}
        assert joined == {"original": line["original"], "adversarial": line["adversarial"]}
    validate_section(result, ctx)
    # the dashboard's sample explorer reads the same file
    from plugin_helpers import section_document

    from reports.dashboard.text_samples import example_lines, load_text_examples

    examples = load_text_examples(ctx.run_dir, section_document(result, ctx))
    assert sum(len(v) for v in examples.values()) == len(lines)
    entries = next(iter(examples.values()))
    shown = example_lines(entries[0], data.class_names)
    assert shown[0].startswith(f"**{entries[0]['attack']}**") and shown[1].startswith("original: ")


def test_lp_keys_on_text_are_config_errors(problem: Any, tmp_path: Any) -> None:
    from attacks.section import RobustnessSection
    from audit.context import AuditContext

    p, _, _ = problem
    ctx = AuditContext(model=p.adapter, data=p.data, run_dir=tmp_path / "run", seed=0)
    for key, value in [("eps", [0.1]), ("norm", "l2")]:
        with pytest.raises(ConfigError) as err:
            RobustnessSection(**{key: value}).validate(ctx)
        assert err.value.key == f"sections.robustness.{key}"
    with pytest.raises(ConfigError) as err:
        RobustnessSection(text={"attack_params": {"synonym": {"beam": 3}}, "attacks": ["synonym"]}).validate(ctx)
    assert err.value.key == "sections.robustness.text.attack_params.synonym.beam"
    with pytest.raises(ConfigError):
        RobustnessSection(text={"attacks": ["textfooler"]})
    RobustnessSection().validate(ctx)  # defaults on text: fine


def test_text_pairs_in_the_report_escape_every_word(tmp_path: Any) -> None:
    """The side-by-side figure: changed words in <mark>, every segment escaped (a review is never markup); the
    dashboard's drawing and the schema accept it."""
    from plugin_helpers import section_document, validate_section

    from audit.results import SectionResult
    from reports.figures import render_figure
    from reports.html import figure_view, render_html

    spec = {"name": "text_adversarial_examples", "kind": "text_pairs", "title": "pairs",
            "pairs": [{"caption": "sample 3 · deepwordbug", "original": [["Great ", 0], ["<b>tasty</b>", 1]],
                       "adversarial": [["Great ", 0], ["<b>tsaty</b>", 1]]}]}
    result = SectionResult(name="robustness", plugin="robustness")
    result.figure(spec)
    view = figure_view(spec, None)
    assert view["mode"] == "pairs" and view["pairs"][0]["original"][1] == ("<b>tasty</b>", True)

    p = text_problem()
    ctx = SimpleNamespace(seed=0, model=p.adapter, data=p.data)
    validate_section(result, ctx)
    html = render_html(section_document(result, ctx))
    assert "<mark>&lt;b&gt;tsaty&lt;/b&gt;</mark>" in html and "<b>tsaty" not in html
    fig = render_figure(spec)
    assert "unknown figure kind" not in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_explorer_markdown_escapes_every_segment() -> None:
    from reports.dashboard.text_samples import segments_markdown

    md = segments_markdown([["Great ", 0], ["![](http://host/x.png)", 1], [" and <b>", 0], ["*so*", 1], [".", 0]])
    assert md == r"Great **\!\[\]\(http\:\/\/host\/x\.png\)** and \<b\>**\*so\***\."


def test_embedding_pgd_stays_in_its_ball(problem: Any) -> None:
    from attacks.text.embedding import embedding_pgd

    p, _, ok = problem
    rows = ok[:40]
    small = embedding_pgd(p.adapter, p.data.x, p.data.y, rows, eps=0.01, steps=10)
    large = embedding_pgd(p.adapter, p.data.x, p.data.y, rows, eps=1.0, steps=10)
    for b in (small, large):
        assert 0 < b.max_token_norm <= b.radius * (1 + 1e-4)
        assert not b.fooled[np.setdiff1d(np.arange(len(p.data.y)), rows)].any()  # only attacked rows
    assert large.radius == pytest.approx(100 * small.radius)
    assert large.fooled.sum() >= small.fooled.sum() and large.fooled[rows].mean() > 0.5


def test_hotflip_on_a_wordpiece_transformers_classifier(tmp_path: Any) -> None:
    """A transformers BERT classifier (tiny, built from a config) behind a WordPiece tokenizer saved with
    save_pretrained: word pieces ("##ing") are never flipped or inserted, and every flipped text tokenizes back
    to the flipped ids (special tokens stay)."""
    transformers = pytest.importorskip("transformers")
    from text_helpers import reviews
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from audit.model.outputs import SelectOutput
    from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding

    texts = reviews()[0][:1500]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1500, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                         sep_token="[SEP]").save_pretrained(tmp_path)
    tokenizer = TextTokenizer.from_path(tmp_path, max_length=40)
    torch.manual_seed(0)
    module = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2))
    adapter = TextModelAdapter(module, tokenizer, embedding=find_embedding(module, None),
                               select=SelectOutput("logits", "logits", False), call_style="transformers",
                               num_classes=2, output_kind="logits", device=torch.device("cpu"), batch_size=64,
                               source="bert", sha256=None)
    sample = texts[:10]
    labels = _predict(adapter, sample)  # attack the model's own predictions
    out = HotFlip(Constraints(max_words_fraction=0.2)).run(adapter, sample, labels, list(range(10)))
    flips = 0
    for r in out.results.values():
        assert not r.note, r.note  # the detokenized text tokenizes back to the flipped ids
        for i in r.changed:
            assert not r.original_units[i].startswith("##") and not r.adversarial_units[i].startswith("##")
            nxt = r.original_units[i + 1] if i + 1 < len(r.original_units) else ""
            assert not nxt.startswith("##") and r.original_units[i] not in ("[CLS]", "[SEP]")
        flips += len(r.changed)
    assert flips > 0
