"""Groups and their metrics, vectorized over integer-coded groups.

- Group coding: integer codes 0..G-1 per sensitive column (or intersection), with a unique,
  readable metric-name segment per group (``metric_keys``): German credit's ``<25`` and ``25+``
  stay ``<25`` and ``25+``; names that would collide once sanitized get a suffix from a hash.
- Group metrics from per-group confusion counts (``numpy.bincount``), every rate with respect to
  the favourable label (``positive``): selection rate, true- and false-positive rate, precision.
  The tests hold them equal to fairlearn's ``MetricFrame`` with ``pos_label`` set.
- The rows each rate is computed from (``rate_counts``: group size for accuracy and selection
  rate, positives for the true-positive rate, negatives for the false-positive rate), so that a
  finding can tell a real gap from one between groups too small to say.
- Disparities: difference (max - min) and ratio (min / max) over groups, as fairlearn's
  ``between_groups``; demographic parity and equalized odds.

Undefined is not zero: a group with no positives has no true-positive rate (NaN, reported as
null), one with no negatives no false-positive rate, one with no predicted positives no precision.
A disparity over fewer than two groups where the metric is defined is undefined as well.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
import unicodedata
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINARY_METRICS: tuple[str, ...] = ("count", "accuracy", "selection_rate", "true_positive_rate",
                                   "false_positive_rate", "precision", "balanced_accuracy")
MULTICLASS_METRICS: tuple[str, ...] = ("count", "accuracy", "balanced_accuracy")
OVR_METRICS: tuple[str, ...] = ("selection_rate", "true_positive_rate", "false_positive_rate")
# what each rate is computed from (its denominator), in words
RATE_BASIS: dict[str, str] = {"accuracy": "rows", "selection_rate": "rows", "true_positive_rate": "positives",
                              "false_positive_rate": "negatives", "precision": "predicted positives"}
RESERVED_KEYS = ("overall",)  # metric segments the section uses itself: fairness.overall.<metric>

# characters a metric-name segment keeps: what the results schema allows inside a dotted name,
# less '.' (it separates segments) and '=' (it separates 'group' from the group's key)
SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + "_+-<>")


# --- metric keys ---------------------------------------------------------------------------------


def metric_segment(name: object) -> str:
    """``name`` as a readable metric-name segment: accents dropped (é -> e), every other character
    outside ``[A-Za-z0-9_+-<>]`` (dots, spaces, '=', other scripts) becomes '_'. May be empty."""
    out = []
    for ch in unicodedata.normalize("NFKD", str(name)):
        if ch in SEGMENT_CHARS:
            out.append(ch)
        elif not unicodedata.combining(ch):
            out.append("_")
    return re.sub("_+", "_", "".join(out)).strip("_")


def _digest(name: str, length: int) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:length]


def metric_keys(names: Sequence[str], *, reserved: Collection[str] = ()) -> list[str]:
    """Unique metric-name segments for distinct ``names``, readable where possible.

    A name that is a valid segment as it stands keeps its spelling. Any other name gets its
    sanitized form (``metric_segment``), unless that collides with another name's segment, is
    empty or is reserved: then a suffix from a hash of the name keeps it apart (``a b`` next to
    ``a_b`` becomes ``a_b_<6 hex digits>``). Deterministic: the same names give the same keys."""
    if len(set(names)) != len(names):
        raise ValueError("metric_keys needs distinct names")
    base = [metric_segment(n) for n in names]
    taken = Counter(base) + Counter(reserved)
    for length in range(6, 65, 2):
        keys = []
        for name, segment in zip(names, base, strict=True):
            exact = bool(segment) and segment == name and segment not in reserved
            if exact or (segment and taken[segment] == 1):
                keys.append(segment)
            else:
                keys.append(f"{segment}_{_digest(name, length)}" if segment else f"h{_digest(name, length)}")
        if len(set(keys)) == len(keys) and not set(keys) & set(reserved):
            return keys
    raise ValueError(f"cannot make unique metric keys for {list(names)[:10]}")  # needs a SHA-256 collision


# --- group coding ----------------------------------------------------------------------------------


def encode_groups(columns: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Integer codes 0..G-1 for the rows' groups (the intersection of several columns) and the
    group labels ("female & afam"), sorted by label so the coding does not depend on row order."""
    if not columns:
        raise ValueError("encode_groups needs at least one column")
    stacked = np.stack([np.asarray(c).astype(str) for c in columns], axis=1)
    keys = np.array([" & ".join(row) for row in stacked]) if len(columns) > 1 else stacked[:, 0]
    labels, codes = np.unique(keys, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(label) for label in labels]


