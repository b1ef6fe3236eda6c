"""Text explanations: layer_ig, shap_text and lime_text equal captum, shap and lime called directly on the same
inputs; token deletion / insertion curves recomputed by hand; the explanations section on text end to end (metrics,
heatmap figure, schema, report with escaped tokens); methods that cannot explain the input kind refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from text_helpers import text_problem

from audit.errors import ConfigError
from explain.seeds import sample_seed
from explain.text_methods import LayerIntegratedGradientsExplainer, LimeTextExplainer, ShapTextExplainer, token_layout
from explain.text_quality import token_curves


def _offsets(adapter: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The test tokenizer's own ids and character offsets (a word-level tokenizer: no special tokens), cut at
    max_length as the model sees them: independent of explain.text_methods."""
    enc = adapter.tokenizer.backend.encode(text)
    limit = adapter.tokenizer.max_length
    return list(enc.ids[:limit]), [tuple(o) for o in enc.offsets[:limit]]


def _visible(adapter: Any, text: str) -> str:
    _, offsets = _offsets(adapter, text)
    return text[: offsets[-1][1]]


def _sample() -> tuple[Any, list[str], np.ndarray]:
    problem = text_problem()
    adapter, data = problem.adapter, problem.data
    rows = np.array([0, 3, 7, 11, 150, 199])
    texts = [data.texts[i] for i in rows]  # type: ignore[index]
    return adapter, texts, adapter.predict(adapter.encode(texts))


def test_layout_matches_the_model_ids() -> None:
    adapter, texts, _ = _sample()
    ids = adapter.tokenizer.encode(texts)
    for text, row in zip(texts, ids, strict=True):
        found = token_layout(adapter.tokenizer, text)
        assert [int(row[p]) for p in found.positions] == found.ids
        assert (adapter.tokenizer.encode([found.text])[0] == row).all()  # the visible text encodes to the same ids
    assert any(len(adapter.tokenizer.backend.encode(t).ids) > 64 for t in texts)  # truncation is exercised


def test_layer_ig_equals_captum() -> None:
    from captum.attr import LayerIntegratedGradients

    adapter, texts, target = _sample()
    got = LayerIntegratedGradientsExplainer(adapter, n_steps=24, batch_size=4).explain_texts(texts, target)
    ids = torch.as_tensor(adapter.tokenizer.encode(texts))
    pad = adapter.tokenizer.pad_id

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return adapter.module(batch, (batch != pad).long())

    reference = LayerIntegratedGradients(forward, adapter.module.embed).attribute(
        ids, baselines=torch.full_like(ids, pad), target=torch.as_tensor(target), n_steps=24).sum(-1).numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
    assert np.abs(reference).max() > 0.1 and (got[ids.numpy() == pad] == 0).all()
    # completeness: the attributions sum to the logit difference between the text and the all-padding text
    logits = forward(ids).detach().numpy()
    empty = forward(torch.full_like(ids, pad)).detach().numpy()
    gap = logits[np.arange(len(ids)), target] - empty[np.arange(len(ids)), target]
    np.testing.assert_allclose(got.sum(1), gap, atol=0.05 * np.abs(gap).max())


def test_shap_text_equals_shap_partition() -> None:
    import shap

    adapter, texts, target = _sample()
    texts, target = texts[:3], target[:3]
    got = ShapTextExplainer(adapter, max_evals=120).explain_texts(texts, target)

    def tokenizer(s: str, return_offsets_mapping: bool = False, **_: Any) -> dict[str, Any]:
        ids, offsets = _offsets(adapter, s)
        return {"input_ids": ids, **({"offset_mapping": offsets} if return_offsets_mapping else {})}

    masker = shap.maskers.Text(tokenizer, mask_token="...", collapse_mask_token=True)
    explainer = shap.explainers.Partition(lambda s: adapter.text_predict_proba([str(t) for t in s]), masker)
    for row, text in enumerate(texts):
        values = explainer([_visible(adapter, text)], max_evals=120, silent=True).values[0][:, target[row]]
        np.testing.assert_allclose(got[row, : len(values)], values, rtol=1e-9, atol=1e-12)
        assert (got[row, len(values) :] == 0).all() and np.abs(values).max() > 0


