"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified L2 robustness, and the empirical
robustness of the same smoothed classifier under an EOT-PGD attack, side by side.

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is estimated by Monte
Carlo over Gaussian noise added to the input in raw input space (the model adapter's
normalization comes after, inside the forward).

- ``certify``: CERTIFY. ``n0`` selection draws pick the top class ``cA``; ``n`` estimation draws
  count how often ``cA`` comes out; ``pA`` is the one-sided Clopper-Pearson lower bound at level
  ``1 - alpha`` on that share. If ``pA < 1/2`` the sample abstains, otherwise ``g`` is certified
  constant within the L2 radius ``sigma * Phi^-1(pA)`` (with probability at least ``1 - alpha``).
- ``predict``: PREDICT. The two top classes of ``n`` draws and a two-sided binomial test: the top
  class if its count differs from the runner-up's at level ``alpha``, else abstain.
- ``smoothed_empirical``: an L2 PGD attack on the smoothed classifier (the soft smoothed classifier's
  cross-entropy, its gradient averaged over ``eot_samples`` noise draws per step, after Salman et
  al. 2019), at each radius; the smoothed prediction at the adversarial point is the majority vote of
  ``n_eval`` draws. A correct certificate can never be broken by an attack, so the empirical robust
  accuracy must stay at or above the certified accuracy at every radius: the two together bracket
  the true robust accuracy of ``g``.

Every noise draw is keyed by (seed, stream, sample id, block of ``NOISE_BLOCK`` draws) and drawn
on the model's device, so the results do not depend on the batch size or on which other samples
share a batch. ``batch`` only sets how many noisy copies go through the model at once: CERTIFY,
PREDICT and the majority vote fill each forward pass with the noisy copies of as many samples as it
holds (``smoothed_counts``); ``sample_counts`` is the same count for one sample at a time.

For the ``defenses`` section: ``smoothing_metrics`` turns the results into metrics named
``smoothing.l2.radius=<r>.certified_accuracy`` and ``smoothing.l2.radius=<r>.empirical_robust_accuracy``
(relative to the section: ``defenses.smoothing.l2.radius=<r>.certified_accuracy`` in results.json).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attacks.base import AttackError, AttackNotApplicable, Domain, Progress, step_direction

if TYPE_CHECKING:
    from audit.model import ModelAdapter

NOISE_BLOCK = 256  # draws per noise key: the unit of noise generation, independent of ``batch``
STREAM_SELECT, STREAM_ESTIMATE, STREAM_PREDICT, STREAM_EVAL, STREAM_ATTACK = 1, 2, 3, 4, 5
ABSTAIN = -1


# -- keyed noise ----------------------------------------------------------------------------------


def noise_key(seed: int, stream: int, sample_id: int, block: int) -> int:
    """The generator seed of one block of draws (a 63-bit integer from numpy's SeedSequence)."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, stream, int(sample_id), block]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def noise_draws(shape: Sequence[int], *, sigma: float, seed: int, stream: int, sample_id: int, start: int,
                count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Draws ``start .. start + count`` of one sample's noise in one stream: (count, *shape), N(0, sigma^2).

    Draw ``k`` is always the same number whatever ``start``/``count`` ask for it (blocks of
    ``NOISE_BLOCK`` draws, each from its own keyed generator); a reference implementation gets the
    same draws by calling this."""
    device = torch.device(device)
    out = torch.empty((count, *shape), device=device)
    first, last = start // NOISE_BLOCK, (start + count - 1) // NOISE_BLOCK
    for block in range(first, last + 1) if count > 0 else ():
        gen = torch.Generator(device=device)
        gen.manual_seed(noise_key(seed, stream, sample_id, block))
        lo = max(start - block * NOISE_BLOCK, 0)
        hi = min(start + count - block * NOISE_BLOCK, NOISE_BLOCK)
        at = block * NOISE_BLOCK + lo - start  # where this block's wanted draws go in ``out``
        if lo == 0 and hi == NOISE_BLOCK:  # the whole block: drawn in place
            torch.randn((NOISE_BLOCK, *shape), generator=gen, device=device, out=out[at : at + NOISE_BLOCK])
        else:
            out[at : at + hi - lo] = torch.randn((NOISE_BLOCK, *shape), generator=gen, device=device)[lo:hi]
    return out.mul_(sigma)


