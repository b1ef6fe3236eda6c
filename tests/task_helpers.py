"""Regression and multi-label problems on real shipped data, trained in seconds (cached per session).

- ``diabetes_problem()``: scikit-learn's diabetes data (442 patients, disease progression after one year, a
  continuous target in raw units 25..346), features z-scored, a seeded 75/25 split, an MLP
  (``audit.zoo.tabular_mlp`` with one output) trained with MSE on the training rows; the test rows as a frame with
  the raw ``sex`` column (1/2) kept as a sensitive column.
- ``digits_multilabel_problem()``: scikit-learn's digits with three labels per image derived from the digit (even,
  five or more, prime), an MLP with three outputs trained with BCE.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
MULTILABELS = ["even", "five_or_more", "prime"]


@dataclass
class Problem:
    model: Any  # torch nn.Module, eval mode
    frame: Any  # pandas DataFrame of the audited (test) rows
    features: list[str]
    target: str | list[str]
    x: np.ndarray  # (N, F) float32 test inputs
    y: np.ndarray  # test targets


def _fit(model: Any, x: np.ndarray, y: np.ndarray, loss: str, *, epochs: int, lr: float) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    loss_fn = nn.MSELoss() if loss == "mse" else nn.BCEWithLogitsLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            out = model(xt[idx])
            loss_fn(out.reshape(yt[idx].shape), yt[idx]).backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def diabetes_problem() -> Problem:
    import pandas as pd
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    from audit.zoo import tabular_mlp

    raw = load_diabetes(scaled=False, as_frame=True).frame
    z = (raw[DIABETES_FEATURES] - raw[DIABETES_FEATURES].mean()) / raw[DIABETES_FEATURES].std()
    x = z.to_numpy(np.float32)
    y = raw["target"].to_numpy(np.float64)
    train, test = train_test_split(np.arange(len(raw)), test_size=0.25, random_state=0)
    model = tabular_mlp(in_features=x.shape[1], num_classes=1, hidden=16, dropout=0.0)
    # the target centred and in units of 100, so that Adam's steps fit it (few epochs: 331 rows overfit fast);
    # the last layer scaled back to raw units
    _fit(model, x[train], (y[train] - 150.0) / 100.0, "mse", epochs=20, lr=3e-3)
    import torch

    with torch.no_grad():
        last = model[-1]
        last.weight.mul_(100.0)
        last.bias.mul_(100.0).add_(150.0)
    frame = pd.DataFrame(z.to_numpy()[test], columns=[f"{c}_z" for c in DIABETES_FEATURES])
    frame["sex"] = raw["sex"].to_numpy()[test].astype(int)
    frame["target"] = y[test]
    return Problem(model, frame, [f"{c}_z" for c in DIABETES_FEATURES], "target", x[test], y[test])


def digit_labels(digits: np.ndarray) -> np.ndarray:
    """(N, 3) 0/1: even, five or more, prime."""
    return np.stack([digits % 2 == 0, digits >= 5, np.isin(digits, (2, 3, 5, 7))], axis=1).astype(np.int64)


@functools.lru_cache(maxsize=1)
def digits_multilabel_problem() -> Problem:
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from audit.zoo import tabular_mlp

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digit_labels(digits.target)
    train, test = train_test_split(np.arange(len(x)), test_size=0.25, random_state=0, stratify=digits.target)
    model = _fit(tabular_mlp(in_features=64, num_classes=3, hidden=32, dropout=0.0), x[train], y[train], "bce",
                 epochs=15, lr=3e-3)
    features = [f"px{i}" for i in range(64)]
    frame = pd.DataFrame(x[test], columns=features)
    for j, name in enumerate(MULTILABELS):
        frame[name] = y[test, j]
    return Problem(model, frame, features, list(MULTILABELS), x[test], y[test])


def diabetes_predict(x: np.ndarray) -> np.ndarray:
    """The diabetes MLP as a black box: numpy (N, 10) -> (N,) predicted values (model.predict_fn)."""
    import torch

    with torch.no_grad():
        return diabetes_problem().model(torch.as_tensor(x, dtype=torch.float32))[:, 0].numpy()
