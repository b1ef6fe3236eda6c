"""Global feature importance: mean |attribution| per feature (a per-pixel map for images), and for tabular data the
share of each feature in every method's mean |attribution|, permutation importance and a surrogate tree
(``tabular_importance`` returns all three in a ``TabularImportance``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from audit.model import ModelAdapter


def mean_abs_attribution(values: np.ndarray) -> np.ndarray:
    """Mean |attribution| per feature (per pixel for images), shape ``input_shape``."""
    return np.abs(values).mean(axis=0)


class ModelEstimator(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier around the adapter, so sklearn.inspection can score the model."""

    def __init__(self, adapter: ModelAdapter, input_shape: tuple[int, ...]) -> None:
        self.adapter = adapter
        self.input_shape = input_shape
        self.classes_ = np.arange(adapter.num_classes)

    def fit(self, x: Any, y: Any) -> ModelEstimator:  # the model is already trained
        return self

    def predict(self, x: Any) -> np.ndarray:
        rows = np.asarray(x, np.float32).reshape((-1, *self.input_shape))
        return self.adapter.predict(rows)

    def __sklearn_is_fitted__(self) -> bool:
        return True


def permutation_importance(adapter: ModelAdapter, x: np.ndarray, y: np.ndarray, *, n_repeats: int,
                           seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) drop in the model's accuracy when each feature is shuffled (sklearn)."""
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    flat = x.reshape(len(x), -1)
    out = sk_permutation_importance(ModelEstimator(adapter, x.shape[1:]), flat, y, scoring="accuracy",
                                    n_repeats=n_repeats, random_state=seed)
    return np.asarray(out.importances_mean), np.asarray(out.importances_std)


@dataclass
class Surrogate:
    fidelity: float  # agreement with the model's predictions on held-out rows
    depth: int
    rules: str  # sklearn export_text
    nodes: list[dict[str, Any]] = field(default_factory=list)  # preorder, for a ``tree`` figure


def tree_nodes(tree: Any, feature_names: list[str], class_names: list[str] | None = None) -> list[dict[str, Any]]:
    """A fitted sklearn tree in preorder: each node's split (feature, threshold: left is <=), rows and majority."""
    inner = tree.tree_
    nodes: list[dict[str, Any]] = []

    def visit(i: int, depth: int) -> None:
        left, right = int(inner.children_left[i]), int(inner.children_right[i])
        leaf = left == right  # sklearn marks a leaf with -1 on both sides
        label = tree.classes_[int(np.argmax(inner.value[i][0]))]
        node: dict[str, Any] = {"depth": depth, "leaf": leaf, "samples": int(inner.n_node_samples[i]),
                                "label": _class_label(label, class_names)}
        if not leaf:
            node["feature"] = str(feature_names[int(inner.feature[i])])
            node["threshold"] = float(inner.threshold[i])
        nodes.append(node)
        if not leaf:
            visit(left, depth + 1)
            visit(right, depth + 1)

    visit(0, 0)
    return nodes


def _class_label(label: Any, class_names: list[str] | None) -> str:
    index = int(label)
    return str(class_names[index]) if class_names is not None and 0 <= index < len(class_names) else str(label)


def surrogate_tree(x: np.ndarray, predictions: np.ndarray, feature_names: list[str], *, max_depth: int,
                   seed: int, class_names: list[str] | None = None) -> Surrogate:
    """A shallow decision tree fitted on half of the rows to the model's predictions; fidelity on the other half."""
    from sklearn.tree import DecisionTreeClassifier, export_text

    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(flat))
    half = max(1, len(flat) // 2)
    fit, held = order[:half], order[half:] if len(flat) > 1 else order
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(flat[fit], predictions[fit])
    fidelity = float((tree.predict(flat[held]) == predictions[held]).mean())
    rules = export_text(tree, feature_names=list(feature_names), decimals=3)
    return Surrogate(fidelity, int(tree.get_depth()), rules, tree_nodes(tree, list(feature_names), class_names))


@dataclass
class TabularImportance:
    names: list[str]  # feature names
    shares: dict[str, np.ndarray]  # method -> each feature's share of the method's mean |attribution| (flat)
    overall: np.ndarray  # the shares averaged over the methods
    permutation_mean: np.ndarray  # accuracy drop when the feature is shuffled
    permutation_std: np.ndarray
    surrogate: Surrogate

    def top_by_share(self, n: int) -> np.ndarray:
        return np.argsort(-self.overall, kind="stable")[:n]

    def top_by_permutation(self, n: int) -> np.ndarray:
        return np.argsort(-self.permutation_mean, kind="stable")[:n]


def pixel_map(values: np.ndarray) -> np.ndarray | None:
    """Mean |attribution| per pixel (channels summed) of one method's image attributions; None for other shapes."""
    importance = mean_abs_attribution(values)
    heat = importance.sum(axis=0) if importance.ndim == 3 else importance
    return heat if heat.ndim == 2 else None


def tabular_importance(adapter: ModelAdapter, x: np.ndarray, y: np.ndarray, predictions: np.ndarray,
                       values: dict[str, np.ndarray], feature_names: list[str] | None, *, repeats: int, depth: int,
                       seed: int, class_names: list[str] | None = None) -> TabularImportance:
    """Attribution shares of every method, permutation importance on (x, y) and a surrogate tree of depth ``depth``
    fitted to the model's ``predictions``."""
    names = feature_names or [f"x{i}" for i in range(int(np.prod(x.shape[1:])))]
    shares = {}
    for method, attr in values.items():
        importance = mean_abs_attribution(attr)
        shares[method] = importance.reshape(-1) / max(float(importance.sum()), 1e-12)
    mean, std = permutation_importance(adapter, x, y, n_repeats=repeats, seed=seed)
    tree = surrogate_tree(x, predictions, names, max_depth=depth, seed=seed, class_names=class_names)
    return TabularImportance(names, shares, np.mean(list(shares.values()), axis=0), mean, std, tree)
