"""Attacks: analytic answers, threat-model invariants, and cross-checks against foolbox."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from attacks import APGD, FGSM, FMN, PGD, AttackError, AttackNotApplicable, Domain, Square, make_attack
from attacks.apgd import checkpoints
from attacks.base import dlr_loss, margin_loss
from audit.model import Bounds, PredictFunctionAdapter, SelectOutput, TorchModelAdapter

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits_setup(digits_cnn: Any, digits_test: Any) -> tuple[TorchModelAdapter, np.ndarray, np.ndarray, Domain]:
    model = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0), batch_size=128)
    ok = model.predict(digits_test.x) == digits_test.y
    x, y = digits_test.x[ok][:120], digits_test.y[ok][:120]
    return model, x, y, Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)


def linear_model(w: np.ndarray, b: np.ndarray) -> TorchModelAdapter:
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w))
        lin.bias.copy_(torch.as_tensor(b))
    return TorchModelAdapter.from_module(lin, num_classes=w.shape[0], batch_size=128)


def test_fgsm_on_linear_model_is_x_plus_eps_sign_w() -> None:
    # two classes, logits z = W x + b; for label 0 the CE gradient w.r.t. x is (p1)(w1 - w0): sign(w1 - w0)
    w = np.array([[0.5, -1.0, 2.0, -0.25], [-0.5, 1.0, -1.0, 0.75]], np.float32)
    model = linear_model(w, np.zeros(2, np.float32))
    x = np.array([[0.5, 0.5, 0.5, 0.5], [0.05, 0.95, 0.5, 0.5]], np.float32)
    y = np.array([0, 0])
    eps = 0.1
    domain = Domain.build(input_shape=(4,), lower=np.zeros(4), upper=np.ones(4))
    out = FGSM()(model, x, y, eps=eps, domain=domain)
    expected = np.clip(x + eps * np.sign(w[1] - w[0]), 0.0, 1.0)
    np.testing.assert_array_equal(out.x_adv, expected.astype(np.float32))
    assert out.x_adv[1, 0] == 0.0 and out.x_adv[1, 1] == 1.0  # clipped into the bounds


def test_fgsm_respects_perturbable_mask_and_per_feature_bounds() -> None:
    w = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], np.float32)
    model = linear_model(w, np.zeros(2, np.float32))
    x = np.array([[0.0, 0.0, 0.0]], np.float32)
    domain = Domain.build(input_shape=(3,), lower=[-0.05, -1, -1], upper=[1, 1, 1], perturbable=[True, True, False])
    out = FGSM()(model, x, np.array([0]), eps=0.2, domain=domain)
    np.testing.assert_allclose(out.x_adv, [[-0.05, -0.2, 0.0]], atol=1e-7)


def test_losses_margin_and_dlr_scale_invariant() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    y = torch.tensor([0])
    assert margin_loss(z, y).item() == pytest.approx(-2.0)
    assert dlr_loss(z, y).item() == pytest.approx(-2.0 / 3.0)
    assert dlr_loss(z * 1e3 + 7, y).item() == pytest.approx(dlr_loss(z, y).item(), rel=1e-5)


def test_apgd_checkpoints_follow_the_paper_schedule() -> None:
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.01, 0.5), norm=st.sampled_from(["linf", "l2"]),
       name=st.sampled_from(["fgsm", "pgd", "apgd_ce", "apgd_dlr", "square"]), seed=st.integers(0, 1000))
def test_every_adversarial_is_within_eps_and_bounds(digits_setup: Any, eps: float, norm: str, name: str,
                                                    seed: int) -> None:
    model, x, y, domain = digits_setup
    if norm == "l2":
        eps *= 4
    torch.manual_seed(seed)
    try:
        attack = make_attack(name, norm=norm, steps=5, queries=20)  # type: ignore[arg-type]
    except AttackNotApplicable:
        assume_linf_only = name in ("fgsm", "square")
        assert assume_linf_only
        return
    out = attack(model, x[:24], y[:24], eps=eps, domain=domain)
    delta = (out.x_adv - x[:24]).reshape(24, -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all()
    assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0
    # success is verified: every successful adversarial is misclassified
    pred = model.predict(out.x_adv)
    np.testing.assert_array_equal(pred != y[:24], out.success)
    # the margin of the verification pass: best other logit minus the true one, > 0 exactly where fooled
    logits = model.logits(out.x_adv).numpy()
    true = logits[np.arange(24), y[:24]]
    logits[np.arange(24), y[:24]] = -np.inf
    assert out.margin is not None
    np.testing.assert_allclose(out.margin, logits.max(axis=1) - true, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out.margin > 0, out.success)


def test_robust_accuracy_decreases_and_apgd_at_least_as_strong_as_pgd(digits_setup: Any) -> None:
    model, x, y, domain = digits_setup
    torch.manual_seed(0)
    accs = []
    for eps in (0.05, 0.1, 0.2):
        pgd = PGD(steps=30)(model, x, y, eps=eps, domain=domain)
        apgd = APGD(steps=30)(model, x, y, eps=eps, domain=domain)
        # APGD at equal steps is never weaker than PGD (1 sample of slack for random starts)
        assert apgd.robust.mean() <= pgd.robust.mean() + 1.0 / len(y)
        accs.append(min(apgd.robust.mean(), pgd.robust.mean()))
    assert accs[0] <= 1.0 and accs[0] >= accs[1] >= accs[2]
    assert accs[2] < 0.1  # eps=0.2 on 8x8 digits in [0, 1] breaks an undefended CNN


def test_restarts_keep_the_worst_case(digits_setup: Any) -> None:
    model, x, y, domain = digits_setup
    torch.manual_seed(0)
    one = PGD(steps=10)(model, x, y, eps=0.1, domain=domain)
    torch.manual_seed(0)
    many = PGD(steps=10, restarts=4)(model, x, y, eps=0.1, domain=domain)
    assert many.success.sum() >= one.success.sum()  # the first restart is the same run
    assert many.settings["restarts"] == 4


def test_targeted_pgd_reaches_the_target(digits_setup: Any) -> None:
    model, x, y, domain = digits_setup
    target = (y + 1) % 10
    out = PGD(steps=40)(model, x[:40], y[:40], eps=0.3, domain=domain, target=target[:40])
    pred = model.predict(out.x_adv)
    np.testing.assert_array_equal(out.success, pred == target[:40])
    assert out.success.mean() > 0.8
    with pytest.raises(AttackError, match="target class equals the true label"):
        PGD(steps=2)(model, x[:4], y[:4], eps=0.1, domain=domain, target=y[:4])


def foolbox_model(model: TorchModelAdapter) -> Any:
    import foolbox

    return foolbox.PyTorchModel(model.network, bounds=(0.0, 1.0), device="cpu")


@pytest.mark.filterwarnings("ignore::UserWarning:foolbox")  # foolbox warns on its own internal deprecations
def test_fgsm_matches_foolbox(digits_setup: Any) -> None:
    import foolbox

    model, x, y, domain = digits_setup
    eps = 0.1
    ours = FGSM()(model, x, y, eps=eps, domain=domain)
    _, theirs, success = foolbox.attacks.FGSM()(foolbox_model(model), torch.as_tensor(x), torch.as_tensor(y),
                                                epsilons=eps)
    assert abs(ours.robust.mean() - (1 - success.float().mean().item())) <= 0.01
    assert np.abs(ours.x_adv - theirs.numpy()).max() < 1e-5


@pytest.mark.filterwarnings("ignore::UserWarning:foolbox")
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_within_one_point_of_foolbox_and_never_weaker(digits_cnn: Any, digits_test: Any,
                                                         random_start: bool) -> None:
    """Per sample, on the same starting points: random starts are drawn once (nnaudit's own draw, replayed into
    foolbox's ``get_random_start``), so the comparison is exact, not a comparison of two random means."""
    import eagerpy as ep
    import foolbox

    class SharedStartPGD(foolbox.attacks.LinfPGD):
        def __init__(self, start: torch.Tensor, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.start = start

        def get_random_start(self, x0: Any, epsilon: float) -> Any:
            return ep.astensor(self.start)

    model = TorchModelAdapter.from_module(digits_cnn, num_classes=10, bounds=(0.0, 1.0), batch_size=128)
    ok = model.predict(digits_test.x) == digits_test.y
    x, y = digits_test.x[ok], digits_test.y[ok]  # every clean-correct test image (~440)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    domain = Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)
    fmodel = foolbox_model(model)
    for eps in (0.05, 0.1, 0.2):
        steps, step = 20, 2.5 * eps / 20
        for seed in range(3) if random_start else range(1):
            torch.manual_seed(seed)  # one batch: PGD's random start is one uniform_ draw of x's shape
            ours = PGD(steps=steps, abs_step_size=step, random_start=random_start)(
                model, x, y, eps=eps, domain=domain, batch_size=len(x)).success
            torch.manual_seed(seed)
            start = (xt + torch.empty_like(xt).uniform_(-eps, eps)).clamp(0.0, 1.0)  # the same draw, projected
            attack = SharedStartPGD(start, steps=steps, abs_stepsize=step, random_start=random_start)
            _, _, success = attack(fmodel, xt, yt, epsilons=eps)
            theirs = success.numpy()
            # never weaker: nnaudit follows the same path and also keeps the first adversarial iterate
            assert not (theirs & ~ours).any(), (eps, seed, np.flatnonzero(theirs & ~ours))
            assert (ours & ~theirs).mean() <= 0.01, (eps, seed, ours.sum(), theirs.sum())


def test_fmn_minimal_norms_are_consistent_with_bounded_attacks(digits_setup: Any) -> None:
    model, x, y, domain = digits_setup
    out = FMN(norm="linf", steps=50)(model, x[:30], y[:30], eps=None, domain=domain)
    assert out.success.mean() > 0.9
    # every sample fooled at its minimal eps really is adversarial there and within bounds
    assert (model.predict(out.x_adv)[out.success] != y[:30][out.success]).all()
    sizes = np.abs(out.x_adv - x[:30]).reshape(30, -1).max(axis=1)
    np.testing.assert_allclose(sizes, out.perturbation, atol=1e-6)


def test_square_attacks_a_black_box(digits_cnn: Any, digits_test: Any) -> None:
    def predict(arr: np.ndarray) -> np.ndarray:  # the CNN behind a numpy-only predict function
        with torch.no_grad():
            return digits_cnn(torch.as_tensor(arr)).numpy()

    box = PredictFunctionAdapter(predict, SelectOutput(None, "logits", False), num_classes=10, output_kind="logits",
                                 bounds=Bounds(0.0, 1.0), device=CPU, batch_size=128, source="fn", sha256="0")
    ok = box.predict(digits_test.x) == digits_test.y
    x, y = digits_test.x[:60], digits_test.y[:60]
    domain = Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0)
    with pytest.raises(AttackNotApplicable, match="needs input gradients"):
        PGD(steps=2)(box, x, y, eps=0.1, domain=domain)
    torch.manual_seed(0)
    out = Square(queries=200)(box, x, y, eps=0.2, domain=domain)
    assert out.success[ok[:60]].mean() > 0.8
    assert np.abs(out.x_adv - x).max() <= 0.2 + 1e-6
    assert out.queries == 201


def test_foolbox_attacks_refuse_masked_data(digits_setup: Any) -> None:
    model, x, y, _ = digits_setup
    mask = np.zeros(x.shape[1:], bool)
    mask[0, :4] = True
    domain = Domain.build(input_shape=x.shape[1:], lower=0.0, upper=1.0, perturbable=mask)
    with pytest.raises(AttackNotApplicable, match="cannot keep some features fixed"):
        FMN()(model, x[:4], y[:4], eps=None, domain=domain)
    out = PGD(steps=5)(model, x[:16], y[:16], eps=0.3, domain=domain)
    changed = np.abs(out.x_adv - x[:16]) > 0
    assert not changed[:, ~mask].any()


def test_bad_settings_raise_named_errors(digits_setup: Any) -> None:
    model, x, y, domain = digits_setup
    with pytest.raises(AttackError, match="steps >= 1"):
        PGD(steps=0)
    with pytest.raises(AttackNotApplicable, match="supports norms"):
        FGSM(norm="l2")
    with pytest.raises(AttackError, match="finite eps"):
        PGD(steps=2)(model, x[:2], y[:2], eps=float("nan"), domain=domain)
    with pytest.raises(AttackError, match="unknown attack"):
        make_attack("nope", norm="linf", steps=2)
    with pytest.raises(AttackNotApplicable, match="no feature may be perturbed"):
        Domain.build(input_shape=(3,), perturbable=[False, False, False])
