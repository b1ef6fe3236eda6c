"""The explanations section on text (token inputs): per-token attributions of the text explainers
(``explain.text_methods``: layer_ig, shap_text, lime_text), their deletion / insertion curves over tokens
(``explain.text_quality``) ranked as for images and tables, token heatmaps (a ``token_heatmap`` figure; reports/
escapes every token) and the tokens that weigh most toward each class.

``explain.section`` hands token data here (``run_text``); ``check_methods`` refuses, before any section runs, a
method that cannot explain the data's input kind, naming ``sections.<name>.methods``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import explain.records as records
from audit.context import AttributionSet
from audit.data import stratified_subset
from audit.engine.chunks import CHUNKS_DIR, Chunk, ChunkStore, iter_chunks, plan, run_chunks
from audit.errors import ConfigError
from explain.base import Explainer, ExplainerError
from explain.chunks import ExplainerSpec
from explain.faithfulness import rank_faithfulness
from explain.text_methods import TextExplainer
from explain.text_quality import content_mask, token_curves

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.results import SectionResult

ExplanationsSection = Any  # explain.section's, which imports this module (no cycle back to it)
EXPLAINERS_GROUP = "nnaudit.explainers"

TEXT_METHODS = ["layer_ig", "shap_text", "lime_text"]  # the default methods on text
TEXT_QUALITY = ("deletion", "insertion")
TOP_TOKENS = 15


def _classes(section: ExplanationsSection) -> dict[str, type[Explainer]]:
    from audit.plugin import available, plugin_class

    return {name: plugin_class(name, EXPLAINERS_GROUP, Explainer, key=f"sections.{section.section}.methods")
            for name in available(EXPLAINERS_GROUP)}


def methods_for(section: ExplanationsSection, input_kind: str) -> list[str]:
    """The methods to run: the configured ones, or, on text when none are configured, the text methods."""
    p = section.params
    if input_kind == "tokens" and "methods" not in p.model_fields_set:
        return list(TEXT_METHODS)
    return list(p.methods)


def check_methods(section: ExplanationsSection, input_kind: str) -> None:
    """A method that does not explain this input kind (lime on token ids, layer_ig on pixels) is a ConfigError."""
    classes = _classes(section)
    methods = methods_for(section, input_kind)
    wrong = [m for m in methods if input_kind not in getattr(classes[m], "input_kinds", ("continuous",))]
    if wrong:
        fits = sorted(m for m, c in classes.items() if input_kind in getattr(c, "input_kinds", ("continuous",)))
        what = "text (token ids)" if input_kind == "tokens" else "continuous inputs (images, tables)"
        raise ConfigError(f"sections.{section.section}.methods", f"{wrong} cannot explain {what}; for this data "
                          f"choose from {fits}")
    unknown = sorted(set(section.params.method_params) - set(methods))
    if input_kind == "tokens" and unknown and "method_params" in section.params.model_fields_set:
        raise ConfigError(f"sections.{section.section}.method_params", f"parameters for {unknown}, which do not "
                          f"run on text; the methods run are {methods}")


def run_text(section: ExplanationsSection, ctx: AuditContext, result: SectionResult) -> None:
    p, data, model = section.params, ctx.data, ctx.model
    if data.texts is None:
        raise ExplainerError("token data without its texts: the text explainers need the raw texts (data.text)")
    index = stratified_subset(data.y, p.n_samples, ctx.seed)
    target = ctx.clean_predictions()[index].astype(np.int64)
    texts = [data.texts[int(i)] for i in index]
    ids = np.asarray(data.x[index], np.int64)
    values, costs = _attributions(section, ctx, result, texts, target, index)
    if not values:
        result.status = "skipped"
        result.notes.append("no explanation method could run on this model; see the findings")
        return
    for method, v in values.items():
        ctx.attributions[method] = AttributionSet(method=method, index=index, target=target, values=v)
    records.cost(result, costs, len(index))
    path, rel = ctx.artifact_path(section.section, "attributions.npz")
    tokens = np.array(_position_tokens(model, ids), dtype=str).reshape(ids.shape)
    np.savez_compressed(path, index=index, target=target, x=ids, tokens=tokens, **values)  # type: ignore[arg-type]
    result.artifacts["attributions"] = rel
    skipped = [q for q in p.quality if q not in TEXT_QUALITY]
    if skipped and "quality" in p.model_fields_set:
        result.notes.append(f"quality metrics {skipped} are not measured on text (token ids have no continuous "
                            "neighbourhood); deletion and insertion over tokens are")
    if set(TEXT_QUALITY) & set(p.quality):
        _faithfulness(section, ctx, result, ids, target, values, index)
    _heatmaps(result, model, ids, target, values, list(data.class_names), p.figure_samples)
    _top_tokens(result, model, ids, target, values, list(data.class_names))
    if p.stability and "stability" in p.model_fields_set:
        result.notes.append("stability under attack is not measured on text: the text attacks' adversarial texts "
                            "are not kept as embedding-space inputs to compare attributions on")


@dataclass
class TextChunkInputs:
    """What every chunk of explained texts needs (``text_chunk``); the same on Ray workers."""

    model: Any
    texts: list[str]  # the explained texts, in order
    target: np.ndarray
    ids: np.ndarray  # their sample ids (rows of the data): they key each text's random draws
    specs: list[ExplainerSpec]


def text_chunk(shared: TextChunkInputs, chunk: Chunk, progress: Any) -> dict[str, np.ndarray]:
    """Every method's attributions of one chunk of texts, and its cost (seconds, model rows, calls); ``progress``:
    the backend's reporter (None: quiet)."""
    rows = chunk.rows
    texts = [shared.texts[int(i)] for i in rows]
    out: dict[str, np.ndarray] = {}
    for spec in shared.specs:
        explainer = spec.build(shared.model)
        assert isinstance(explainer, TextExplainer)
        start = time.perf_counter()
        out[spec.method] = explainer.explain_texts(texts, shared.target[rows], shared.ids[rows], progress=progress)
        out[f"cost.{spec.method}"] = np.array([time.perf_counter() - start, explainer.counter.rows,
                                               explainer.counter.calls], np.float64)
    return out


