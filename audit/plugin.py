"""Plugin base classes and the entry-point registry.

A section plugin writes only its core step, ``run(ctx, result)``; the final ``__call__`` of the
base class does the shared work once: parameter validation, seeding, timing, capability checks
and error capture (a failing plugin becomes a recorded error, the audit goes on).

Built-in plugins register through the same entry-point groups a third-party package uses::

    [project.entry-points."nnaudit.sections"]
    my_check = "my_package.checks:MyCheck"
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
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
ATTACKS_GROUP = "nnaudit.attacks"
DEFENSES_GROUP = "nnaudit.defenses"
EXPLAINERS_GROUP = "nnaudit.explainers"
TEXT_ATTACKS_GROUP = "nnaudit.text_attacks"  # attacks on texts (attacks/text/), beside the L-p attacks
GROUPS = (SECTIONS_GROUP, ATTACKS_GROUP, DEFENSES_GROUP, EXPLAINERS_GROUP, TEXT_ATTACKS_GROUP)


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
    # what the section can audit (preflight refuses any other combination with a ConfigError naming
    # sections.<name>, before any section runs): tasks among classification, regression, multilabel (the
    # data's task, model.task) and input kinds among continuous, tokens (text data: token ids)
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    input_kinds: ClassVar[tuple[str, ...]] = ("continuous",)
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

    def check_supports(self, ctx: AuditContext) -> None:
        """Refuse a task or input kind this section does not declare (``tasks``, ``input_kinds``), naming the key."""
        task, kind = ctx.data.task, ctx.data.input_kind
        if task not in self.tasks:
            raise ConfigError(f"sections.{self.section}", f"section '{self.section}' (plugin '{self.name}') "
                              f"audits {', '.join(self.tasks)} models, and this model's task is {task} "
                              "(model.task): remove the section or set enabled: false")
        if kind not in self.input_kinds:
            what = "token ids (text)" if kind == "tokens" else "continuous inputs"
            raise ConfigError(f"sections.{self.section}", f"section '{self.section}' (plugin '{self.name}') "
                              f"does not take {what}: it audits {', '.join(self.input_kinds)} inputs; remove "
                              "the section or set enabled: false")

    def check_precision(self, ctx: AuditContext, precision: str, *, configured: bool = True) -> dict[str, Any] | None:
        """Capability hook: whether running the model's differentiable path in ``precision`` (bf16, fp16) would
        move this section's numbers. Return the record the manifest keeps (``manifest.model.precision_check``; at
        least ``accepted``, a bool, and ``note``), or None when this plugin has no such check (the default).

        The runner asks the enabled sections in order, before any runs (``audit.engine.execution``). With
        ``configured`` False, no enabled section checked it and the runner borrowed this plugin, with default
        parameters, for the check: use the check's own default threat, not the defaults of a section."""
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


def plugin_class(name: str, group: str, base: type, *, key: str) -> Any:
    """The class registered as ``name`` in ``group``; a ConfigError naming ``key`` when the name is unknown,
    a PluginError when it is not a subclass of ``base``."""
    try:
        cls = load_plugin(name, group)
    except PluginError as err:
        raise ConfigError(key, str(err)) from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"plugin '{name}' in {group} is {cls!r}, not a {base.__module__}.{base.__name__} subclass")
    return cls


def accepted_parameters(cls: type) -> tuple[set[str], bool]:
    """The keyword parameters ``cls(...)`` takes, and whether it takes any (``**kwargs``)."""
    names: set[str] = set()
    var_keyword = False
    for param in inspect.signature(cls).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.name != "self" and param.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.add(param.name)
    return names, var_keyword


def construct(cls: type, name: str, *, key: str, defaults: dict[str, Any], params: dict[str, Any],
              fixed: dict[str, Any] | None = None) -> Any:
    """Build a plugin the same way for built-ins and third parties: ``fixed`` arguments (what the section decides,
    e.g. the norm), then the section's shared ``defaults`` the class accepts (e.g. steps), then the user's own
    ``params`` from the config (``key``, e.g. ``sections.robustness.attack_params.pgd``), which win. An unknown
    parameter is a ConfigError naming ``key.<param>``."""
    accepted, anything = accepted_parameters(cls)
    fixed = dict(fixed or {})
    for param in params:
        if param in fixed:
            raise ConfigError(f"{key}.{param}", f"'{param}' is set by the section for plugin '{name}'; remove it here")
        if param not in accepted and not anything:
            known = ", ".join(sorted(accepted - set(fixed))) or "none"
            raise ConfigError(f"{key}.{param}", f"unknown parameter of plugin '{name}'; it takes: {known}")
    # a class taking **kwargs gets every default: its section_defaults() names only what it takes
    kwargs = {k: v for k, v in defaults.items() if anything or k in accepted} | dict(params) | fixed
    try:
        return cls(**kwargs)
    except NNAuditError:
        raise  # already says what to change (e.g. a norm the attack lacks)
    except (TypeError, ValueError) as err:
        raise ConfigError(key, f"plugin '{name}' rejected its parameters ({', '.join(sorted(kwargs))}): {err}") \
            from err


# --- listing without importing (nnaudit plugins) ----------------------------------------------


def describe(group: str = SECTIONS_GROUP) -> dict[str, tuple[str, str]]:
    """name -> ('module:object', first line of the object's docstring) for every plugin in ``group``, read from
    the entry point and the module's source without importing it (so listing never imports torch)."""
    return {name: (ep.value, summary(ep.value)) for name, ep in sorted(_entry_points(group).items())}


def summary(target: str) -> str:
    """First line of the docstring of 'package.module:Object', parsed from source; '' when it cannot be found."""
    module, _, attr = target.partition(":")
    path = _module_file(module)
    if path is None:
        return ""
    try:
        from pathlib import Path

        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return ""
    body: list[ast.stmt] = tree.body
    doc: str | None = ast.get_docstring(tree) if not attr else None
    for part in attr.split(".") if attr else []:
        node = next((n for n in body if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            return ""
        doc, body = ast.get_docstring(node), node.body
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _module_file(module: str) -> str | None:
    """The source file of a dotted module, found through the top-level package's spec and the file system only
    (``find_spec`` of a submodule would import its parent packages)."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return spec.origin if spec.origin and spec.origin.endswith(".py") else None
    from pathlib import Path

    for base in spec.submodule_search_locations or []:
        folder = Path(base, *rest[:-1])
        for candidate in (folder / f"{rest[-1]}.py", folder / rest[-1] / "__init__.py"):
            if candidate.is_file():
                return str(candidate)
    return None
