"""Models without gradients get an honest headline: Square as in the paper (margin loss, p_init 0.8 and its schedule,
stripes for L-inf, the L2 patterns), the per-query success curve, a transfer attack from a distilled surrogate, and
``reliable = 0`` ("black-box only", an upper bound) unless the attacks converged and a transfer attack ran."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attacks.apgd import APGD
from attacks.base import Domain
from attacks.escalate import EscalationParams, load_surrogate
from attacks.square import Square, l2_pattern, window_share
from audit.config import parse_config
from audit.errors import ConfigError
from audit.runner import run_audit
from reports.headline import headline_view, reliability

KEY = "robustness.worst_case.linf.eps=0.1.robust_accuracy"


def test_square_schedule_and_patterns_follow_the_paper() -> None:
    # p halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000 queries
    shares = [window_share(0.8, q, 10_000) for q in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)]
    assert shares == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.8 / 256, 0.8 / 512, 0.8 / 512]
    assert window_share(0.8, 5, 1000) == 0.8 / 2  # rescaled: query 5 of 1,000 is query 50 of 10,000 (past 10)
    from attacks.section import RobustnessParams

    assert RobustnessParams().queries(False) == 5000 and RobustnessParams().queries(True) == 1000  # AutoAttack's
    assert RobustnessParams(square_queries=300).queries(False) == 300
    pattern = l2_pattern(5)
    assert float(pattern.pow(2).sum()) == pytest.approx(1.0)
    assert float(pattern[:2].sum()) > 0 > float(pattern[2:].sum())  # top half positive, bottom half negative
    assert float(pattern[1, 2]) == float(pattern[:2].max())  # the top half peaks at its centre


def test_windows_reach_the_last_row_unless_drawn_as_the_reference_code() -> None:
    from attacks.square import _Steps

    x = torch.zeros(4000, 1, 8, 8)
    domain = Domain(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), None)
    for reference, reaches in ((False, True), (True, False)):
        steps = _Steps(x, 0.1, domain, torch.Generator().manual_seed(0), "linf", reference_positions=reference)
        window, side = steps.windows(len(x), 0.1)
        assert side == 3
        assert bool(window[:, 0, -1, :].any()) is reaches and bool(window[:, 0, :, -1].any()) is reaches
        assert bool(window[:, 0, 0, :].any()) and bool(window[:, 0, -3, :].any())


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_square_stays_in_the_ball_and_records_its_queries(norm: str, eps: float, make_context: Any,
                                                          digits_cnn: nn.Module, digits_test: Any) -> None:
    ctx = make_context(digits_cnn, digits_test)
    x, y = digits_test.x[:60], digits_test.y[:60]
    ok = ctx.model.predict(x) == y
    torch.manual_seed(0)
    out = Square(norm=norm, queries=150)(ctx.model, x[ok], y[ok], eps=eps, domain=Domain.from_model_data(
        ctx.model, digits_test))
    assert out.perturbation.max() <= eps * (1 + 1e-5) and out.x_adv.min() >= 0 and out.x_adv.max() <= 1
    assert out.success.any() and not out.success.all()
    assert out.success_query is not None
    np.testing.assert_array_equal(np.isfinite(out.success_query), out.success)
    assert out.success_query[out.success].max() <= 151 and out.success_query[out.success].min() >= 1
    if norm == "l2":  # the L2 proposals keep the whole perturbation at norm eps (clipping only shrinks it)
        inside = (out.x_adv > 1e-6) & (out.x_adv < 1 - 1e-6)
        assert inside.mean() > 0.2
    else:  # the stripes: fooled at the start or within the budget, each pixel moved by eps or clipped
        delta = np.abs(out.x_adv - x[ok])
        assert np.all((np.abs(delta - eps) < 1e-5) | (out.x_adv <= 1e-6) | (out.x_adv >= 1 - 1e-6))


def _config(model: dict[str, Any], *, eps: float = 0.1, **robustness: Any) -> Any:
    return parse_config({
        "model": {**model, "input_bounds": [0.0, 1.0]}, "data": {"source": "digits", "limit": 60}, "device": "cpu",
        "sections": {"robustness": {"eps": [eps], "steps": 10, "square_queries": 100, "minimal_samples": 0,
                                    "check_samples": 8, "check_queries": 10, "gallery_size": 0,
                                    "black_box": {"augment": 2, "epochs": 15}, **robustness}},
        "report": False})


@pytest.fixture(scope="module")
def digits_onnx(digits_cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("onnx") / "digits.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(digits_cnn.eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return path


def test_black_box_onnx_headline_is_an_upper_bound_with_transfer_and_curve(digits_onnx: Path, digits_cnn: nn.Module,
                                                                           make_context: Any, tmp_path: Path) -> None:
    results = run_audit(_config({"onnx": str(digits_onnx), "onnx_conversion": "off"}), tmp_path / "run")
    section = results["sections"]["robustness"]
    assert section["status"] == "ok", section.get("error")
    m = section["metrics"]
    assert m["robustness.black_box_only"] == 1 and m["robustness.reliable"] == 0
    why = reliability(results)
    assert why is not None and "black-box only" in str(why["reason"])
    assert headline_view(results)["robustness"][0]["bound"] == "upper bound"
    # the per-query curve: its last point is Square's success rate; it never falls
    figure = next(f for f in section["figures"] if f["name"] == "query_success_linf")
    rates = figure["series"][0]["y"]
    assert rates == sorted(rates) and figure["series"][0]["x"][-1] == 101
    assert rates[-1] == pytest.approx(m["robustness.square.linf.eps=0.1.attack_success_rate"])
    assert "robustness.query_curve.square.linf.eps=0.1.last_fifth_gain" in m
    # the transfer attack ran on a surrogate that mostly agrees with the black box, and joined the worst case
    assert m["robustness.transfer.linf.surrogate_agreement"] >= 0.8
    transfer = m["robustness.transfer_apgd_dlr.linf.eps=0.1.robust_accuracy"]
    assert transfer < m["robustness.clean_accuracy"]
    assert m[KEY] <= min(transfer, m["robustness.square.linf.eps=0.1.robust_accuracy"])
    # the demand: within 0.05 of the white-box headline, or marked unreliable with the reason (here)
    from audit.data import load_data

    data = load_data(_config({"onnx": str(digits_onnx)}).data, seed=0)
    twin = make_context(digits_cnn, data).model
    ok = twin.predict(data.x) == data.y
    torch.manual_seed(0)
    white = APGD(norm="linf", steps=50)(twin, data.x[ok], data.y[ok], eps=0.1,
                                        domain=Domain.from_model_data(twin, data))
    white_headline = float((ok.sum() - white.success.sum()) / len(ok))
    assert abs(m[KEY] - white_headline) <= 0.05 or m["robustness.reliable"] == 0


PREDICT = '''
from pathlib import Path

import numpy as np
import torch

from audit.zoo import digits_cnn

_NET = digits_cnn(width=8)
_NET.load_state_dict(torch.load(Path(__file__).with_name("cnn.pt"), weights_only=True))
_NET.eval()


def predict(x):
    with torch.no_grad():
        return _NET(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()


def wrong_width():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
'''


@pytest.fixture
def predict_module(tmp_path: Path, digits_cnn: nn.Module, monkeypatch: pytest.MonkeyPatch) -> str:
    torch.save(digits_cnn.state_dict(), tmp_path / "cnn.pt")
    (tmp_path / "bbmodel_i20.py").write_text(PREDICT)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bbmodel_i20"


def test_predict_fn_is_marked_the_same_way(predict_module: str, tmp_path: Path) -> None:
    results = run_audit(_config({"predict_fn": f"{predict_module}:predict", "output": "logits"},
                                black_box={"transfer": "never"}), tmp_path / "run")
    m = results["sections"]["robustness"]["metrics"]
    assert m["robustness.black_box_only"] == 1 and m["robustness.reliable"] == 0
    reason = str(reliability(results)["reason"])  # type: ignore[index]
    assert "black-box only" in reason and "no transfer attack ran" in reason
    assert not any(k.startswith("robustness.transfer_apgd") for k in m)
    assert headline_view(results)["robustness"][0]["bound"] == "upper bound"
    # the report's headline card: "upper bound" beside the number (and not for a model with gradients)
    from reports.html import render_html

    badge = '<span class="badge rel-bad bound">upper bound</span>'
    text = headline_view(results)["robustness"][0]["text"]
    assert f"{text} {badge}" in render_html(results, tmp_path / "run")
    del results["sections"]["robustness"]["metrics"]["robustness.black_box_only"]
    assert badge not in render_html(results, tmp_path / "run")


def test_converged_square_with_transfer_is_not_called_black_box_only(predict_module: str, tmp_path: Path) -> None:
    """At eps 0.5 the stripes fool nearly every sample within a few queries: the curve is flat over its last fifth,
    the transfer attack ran, so "black-box only" is not among the reasons (the number stays an upper bound)."""
    results = run_audit(_config({"predict_fn": f"{predict_module}:predict", "output": "logits"}, eps=0.5),
                        tmp_path / "run")
    m = results["sections"]["robustness"]["metrics"]
    assert m["robustness.query_curve.square.linf.eps=0.5.last_fifth_gain"] <= 0.005
    assert "robustness.transfer_apgd_ce.linf.eps=0.5.robust_accuracy" in m
    why = reliability(results)
    assert why is None or "black-box only" not in str(why["reason"])
    assert headline_view(results)["robustness"][0]["bound"] == "upper bound"


def test_surrogate_of_the_wrong_width_names_the_key(predict_module: str, digits_cnn: nn.Module, digits_test: Any,
                                                    make_context: Any) -> None:
    ctx = make_context(digits_cnn, digits_test)
    with pytest.raises(ConfigError, match="returns 3 scores per sample; the model has 10 classes") as info:
        load_surrogate(ctx, EscalationParams(surrogate=f"{predict_module}:wrong_width"), section="robustness")
    assert info.value.key == "sections.robustness.escalation.surrogate"