def test_lime_text_equals_lime() -> None:
    from lime.lime_text import LimeTextExplainer as Lime

    adapter, texts, target = _sample()
    ids = np.array([5, 6, 7, 8, 9, 10])
    got = LimeTextExplainer(adapter, n_samples=150, seed=3, batch_size=4).explain_texts(texts, target, ids)
    for row, text in enumerate(texts):
        visible = _visible(adapter, text)
        lime = Lime(split_expression=lambda s: [s[a:b] for a, b in _offsets(adapter, s)[1]], bow=False,
                    mask_string="", random_state=sample_seed(3, "lime_text", int(ids[row])))
        n = len(_offsets(adapter, visible)[0])
        found = dict(lime.explain_instance(visible, adapter.text_predict_proba, labels=(int(target[row]),),
                                           num_features=n, num_samples=150).as_map()[int(target[row])])
        np.testing.assert_allclose(got[row, :n], [found[i] for i in range(n)], rtol=1e-9, atol=1e-12)
    # keyed per sample: a row alone gets the same values
    alone = LimeTextExplainer(adapter, n_samples=150, seed=3).explain_texts(texts[4:5], target[4:5], ids[4:5])
    np.testing.assert_array_equal(alone[0], got[4])


def test_token_curves_by_hand() -> None:
    adapter, texts, target = _sample()
    ids = adapter.tokenizer.encode(texts)
    values = LayerIntegratedGradientsExplainer(adapter).explain_texts(texts, target)
    curves = token_curves(adapter, ids, target, {"layer_ig": values}, steps=4, seed=0, sample_ids=np.arange(6))
    pad = adapter.tokenizer.pad_id
    row = 1
    positions = np.flatnonzero(ids[row] != pad)
    top = positions[np.argsort(-values[row][positions], kind="stable")][: round(0.5 * len(positions))]
    deleted, inserted = ids[row].copy(), np.full_like(ids[row], pad)
    deleted[top] = pad
    inserted[top] = ids[row][top]
    proba = adapter.probabilities(np.stack([deleted, inserted]).astype(np.float32)).numpy()[:, target[row]]
    np.testing.assert_allclose([curves["layer_ig"].deletion[row, 2], curves["layer_ig"].insertion[row, 2]], proba,
                               rtol=1e-5)
    full = adapter.probabilities(ids[row : row + 1].astype(np.float32)).numpy()[0, target[row]]
    for name in ("layer_ig", "random"):
        np.testing.assert_allclose(curves[name].deletion[:, 0], curves[name].insertion[:, -1], rtol=1e-5)
    np.testing.assert_allclose(curves["layer_ig"].deletion[row, 0], full, rtol=1e-5)
    # removing the tokens Layer IG ranks first lowers the explained class faster than a random order
    assert curves["layer_ig"].deletion_auc < curves["random"].deletion_auc


FAST_TEXT = {"n_samples": 24, "bootstrap_resamples": 200, "quality_steps": 6, "figure_samples": 2,
             "method_params": {"shap_text": {"max_evals": 60}, "lime_text": {"n_samples": 60}}}


def test_text_section_end_to_end(make_context: Any, tmp_path: Any) -> None:
    from plugin_helpers import section_document, validate_section

    from explain.section import ExplanationsSection
    from reports.html import render_html

    problem = text_problem()
    data = problem.data.subset(np.arange(200))
    data.texts[0] = "<script>alert(1)</script> & great coffee"  # type: ignore[index]
    data.x[0] = problem.adapter.encode([data.texts[0]])[0]  # type: ignore[index]
    ctx = make_context(problem.adapter, data)
    section = ExplanationsSection(**FAST_TEXT)
    section.check_supports(ctx)
    section.validate(ctx)
    result = section(ctx)
    assert result.status == "ok", result.error
    validate_section(result, ctx)
    m = result.metrics
    for method in ("layer_ig", "shap_text", "lime_text"):
        for kind in ("deletion_auc", "insertion_auc"):
            assert m[f"explanations.{method}.{kind}.ci_low"] <= m[f"explanations.{method}.{kind}"] <= m[
                f"explanations.{method}.{kind}.ci_high"]
        assert ctx.attributions[method].values.shape == (24, 64)
        assert m[f"explanations.{method}.faithfulness_rank"] >= 1
    assert m["explanations.layer_ig.deletion_auc"] < m["explanations.random.deletion_auc"]
    figure = next(f for f in result.figures if f["kind"] == "token_heatmap")
    assert len(figure["rows"]) == 2 * 3 and all(len(r["tokens"]) == len(r["values"]) for r in figure["rows"])
    top = next(t for t in result.tables if t.name == "top_tokens")
    assert {row[0] for row in top.rows} == {"layer_ig", "shap_text", "lime_text"}
    # a token from the data is escaped in the report
    figure["rows"][0]["tokens"][0] = "<script>"
    html = render_html(section_document(result, ctx))
    assert "&lt;script&gt;" in html and "<script>alert" not in html and "class=\"tok\"" in html
    # the dashboard explorer's heatmap of one explained row, from the saved attributions and tokens
    from reports.figures import figure_png
    from reports.tokens import explained_text_spec

    row = int(ctx.attributions["layer_ig"].index[3])
    spec = explained_text_spec(ctx.run_dir, section_document(result, ctx), row)
    assert spec is not None and [r["label"] for r in spec["rows"]] == ["layer_ig", "shap_text", "lime_text"]
    assert spec["rows"][0]["tokens"] == problem.adapter.tokens(data.x[row : row + 1])[0]
    np.testing.assert_allclose(spec["rows"][0]["values"], ctx.attributions["layer_ig"].values[3][
        data.x[row] != problem.adapter.tokenizer.pad_id])
    assert figure_png(spec).startswith(b"\x89PNG")
    assert explained_text_spec(ctx.run_dir, section_document(result, ctx), -1) is None