def _attributions(section: ExplanationsSection, ctx: AuditContext, result: SectionResult, texts: list[str],
                  target: np.ndarray, index: np.ndarray,
                  ) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, int, int]]]:
    """Every method built once here (one that cannot run on this model is noted before any work), then the texts in
    chunks through the engine's chunk runner: saved as each finishes, kept by a resumed run, on Ray with
    ``--backend ray``."""
    p = section.params
    classes = _classes(section)
    specs: list[ExplainerSpec] = []
    for method in methods_for(section, "tokens"):
        defaults = classes[method].section_defaults(batch_size=p.batch_size, seed=ctx.seed, background=None,
                                                    modality=ctx.data.modality, memory_mb=p.memory_mb)
        spec = ExplainerSpec(method, classes[method], f"sections.{section.section}.method_params.{method}",
                             defaults, dict(p.method_params.get(method, {})))
        try:
            if not isinstance(spec.build(ctx.model), TextExplainer):
                raise ExplainerError("it does not explain texts")
        except ExplainerError as err:
            section._unavailable(result, method, err)
            continue
        specs.append(spec)
    if not specs:
        return {}, {}
    chunks = plan(len(index), p.chunk_size)
    store = ChunkStore(ctx.artifacts_dir / section.section / CHUNKS_DIR, ctx.fingerprints.get(section.section))
    ran = run_chunks(store, chunks, text_chunk, TextChunkInputs(ctx.model, texts, target, index, specs),
                     backend=ctx.backend, progress=ctx.progress, desc="explanations: text chunks",
                     device=str(ctx.device))
    records.chunk_notes(result, ctx.backend, ran, len(chunks), p.chunk_size)
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for _, arrays in iter_chunks(store, chunks):
        for name, value in arrays.items():
            parts[name].append(value)
    values = {s.method: np.concatenate(parts[s.method]) for s in specs}
    costs: dict[str, tuple[float, int, int]] = {}
    for s in specs:
        seconds, evaluated, calls = np.sum(parts[f"cost.{s.method}"], axis=0).tolist()
        costs[s.method] = (float(seconds), int(evaluated), int(calls))
    return values, costs


