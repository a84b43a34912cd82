"""Config schemas derived from the settings classes the code runs with, and the way back.

A settings class (a dataclass such as ``TrainSettings``, or a class whose ``__init__`` takes
the settings as keywords, such as ``HipnnTS``) is the one place where its fields, their types,
defaults and meaning are written. :func:`derive` makes from it the dataclass that Hydra and
OmegaConf type a config section with: the same fields, types and defaults, without those
the code sets (``runtime``: a seed, the number of species), with those only the config has
(``extra``: a system's ``kind``), never frozen (OmegaConf makes a frozen dataclass's node
read-only, so no override could set it) and with lists where the class has tuples. The
schema has the settings class's name, so a typo reads ``Key 'stepz' not in 'MDSettings'``.

:func:`to_settings` turns a composed section (a DictConfig typed by such a schema) back
into the settings object, nested settings included.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError


@dataclasses.dataclass(frozen=True)
class _Origin:
    """What a derived schema was made from: the settings class, the fields the config adds
    (left out when converting back) and the fields the class holds as tuples."""

    settings: Callable[..., Any]
    extra: tuple[str, ...]
    tuples: tuple[str, ...]


#: Derived schemas -> their origin; settings classes -> their derived schema.
_ORIGINS: dict[type, _Origin] = {}
_SCHEMAS: dict[Any, type] = {}


def derive(
    settings: type,
    *,
    module: str,
    name: str,
    runtime: tuple[str, ...] = (),
    extra: tuple[tuple[str, Any, Any], ...] = (),
) -> type:
    """The config schema of the settings class ``settings`` (see the module docstring), to be
    stored as ``name`` in ``module`` (where pickle finds it: launchers pickle the config).

    ``runtime``: its fields the code sets, left out; ``extra``: ``(name, type, default)`` of
    fields the config adds in front. A settings class nested in ``settings`` (a field typed
    with it, or a tuple of it) must have been derived first: the schema then nests its schema.
    """
    schema_fields = [(key, kind, dataclasses.field(default=value)) for key, kind, value in extra]
    tuples = []
    for key, kind, default in _settings_fields(settings):
        if key in runtime:
            continue
        if typing.get_origin(kind) is tuple:
            kind, tuples = list[_schema_type(typing.get_args(kind)[0])], [*tuples, key]
        else:
            kind = _schema_type(kind)
        schema_fields.append((key, kind, _schema_default(default)))
    schema = dataclasses.make_dataclass(settings.__name__, schema_fields)
    schema.__doc__ = f"The config schema of :class:`{settings.__module__}.{settings.__qualname__}`."
    schema.__module__, schema.__qualname__ = module, name
    _ORIGINS[schema] = _Origin(settings, tuple(key for key, _, _ in extra), tuple(tuples))
    _SCHEMAS[settings] = schema
    return schema


def to_settings(node: DictConfig | Any, **runtime: Any) -> Any:
    """The settings object of a composed config section typed by a derived schema (or of an
    instance of such a schema): interpolations resolved, the config's extra fields left out,
    nested settings and tuples rebuilt, and ``runtime`` (the fields the code sets, e.g.
    ``seed``) added. A section typed by a plain dataclass gives an instance of it."""
    value = OmegaConf.to_object(node) if isinstance(node, DictConfig) else node
    return _rebuild(value, runtime)


def _rebuild(value: Any, runtime: dict[str, Any] | None = None) -> Any:
    origin = _ORIGINS.get(type(value))
    if origin is None:
        if isinstance(value, list):
            return [_rebuild(item) for item in value]
        if isinstance(value, dict):
            return {key: _rebuild(item) for key, item in value.items()}
        if runtime:
            return dataclasses.replace(value, **runtime)
        return value
    values = {}
    for field in dataclasses.fields(value):
        if field.name in origin.extra:
            continue
        item = _rebuild(getattr(value, field.name))
        values[field.name] = tuple(item) if field.name in origin.tuples else item
    return origin.settings(**values, **(runtime or {}))


def _settings_fields(settings: type) -> list[tuple[str, Any, Any]]:
    """``(name, type, default)`` of each setting: a dataclass's init fields, or the keyword
    parameters of a class's ``__init__`` (``dataclasses.MISSING`` where there is no default;
    a ``default_factory`` as a zero-argument callable)."""
    if dataclasses.is_dataclass(settings):
        hints = typing.get_type_hints(settings)
        found = []
        for field in dataclasses.fields(settings):
            if not field.init:
                continue
            default = field.default
            if field.default_factory is not dataclasses.MISSING:
                default = field.default_factory
            found.append((field.name, hints[field.name], default))
        return found
    hints = typing.get_type_hints(settings.__init__)
    parameters = list(inspect.signature(settings).parameters.values())
    return [
        (
            p.name,
            hints[p.name],
            dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default,
        )
        for p in parameters
    ]


def _schema_type(kind: Any) -> Any:
    """``kind``, or the derived schema when it is a settings class. A mapping by name (e.g.
    masses or frictions per type, ``dict[str, float] | None``) is left untyped: in a typed
    section a dict refuses new keys, so ``key='{A: 1.0}'`` could not set it."""
    if _is_mapping(kind) or _is_union(kind):
        return Any
    return _SCHEMAS.get(kind, kind)


def _is_union(kind: Any) -> bool:
    """Whether ``kind`` is a union of several types (``float | str``), None aside."""
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) > 1


def _is_mapping(kind: Any) -> bool:
    """Whether ``kind`` is ``dict[...]``, possibly optional."""
    if typing.get_origin(kind) is dict:
        return True
    return any(typing.get_origin(arg) is dict for arg in typing.get_args(kind))


def _schema_default(default: Any) -> dataclasses.Field:
    """A schema field's default: tuples become list factories, settings objects and their
    factories make the nested schema's default."""
    if default is dataclasses.MISSING:
        return dataclasses.field(default=dataclasses.MISSING)
    if callable(default) and default in _SCHEMAS:
        return dataclasses.field(default_factory=_SCHEMAS[default])
    if isinstance(default, tuple):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items))
    if type(default) in _SCHEMAS:
        schema, values = _SCHEMAS[type(default)], dataclasses.asdict(default)
        return dataclasses.field(default_factory=lambda: schema(**values))
    return dataclasses.field(default=default)


def valid_keys(error: BaseException) -> str | None:
    """For an error (or one it was raised from) about an unknown key of a typed section, the
    line naming the section's valid keys, e.g. ``simulate takes: friction, integrator, ...``;
    None for other errors."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ConfigKeyError | ConfigAttributeError):
        cause = cause.__cause__
    object_type = getattr(cause, "object_type", None)
    if cause is None or not dataclasses.is_dataclass(object_type):
        return None
    section = (cause.full_key or "").rpartition(".")[0] or "the config"
    names = sorted(field.name for field in dataclasses.fields(object_type))
    return f"{section} takes: {', '.join(names)}"