def test_methods_that_do_not_fit_the_input_kind_are_refused(make_context: Any) -> None:
    from explain.section import ExplanationsSection

    problem = text_problem()
    ctx = make_context(problem.adapter, problem.data)
    with pytest.raises(ConfigError, match=r"sections\.explanations\.methods.*\['lime'\].*layer_ig"):
        ExplanationsSection(methods=["layer_ig", "lime"]).validate(ctx)
    ExplanationsSection(methods=["lime_text"]).validate(ctx)
    from audit.data import AuditData

    tabular = AuditData(name="t", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 0, 1]), class_names=["a", "b"],
                        modality="tabular")
    ctx_tab = make_context(torch.nn.Linear(3, 2), tabular)
    with pytest.raises(ConfigError, match=r"sections\.explanations\.methods.*layer_ig"):
        ExplanationsSection(methods=["ig", "layer_ig"]).validate(ctx_tab)


def test_the_documented_config_builds_both_sections(make_context: Any) -> None:
    import re
    from pathlib import Path

    import yaml

    from audit.fairness.section import FairnessSection
    from explain.section import ExplanationsSection

    text = (Path(__file__).resolve().parents[1] / "docs" / "text-explain.md").read_text(encoding="utf-8")
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]
    assert config["data"]["text"] and config["model"]["tokenizer"]
    from audit.config import AuditConfig

    assert list(AuditConfig.model_validate(config).sections) == ["performance", "explanations", "fairness"]
    problem = text_problem()
    ctx = make_context(problem.adapter, problem.data)
    explanations = ExplanationsSection(**config["sections"]["explanations"])
    explanations.check_supports(ctx)
    explanations.validate(ctx)
    fairness = FairnessSection(**config["sections"]["fairness"])
    fairness.check_supports(ctx)
    assert fairness.params.identity_terms is not None and "female" in fairness.params.identity_terms


