"""Plugin base classes and the entry-point registry.

A section plugin writes only its core step, ``run(ctx, result)``; the final ``__call__`` of the
base class does the shared work once: parameter validation, seeding, timing, capability checks
and error capture (a failing plugin becomes a recorded error, the audit goes on).

Built-in plugins register through the same entry-point groups a third-party package uses::

    [project.entry-points."nnaudit.sections"]
    my_check = "my_package.checks:MyCheck"
"""

from __future__ import annotations

import logging
import time
import traceback
from abc import ABC, abstractmethod
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, ClassVar, final

from pydantic import BaseModel, ConfigDict, ValidationError

from audit.errors import ConfigError, NNAuditError, PluginError
from audit.results import Direction, SectionResult, resolve_directions

if TYPE_CHECKING:
    from audit.context import AuditContext

log = logging.getLogger("nnaudit")

SECTIONS_GROUP = "nnaudit.sections"
GROUPS = (SECTIONS_GROUP, "nnaudit.attacks", "nnaudit.explainers")


class Params(BaseModel):
    """Base for plugin parameters: keyword-only, typed, unknown keys refused, JSON round-trip."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SectionPlugin(ABC):
    """One section of the audit (performance, imbalance, robustness, explanations, fairness...)."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    ParamsModel: ClassVar[type[Params]] = Params
    requires_gradients: ClassVar[bool] = False
    # plugins whose outputs (ctx.adversarial, ctx.attributions) this one uses when they ran before it
    reads_sections: ClassVar[tuple[str, ...]] = ()
    # the direction of better of the metrics this plugin writes: shell-style patterns of metric names relative
    # to the section ('accuracy', '*.robust_accuracy') -> 'higher', 'lower' or None (neither: a count, a
    # setting). The first matching pattern wins; results.json records the direction of each metric, and
    # `nnaudit compare` reads it to call a change better or worse.
    metric_directions: ClassVar[dict[str, Direction]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bad = {k: v for k, v in cls.metric_directions.items() if v not in ("higher", "lower", None)}
        if bad:
            raise TypeError(f"{cls.__name__}.metric_directions: directions must be 'higher', 'lower' or None, got "
                            f"{bad}")

    def __init__(self, *, section: str | None = None, **params: Any) -> None:
        self.section = section or self.name
        try:
            self.params = self.ParamsModel(**params)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = "unknown parameter; remove it or check its spelling" if first["type"] == "extra_forbidden" \
                else first["msg"].removeprefix("Value error, ")
            known = ", ".join(self.ParamsModel.model_fields) or "none"
            raise ConfigError(f"sections.{self.section}.{key}", f"{msg} (plugin '{self.name}' takes: {known})") \
                from err

    @abstractmethod
    def run(self, ctx: AuditContext, result: SectionResult) -> None:
        """The plugin's core step: compute and record metrics, tables, figures, findings."""

    def validate(self, ctx: AuditContext) -> None:
        """Check the parameters against the loaded model and data before any section runs (the runner calls it
        for every enabled plugin). Raise ``ConfigError`` naming the key to change; the default checks nothing."""
        return None

    def check_capabilities(self, ctx: AuditContext) -> None:
        if self.requires_gradients and not ctx.model.has_gradients:
            raise PluginError(f"plugin '{self.name}' needs input gradients but the model ({ctx.model.kind}) has "
                              "none; remove the section or wrap a torch model")

    @final
    def __call__(self, ctx: AuditContext) -> SectionResult:
        result = SectionResult(name=self.section, plugin=self.name, title=self.title or self.name,
                               params=self.params.model_dump(mode="json"))
        ctx.seed_everything()
        start = time.perf_counter()
        try:
            self.check_capabilities(ctx)
            self.run(ctx, result)
        except Exception as err:  # a failing plugin is recorded; the audit goes on
            result.status = "error"
            result.error = {"type": type(err).__name__, "message": _error_message(self.name, err),
                            "traceback": traceback.format_exc(limit=20)}
            log.error("section '%s' (plugin %s) failed: %s", self.section, self.name, err)
        result.directions = resolve_directions(self.metric_directions, result.name, result.metrics)
        result.duration_s = time.perf_counter() - start
        return result


def _error_message(plugin: str, err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if _is_out_of_memory(err):
        text += " -- out of memory: lower batch_size in the config (or --limit), or run with --device cpu"
    elif not isinstance(err, NNAuditError):
        text = f"plugin '{plugin}' raised {type(err).__name__}: {text}"
    return text


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, MemoryError) or "out of memory" in str(err).lower()


# --- registry ----------------------------------------------------------------------------------


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise PluginError(f"plugin name '{ep.name}' in group {group} is registered twice: {other.value} and "
                              f"{ep.value}; uninstall one of the packages or rename the plugin")
        found[ep.name] = ep
    return found


def refresh_registry() -> None:
    """Forget discovered entry points (after installing a plugin package in-process; tests use it)."""
    _entry_points.cache_clear()
    load_plugin.cache_clear()


def available(group: str = SECTIONS_GROUP) -> dict[str, str]:
    """name -> 'module:object' of every registered plugin in ``group``, without importing them."""
    return {name: ep.value for name, ep in sorted(_entry_points(group).items())}


@cache
def load_plugin(name: str, group: str = SECTIONS_GROUP) -> Any:
    registered = _entry_points(group)
    if name not in registered:
        known = ", ".join(sorted(registered)) or "none"
        raise PluginError(f"no plugin named '{name}' in {group}; installed: {known}")
    try:
        return registered[name].load()
    except Exception as err:
        raise PluginError(f"plugin '{name}' ({registered[name].value}) failed to import: {err}") from err


def section_plugin(name: str, *, section: str, params: dict[str, Any]) -> SectionPlugin:
    try:
        cls = load_plugin(name, SECTIONS_GROUP)
    except PluginError as err:
        raise ConfigError(f"sections.{section}.plugin", str(err)) from err
    if not (isinstance(cls, type) and issubclass(cls, SectionPlugin)):
        raise PluginError(f"plugin '{name}' is {cls!r}, not a SectionPlugin subclass")
    plugin: SectionPlugin = cls(section=section, **params)
    return plugin