@dataclass
class GroupSet:
    """One way of splitting the rows: a sensitive column, or the intersection of several."""

    key: str  # metric-name segment of the grouping
    label: str  # for people
    columns: dict[str, np.ndarray]
    codes: np.ndarray
    groups: list[str]
    seed: int
    counts: np.ndarray = field(init=False)
    group_keys: list[str] = field(init=False)  # metric-name segment of each group
    frame_index: list[Any] = field(init=False)  # MetricFrame's by_group index entry of each group

    def __post_init__(self) -> None:
        self.counts = np.bincount(self.codes, minlength=len(self.groups))
        self.group_keys = metric_keys(self.groups)
        first = np.zeros(len(self.groups), np.int64)
        first[self.codes[::-1]] = np.arange(len(self.codes))[::-1]
        cols = [np.asarray(v).astype(str) for v in self.columns.values()]
        self.frame_index = [tuple(c[r] for c in cols) if len(cols) > 1 else cols[0][r] for r in first]


def build_group_sets(sensitive: dict[str, np.ndarray], names: list[str], *, intersections: bool,
                     seed: int) -> list[GroupSet]:
    """One GroupSet per named column and, with ``intersections`` and several names, their intersection.
    Every grouping gets a unique metric segment (never 'overall'); seeds differ per grouping."""
    keys = metric_keys(names, reserved=RESERVED_KEYS)
    sets = []
    for name, key in zip(names, keys, strict=True):
        codes, groups = encode_groups([sensitive[name]])
        sets.append(GroupSet(key, name, {name: sensitive[name]}, codes, groups, seed + zlib.crc32(name.encode())))
    if intersections and len(names) > 1:
        codes, groups = encode_groups([sensitive[n] for n in names])
        label = " & ".join(names)
        key = "_x_".join(keys)
        if key in keys:  # a column literally named like the intersection
            key = f"{key}_{_digest(label, 6)}"
        sets.append(GroupSet(key, label, {n: sensitive[n] for n in names}, codes, groups,
                             seed + zlib.crc32(label.encode())))
    return sets


# --- counts and rates --------------------------------------------------------------------------------


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (undefined, never a silent 0)."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_counts(codes: np.ndarray, y: np.ndarray, pred: np.ndarray, n_groups: int, k: int,
                     index: np.ndarray | None = None) -> np.ndarray:
    """Per-group confusion matrices: (G, K, K) or, for a (B, n) matrix of row indices, (B, G, K, K).
    Entry [g, t, p] counts rows of group g with true class t predicted as p."""
    if index is None:
        flat = (codes * k + y) * k + pred
        return np.bincount(flat, minlength=n_groups * k * k).reshape(n_groups, k, k).astype(np.float64)
    b = index.shape[0]
    cell = n_groups * k * k
    flat = ((codes[index] * k + y[index]) * k + pred[index]) + (np.arange(b) * cell)[:, None]
    return np.bincount(flat.ravel(), minlength=b * cell).reshape(b, n_groups, k, k).astype(np.float64)


