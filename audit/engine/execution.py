"""Opt-in execution settings of a torch model: ``compile: true`` and ``precision: bf16|fp16``.

``compile`` is an adapter operation: the compiled network must match the eager one on a probe batch
(``TorchModelAdapter.compile``). Mixed precision is kept only when it does not move the audit's numbers: the
check is a capability of the section plugins (``SectionPlugin.check_precision``). The runner asks the enabled
sections in order; the first record wins. When none provides one, the ``robustness`` plugin, loaded through
the registry with its default parameters, runs the check at its default threat (L-inf PGD at 1/32 of the
input range). The engine never imports the attacks that do the work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from audit.errors import ConfigError, PluginError
from audit.plugin import SECTIONS_GROUP, SectionPlugin, load_plugin

if TYPE_CHECKING:
    from audit.config import AuditConfig
    from audit.context import AuditContext

log = logging.getLogger("nnaudit")
PRECISION_CHECK_PLUGIN = "robustness"  # the section plugin that checks precision when no enabled section does


def prepare_execution(ctx: AuditContext, config: AuditConfig, plugins: Iterable[SectionPlugin] = ()) -> None:
    """Apply ``config.compile`` and ``config.precision`` to ``ctx.model`` (the runner calls it once, before any
    section runs)."""
    import torch

    from audit.model import TorchModelAdapter

    adapter = ctx.model
    for key, asked in (("compile", config.compile), ("precision", config.precision != "fp32")):
        if asked and not isinstance(adapter, TorchModelAdapter):
            raise ConfigError(key, f"applies to torch models; this model ({adapter.kind}) runs outside torch. "
                              f"Remove {key} from the config")
    if not isinstance(adapter, TorchModelAdapter):
        return
    if config.compile:
        adapter.compile(torch.as_tensor(ctx.data.x[: min(8, ctx.data.n_samples)], dtype=torch.float32))
    if config.precision != "fp32":
        check = precision_check(ctx, config.precision, plugins)
        adapter.precision_check = check
        adapter.set_precision(config.precision if check["accepted"] else "fp32")
        log.log(logging.INFO if check["accepted"] else logging.WARNING, "%s", check["note"])


def precision_check(ctx: AuditContext, precision: str, plugins: Iterable[SectionPlugin]) -> dict[str, Any]:
    """The record of the first enabled section that checks ``precision``; else the default check of the
    ``robustness`` plugin. A ConfigError at ``precision`` when no plugin can check it."""
    for plugin in plugins:
        record = plugin.check_precision(ctx, precision)
        if record is not None:
            return _checked(record, plugin.name)
    try:
        cls = load_plugin(PRECISION_CHECK_PLUGIN, SECTIONS_GROUP)
    except PluginError as err:
        raise ConfigError("precision", f"checking precision {precision} needs the '{PRECISION_CHECK_PLUGIN}' "
                          f"section plugin ({err}); set precision: fp32") from err
    if not (isinstance(cls, type) and issubclass(cls, SectionPlugin)):
        raise PluginError(f"plugin '{PRECISION_CHECK_PLUGIN}' is {cls!r}, not a SectionPlugin subclass")
    record = cls(section=PRECISION_CHECK_PLUGIN).check_precision(ctx, precision, configured=False)
    if record is None:
        raise ConfigError("precision", f"no section plugin checks precision {precision} on this model (the "
                          f"'{PRECISION_CHECK_PLUGIN}' plugin did not); set precision: fp32")
    return _checked(record, PRECISION_CHECK_PLUGIN)


def _checked(record: dict[str, Any], plugin: str) -> dict[str, Any]:
    if not isinstance(record, dict) or not isinstance(record.get("accepted"), bool) or "note" not in record:
        raise PluginError(f"plugin '{plugin}': check_precision must return a dict with 'accepted' (a bool) and "
                          f"'note', got {record!r}")
    return record
