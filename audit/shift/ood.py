"""Out-of-distribution detectors: outlier scores (higher = more out-of-distribution), pytorch-ood's convention.

From the logits (any model, black boxes included):

- ``msp``: minus the maximum softmax probability (Hendrycks & Gimpel 2017);
- ``max_logit``: minus the largest logit (Hendrycks et al. 2022);
- ``energy``: the free energy ``-T logsumexp(logits / T)`` (Liu et al. 2020).

From the differentiable network (torch models):

- ``odin``: minus the maximum softmax at temperature T of the input moved ``eps`` against the sign of the
  gradient of the cross-entropy at T towards the predicted class (Liang et al. 2018); no clipping to the input
  bounds, as in the paper and pytorch-ood.

From the features of a named layer (torch models; 4-d feature maps averaged over space, others flattened):

- ``mahalanobis``: half the squared Mahalanobis distance to the nearest class mean, under the tied covariance of
  the in-distribution fit data (Lee et al. 2018) plus ``ridge`` times the identity;
- ``knn``: the Euclidean distance of the L2-normalized feature to its k-th nearest normalized fit feature (Sun et
  al. 2022).

From the inputs alone (any model):

- ``autoencoder``: the mean squared reconstruction error of an MLP autoencoder trained on the in-distribution fit
  data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def logit_scores(logits: torch.Tensor, *, energy_temperature: float = 1.0) -> dict[str, torch.Tensor]:
    z = logits.double()
    return {"msp": -torch.softmax(z, dim=1).max(dim=1).values,
            "max_logit": -z.max(dim=1).values,
            "energy": -energy_temperature * torch.logsumexp(z / energy_temperature, dim=1)}


def odin_scores(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, temperature: float,
                eps: float) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = forward(x) / temperature
        loss = F.cross_entropy(logits, logits.argmax(dim=1))
        (gradient,) = torch.autograd.grad(loss, x)
    x_hat = x.detach() - eps * gradient.sign()
    with torch.no_grad():
        return -torch.softmax(forward(x_hat).double() / temperature, dim=1).max(dim=1).values


# -- features -------------------------------------------------------------------------------


def layer_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name]


def default_layer(module: nn.Module) -> str | None:
    """The last ``nn.Linear`` (its input is the penultimate features), or None when there is none."""
    linear = [name for name, m in module.named_modules() if name and isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


class FeatureTap:
    """Logits and the features of one layer of ``network`` in one forward pass: the output of the layer named
    ``layer``, or with ``input_of`` the input of it (the penultimate features when it is the last Linear)."""

    def __init__(self, network: nn.Module, module: nn.Module, layer: str, *, input_of: bool) -> None:
        self.network = network
        self.target = dict(module.named_modules())[layer]
        self.input_of = input_of

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []
        if self.input_of:
            handle = self.target.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        else:
            handle = self.target.register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:
            with torch.no_grad():
                logits = self.network(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the feature layer did not run in the forward pass")
        return logits, pool(captured[0])


def pool(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature maps averaged over space; anything else flattened to (N, D); float64."""
    if isinstance(features, (tuple, list)):
        features = features[0]
    if features.ndim == 4:
        features = features.mean(dim=(2, 3))
    return features.reshape(len(features), -1).double()


@dataclass
class Mahalanobis:
    means: torch.Tensor  # (K, D)
    precision: torch.Tensor  # (D, D)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        dists = []
        for mu in self.means:
            centered = z - mu
            dists.append(((centered @ self.precision) * centered).sum(dim=1))
        return 0.5 * torch.stack(dists, dim=1).min(dim=1).values


def fit_mahalanobis(z: torch.Tensor, y: np.ndarray, num_classes: int, *, ridge: float = 1e-6) -> Mahalanobis:
    """Class means and the tied covariance (sum of within-class scatter / N) + ``ridge`` I; every class must
    occur in ``y`` (the caller checks and says which key to change)."""
    z = z.double()
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    means = torch.stack([z[labels == k].mean(dim=0) for k in range(num_classes)])
    centered = z - means[labels]
    cov = centered.T @ centered / len(z) + ridge * torch.eye(z.shape[1], dtype=z.dtype)
    return Mahalanobis(means=means, precision=torch.linalg.inv(cov))


def normalize(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)


def knn_scores(z: torch.Tensor, bank: torch.Tensor, k: int, *, block: int = 1024) -> torch.Tensor:
    """Distance of each normalized row of ``z`` to its k-th nearest row of ``bank`` (already normalized)."""
    q = normalize(z.double())
    out = []
    for start in range(0, len(q), block):
        d = torch.cdist(q[start : start + block], bank)
        out.append(d.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


# -- autoencoder ----------------------------------------------------------------------------


class Autoencoder(nn.Module):
    """An MLP autoencoder on flattened inputs mapped to 0..1 by the input bounds; sigmoid output."""

    def __init__(self, dim: int, hidden: list[int], lower: float, upper: float) -> None:
        super().__init__()
        sizes = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        rev = sizes[::-1]
        for i, (a, b) in enumerate(itertools.pairwise(rev)):
            layers += [nn.Linear(a, b), nn.Sigmoid() if i == len(rev) - 2 else nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.lower, self.upper = float(lower), float(upper)

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.reshape(len(x), -1).float() - self.lower) / (self.upper - self.lower)).clamp(0, 1)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            u = self.unit(x)
            return ((self.net(u) - u) ** 2).mean(dim=1).double()


def train_autoencoder(x: np.ndarray, *, hidden: list[int], bounds: tuple[float, float], epochs: int, lr: float,
                      batch_size: int, seed: int) -> tuple[Autoencoder, float]:
    """Adam on the mean squared reconstruction error, on CPU, seeded: the same weights in every run with the
    same seed (a resumed run re-trains it identically), on one thread. Returns the model and its final training
    error."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small gain nothing from more threads; on a busy CPU they spin
    try:
        return _train(x, hidden=hidden, bounds=bounds, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    finally:
        torch.set_num_threads(threads)


def _train(x: np.ndarray, *, hidden: list[int], bounds: tuple[float, float], epochs: int, lr: float,
           batch_size: int, seed: int) -> tuple[Autoencoder, float]:
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Autoencoder(int(np.prod(data.shape[1:])), hidden, *bounds)
    units = model.unit(data)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(units), generator=gen)
        for start in range(0, len(units), batch_size):
            batch = units[order[start : start + batch_size]]
            opt.zero_grad()
            F.mse_loss(model.net(batch), batch).backward()
            opt.step()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, float(model.scores(data).mean())
