"""`nnaudit demo --text`: a text classifier trained at demo time on the shipped fine-food reviews, audited through
the plain run path, its gate policy met, its numbers those of the model called directly."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit.cli import main
from audit.config import load_config
from audit.data.base import stratified_subset
from audit.demo_text import TOPIC
from audit.model import load_model
from audit.model.text_load import load_tokenizer
from audit.results import load_results


@pytest.fixture(scope="module")
def text_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("demo-text")
    start = time.perf_counter()
    assert main(["demo", "--text", "--out", str(out), "--device", "cpu"]) == 0
    return out, time.perf_counter() - start


def test_text_demo_audits_the_review_classifier(text_demo: tuple[Path, float]) -> None:
    out, seconds = text_demo
    assert sorted(p.name for p in out.iterdir() if (p / "results.json").exists()) == ["reviews-text"]
    results = load_results(out / "reviews-text")
    assert results["manifest"]["status"] == "complete"
    assert results["manifest"]["data"]["input_kind"] == "tokens" and results["manifest"]["data"]["n_samples"] == 300
    assert set(results["sections"]) == {"performance", "imbalance", "robustness", "explanations", "fairness"}
    assert all(s["status"] == "ok" for s in results["sections"].values())
    # the run's accuracy is the model's, loaded from the written config and called on the held-out reviews
    config_path = out / "configs" / "reviews-text.yaml"
    config = load_config(config_path)
    tokenizer = load_tokenizer(config.model)
    assert tokenizer is not None
    frame = pd.read_csv(out / "data" / "reviews-test.csv")
    frame = frame.iloc[stratified_subset((frame["score"] == "other").to_numpy().astype(np.int64), 300, config.seed)]
    model = load_model(config.model, num_classes=2, sample=tokenizer.encode(frame["review"].tolist()[:8]),
                       device=torch.device("cpu"), batch_size=256, default_bounds=None, tokenizer=tokenizer)
    pred = model.logits(tokenizer.encode(frame["review"].tolist())).argmax(1).numpy()
    y = (frame["score"] == "other").to_numpy().astype(np.int64)
    metrics = results["sections"]["performance"]["metrics"]
    assert metrics["performance.accuracy"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
    assert metrics["performance.accuracy"] > 0.7
    fairness = results["sections"]["fairness"]["metrics"]
    assert f"fairness.{TOPIC}.demographic_parity_ratio" in fairness
    assert {"fairness.identity.group=female.bpsn_auc", "fairness.counterfactual.flip_rate"} <= set(fairness)
    robust = results["sections"]["robustness"]["metrics"]
    for attack in ("deepwordbug", "synonym", "hotflip", "worst_case"):
        assert robust[f"robustness.{attack}.text.mean_words_changed"] > 0
    adversarial = (out / "reviews-text" / "artifacts" / "robustness" / "text_adversarial.jsonl").read_text()
    assert adversarial.count("\n") >= 1
    kinds = {f["kind"] for f in results["sections"]["explanations"]["figures"]}
    assert "token_heatmap" in kinds
    assert (out / "reviews-text" / "report.html").exists()
    assert main(["gate", str(out / "reviews-text"), "--policy", str(out / "policies" / "reviews-text.yaml")]) == 0
    print(f"text demo: {seconds:.1f} s")


def test_the_config_in_docs_text_runs_on_the_demo_files(text_demo: tuple[Path, float], tmp_path: Path) -> None:
    out, _ = text_demo
    doc = (Path(__file__).parent.parent / "docs" / "text.md").read_text(encoding="utf-8")
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (config := out / "configs" / "from-docs.yaml").write_text(block, encoding="utf-8")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    assert main(["gate", str(tmp_path / "run")]) == 0
    assert main(["plan", str(config)]) == 0  # nnaudit plan loads the tokenizer first too
    ran = load_results(tmp_path / "run")
    assert ran["sections"]["performance"]["metrics"] == \
        load_results(out / "reviews-text")["sections"]["performance"]["metrics"]