def group_means(codes: np.ndarray, values: np.ndarray, n_groups: int, index: np.ndarray | None = None,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Per-group mean of ``values`` over the rows where ``mask`` holds: (G,) or (B, G); NaN for an empty group."""
    values = np.asarray(values, np.float64)
    keep = np.ones(len(values), np.float64) if mask is None else np.asarray(mask, np.float64)
    if index is None:
        total = np.bincount(codes, weights=values * keep, minlength=n_groups)
        count = np.bincount(codes, weights=keep, minlength=n_groups)
        return _div(total, count)
    b = index.shape[0]
    flat = (codes[index] + (np.arange(b) * n_groups)[:, None]).ravel()
    total = np.bincount(flat, weights=(values * keep)[index].ravel(), minlength=b * n_groups)
    count = np.bincount(flat, weights=keep[index].ravel(), minlength=b * n_groups)
    return _div(total, count).reshape(b, n_groups)


def binary_rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    n = tp + fp + fn + tn
    return {
        "count": n,
        "accuracy": _div(tp + tn, n),
        "selection_rate": _div(tp + fp, n),
        "true_positive_rate": _div(tp, tp + fn),
        "false_positive_rate": _div(fp, fp + tn),
        "precision": _div(tp, tp + fp),
    }


def one_vs_rest(conf: np.ndarray, cls: int) -> dict[str, np.ndarray]:
    """Binary rates of class ``cls`` (the positive) against the rest, from (..., G, K, K) confusion counts."""
    tp = conf[..., cls, cls]
    fp = conf[..., :, cls].sum(axis=-1) - tp
    fn = conf[..., cls, :].sum(axis=-1) - tp
    tn = conf.sum(axis=(-2, -1)) - tp - fp - fn
    return binary_rates(tp, fp, fn, tn)


def metrics_from_counts(conf: np.ndarray, positive: int | None = None) -> dict[str, np.ndarray]:
    """Group metrics from confusion counts (..., G, K, K). Binary tasks: the rates refer to class
    ``positive`` (the favourable label; required). Multi-class: count, accuracy, balanced accuracy."""
    k = conf.shape[-1]
    n = conf.sum(axis=(-2, -1))
    diag = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(axis=-1)  # rows of each true class
    recall = _div(diag, support)
    present = support > 0
    balanced = _div(np.where(present, recall, 0.0).sum(axis=-1), present.sum(axis=-1))
    if k != 2:
        return {"count": n, "accuracy": _div(diag.sum(axis=-1), n), "balanced_accuracy": balanced}
    if positive not in (0, 1):
        raise ValueError(f"a binary task needs positive=0 or 1, got {positive!r}")
    out = one_vs_rest(conf, positive)
    out["balanced_accuracy"] = balanced
    return out


def rate_counts(conf: np.ndarray, positive: int | None) -> dict[str, np.ndarray]:
    """The rows each rate of a group is computed from, per group (..., G): the group's size for
    accuracy and selection rate, its positives (true class ``positive``) for the true-positive
    rate, its negatives for the false-positive rate, its predicted positives for precision."""
    n = conf.sum(axis=(-2, -1))
    out = {"accuracy": n, "selection_rate": n}
    if positive is not None:
        positives = conf[..., positive, :].sum(axis=-1)
        out.update({"true_positive_rate": positives, "false_positive_rate": n - positives,
                    "precision": conf[..., :, positive].sum(axis=-1)})
    return out


def mask_thin(per_group: dict[str, np.ndarray], counts: dict[str, np.ndarray],
              min_count: int) -> dict[str, np.ndarray]:
    """The rates with groups whose count (from ``rate_counts``, (G,)) is below ``min_count`` set to NaN,
    so that a disparity over them covers only the groups with enough rows for that rate."""
    return {m: np.where(counts[m] >= min_count, v, np.nan) for m, v in per_group.items() if m in counts}


# --- disparities --------------------------------------------------------------------------------------


def extremes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(min, max, number of groups where defined) over the last axis, ignoring NaN without warnings."""
    finite = np.isfinite(values)
    lo = np.min(np.where(finite, values, np.inf), axis=-1)
    hi = np.max(np.where(finite, values, -np.inf), axis=-1)
    return lo, hi, finite.sum(axis=-1)


def difference(values: np.ndarray) -> np.ndarray:
    """max - min over groups (fairlearn's 'between_groups'); NaN with fewer than two defined groups."""
    lo, hi, defined = extremes(values)
    return np.where(defined >= 2, hi - lo, np.nan)


def ratio(values: np.ndarray) -> np.ndarray:
    """min / max over groups; NaN with fewer than two defined groups or a zero maximum."""
    lo, hi, defined = extremes(values)
    return np.where(defined >= 2, _div(lo, np.where(defined >= 2, hi, 0.0)), np.nan)


def disparities(per_group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Named disparities from per-group metrics (each (..., G))."""
    out: dict[str, np.ndarray] = {}
    for name, values in per_group.items():
        if name == "count":
            continue
        out[f"{name}_difference"] = difference(values)
        out[f"{name}_ratio"] = ratio(values)
    if "selection_rate" in per_group:
        out["demographic_parity_difference"] = out["selection_rate_difference"]
        out["demographic_parity_ratio"] = out["selection_rate_ratio"]
    if "true_positive_rate" in per_group and "false_positive_rate" in per_group:
        tpr_d, fpr_d = out["true_positive_rate_difference"], out["false_positive_rate_difference"]
        tpr_r, fpr_r = out["true_positive_rate_ratio"], out["false_positive_rate_ratio"]
        out["equalized_odds_difference"] = np.where(np.isnan(tpr_d) | np.isnan(fpr_d), np.nan,
                                                    np.maximum(tpr_d, fpr_d))
        out["equalized_odds_ratio"] = np.where(np.isnan(tpr_r) | np.isnan(fpr_r), np.nan, np.minimum(tpr_r, fpr_r))
    return out


# --- fairlearn reference computation ------------------------------------------------------------


def _undefined_nan(fn: Callable[..., float], need: Callable[[np.ndarray, np.ndarray], bool]) -> Callable[..., float]:
    """fairlearn's rates return 0 for a group where they are undefined (e.g. no positives): NaN instead."""
    def wrapped(y_true: Any, y_pred: Any) -> float:
        t, p = np.asarray(y_true), np.asarray(y_pred)
        return float(fn(t, p)) if need(t, p) else math.nan
    wrapped.__name__ = getattr(fn, "__name__", "metric")
    return wrapped


def _balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        # sklearn warns when a group's predictions hold a class its labels lack; the score (mean
        # recall over the classes present in the group) is still the one we define and report
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        # and when a group holds one class in labels and predictions alike (the score is its recall)
        warnings.filterwarnings("ignore", message="A single label was found in 'y_true' and 'y_pred'")
        return float(balanced_accuracy_score(y_true, y_pred))


def fairlearn_metric_functions(positive: int | None) -> dict[str, Callable[..., float]]:
    """The group metrics as MetricFrame metric functions; with ``positive`` (binary tasks) the rates
    use ``pos_label=positive``, the favourable label."""
    from fairlearn.metrics import count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, precision_score

    fns: dict[str, Callable[..., float]] = {"count": count, "accuracy": accuracy_score}
    if positive is not None:
        p = positive
        fns["selection_rate"] = lambda t, q: float(selection_rate(t, q, pos_label=p))
        fns["true_positive_rate"] = _undefined_nan(lambda t, q: true_positive_rate(t, q, pos_label=p),
                                                   lambda t, q: bool((t == p).any()))
        fns["false_positive_rate"] = _undefined_nan(lambda t, q: false_positive_rate(t, q, pos_label=p),
                                                    lambda t, q: bool((t != p).any()))
        fns["precision"] = _undefined_nan(lambda t, q: precision_score(t, q, pos_label=p, zero_division=0),
                                          lambda t, q: bool((q == p).any()))
    fns["balanced_accuracy"] = _balanced_accuracy
    return fns


def metric_frame(y: np.ndarray, pred: np.ndarray, columns: dict[str, np.ndarray], positive: int | None) -> Any:
    """fairlearn MetricFrame of the group metrics over one sensitive column or their intersection
    (``positive``: the favourable label of a binary task; None for a multi-class one)."""
    import pandas as pd
    from fairlearn.metrics import MetricFrame

    sensitive = pd.DataFrame({name: np.asarray(v).astype(str) for name, v in columns.items()})
    return MetricFrame(metrics=fairlearn_metric_functions(positive), y_true=y, y_pred=pred,
                       sensitive_features=sensitive)