def _position_tokens(model: Any, ids: np.ndarray) -> list[list[str]]:
    """Each row's token strings by position ('' at padding), for the dashboard's explorer."""
    kept = model.tokens(ids)
    out = []
    for row, strings in zip(ids, kept, strict=True):
        cells, it = [""] * len(row), iter(strings)
        for j in np.flatnonzero(row != model.tokenizer.pad_id):
            cells[int(j)] = str(next(it, ""))
        out.append(cells)
    return out


def _faithfulness(section: ExplanationsSection, ctx: AuditContext, result: SectionResult, ids: np.ndarray,
                  target: np.ndarray, values: dict[str, np.ndarray], index: np.ndarray) -> None:
    p = section.params
    curves = token_curves(ctx.model, ids, target, values, steps=p.quality_steps, seed=ctx.seed,  # type: ignore[arg-type]
                          sample_ids=index)
    share = float(content_mask(ctx.model, ids).mean())  # type: ignore[arg-type]
    found = rank_faithfulness(curves, baseline="pad", informative_share=share, n_resamples=p.bootstrap_resamples,
                              seed=ctx.seed, confidence=p.confidence)
    per_sample: dict[str, np.ndarray] = {"index": index}
    records.faithfulness(result, found, f"{p.confidence:.0%}", section.section, per_sample)
    path, rel = ctx.artifact_path(section.section, "quality.npz")
    np.savez_compressed(path, **per_sample)  # type: ignore[arg-type]
    result.artifacts["quality"] = rel


def _heatmaps(result: SectionResult, model: Any, ids: np.ndarray, target: np.ndarray, values: dict[str, np.ndarray],
              class_names: list[str], samples: int) -> None:
    """A ``token_heatmap`` figure: per explained sample and method, its tokens and their attributions."""
    rows: list[dict[str, Any]] = []
    n = min(samples, len(ids))
    tokens = model.tokens(ids[:n])
    for row in range(n):
        kept = ids[row] != model.tokenizer.pad_id
        for method, v in values.items():
            rows.append({"label": f"#{row + 1} · class {class_names[int(target[row])]} · {method}",
                         "tokens": [str(t) for t in tokens[row]],
                         "values": [float(x) for x in v[row][kept]]})
    result.figure({"name": "token_heatmaps", "title": "Token attributions toward the explained class (red: for, "
                   "blue: against; each row scaled to its largest |attribution|)", "kind": "token_heatmap",
                   "rows": rows})


def _top_tokens(result: SectionResult, model: Any, ids: np.ndarray, target: np.ndarray,
                values: dict[str, np.ndarray], class_names: list[str]) -> None:
    """The tokens with the largest mean attribution toward each explained class, per method (those occurring at
    least twice first)."""
    content = content_mask(model, ids)
    table: list[list[Any]] = []
    for method, v in values.items():
        for label in np.unique(target):
            rows = target == label
            sums: dict[int, list[float]] = defaultdict(list)
            for token, value in zip(ids[rows][content[rows]], v[rows][content[rows]], strict=True):
                sums[int(token)].append(float(value))
            # tokens seen more than once first: one occurrence says little about what the model weighs
            ranked = sorted(sums.items(), key=lambda kv: (len(kv[1]) < 2, -float(np.mean(kv[1]))))[:TOP_TOKENS]
            names = model.tokens(np.array([[t for t, _ in ranked]]))[0] if ranked else []
            table += [[method, class_names[int(label)], name, float(np.mean(vals)), len(vals)]
                      for name, (_, vals) in zip(names, ranked, strict=True)]
    result.table("top_tokens", f"Tokens with the largest mean attribution toward the explained class (top "
                 f"{TOP_TOKENS} per method and class; tokens occurring twice or more first)",
                 ["method", "class", "token", "mean attribution", "occurrences"], table)
