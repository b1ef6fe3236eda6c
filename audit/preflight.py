"""Preflight: checks of the loaded data against the loaded model, run before any section (``preflight``).

(Not ``nnaudit validate``, which checks a results file against the results schema.)

The runner calls ``preflight`` once the model and data are loaded: the data-vs-model checks here,
then every enabled plugin's own ``validate`` hook (e.g. robustness: eps within the input range). A
mismatch is a ``ConfigError`` naming the key to change, never a run that completes with numbers that
mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from audit.errors import ConfigError, NNAuditError, PluginError

if TYPE_CHECKING:
    from audit.context import AuditContext
    from audit.data import AuditData
    from audit.model import ModelAdapter
    from audit.plugin import SectionPlugin

COMMON_SCALES = (16.0, 255.0, 65535.0)  # sklearn digits (0..16), 8-bit and 16-bit images


def check_data_in_bounds(data: AuditData, model: ModelAdapter) -> None:
    """The data must lie inside the model's input bounds: attacks clip every input into them, so data outside
    (e.g. 0..255 pixels with bounds [0, 1], an NPZ read without ``data.scale``) gives meaningless numbers."""
    if model.bounds is None or data.n_samples == 0:
        return
    lower, upper = float(model.bounds.lower), float(model.bounds.upper)
    low, high = float(data.x.min()), float(data.x.max())
    slack = 1e-6 * max(1.0, upper - lower)
    if low >= lower - slack and high <= upper + slack:
        return
    outside = int(((data.x < lower - slack) | (data.x > upper + slack)).reshape(data.n_samples, -1).any(axis=1).sum())
    hint = ""
    if low >= 0 and lower == 0 and upper > 0:
        scale = next((s for s in COMMON_SCALES if high <= s * upper), high / upper)
        hint = f" (e.g. data.scale: {scale:g}; the data's maximum is {high:g})"
    raise ConfigError("model.input_bounds",
                      f"{outside} of {data.n_samples} samples of {data.name} lie outside the model's input bounds "
                      f"[{lower:g}, {upper:g}]: the data spans [{low:g}, {high:g}]. Scale the data into the bounds "
                      f"with data.scale{hint}, or set model.input_bounds to the range the model takes")


def preflight(ctx: AuditContext, plugins: Iterable[SectionPlugin]) -> None:
    """Every check that needs the loaded model and data, before any section runs."""
    if ctx.data.input_kind == "continuous":
        check_data_in_bounds(ctx.data, ctx.model)
    else:  # text: a Hugging Face model's own label names against the data's
        from audit.model.text_load import check_label_order

        check_label_order(ctx.model, ctx.data.class_names)
    plugins = list(plugins)
    for plugin in plugins:  # tasks and input kinds first: a section that cannot run on this model at all
        plugin.check_supports(ctx)
    for plugin in plugins:
        try:
            plugin.validate(ctx)
        except NNAuditError:
            raise
        except Exception as err:  # a third-party hook's bug: name the plugin, stop before any work
            raise PluginError(f"plugin '{plugin.name}' (section '{plugin.section}') failed to validate its "
                              f"parameters: {type(err).__name__}: {err}") from err


__all__ = ["check_data_in_bounds", "preflight"]