def _draw_groups(total: int, batch: int) -> Iterator[tuple[int, int]]:
    """(start, count) groups of whole noise blocks, about ``batch`` draws each (at least one block)."""
    size = max(1, batch // NOISE_BLOCK) * NOISE_BLOCK
    for start in range(0, total, size):
        yield start, min(size, total - start)


@torch.no_grad()
def sample_counts(model: ModelAdapter, x: torch.Tensor, *, sigma: float, num: int, seed: int, stream: int,
                  sample_id: int, batch: int) -> np.ndarray:
    """(K,) how often the base classifier predicts each class on ``num`` noisy copies of one input ``x``
    (shape ``input_shape``, on the model's device). Forward passes of at most ``batch`` copies."""
    counts = torch.zeros(model.num_classes, dtype=torch.long, device=model.device)
    shape = tuple(x.shape)
    for start, count in _draw_groups(num, batch):
        noise = noise_draws(shape, sigma=sigma, seed=seed, stream=stream, sample_id=sample_id, start=start,
                            count=count, device=model.device)
        for i in range(0, count, batch):
            chunk = noise[i : i + batch].add_(x)  # the noisy copies, in the noise's own memory
            counts += torch.bincount(_predictions(model, chunk), minlength=model.num_classes)
    return counts.cpu().numpy()


def _predictions(model: ModelAdapter, x: torch.Tensor) -> torch.Tensor:
    return model.forward(x).argmax(dim=1) if model.has_gradients else model.logits(x).to(model.device).argmax(dim=1)


@torch.no_grad()
def smoothed_counts(model: ModelAdapter, x: torch.Tensor, ids: np.ndarray, draws: Sequence[tuple[int, int]], *,
                    sigma: float, seed: int, batch: int, progress: Progress | None = None,
                    desc: str = "noise") -> np.ndarray:
    """(len(draws), N, K): for each (stream, number of draws) in ``draws`` and each input of ``x`` (N, *shape),
    how often the base classifier predicts each class on that many noisy copies: ``sample_counts`` of every
    sample and stream, with the noisy copies of many samples in each forward pass.

    The copies are laid out sample by sample, stream by stream, block by block (the keyed blocks of
    ``noise_draws``: the same numbers), and sent through the model ``batch`` at a time, each pass filled with the
    next samples' blocks (the last block of a stream may be partial). On a CPU each row's prediction does not
    depend on the rows beside it, so the counts equal the per-sample ones exactly."""
    device, k = model.device, model.num_classes
    shape = tuple(x.shape[1:])
    cap = max(batch, NOISE_BLOCK)
    buffer = torch.empty((cap, *shape), device=device)
    slots = torch.empty(cap, dtype=torch.long, device=device)
    samples_n = len(x)
    counts = torch.zeros(len(draws) * samples_n * k, dtype=torch.long, device=device)
    filled = 0

    def flush() -> None:
        for i in range(0, filled, batch):
            pred = _predictions(model, buffer[i : min(i + batch, filled)])
            counts.add_(torch.bincount(slots[i : i + len(pred)] * k + pred, minlength=len(counts)))

    samples: Iterable[int] = range(len(x))
    if progress is not None:
        samples = progress(samples, desc=desc, total=len(x), unit="sample")
    for i in samples:
        xi = x[i].to(device)
        for s, (stream, num) in enumerate(draws):
            for block in range((num + NOISE_BLOCK - 1) // NOISE_BLOCK):
                count = min(NOISE_BLOCK, num - block * NOISE_BLOCK)
                if filled + count > cap:
                    flush()
                    filled = 0
                gen = torch.Generator(device=device).manual_seed(noise_key(seed, stream, int(ids[i]), block))
                rows = buffer[filled : filled + count]
                if count == NOISE_BLOCK:
                    torch.randn((NOISE_BLOCK, *shape), generator=gen, device=device, out=rows)
                else:
                    rows.copy_(torch.randn((NOISE_BLOCK, *shape), generator=gen, device=device)[:count])
                rows.mul_(sigma).add_(xi)  # the noisy copies: noise * sigma + x, as sample_counts computes them
                slots[filled : filled + count] = s * samples_n + i
                filled += count
    flush()
    return counts.reshape(len(draws), len(x), k).cpu().numpy()


# -- statistics ------------------------------------------------------------------------------------


def clopper_pearson_lower(successes: int | np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion: the p with
    P(X >= successes | p) = alpha, i.e. the alpha quantile of Beta(successes, trials - successes + 1);
    0 when there are no successes."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(alpha, k, trials - k + 1)
    return np.where(k > 0, bound, 0.0)


def certified_radius(p_lower: float, sigma: float) -> float:
    """``sigma * Phi^-1(p_lower)`` (Cohen et al. Theorem 1 with pB = 1 - pA); 0 below one half (abstain)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_lower)) if p_lower >= 0.5 else 0.0


# -- results ---------------------------------------------------------------------------------------


@dataclass
class CertifyResult:
    """CERTIFY per sample: prediction (``ABSTAIN`` = -1), certified L2 radius (0 when abstaining) and the
    counts behind them."""

    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    ids: np.ndarray  # (N,) the sample ids the noise was keyed by
    y: np.ndarray  # (N,) true labels
    prediction: np.ndarray  # (N,) class or ABSTAIN
    radius: np.ndarray  # (N,) certified L2 radius, 0 where abstained
    p_lower: np.ndarray  # (N,) Clopper-Pearson lower bound on P(f(x + noise) = cA)
    counts0: np.ndarray  # (N, K) selection counts
    counts: np.ndarray  # (N, K) estimation counts

    @property
    def abstained(self) -> np.ndarray:
        return self.prediction == ABSTAIN

    @property
    def correct(self) -> np.ndarray:
        return self.prediction == self.y

    def certified(self, radius: float) -> np.ndarray:
        """(N,) correct and certified at L2 ``radius`` (radius 0: correct and not abstaining)."""
        return self.correct & (self.radius >= radius)

    def certified_accuracy(self, radii: Iterable[float]) -> list[float]:
        return [float(self.certified(r).mean()) for r in radii]


@dataclass
class EmpiricalResult:
    """The smoothed classifier under attack: per radius, which samples stay correct (worst case over this
    radius and every smaller one), the majority-vote prediction at the adversarial point and the attack's
    settings."""

    radii: list[float]
    y: np.ndarray
    robust: dict[float, np.ndarray]  # radius -> (N,) bool
    prediction: dict[float, np.ndarray]  # radius -> (N,) majority vote at that radius's adversarial point
    x_adv: dict[float, np.ndarray]  # radius -> (N, *shape)
    settings: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, radii: Iterable[float] | None = None) -> list[float]:
        return [float(self.robust[r].mean()) for r in (self.radii if radii is None else radii)]


# -- CERTIFY and PREDICT ---------------------------------------------------------------------------


def _check(model: ModelAdapter, sigma: float, alpha: float, **counts: int) -> None:
    if not (math.isfinite(sigma) and sigma > 0):
        raise AttackError(f"smoothing needs a noise level sigma > 0, got {sigma}")
    if not 0 < alpha < 1:
        raise AttackError(f"smoothing needs 0 < alpha < 1, got {alpha}")
    for name, value in counts.items():
        if value < 1:
            raise AttackError(f"smoothing needs {name} >= 1, got {value}")


def _ids(ids: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    out = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(out) != n:
        raise AttackError(f"smoothing got {len(out)} sample ids for {n} inputs; give one id per input")
    return out


def certify(model: ModelAdapter, x: np.ndarray | torch.Tensor, y: np.ndarray | Sequence[int], *, sigma: float,
            n0: int = 100, n: int = 1000, alpha: float = 0.001, batch: int = 1000, seed: int = 0,
            ids: Sequence[int] | np.ndarray | None = None, progress: Progress | None = None) -> CertifyResult:
    """CERTIFY (Cohen et al. 2019, Algorithm "certify") for every input. ``ids``: the sample ids the noise is
    keyed by (default 0..N-1; pass the rows' dataset indices so that a subset or a shard draws the same
    noise as the whole). ``progress``: a reporter (``ctx.progress``) given the samples. The selection and
    estimation draws of many samples share forward passes of ``batch`` copies (``smoothed_counts``)."""
    _check(model, sigma, alpha, n0=n0, n=n, batch=batch)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    keys = _ids(ids, len(xt))
    counts0, counts = smoothed_counts(model, xt, keys, [(STREAM_SELECT, n0), (STREAM_ESTIMATE, n)], sigma=sigma,
                                      seed=seed, batch=batch, progress=progress,
                                      desc=f"certify (sigma={sigma:g}, n={n})")
    return certificates(counts0, counts, y, keys, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed)


def certificates(counts0: np.ndarray, counts: np.ndarray, y: np.ndarray | Sequence[int], ids: np.ndarray, *,
                 sigma: float, n0: int, n: int, alpha: float, seed: int) -> CertifyResult:
    """CERTIFY's decision from the selection counts (N, K) and estimation counts (N, K) of ``n0`` and ``n``
    draws: the top selected class, the Clopper-Pearson bound on its share of the estimation draws, and the
    radius or abstention."""
    top = counts0.argmax(axis=1)
    n_top = counts[np.arange(len(counts)), top]
    p_lower = clopper_pearson_lower(n_top, n, alpha)
    radius = np.array([certified_radius(float(p), sigma) for p in p_lower])
    prediction = np.where(p_lower >= 0.5, top, ABSTAIN)
    return CertifyResult(sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed, ids=ids,
                         y=np.asarray(y, dtype=np.int64).reshape(-1), prediction=prediction,
                         radius=np.where(prediction == ABSTAIN, 0.0, radius), p_lower=p_lower, counts0=counts0,
                         counts=counts)


def predict(model: ModelAdapter, x: np.ndarray | torch.Tensor, *, sigma: float, n: int = 1000,
            alpha: float = 0.001, batch: int = 1000, seed: int = 0,
            ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """PREDICT (Cohen et al. 2019): (N,) the smoothed class, or ``ABSTAIN`` where a two-sided binomial test
    cannot tell the top class from the runner-up at level ``alpha`` (the answer is wrong with probability at
    most ``alpha``)."""
    from scipy.stats import binomtest

    _check(model, sigma, alpha, n=n, batch=batch)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    keys = _ids(ids, len(xt))
    out = np.full(len(xt), ABSTAIN, np.int64)
    every = smoothed_counts(model, xt, keys, [(STREAM_PREDICT, n)], sigma=sigma, seed=seed, batch=batch)[0]
    for i, counts in enumerate(every):
        order = np.argsort(-counts, kind="stable")
        n_a, n_b = int(counts[order[0]]), int(counts[order[1]]) if len(counts) > 1 else 0
        if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
            out[i] = order[0]
    return out


# -- the empirical side: EOT-PGD on the smoothed classifier ----------------------------------------


def _attack_noise(shape: tuple[int, ...], keys: np.ndarray, *, sigma: float, seed: int, step: int, draws: int,
                  device: torch.device) -> torch.Tensor:
    """(B * draws, *shape): each sample's own draws for one attack step (keyed by sample id and step)."""
    return torch.cat([noise_draws(shape, sigma=sigma, seed=seed, stream=STREAM_ATTACK, sample_id=int(k),
                                  start=step * draws, count=draws, device=device) for k in keys])


def _eot_pgd(model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, keys: np.ndarray, *, radius: float,
             sigma: float, steps: int, eot_samples: int, step_size: float, domain: Domain,
             seed: int) -> torch.Tensor:
    """L2 PGD on the soft smoothed classifier: maximize -log mean_j softmax(f(x' + noise_j))[y]."""
    shape = tuple(x.shape[1:])
    adv = x.clone()
    for step in range(steps):
        noise = _attack_noise(shape, keys, sigma=sigma, seed=seed, step=step, draws=eot_samples, device=x.device)
        adv = adv.detach().requires_grad_(True)
        logits = model.forward(adv.repeat_interleave(eot_samples, dim=0) + noise)
        probs = torch.softmax(logits, dim=1).reshape(len(x), eot_samples, -1).mean(dim=1)
        loss = -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-12)).sum()
        (grad,) = torch.autograd.grad(loss, adv)
        adv = domain.project(adv.detach() + step_size * step_direction(grad, "l2", domain), x, radius, "l2")
    return adv.detach()


@torch.no_grad()
def majority_vote(model: ModelAdapter, x: torch.Tensor, y: np.ndarray, keys: np.ndarray, *, sigma: float,
                  n_eval: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, correct) of the smoothed classifier by majority vote over ``n_eval`` draws per input; a
    sample is correct only when its true class has strictly more votes than every other class."""
    pred = np.zeros(len(x), np.int64)
    correct = np.zeros(len(x), bool)
    every = smoothed_counts(model, x, keys, [(STREAM_EVAL, n_eval)], sigma=sigma, seed=seed, batch=batch)[0]
    for i, counts in enumerate(every):
        pred[i] = int(counts.argmax())
        others = np.delete(counts, int(y[i]))
        correct[i] = bool(counts[int(y[i])] > (others.max() if len(others) else -1))
    return pred, correct


def smoothed_empirical(model: ModelAdapter, x: np.ndarray | torch.Tensor, y: np.ndarray | Sequence[int], *,
                       sigma: float, radii: Sequence[float], steps: int = 20, eot_samples: int = 16,
                       n_eval: int = 1000, rel_step_size: float | None = None, batch: int = 1000,
                       attack_batch: int = 32, seed: int = 0, ids: Sequence[int] | np.ndarray | None = None,
                       domain: Domain | None = None, progress: Progress | None = None) -> EmpiricalResult:
    """Empirical robust accuracy of the smoothed classifier under EOT-PGD (L2) at each radius.

    At every radius > 0 each sample is attacked from its clean point (``steps`` L2 steps of
    ``rel_step_size * radius``, default 2.5 / steps, the gradient averaged over ``eot_samples`` draws per
    step); the smoothed prediction at the result is the majority vote of ``n_eval`` draws. A sample is
    robust at a radius when that vote is its true class there and at every smaller radius (radius 0: the
    clean vote). ``domain``: input bounds for the adversarial points (default: the model's bounds).
    Needs a model with gradients."""
    if not model.has_gradients:
        raise AttackNotApplicable(f"the empirical side of smoothing attacks the smoothed classifier through its "
                                  f"gradients (EOT-PGD), but the model ({model.kind}) has none")
    _check(model, sigma, 0.5, steps=steps, eot_samples=eot_samples, n_eval=n_eval, batch=batch,
           attack_batch=attack_batch)
    if any(not math.isfinite(r) or r < 0 for r in radii):
        raise AttackError(f"smoothing radii must be finite and >= 0, got {list(radii)}")
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = np.asarray(y, dtype=np.int64).reshape(-1)
    keys = _ids(ids, len(xt))
    shape = tuple(int(d) for d in xt.shape[1:])
    device = model.device
    if domain is None:
        bounds = model.bounds
        domain = Domain.build(input_shape=shape, lower=None if bounds is None else bounds.lower,
                              upper=None if bounds is None else bounds.upper, device=device)
    domain = domain.to(device)
    rel = rel_step_size if rel_step_size is not None else 2.5 / steps
    ordered = sorted({0.0, *(float(r) for r in radii)})  # radius 0: the clean vote every radius builds on
    robust: dict[float, np.ndarray] = {}
    prediction: dict[float, np.ndarray] = {}
    x_adv: dict[float, np.ndarray] = {}
    still = np.ones(len(xt), bool)
    jobs: Iterable[float] = progress(ordered, desc=f"EOT-PGD on smoothed (sigma={sigma:g})", total=len(ordered)) \
        if progress is not None else ordered
    for r in jobs:
        advs = []
        for i in range(0, len(xt), attack_batch):
            xb = xt[i : i + attack_batch].to(device)
            if r == 0:
                advs.append(xb)
                continue
            yb = torch.as_tensor(yt[i : i + attack_batch], device=device)
            advs.append(_eot_pgd(model, xb, yb, keys[i : i + attack_batch], radius=r, sigma=sigma, steps=steps,
                                 eot_samples=eot_samples, step_size=rel * r, domain=domain, seed=seed))
        adv = torch.cat(advs) if advs else xt.to(device)
        pred, correct = majority_vote(model, adv, yt, keys, sigma=sigma, n_eval=n_eval, batch=batch, seed=seed)
        still &= correct
        robust[r], prediction[r], x_adv[r] = still.copy(), pred, adv.cpu().numpy()
    settings = {"attack": "eot_pgd", "norm": "l2", "steps": steps, "eot_samples": eot_samples,
                "step_size": f"{rel:.4g} * radius", "n_eval": n_eval, "sigma": sigma, "loss": "smoothed ce",
                "random_start": False}
    return EmpiricalResult(radii=ordered, y=yt, robust=robust, prediction=prediction, x_adv=x_adv, settings=settings)


# -- metrics ---------------------------------------------------------------------------------------


def fmt_radius(radius: float) -> str:
    return f"{radius:g}"


def smoothing_metrics(cert: CertifyResult, empirical: EmpiricalResult | None, radii: Sequence[float], *,
                      name: str = "smoothing") -> dict[str, float]:
    """Metrics for a section's ``result.metric``: ``<name>.l2.radius=<r>.certified_accuracy`` and
    ``<name>.l2.radius=<r>.empirical_robust_accuracy`` at each radius, ``<name>.abstain_rate`` and
    ``<name>.sigma``. Relative to the section, so the ``defenses`` section records them as
    ``defenses.smoothing.l2.radius=<r>.certified_accuracy`` (and ``...empirical_robust_accuracy``)."""
    out: dict[str, float] = {f"{name}.sigma": float(cert.sigma), f"{name}.abstain_rate": float(cert.abstained.mean())}
    for r, acc in zip(radii, cert.certified_accuracy(radii), strict=True):
        out[f"{name}.l2.radius={fmt_radius(r)}.certified_accuracy"] = acc
    if empirical is not None:
        for r in radii:
            if float(r) in empirical.robust:
                out[f"{name}.l2.radius={fmt_radius(r)}.empirical_robust_accuracy"] = \
                    float(empirical.robust[float(r)].mean())
    return out


def curve_rows(cert: CertifyResult, empirical: EmpiricalResult | None,
               radii: Sequence[float]) -> list[list[float | None]]:
    """[radius, certified accuracy, empirical robust accuracy] rows for a table or a figure."""
    emp = {} if empirical is None else {r: float(v.mean()) for r, v in empirical.robust.items()}
    return [[float(r), c, emp.get(float(r))] for r, c in zip(radii, cert.certified_accuracy(radii), strict=True)]


__all__ = [
    "ABSTAIN", "NOISE_BLOCK", "CertifyResult", "EmpiricalResult", "certificates", "certified_radius", "certify",
    "clopper_pearson_lower", "curve_rows", "majority_vote", "noise_draws", "predict", "sample_counts",
    "smoothed_counts", "smoothed_empirical", "smoothing_metrics",
]