def test_a_transformers_classifier_with_special_tokens(tmp_path: Any) -> None:
    """A small BERT (random weights, built from a config) behind a fast tokenizer that adds [CLS] and [SEP]: the
    special tokens are not features of shap or lime and keep their embeddings in Layer IG's baseline; layer_ig
    equals captum called directly with that baseline."""
    from captum.attr import LayerIntegratedGradients
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from audit.model.outputs import SelectOutput
    from audit.model.text import TextModelAdapter, TextTokenizer, find_embedding

    problem = text_problem()
    words = [w for w in problem.adapter.tokenizer.backend.get_vocab() if not w.startswith("[")]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)[:1500]]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=True).save_pretrained(tmp_path / "tok")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    module = BertForSequenceClassification(config).eval()
    tokenizer = TextTokenizer.from_path(tmp_path / "tok", max_length=24)
    adapter = TextModelAdapter(module, tokenizer, embedding=find_embedding(module, None),
                               select=SelectOutput("logits", "logits", False), call_style="transformers",
                               num_classes=2, output_kind="logits", device=torch.device("cpu"), batch_size=64,
                               source="bert", sha256=None)
    texts = problem.data.texts[:3]  # type: ignore[index]
    ids = tokenizer.encode(texts)
    target = adapter.predict(ids.astype(np.float32))
    layout = token_layout(tokenizer, texts[0])
    assert ids[0][0] == 2 and layout.positions[0] == 1 and ids[0][layout.positions[-1] + 1] == 3  # [CLS] .. [SEP]
    got = LayerIntegratedGradientsExplainer(adapter, n_steps=16).explain_texts(texts, target)
    special = np.isin(ids, [2, 3])
    t_ids = torch.as_tensor(ids)
    baseline = torch.where(torch.as_tensor(special) | (t_ids == 0), t_ids, torch.zeros_like(t_ids))

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return module(input_ids=batch, attention_mask=(batch != 0).long()).logits

    reference = LayerIntegratedGradients(forward, module.bert.embeddings.word_embeddings).attribute(
        t_ids, baselines=baseline, target=torch.as_tensor(target), n_steps=16).sum(-1).detach().numpy()
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-7)
    assert (got[special] == 0).all()
    for explainer in (ShapTextExplainer(adapter, max_evals=40), LimeTextExplainer(adapter, n_samples=40)):
        values = explainer.explain_texts(texts, target)
        assert (values[special] == 0).all() and (values[ids == 0] == 0).all()
        assert np.abs(values[0, layout.positions]).max() > 0


def test_a_malformed_token_heatmap_is_a_placeholder_not_an_error() -> None:
    from reports.html import figure_view
    from reports.tokens import token_heatmap_view

    view = figure_view({"name": "t", "title": "t", "kind": "token_heatmap", "rows": [{"tokens": ["a"], "values": []}]},
                       None)
    assert view["mode"] == "img" and view["data_uri"].startswith("data:image/png")
    rows = token_heatmap_view({"rows": [{"label": "x", "tokens": ["a", "<b>", "c"], "values": [2.0, -1.0, None]}]})
    assert [t["text"] for t in rows[0]["tokens"]] == ["a", "<b>", "c"]
    assert rows[0]["tokens"][0]["style"] == "background: rgba(220, 38, 38, 0.850)"  # the largest |value|: full
    assert rows[0]["tokens"][1]["style"] == "background: rgba(37, 99, 235, 0.425)"  # against, half


def test_progress_per_text_for_shap_and_lime_per_batch_for_layer_ig() -> None:
    adapter, texts, target = _sample()
    seen: list[tuple[str, int]] = []

    def recording(iterable: Any, *, desc: str, total: int | None = None, unit: str = "it") -> Any:
        seen.append((desc, int(total or 0)))
        return iterable

    LimeTextExplainer(adapter, n_samples=20).explain_texts(texts, target, progress=recording)
    LayerIntegratedGradientsExplainer(adapter, batch_size=4).explain_texts(texts, target, progress=recording)
    assert seen == [("explanations: lime_text", 6), ("explanations: layer_ig", 2)]


def test_text_chunks_are_kept_by_a_resumed_run(make_context: Any) -> None:
    from audit.engine.chunks import CHUNKS_DIR
    from explain.section import ExplanationsSection

    problem = text_problem()
    ctx = make_context(problem.adapter, problem.data)
    ctx.fingerprints["explanations"] = "fp-1"
    params = {"methods": ["layer_ig", "lime_text"], "n_samples": 12, "chunk_size": 5, "bootstrap_resamples": 100,
              "quality_steps": 4, "method_params": {"lime_text": {"n_samples": 30}}}
    first = ExplanationsSection(**params)(ctx)
    assert first.status == "ok", first.error
    values = {m: ctx.attributions[m].values.copy() for m in ("layer_ig", "lime_text")}
    folder = ctx.artifacts_dir / "explanations" / CHUNKS_DIR
    saved = sorted(p for p in folder.iterdir() if p.name.endswith(".npz"))
    assert len(saved) == 3
    saved[1].unlink()  # as if the run had been killed in the second chunk
    second = ExplanationsSection(**params)(ctx)
    assert "2 of 3 chunks kept from the interrupted run" in second.notes
    for method, before in values.items():
        np.testing.assert_array_equal(ctx.attributions[method].values, before)
    assert second.metrics["explanations.lime_text.deletion_auc"] == first.metrics["explanations.lime_text.deletion_auc"]
