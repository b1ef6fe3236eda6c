"""docs/tasks.md runs as written: its Python blocks prepare the data and weights, its YAML blocks (named by their
first comment line) are audited with `nnaudit run`, and the numbers are the ones the page promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audit.cli import main
from audit.results import load_results

DOC = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(python|yaml)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_tasks_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    configs = []
    for kind, text in blocks():
        if kind == "python":
            exec(compile(text, str(DOC), "exec"), {"__name__": "docs_tasks"})
        else:
            name = text.splitlines()[0].lstrip("# ").strip()
            (tmp_path / name).write_text(text)
            configs.append(name)
    assert configs == ["diabetes.yaml", "digits-multilabel.yaml"]
    assert main(["run", "diabetes.yaml", "--out", "runs/diabetes"]) == 0  # its gate policy passes
    results = load_results(tmp_path / "runs" / "diabetes")
    assert results["manifest"]["data"]["task"] == "regression" and results["verdict"]["status"] == "pass"
    metrics = {k: v for s in results["sections"].values() for k, v in s["metrics"].items()}
    assert 0.2 < metrics["performance.r2"] < 0.8 and "robustness.l2.eps=1.adversarial_mae" in metrics
    assert "explanations.ig.deletion_auc" in metrics
    assert not any("accuracy" in k for k in metrics)
    assert main(["run", "digits-multilabel.yaml", "--out", "runs/digits"]) == 0
    multi = load_results(tmp_path / "runs" / "digits")
    assert multi["manifest"]["data"]["task"] == "multilabel"
    assert multi["sections"]["performance"]["metrics"]["performance.micro_f1"] > 0.8
    assert all(s["status"] == "ok" for s in multi["sections"].values())
    assert "robustness.linf.eps=0.1.any_label_flip_rate" in multi["sections"]["robustness"]["metrics"]
    assert "explanations.label=prime.ig.deletion_auc" in multi["sections"]["explanations"]["metrics"]
    html = Path("runs/digits/report.html").read_text()
    assert "Any-label flip rate (linf, eps 0.1)" in html and "Subset accuracy" in html
