"""Text models from a config (audit.model.text_load) audited end to end with `nnaudit run` and `nnaudit gate`: the
token-id torch model (factory + tokenizers JSON) on a CSV and on an NPZ of token ids, and a Hugging Face
sequence classifier (a tiny BERT built from a config, tokenizer trained here) from its save_pretrained directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from text_helpers import MAX_LENGTH, text_problem
from torch import nn

from audit.cli import main
from audit.config import ModelConfig
from audit.errors import ConfigError
from audit.model import load_model
from audit.model.text import TextModelAdapter
from audit.model.text_load import load_tokenizer
from audit.results import load_results

TERM = "coffee"  # the sensitive column: whether the review mentions it


class BagModel(nn.Module):
    """The issue's token-id model: nn.EmbeddingBag + linear, forward(ids) without a mask."""

    def __init__(self, vocab_size: int, num_classes: int = 2, dim: int = 16) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.out = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.bag(ids.long()))


def bag_model(vocab_size: int, num_classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return BagModel(vocab_size, num_classes)


def _reviews_csv(path: Path, texts: list[str], y: np.ndarray, names: list[str]) -> Path:
    pd.DataFrame({"review": texts, "score": [names[i] for i in y],
                  "mentions": ["coffee" if TERM in t.lower() else "other" for t in texts]}).to_csv(path, index=False)
    return path


def _factory_model(problem: Any) -> dict[str, Any]:
    return {"factory": "audit.zoo:text_classifier", "weights": str(problem.weights_file),
            "tokenizer": str(problem.tokenizer_file), "max_length": MAX_LENGTH,
            "kwargs": {"vocab_size": problem.adapter.tokenizer.vocab_size, "num_classes": 2, "dim": 32,
                       "pad_id": problem.adapter.tokenizer.pad_id}}


def _run(tmp_path: Path, config: dict[str, Any], name: str = "run") -> tuple[int, Path]:
    (path := tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / name
    return main(["run", str(path), "--out", str(out)]), out


def _expected(logits: torch.Tensor, y: np.ndarray) -> float:
    return float((logits.argmax(1).numpy() == y).mean())


def test_factory_model_with_tokenizer(tmp_path: Path) -> None:
    problem = text_problem()
    config = ModelConfig.model_validate(_factory_model(problem))
    tokenizer = load_tokenizer(config)
    assert tokenizer is not None
    adapter = load_model(config, num_classes=2, sample=problem.data.x, device=torch.device("cpu"), batch_size=64,
                         default_bounds=None, tokenizer=tokenizer)
    assert isinstance(adapter, TextModelAdapter) and not adapter.has_gradients
    torch.testing.assert_close(adapter.logits(problem.data.x), problem.adapter.logits(problem.data.x))
    record = adapter.describe()
    assert record["input_kind"] == "tokens" and record["tokenizer"]["vocab_size"] == tokenizer.vocab_size
    assert record["tokenizer"]["source"] == str(problem.tokenizer_file)
    wrong = ModelConfig.model_validate({**_factory_model(problem), "weights": None,
                                        "kwargs": {"vocab_size": 300, "num_classes": 2}})
    with pytest.raises(ConfigError) as err:  # a tokenizer of 4,000 tokens, an embedding of 300 rows
        load_model(wrong, num_classes=2, sample=problem.data.x, device=torch.device("cpu"), batch_size=64,
                   default_bounds=None, tokenizer=tokenizer)
    assert err.value.key == "model.tokenizer" and "300 rows" in str(err.value)
    three = ModelConfig.model_validate({**_factory_model(problem), "weights": None,
                                        "kwargs": {**_factory_model(problem)["kwargs"], "num_classes": 3}})
    with pytest.raises(Exception, match="outputs 3 scores per sample but the data has 2 classes"):
        load_model(three, num_classes=2, sample=problem.data.x, device=torch.device("cpu"), batch_size=64,
                   default_bounds=None, tokenizer=tokenizer)


def test_token_model_end_to_end_on_csv_and_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problem = text_problem()
    data = problem.data
    assert data.texts is not None
    expected = _expected(problem.adapter.logits(data.x), data.y)
    csv = _reviews_csv(tmp_path / "reviews.csv", data.texts, data.y, data.class_names)
    sections = {"performance": {}, "imbalance": {}, "fairness": {}}
    gate = {"rules": ["performance.accuracy >= 0.7", "fairness.mentions.demographic_parity_ratio >= 0.0"]}
    code, out = _run(tmp_path, {"model": _factory_model(problem), "sections": sections, "gate": gate,
                                "data": {"source": "csv", "path": str(csv), "text": "review", "target": "score",
                                         "sensitive": ["mentions"]}}, "csv")
    assert code == 0, capsys.readouterr().err
    results = load_results(out)
    manifest = results["manifest"]
    assert manifest["data"]["input_kind"] == "tokens" and manifest["data"]["modality"] == "text"
    assert manifest["model"]["kind"] == "text" and manifest["model"]["tokenizer"]["max_length"] == MAX_LENGTH
    assert results["sections"]["performance"]["metrics"]["performance.accuracy"] == pytest.approx(expected, abs=1e-12)
    fairness = results["sections"]["fairness"]
    assert fairness["status"] == "ok" and "fairness.mentions.demographic_parity_ratio" in fairness["metrics"]
    assert results["sections"]["imbalance"]["status"] == "ok"
    assert (out / "report.html").exists() and main(["gate", str(out)]) == 0
    # the same token ids from an NPZ file
    np.savez(npz := tmp_path / "ids.npz", x=data.x.astype(np.int64), y=data.y)
    code, out = _run(tmp_path, {"model": _factory_model(problem), "sections": {"performance": {}},
                                "data": {"source": "npz", "path": str(npz), "class_names": data.class_names}}, "npz")
    assert code == 0
    assert load_results(out)["sections"]["performance"]["metrics"]["performance.accuracy"] == \
        pytest.approx(expected, abs=1e-12)
    # sections that need continuous inputs are refused before any section runs, naming the section and token ids
    code, out = _run(tmp_path, {"model": _factory_model(problem), "sections": {"performance": {}, "defenses": {}},
                                "data": {"source": "npz", "path": str(npz)}}, "refused")
    err = capsys.readouterr().err
    assert code == 2 and "sections.defenses" in err and "token ids" in err
    assert not (out / "results.json").exists()


def test_huggingface_classifier_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from text_hf_helpers import MAX_LENGTH as HF_LENGTH
    from text_hf_helpers import hf_problem
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = hf_problem()
    # the reference: transformers called directly on the same texts
    model = AutoModelForSequenceClassification.from_pretrained(problem.directory, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(problem.directory, local_files_only=True)
    enc = tok(problem.test_texts, truncation=True, max_length=HF_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model(**enc).logits
    expected = _expected(reference, problem.test_y)
    majority = float(np.bincount(problem.test_y).max() / len(problem.test_y))
    assert expected > majority + 0.05  # it learnt something from the reviews
    csv = _reviews_csv(tmp_path / "reviews.csv", problem.test_texts, problem.test_y, problem.class_names)
    gate = {"rules": [f"performance.accuracy >= {majority:.3f}", "imbalance.roc_auc_ovr >= 0.6"]}
    config = {"model": {"huggingface": str(problem.directory), "max_length": HF_LENGTH},
              "data": {"source": "csv", "path": str(csv), "text": "review", "target": "score",
                       "sensitive": ["mentions"]},
              "sections": {"performance": {}, "imbalance": {},
                           "robustness": {"max_samples": 24, "text": {"attacks": ["deepwordbug", "hotflip"]}},
                           "explanations": {"methods": ["layer_ig", "lime_text"], "n_samples": 6,
                                            "method_params": {"lime_text": {"n_samples": 200}}},
                           "fairness": {"identity_terms": {"coffee": ["coffee"], "tea": ["tea"]}}}, "gate": gate}
    code, out = _run(tmp_path, config, "hf")
    assert code == 0, capsys.readouterr().err
    results = load_results(out)
    assert results["sections"]["performance"]["metrics"]["performance.accuracy"] == \
        pytest.approx(expected, abs=1e-12)
    assert all(s["status"] == "ok" for s in results["sections"].values())
    # all five sections on the transformers model: text attacks, token attributions, identity-term AUCs
    sections = results["sections"]
    assert {"robustness.deepwordbug.text.attack_success_rate", "robustness.hotflip.text.attack_success_rate",
            "robustness.worst_case.text.robust_accuracy"} <= set(sections["robustness"]["metrics"])
    assert {"explanations.layer_ig.deletion_auc", "explanations.lime_text.deletion_auc"} <= \
        set(sections["explanations"]["metrics"])
    assert "fairness.identity.group=coffee.bpsn_auc" in sections["fairness"]["metrics"]
    # the dashboard's sample explorer on this run: the adversarial texts and token heatmaps, no exception
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", str(out.parent)])
    at = AppTest.from_file(str(Path(__file__).parent.parent / "app.py"), default_timeout=120)
    at.query_params["view"] = "samples"
    at.run()
    assert not at.exception
    explained = at.selectbox(key="explore_sample").value  # explained samples first: its token heatmap is drawn
    assert len(at.image) == 1  # the token heatmap of the explained review
    adversarial = [json.loads(line) for line in (out / "artifacts" / "robustness" / "text_adversarial.jsonl")
                   .read_text(encoding="utf-8").splitlines()]
    at.checkbox(key="explore_explained").uncheck().run()
    at.selectbox(key="explore_sample").set_value(adversarial[0]["sample"]).run()
    assert not at.exception
    shown = " ".join(str(m.value) for m in at.markdown)
    assert "original:" in shown and explained is not None  # an attacked review beside its adversarial text
    model_record = results["manifest"]["model"]
    assert model_record["source"] == str(problem.directory) and model_record["tokenizer"]["vocab_size"] == len(tok)
    assert (out / "report.html").exists() and main(["gate", str(out)]) == 0
    # the adapter's logits equal the direct call (padding to max_length changes nothing under the attention mask)
    adapter = load_model(ModelConfig(huggingface=problem.directory, max_length=HF_LENGTH), num_classes=2,
                         sample=np.zeros((1, HF_LENGTH), np.float32), device=torch.device("cpu"), batch_size=64,
                         default_bounds=None)
    assert isinstance(adapter, TextModelAdapter)
    torch.testing.assert_close(adapter.text_logits(problem.test_texts), reference, atol=1e-5, rtol=1e-4)
    assert model_record["labels"] == problem.class_names
    assert model_record["architecture"] == "BertForSequenceClassification"
    # the data's class names in another order than the model's id2label: refused naming data.class_names
    config["data"] = {**config["data"], "class_names": problem.class_names[::-1]}
    code, _ = _run(tmp_path, config, "label-order")
    err = capsys.readouterr().err
    assert code == 2 and "data.class_names" in err and "id2label" in err
    # another model's tokenizer: refused naming the key
    config["model"] = {"huggingface": str(problem.directory), "tokenizer": str(text_problem().tokenizer_file)}
    code, _ = _run(tmp_path, config, "wrong-tokenizer")
    err = capsys.readouterr().err
    assert code == 2 and "model.tokenizer" in err and "do not belong together" in err


def test_embedding_bag_model_on_token_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: an EmbeddingBag model on an NPZ of token ids. Without a tokenizer it is refused naming
    model.tokenizer (not a torch gradient error inside robustness); with one, performance runs, and robustness runs
    the word-level attacks and skips HotFlip with a note (an EmbeddingBag has no per-token embedding)."""
    problem = text_problem()
    data = problem.data
    np.savez(npz := tmp_path / "ids.npz", x=data.x.astype(np.int64), y=data.y)
    vocab = problem.adapter.tokenizer.vocab_size
    model = {"factory": "test_text_models:bag_model", "kwargs": {"vocab_size": vocab}}
    sections = {"performance": {}, "robustness": {}}
    code, out = _run(tmp_path, {"model": model, "sections": sections, "data": {"source": "npz", "path": str(npz)}},
                     "no-tokenizer")
    err = capsys.readouterr().err
    assert code == 2 and "model.tokenizer" in err and "token ids" in err
    model = {**model, "tokenizer": str(problem.tokenizer_file), "max_length": MAX_LENGTH}
    explained = {"explanations": {"methods": ["layer_ig", "lime_text"], "n_samples": 6}}
    code, out = _run(tmp_path, {"model": model, "sections": {**sections, **explained},
                                "data": {"source": "npz", "path": str(npz)}}, "robust")
    explanations = load_results(out)["sections"]["explanations"]
    assert "explanations.lime_text.deletion_auc" in explanations["metrics"]
    assert not any(k.startswith("explanations.layer_ig.") for k in explanations["metrics"])
    assert "EmbeddingBag" in json.dumps(explanations)
    robust = load_results(out)["sections"]["robustness"]
    assert code == 0 and robust["status"] == "ok", robust.get("error")
    assert any(n.startswith("hotflip skipped: the model's token embedding pools") for n in robust["notes"])
    assert "robustness.deepwordbug.text.robust_accuracy" in robust["metrics"]
    assert not any(k.startswith("robustness.hotflip.") for k in robust["metrics"])
    code, out = _run(tmp_path, {"model": model, "sections": {"performance": {}},
                                "data": {"source": "npz", "path": str(npz)}}, "bag")
    assert code == 0
    with torch.no_grad():
        expected = _expected(bag_model(vocab)(torch.as_tensor(data.x).long()), data.y)
    assert load_results(out)["sections"]["performance"]["metrics"]["performance.accuracy"] == \
        pytest.approx(expected, abs=1e-12)
