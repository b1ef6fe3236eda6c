"""shap methods: GradientExplainer, DeepExplainer (additivity kept on, falls back to GradientExplainer) and
KernelExplainer (k-means background; black-box models too), the last batched across samples by default."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from explain.base import Explainer, ExplainerError, at_least
from explain.seeds import numpy_global_seed
from explain.surrogates import (
    evaluate,
    kernel_coalitions,
    kernel_shap_lstsq,
    kernel_shap_solve,
    reseeded,
    sample_chunks,
)

BACKENDS = ("batched", "library")


def import_shap() -> Any:
    """Import shap without the deprecation notices its plotting module raises on import under new matplotlib."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import shap
    return shap


def _pick(values: Any, target: np.ndarray, n: int) -> np.ndarray:
    """shap returns (n, *shape, K) or a list of K arrays; keep each row's target class."""
    array = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values)
    if array.shape[0] != n:
        raise ExplainerError(f"shap returned values of shape {array.shape} for {n} inputs")
    return np.take_along_axis(array, target.reshape((-1,) + (1,) * (array.ndim - 1)), axis=-1)[..., 0]


def _predicted(network: torch.nn.Module, x: torch.Tensor, target: np.ndarray) -> bool:
    """Whether every target is the network's top class (shap's ranked_outputs=1 then explains just that)."""
    with torch.no_grad():
        top = network(x.detach()).argmax(dim=1).cpu().numpy()
    return bool((top == target).all())


class ShapGradientExplainer(Explainer):
    """shap.GradientExplainer (expected gradients) on the adapted network.

    shap seeds once per call (``rseed``) and draws the rows' baselines and path points in sequence, so a row's
    draws would depend on its position in the batch: each row is explained by its own call with the row's seed
    (shap loops over the rows inside a call anyway, each with a model batch of ``n_samples``).
    """

    method = "shap_gradient"

    def __init__(self, adapter: Any, *, n_samples: int = 32, **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 1)
        super().__init__(adapter, **kwargs)
        shap = import_shap()

        self.n_samples = n_samples
        self.network = self.network_copy()
        self.explainer = shap.GradientExplainer(self.network, self.background_tensor(), batch_size=n_samples)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        tnp = target.detach().cpu().numpy()
        with torch.no_grad():
            top = self.network(x.detach()).argmax(dim=1).cpu().numpy()
        out = np.zeros(x.shape, np.float64)
        for i, seed in enumerate(self.row_seeds()):
            row = x[i : i + 1].detach()
            if top[i] == tnp[i]:  # the predicted class: explain one output instead of all K
                values, _ = self.explainer.shap_values(row, nsamples=self.n_samples, ranked_outputs=1,
                                                       rseed=int(seed))
                out[i] = np.asarray(values)[0, ..., 0]
            else:
                out[i] = _pick(self.explainer.shap_values(row, nsamples=self.n_samples, rseed=int(seed)),
                               tnp[i : i + 1], 1)[0]
        return out


class ShapDeepExplainer(Explainer):
    """shap.DeepExplainer (DeepLIFT multipliers averaged over a background) with its additivity check on.

    The check is made per sample: where it fails (functional operations or modules used twice), the sample is
    explained by shap.GradientExplainer instead (with the sample's seed) and ``fallback_reason`` says why.
    """

    method = "shap_deep"

    def __init__(self, adapter: Any, *, n_samples: int = 32, tolerance: float = 1e-2, **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 1)
        at_least("tolerance", tolerance, 0.0)
        super().__init__(adapter, **kwargs)
        shap = import_shap()

        self.n_samples = n_samples
        self.tolerance = tolerance
        self.network = self.network_copy()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="unrecognized nn.Module: (Normalize|SelectOutput|Identity)")
            self.explainer = shap.DeepExplainer(self.network, self.background_tensor())
        self.expected_value = np.asarray(self.explainer.expected_value, np.float64).reshape(-1)
        self.fallback_reason: str | None = None
        self._fallback: ShapGradientExplainer | None = None

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        tnp = target.detach().cpu().numpy()
        top_only = _predicted(self.network, x, tnp)  # explain one output per row instead of all K
        with warnings.catch_warnings():
            # linear modules shap does not list: its fallback (the plain gradient) is exact for them
            warnings.filterwarnings("ignore", message="unrecognized nn.Module: (Normalize|SelectOutput|Identity)")
            if top_only:
                ranked, _ = self.explainer.shap_values(x.detach(), ranked_outputs=1, check_additivity=False)
                values = np.asarray(ranked)[..., 0]
            else:
                values = _pick(self.explainer.shap_values(x.detach(), check_additivity=False), tnp, len(tnp))
        # shap's own check compares every output even with ranked_outputs; check the explained ones here, per row,
        # so that a row's values do not depend on the rows explained with it
        with torch.no_grad():
            out = self.network(x.detach()).double().cpu().numpy()[np.arange(len(tnp)), tnp]
        gap = np.abs(out - self.expected_value[tnp] - values.reshape(len(tnp), -1).sum(axis=1))
        missed = np.flatnonzero(gap > self.tolerance)
        if len(missed) == 0:
            return values
        if self.fallback_reason is None:
            self.fallback_reason = (
                f"shap DeepExplainer's values miss the model output minus the expected value by up to "
                f"{gap.max():.3g} (additivity check, tolerance {self.tolerance:g}), which happens when the network "
                "uses functional operations (torch.relu, F.max_pool2d in forward) or reuses a module; explained with "
                "shap GradientExplainer instead. Use nn.Module layers, each once, to get exact DeepSHAP values")
        if self._fallback is None:
            self._fallback = ShapGradientExplainer(self.adapter, n_samples=self.n_samples, seed=self.seed,
                                                   background=self.background, batch_size=self.batch_size,
                                                   modality=self.modality, memory_mb=self.memory_mb)
            self._fallback.counter = self.counter
        rows = torch.as_tensor(missed, device=x.device)
        self._fallback.batch_ids = self.batch_ids[missed]
        values = np.array(values, np.float64)
        values[missed] = self._fallback._attribute(x[rows], target[rows])
        return values


