"""The robustness section on text (token-id inputs): the ``text`` block of its parameters, the text attacks
registered in the ``nnaudit.text_attacks`` entry-point group, and what the section records for them.

Metrics (relative to the section): ``<attack>.text.robust_accuracy``, ``.attack_success_rate``,
``.mean_words_changed`` (fraction of the words, or tokens for HotFlip, of a successful adversarial text),
``.queries_per_sample``, and the same under ``worst_case.text``; tables of the results and of the constraints;
the adversarial texts in ``artifacts/<section>/text_adversarial.jsonl`` and side by side (changed words marked
``⟦word⟧``) in the ``text_examples`` table; per-sample outcomes for the dashboard's explorer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from attacks.text.base import Constraints, TextAttack, Words
from attacks.text.evaluate import WORST, TextEvaluation, evaluate_text
from audit.errors import ConfigError
from audit.keys import metric_key
from audit.plugin import TEXT_ATTACKS_GROUP, Params

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import SectionResult

DEFAULT_TEXT_ATTACKS = ("deepwordbug", "synonym", "hotflip")
# robustness keys that only mean something for continuous inputs (an L-p ball): refused on token ids
LP_KEYS = ("eps", "norm")
MARK = ("⟦", "⟧")
NO_TOKEN_EMBEDDINGS = ("the model's token embedding pools the tokens inside the layer (nn.EmbeddingBag), so no "
                       "token's embedding has a gradient of its own; set model.embedding_layer to a per-token "
                       "nn.Embedding if the model has one")


def registered_text_attacks() -> dict[str, str]:
    from audit.plugin import available

    return available(TEXT_ATTACKS_GROUP)


class TextParams(Params):
    attacks: list[str] = Field(default=list(DEFAULT_TEXT_ATTACKS), description="text attacks (nnaudit.text_attacks): "
                               "deepwordbug (characters), synonym (WordNet), hotflip (gradient-guided tokens)")
    max_words_fraction: float = Field(default=0.25, gt=0, le=1, description="at most this share of a text's words "
                                      "(tokens for hotflip) change; at least one")
    max_edit_distance: int = Field(default=30, ge=1, description="character attacks: Levenshtein distance to the "
                                   "original text (TextAttack's DeepWordBug recipe: 30)")
    protected: list[str] = Field(default=[], description="words / tokens never modified (case-insensitive)")
    query_budget: int = Field(default=2000, ge=1, description="distinct texts scored per sample and attack")
    examples: int = Field(default=8, ge=0, le=100, description="adversarial texts shown side by side in the report")
    attack_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-attack parameters, "
                                                     "e.g. {synonym: {max_candidates: 20}}")
    embedding_eps: list[float] = Field(default=[], description="also run embedding-space PGD at these radii (relative "
                                       "to the median token-embedding norm): reported apart, as a bound, never text")
    embedding_steps: int = Field(default=20, ge=1, description="iterations of the embedding-space PGD")

    @field_validator("embedding_eps")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not e > 0 for e in value):
            raise ValueError(f"embedding_eps values must be > 0, got {value}")
        return sorted(value)

    @field_validator("attacks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [a for a in value if a not in registered_text_attacks()]
        if unknown:
            raise ValueError(f"unknown text attacks {unknown}; choose from {sorted(registered_text_attacks())}")
        return list(dict.fromkeys(value))

    def constraints(self) -> Constraints:
        return Constraints(max_words_fraction=self.max_words_fraction, max_edit_distance=self.max_edit_distance,
                           protected=frozenset(w.lower() for w in self.protected), query_budget=self.query_budget)


def check_text_config(params: Params, section: str) -> None:
    """Before any section runs, on text data: L-p keys set explicitly are a ConfigError naming the key; each
    text attack must build with its parameters."""
    for key in LP_KEYS:
        if key in params.model_fields_set:
            raise ConfigError(f"sections.{section}.{key}", f"'{key}' sets an L-p threat model, which has no meaning "
                              "for token ids; text attacks take sections.robustness.text (max_words_fraction, "
                              "max_edit_distance, protected, query_budget): remove it")
    from attacks.base import AttackNotApplicable

    text: TextParams = getattr(params, "text")  # noqa: B009
    for name in text.attacks:
        try:
            build_text_attack(name, text, seed=0, section=section)
        except AttackNotApplicable:
            continue  # e.g. WordNet not installed: a note when the section runs


def build_text_attack(name: str, params: TextParams, *, seed: int, section: str) -> TextAttack:
    from audit.plugin import construct, plugin_class

    key = f"sections.{section}.text.attack_params.{name}"
    cls = plugin_class(name, TEXT_ATTACKS_GROUP, TextAttack, key=f"sections.{section}.text.attacks")
    attack: TextAttack = construct(cls, name, key=key, defaults={}, params=params.attack_params.get(name, {}),
                                   fixed={"constraints": params.constraints(), "seed": seed})
    return attack


def run_text(ctx: AuditContext, result: SectionResult, params: TextParams, *, section: str,
             max_samples: int | None) -> None:
    """The robustness section on text data: every configured text attack, recorded."""
    from attacks.base import AttackNotApplicable
    from audit.data import stratified_subset
    from audit.model.text import TextModelAdapter

    data, model = ctx.data, ctx.model
    if not isinstance(model, TextModelAdapter) or data.texts is None:
        result.status = "skipped"
        result.notes.append("text attacks need a text model (model.huggingface or a token-id model with "
                            "model.tokenizer) and text data (data.text)")
        return
    index = np.arange(data.n_samples)
    if max_samples is not None and max_samples < data.n_samples:
        index = stratified_subset(data.y, max_samples, ctx.seed)
        result.notes.append(f"attacked a stratified subset of {len(index)} of {data.n_samples} samples (max_samples)")
    texts = [data.texts[int(i)] for i in index]
    y, pred = data.y[index], ctx.clean_predictions()[index]
    attacks: list[TextAttack] = []
    for name in params.attacks:
        try:
            attack = build_text_attack(name, params, seed=ctx.seed, section=section)
        except AttackNotApplicable as err:
            result.notes.append(f"{name} skipped: {err}")
            continue
        if attack.needs_token_embeddings and not model.has_embedding_gradients:
            result.notes.append(f"{name} skipped: {NO_TOKEN_EMBEDDINGS}")
            continue
        attacks.append(attack)
    ev = evaluate_text(model, texts, y, pred, attacks, progress=ctx.progress)
    record_text(ctx, result, ev, texts=texts, y=y, pred=pred, index=index, params=params, section=section)
    if params.embedding_eps and not model.has_embedding_gradients:
        result.notes.append(f"embedding-space PGD skipped: {NO_TOKEN_EMBEDDINGS}")
    elif params.embedding_eps:
        record_embedding_bound(ctx, result, data.x[index], y, ev.clean_correct, params)


def record_embedding_bound(ctx: AuditContext, result: SectionResult, ids: np.ndarray, y: np.ndarray,
                           clean_correct: np.ndarray, params: TextParams) -> None:
    """Embedding-space PGD at each ``embedding_eps``: metrics ``embedding_pgd.eps=<e>.attack_success_rate_upper_bound``
    and ``.robust_accuracy_lower_bound``, a table, and a note that no text stands behind them."""
    from attacks.text.embedding import embedding_pgd

    rows = []
    n_ok = int(clean_correct.sum())
    for e in params.embedding_eps:
        b = embedding_pgd(ctx.model, ids, y, np.flatnonzero(clean_correct), eps=e,  # type: ignore[arg-type]
                          steps=params.embedding_steps, batch_size=ctx.batch_size, seed=ctx.seed)
        rate = float(b.fooled.sum() / n_ok) if n_ok else float("nan")
        robust = float((clean_correct & ~b.fooled).mean())
        result.metric(metric_key("embedding_pgd", ("eps", e), "attack_success_rate_upper_bound"), rate)
        result.metric(metric_key("embedding_pgd", ("eps", e), "robust_accuracy_lower_bound"), robust)
        rows.append([e, b.radius, b.steps, rate, robust, b.max_token_norm, round(b.seconds, 3)])
    result.table("embedding_pgd", "Embedding-space PGD: a bound, not text adversarial examples",
                 ["eps (x median embedding norm)", "radius", "steps", "success rate (upper bound)",
                  "robust accuracy (lower bound)", "largest token perturbation", "seconds"], rows,
                 description="PGD on the token embeddings (L2 ball per real token). No text corresponds to the "
                 "perturbed embeddings: these numbers bound what substitutions within the ball could do and never "
                 "join the text attacks' worst case")
    result.notes.append("embedding-space PGD is reported as a bound only (table embedding_pgd); its perturbed "
                        "embeddings are not texts")


def record_text(ctx: AuditContext, result: SectionResult, ev: TextEvaluation, *, texts: list[str], y: np.ndarray,
                pred: np.ndarray, index: np.ndarray, params: TextParams, section: str) -> None:
    from audit.outcomes import save_outcomes

    names = ctx.data.class_names
    result.metric("clean_accuracy", float(ev.clean_correct.mean()))
    result.metric("n_samples", len(y))
    result.metric("n_attacked", int(ev.clean_correct.sum()))
    rows, settings, values = [], [], {"clean_accuracy": ev.clean_correct}
    meta: dict[str, dict[str, Any]] = {"clean_accuracy": {"kind": "correct"}}
    for name in [*ev.outputs, WORST]:
        s = ev.summary(name)
        for metric, value in s.metrics().items():
            result.metric(metric_key(name, "text", metric), value)
        key = metric_key(name, "text", "robust_accuracy")
        values[key] = s.robust
        meta[key] = {"kind": "robust", "attack": name, "norm": "text"}
        rows.append([name, s.robust_accuracy, s.attack_success_rate, s.mean_words_changed, s.queries_per_sample,
                     round(s.seconds, 3)])
    for name, out in ev.outputs.items():
        st = out.settings
        settings.append([name, st.get("unit"), st.get("max_words_fraction"), st.get("max_edit_distance"),
                         ", ".join(st.get("protected_tokens", [])) or "none", st.get("query_budget"),
                         "; ".join(f"{k}: {v}" for k, v in st.items() if k in ("synonyms", "estimate", "text",
                                                                             "max_candidates", "stopwords"))])
    result.table("text_attacks", "Text attacks: robust accuracy under explicit constraints",
                 ["attack", "robust accuracy", "attack success rate", "mean words changed", "queries/sample",
                  "seconds"], rows, description="attack success rate: share of the clean-correct texts fooled; mean "
                 "words changed: share of a successful adversarial text's words (tokens for hotflip) that changed; "
                 "worst case: fooled by any attack (its example changes the fewest words)")
    result.table("text_constraints", "Constraints behind every text-attack number",
                 ["attack", "unit", "max words fraction", "max edit distance", "protected", "query budget", "notes"],
                 settings)
    path, rel = ctx.artifact_path(section, "text_adversarial.jsonl")
    examples = write_examples(path, ev, texts=texts, y=y, pred=pred, index=index, class_names=names)
    result.artifacts["text_adversarial"] = rel
    shown = pick_examples(ev, params.examples)
    result.table("text_examples", "Adversarial texts beside the originals (changed words marked ⟦so⟧)",
                 ["sample", "attack", "label", "prediction", "original", "adversarial"],
                 [[int(index[row]), name, names[int(y[row])], f"{names[int(pred[row])]} -> "
                   f"{names[int(np.argmax(r.proba))]}", *side_by_side(r)] for row, (name, r) in shown],
                 description="hotflip's text: the original with the flipped tokens' characters replaced (tokens "
                 f"where the texts do not align word by word); full texts of all {examples} attacked samples in {rel}")
    if shown:
        result.figure({"name": "text_adversarial_examples", "kind": "text_pairs",
                       "title": "Adversarial texts beside the originals (changed words marked)",
                       "pairs": [pair(r, f"sample {int(index[row])} · {name} · label {names[int(y[row])]}: "
                                      f"{names[int(pred[row])]} -> {names[int(np.argmax(r.proba))]} "
                                      f"({max(r.proba):.0%}) · {len(r.changed)} of {r.n_units} {r.unit}s changed"
                                      + (" · token flips, text detokenized" if r.unit == "token" else ""))
                                 for row, (name, r) in shown]})
    worst = ev.summary(WORST)
    if ev.outputs and int(ev.clean_correct.sum()):
        result.finding("info", f"text attacks ({', '.join(ev.outputs)}) fool {worst.attack_success_rate:.1%} of "
                       f"the correctly classified texts, changing on average {worst.mean_words_changed:.1%} of "
                       f"their words (at most {params.max_words_fraction:.0%}): robust accuracy "
                       f"{worst.robust_accuracy:.1%}", code="robustness.text.worst_case",
                       metric=metric_key(section, WORST, "text", "robust_accuracy"), value=worst.robust_accuracy)
    adv_pred = np.where(ev.clean_correct, pred, -1)
    for row, (_, r) in ev.worst.items():
        adv_pred[row] = int(np.argmax(r.proba))
    fooled_by = np.array([ev.worst[row][0] if row in ev.worst else "" for row in range(len(y))]).astype(str)
    save_outcomes(ctx, result, sample_id=index, values=values, meta=meta,
                  extra={"label": y, "prediction": pred, "adv_prediction/text": adv_pred, "fooled_by/text": fooled_by})


def pick_examples(ev: TextEvaluation, k: int) -> list[tuple[int, tuple[str, Any]]]:
    """Up to ``k`` successful adversarial texts, the attacks taking turns (each sample shown once)."""
    queues = {name: [(row, r) for row, r in sorted(out.results.items()) if r.success]
              for name, out in ev.outputs.items()}
    shown: list[tuple[int, tuple[str, Any]]] = []
    used: set[int] = set()
    while len(shown) < k and any(queues.values()):
        for name, queue in queues.items():
            while queue and queue[0][0] in used:
                queue.pop(0)
            if queue and len(shown) < k:
                row, r = queue.pop(0)
                shown.append((row, (name, r)))
                used.add(row)
    return shown


def pair(r: Any, caption: str) -> dict[str, Any]:
    """A ``text_pairs`` figure entry: both texts as [text, changed] segments that join back to the texts."""
    a, b, ch_a, ch_b = changed_words(r)
    return {"caption": caption, "original": _word_segments(a, ch_a), "adversarial": _word_segments(b, ch_b)}


def changed_words(r: Any) -> tuple[Words, Words, set[int], set[int]]:
    """Both texts as words and the changed words of each: the attack's own positions for word attacks; a word
    diff for hotflip, whose flipped tokens may add or merge words."""
    import difflib

    a, b = Words.of(r.original), Words.of(r.adversarial)
    if r.unit != "token" and len(a) == len(b):
        return a, b, set(r.changed), set(r.changed)
    ch_a: set[int] = set()
    ch_b: set[int] = set()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a.words, b.words, autojunk=False).get_opcodes():
        if op != "equal":
            ch_a.update(range(i1, i2))
            ch_b.update(range(j1, j2))
    return a, b, ch_a, ch_b


def _word_segments(w: Words, ch: set[int]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for i, sep in enumerate(w.seps):
        if sep:
            out.append([sep, 0])
        if i < len(w.words):
            out.append([w.words[i], int(i in ch)])
    return out


def side_by_side(r: Any) -> list[str]:
    a, b, ch_a, ch_b = changed_words(r)
    return [_marked_text(a, ch_a), _marked_text(b, ch_b)]


def _marked_text(w: Words, ch: set[int]) -> str:
    words = [f"{MARK[0]}{x}{MARK[1]}" if i in ch else x for i, x in enumerate(w.words)]
    return Words(tuple(words), w.seps).text


def write_examples(path: Any, ev: TextEvaluation, *, texts: list[str], y: np.ndarray, pred: np.ndarray,
                   index: np.ndarray, class_names: list[str]) -> int:
    """One JSON line per (attacked sample, attack): the original and adversarial text, label, predictions,
    changed positions (words of the original, or tokens) and queries. Returns the attacked samples' count."""
    with open(path, "w", encoding="utf-8") as fh:
        for name, out in ev.outputs.items():
            for row, r in sorted(out.results.items()):
                line = {"sample": int(index[row]), "attack": name, "label": int(y[row]),
                        "label_name": class_names[int(y[row])], "clean_prediction": int(pred[row]),
                        "adversarial_prediction": int(np.argmax(r.proba)), "success": bool(r.success),
                        "original": r.original, "adversarial": r.adversarial, "unit": r.unit,
                        "changed": [int(c) for c in r.changed], "n_units": r.n_units,
                        "changed_fraction": r.changed_fraction, "queries": r.queries, "proba": r.proba}
                found = pair(r, "")
                line["segments"] = {"original": found["original"], "adversarial": found["adversarial"]}
                if r.original_units is not None:
                    line |= {"original_tokens": r.original_units, "adversarial_tokens": r.adversarial_units}
                if r.note:
                    line["note"] = r.note
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len({row for out in ev.outputs.values() for row in out.results})
