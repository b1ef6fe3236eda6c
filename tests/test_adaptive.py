"""Adaptive attacks (BPDA, EOT, transfer) and the robustness section's escalation on masked gradients."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from attacks.adaptive import bpda, eot, replay, straight_through
from attacks.base import Domain
from attacks.gradient import PGD
from attacks.section import RobustnessSection
from audit.outcomes import load_outcomes

FAST: dict[str, Any] = {"minimal_samples": 0, "check_samples": 40, "steps": 20}


class Quantize(nn.Module):
    """round(4x)/4: a non-differentiable input quantizer (zero gradient almost everywhere)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


class _RoundST(torch.autograd.Function):
    """A hand-written straight-through quantizer: round(4x)/4 forward, identity backward (the reference BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class QuantizeST(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RoundST.apply(x)  # type: ignore[no-any-return]


class NoGradQuantize(nn.Module):
    """The same quantizer computed under no_grad: nothing a straight-through replacement can see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = torch.round(x * 4) / 4
        return q + 0 * x


class Ripple(nn.Module):
    """A randomized model: a ripple of random phase on every input, ``x + a sin(w x + phase)``. Its outputs move
    little (``a`` = 0.01 per pixel), but one draw's input gradient is scaled per pixel by ``1 + a w cos(...)`` (a w
    = 3), a random factor that flips the gradient's sign on about 40% of the pixels; its mean over draws is 1
    (Athalye et al. 2018: stochastic gradients, broken by expectation over transformation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.sin(300 * x + 2 * math.pi * torch.rand_like(x))


def test_straight_through_keeps_the_value_and_passes_the_gradient(digits_cnn: Any, digits_test: Any,
                                                                  make_context: Any) -> None:
    model = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test).model
    x = digits_test.x[:16]
    st, ops = straight_through(model, mode="bpda", probe=x)
    assert st is not None and ops == {"round": 1}
    assert torch.equal(st.logits(x), model.logits(x))  # BPDA: the forward pass is the model's, exactly
    reference = make_context(nn.Sequential(QuantizeST(), digits_cnn), digits_test).model
    xt = torch.as_tensor(x).requires_grad_(True)
    (g1,) = torch.autograd.grad(st.forward(xt).sum(), xt)
    xt2 = torch.as_tensor(x).requires_grad_(True)
    (g2,) = torch.autograd.grad(reference.forward(xt2).sum(), xt2)
    assert torch.allclose(g1, g2) and float(g1.abs().sum()) > 0
    smooth, _ = straight_through(model, mode="identity", probe=x)
    assert smooth is not None
    plain = make_context(digits_cnn, digits_test).model
    assert torch.allclose(smooth.logits(x), plain.logits(x))  # the transfer surrogate: the quantizer removed
    nothing, found = straight_through(make_context(nn.Sequential(NoGradQuantize(), digits_cnn), digits_test).model,
                                      probe=x)
    assert nothing is None and not found


def test_bpda_and_eot_building_blocks() -> None:
    x = torch.linspace(0, 1, 12).reshape(3, 4).requires_grad_(True)
    f = bpda(lambda t: torch.round(t * 4) / 4)
    out = f(x)
    assert torch.equal(out, torch.round(x * 4) / 4)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.ones_like(x))  # identity approximation
    g = bpda(lambda t: torch.round(t * 4) / 4, approx=lambda t: 2 * t)
    (grad2,) = torch.autograd.grad(g(x).sum(), x)
    assert torch.equal(grad2, torch.full_like(x, 2.0))  # a defense's own approximation
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def noisy(t: torch.Tensor) -> torch.Tensor:
        return (t + 0.1 * torch.randn_like(t)) @ w

    torch.manual_seed(5)
    averaged = eot(noisy, 7)(x)
    torch.manual_seed(5)
    draws = [noisy(x) for _ in range(7)]
    assert torch.allclose(averaged, sum(draws[1:], draws[0]) / 7, atol=1e-6)


def test_quantized_model_headline_escalates_to_the_bpda_transfer_number(digits_cnn: Any, digits_test: Any,
                                                                         make_context: Any) -> None:
    """On a CNN behind round(4x)/4 the default headline at eps 0.3 comes within 10 points of an independent
    BPDA / transfer evaluation (a hand-written straight-through quantizer; PGD crafted on the CNN without the
    quantizer), where it used to read far above it, and the result says it escalated."""
    ctx = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test, limit=100)
    result = RobustnessSection(eps=[0.1, 0.3], **FAST)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    headline = float(m["robustness.worst_case.linf.eps=0.3.robust_accuracy"])
    before = float(m["robustness.escalation.linf.eps=0.3.robust_accuracy_before"])
    # the reference: per-sample worst case of hand-written BPDA and transfer, replayed on the quantized model
    data, target = ctx.data, ctx.model
    domain = Domain.from_model_data(target, data)
    pgd = PGD(norm="linf", steps=40)
    ok = target.predict(data.x) == data.y
    fooled = ~ok
    for crafting in (nn.Sequential(QuantizeST(), digits_cnn), digits_cnn):
        out = pgd(make_context(crafting, data).model, data.x, data.y, eps=0.3, domain=domain)
        fooled |= replay(target, data.x, data.y, out.x_adv)[0]
    reference = float((~fooled).mean())
    assert abs(headline - reference) <= 0.10, (headline, reference)
    assert before > reference + 0.3  # the gradient attacks alone were fooled by the masking
    found = next(f for f in result.findings if f.code == "robustness.escalation.linf")
    assert "bpda_apgd_ce" in found.message and "transfer_apgd_dlr" in found.message
    assert m["robustness.bpda_apgd_dlr.linf.eps=0.3.robust_accuracy"] <= reference + 0.10
    reliable = next(f for f in result.findings if f.code == "robustness.reliable")
    assert m["robustness.reliable"] == 1 and "adaptive attacks" in reliable.message  # marked as escalated
    table = next(t for t in result.tables if t.name == "escalation_linf")
    assert [row[1] for row in table.rows] == [0.1, 0.3] and table.rows[1][3] == pytest.approx(headline)


def test_masking_without_a_detectable_op_stays_unreliable(digits_cnn: Any, digits_test: Any,
                                                          make_context: Any) -> None:
    ctx = make_context(nn.Sequential(NoGradQuantize(), digits_cnn), digits_test, limit=60)
    result = RobustnessSection(eps=[0.3], square_queries=200, **FAST)(ctx)
    m = result.metrics
    assert m["robustness.reliable"] == 0
    reason = next(f for f in result.findings if f.code == "robustness.reliable").message
    assert "sections.robustness.escalation.surrogate" in reason
    # square still ran and counts in the worst case
    worst, square = (m[f"robustness.{a}.linf.eps=0.3.robust_accuracy"] for a in ("worst_case", "square"))
    assert worst <= square
    assert any("no non-differentiable op" in n for n in result.notes)


def test_escalation_off_keeps_the_headline(digits_cnn: Any, digits_test: Any, make_context: Any) -> None:
    ctx = make_context(nn.Sequential(Quantize(), digits_cnn), digits_test, limit=60)
    result = RobustnessSection(eps=[0.3], escalation={"enabled": False}, **FAST)(ctx)
    assert not any(k.startswith("robustness.escalation") for k in result.metrics)
    assert result.metrics["robustness.reliable"] == 0
    assert np.isfinite(result.metrics["robustness.worst_case.linf.eps=0.3.robust_accuracy"])


def test_a_named_surrogate_is_used_for_transfer(digits_cnn: Any, digits_test: Any, make_context: Any,
                                                tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """No op to make straight-through (the quantizer runs under no_grad): the surrogate the user names (the CNN
    without the quantizer, from a factory and a state_dict) crafts transfer attacks that lower the headline."""
    torch.save(digits_cnn.state_dict(), tmp_path / "surrogate.pt")
    (tmp_path / "my_surrogate.py").write_text("from audit.zoo import digits_cnn\n\ndef make():\n"
                                              "    return digits_cnn(width=8)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ctx = make_context(nn.Sequential(NoGradQuantize(), digits_cnn), digits_test, limit=60)
    common: dict[str, Any] = {"eps": [0.3], **FAST}
    plain = RobustnessSection(escalation={"square": False}, **common)(ctx)
    named = RobustnessSection(escalation={"square": False, "surrogate": "my_surrogate:make",
                                          "surrogate_weights": str(tmp_path / "surrogate.pt")}, **common)(ctx)
    assert named.status == "ok", named.error
    key = "robustness.worst_case.linf.eps=0.3.robust_accuracy"
    transfer = named.metrics["robustness.transfer_apgd_dlr.linf.eps=0.3.robust_accuracy"]
    assert named.metrics[key] <= transfer < plain.metrics[key] - 0.3
    assert named.metrics["robustness.reliable"] == 0  # no white-box adaptive attack to check: still marked
    bad = RobustnessSection(escalation={"surrogate": "my_surrogate:nope"}, **common)(ctx)
    assert bad.status == "error" and "sections.robustness.escalation.surrogate" in bad.error["message"]


def test_randomized_model_escalates_to_eot_which_beats_the_plain_attacks(digits_cnn: Any, digits_test: Any,
                                                                         make_context: Any) -> None:
    """The red flags call the randomized model likely masked; the escalation runs EOT-APGD, and on the same samples
    EOT-APGD fools strictly more than the plain APGD of the same loss (which follows one draw's gradient)."""
    from scipy.stats import binomtest

    ctx = make_context(nn.Sequential(Ripple(), digits_cnn), digits_test, limit=100)
    result = RobustnessSection(eps=[0.1], escalation={"square": False}, **FAST)(ctx)
    assert result.status == "ok", result.error
    m = result.metrics
    verdicts = {row[0]: row[2] for row in next(t for t in result.tables if t.name == "red_flags").rows}
    assert verdicts["Non-deterministic outputs"] == "likely masked"
    found = next(f for f in result.findings if f.code == "robustness.escalation.linf")
    assert "eot_apgd_ce" in found.message and "eot_apgd_dlr" in found.message and "bpda" not in found.message
    saved = load_outcomes(ctx.run_dir, "robustness")
    assert saved is not None
    for loss in ("ce", "dlr"):
        plain, adaptive = (saved.values[f"robustness.{a}.linf.eps=0.1.robust_accuracy"].astype(bool)
                           for a in (f"apgd_{loss}", f"eot_apgd_{loss}"))
        assert m[f"robustness.eot_apgd_{loss}.linf.eps=0.1.robust_accuracy"] == pytest.approx(adaptive.mean())
        assert m[f"robustness.apgd_{loss}.linf.eps=0.1.robust_accuracy"] == pytest.approx(plain.mean())
        # paired on the same samples: were EOT only another draw of the plain attack, the samples one of them fools
        # and the other does not would split like fair coin flips (an exact one-sided sign test)
        only_eot, only_plain = int((plain & ~adaptive).sum()), int((adaptive & ~plain).sum())
        p_value = binomtest(only_eot, only_eot + only_plain, 0.5, alternative="greater").pvalue
        assert p_value < 1e-3, (loss, only_eot, only_plain, p_value)
    worst = m["robustness.worst_case.linf.eps=0.1.robust_accuracy"]
    assert worst < m["robustness.escalation.linf.eps=0.1.robust_accuracy_before"]  # folded into the worst case