class ShapKernelExplainer(Explainer):
    """shap.KernelExplainer on a k-means summary of the background; needs only predictions.

    ``backend="batched"`` (default): each row's coalitions and kernel weights are those shap draws for it with
    numpy's legacy generator seeded by the row's seed (``explain.surrogates.kernel_coalitions``), the coalitions of
    many rows go through the model in one evaluation within the memory budget, and the rows' constrained weighted
    regressions (``l1_reg=False``, for the explained class) are one batched solve on the model's device: shap's
    values to float rounding. ``backend="library"``: each row is explained by its own ``shap_values`` call with
    numpy's global generator seeded by the row's seed (and put back afterwards), its model evaluations (coalitions
    x background rows) in chunks within the memory budget.
    """

    method = "shap_kernel"
    needs_gradients = False
    per_sample = True

    def __init__(self, adapter: Any, *, n_samples: int = 256, n_background: int = 10, backend: str = "batched",
                 **kwargs: Any) -> None:
        at_least("n_samples", n_samples, 8)
        at_least("n_background", n_background, 1)
        super().__init__(adapter, **kwargs)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (batched: shap's coalitions and "
                             f"regression batched across samples; library: shap_values per row), got {backend!r}")
        shap = import_shap()

        if self.background is None:
            raise ExplainerError("shap_kernel needs background samples")
        flat = self.background.reshape(len(self.background), -1).astype(np.float64)
        self.input_shape = self.background.shape[1:]
        k = min(n_background, len(flat))
        summary = shap.kmeans(flat, k) if k < len(flat) else flat
        self.n_samples = n_samples
        self.backend = backend
        self.explainer = shap.KernelExplainer(self._f, summary)

    def _f(self, flat: np.ndarray) -> np.ndarray:
        return self.numpy_logits(flat.reshape((-1, *self.input_shape)))

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> np.ndarray | torch.Tensor:
        flat = x.detach().cpu().numpy().reshape(x.shape[0], -1).astype(np.float64)
        features = flat.shape[1]
        if self.n_samples < 2 * features:
            # the weighted least-squares fit has as many unknowns as features: with fewer coalitions than twice
            # that, a change of 1e-9 in the input moved the values by 86% (64 coalitions, 64 pixels)
            raise ExplainerError(f"shap_kernel with {self.n_samples} coalitions per input cannot fit {features} "
                                 f"features reliably; set sections.explanations.method_params.shap_kernel.n_samples to "
                                 f"at least {2 * features} or use another method")
        tnp = target.detach().cpu().numpy()
        if self.backend == "batched":
            return self._batched(flat, tnp, self.row_seeds()).reshape(x.shape)
        out = np.zeros(flat.shape, np.float64)
        for i, seed in enumerate(self.row_seeds()):
            with numpy_global_seed(int(seed)):
                values = self.explainer.shap_values(flat[i : i + 1], nsamples=self.n_samples, silent=True,
                                                    l1_reg=False)
            out[i] = _pick(values, tnp[i : i + 1], 1)[0]
        return out.reshape(x.shape)

    # -- the batched backend -----------------------------------------------------------------------
    def _batched(self, flat: np.ndarray, targets: np.ndarray, seeds: np.ndarray) -> torch.Tensor:
        device = self.adapter.device
        background = np.asarray(self.explainer.data.data, np.float64)
        fnull = np.asarray(self.explainer.fnull, np.float64).reshape(-1)
        # shap's varying_groups: a feature varies when the row's value is not close to every background value
        varying = ~np.isclose(flat[:, None, :], background[None], equal_nan=True).all(axis=1)
        m = varying.sum(axis=1)
        gen = np.random.RandomState()  # reseeded per row: the stream of np.random.seed(row seed), what shap draws
        coalitions = [kernel_coalitions(int(k), self.n_samples, reseeded(gen, seed)) if k >= 2 else None
                      for k, seed in zip(m, seeds, strict=True)]
        rows = torch.as_tensor(flat, device=device)
        fx = evaluate(self, rows.reshape(-1, *self.input_shape).float()).double().cpu().numpy()
        gap = fx[np.arange(len(flat)), targets] - fnull[targets]
        out = np.zeros(flat.shape)
        for i in np.flatnonzero(m == 1):  # one varying feature: it takes the whole gap
            out[i, varying[i]] = gap[i]
        several = np.flatnonzero(m >= 2)
        per_sample = [len(coalitions[i].weights) * len(background) for i in several]  # type: ignore[union-attr]
        budget = self.eval_rows(rows[:1].reshape(1, *self.input_shape).float())
        for part in sample_chunks(per_sample, budget):
            chunk = several[part]
            phi = self._solve_chunk(chunk, rows, varying, [coalitions[i] for i in chunk], background,
                                    gap[chunk], fnull[targets[chunk]], targets[chunk])
            for j, i in enumerate(chunk):
                out[i, varying[i]] = phi[j, : m[i]]
        return torch.as_tensor(out, device=device)

    def _solve_chunk(self, chunk: np.ndarray, rows: torch.Tensor, varying: np.ndarray, coalitions: list[Any],
                     background: np.ndarray, gap: np.ndarray, fnull: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The coalitions of the chunk's samples through the model in one evaluation, then one batched solve."""
        device = rows.device
        sizes = np.array([len(c.weights) for c in coalitions])
        m = varying[chunk].sum(axis=1)
        owner = np.repeat(np.arange(len(chunk)), sizes)  # the sample of every coalition
        members = np.zeros((sizes.sum(), rows.shape[1]), bool)  # coalitions over all features
        slots = np.zeros((len(chunk), sizes.max(), m.max()))  # over each sample's varying features, padded
        weights = np.zeros((len(chunk), sizes.max()))
        start = 0
        for j, (i, c) in enumerate(zip(chunk, coalitions, strict=True)):
            members[start : start + sizes[j], varying[i]] = c.masks == 1
            slots[j, : sizes[j], : m[j]] = c.masks
            weights[j, : sizes[j]] = c.weights
            start += sizes[j]
        # coalition members take the row's values, the other features each background row's
        inside = torch.as_tensor(members, device=device)[:, None, :]
        bg = torch.as_tensor(background, device=device)
        synth = torch.where(inside, rows[torch.as_tensor(chunk[owner], device=device)][:, None, :], bg[None])
        logits = evaluate(self, synth.reshape(-1, *self.input_shape).float())
        picked = logits.reshape(len(owner), len(background), -1).double()
        picked = picked.gather(2, torch.as_tensor(targets[owner], device=device)[:, None, None].expand(
            -1, len(background), 1))[:, :, 0]
        bg_weights = torch.as_tensor(np.asarray(self.explainer.data.weights, np.float64), device=device)
        expected = (picked * bg_weights).sum(dim=1) - torch.as_tensor(fnull[owner], device=device)
        values = torch.zeros(weights.shape, dtype=torch.float64, device=device)
        values[torch.as_tensor(owner, device=device), torch.as_tensor(
            np.concatenate([np.arange(k) for k in sizes]), device=device)] = expected
        phi, singular = kernel_shap_solve(torch.as_tensor(slots, device=device),
                                          torch.as_tensor(weights, device=device), values,
                                          torch.as_tensor(gap, device=device), torch.as_tensor(m, device=device))
        out = phi.cpu().numpy()
        for b in np.flatnonzero(singular.cpu().numpy()):  # what shap does when the normal equations are singular
            out[b, : m[b]] = kernel_shap_lstsq(slots[b, : sizes[b], : m[b]], weights[b, : sizes[b]],
                                               values[b, : sizes[b]].cpu().numpy(), float(gap[b]))
            self.notes.append("shap_kernel: a sample's weighted normal equations were singular; its values are the "
                              "least-squares solution, as shap computes them")
        return out
