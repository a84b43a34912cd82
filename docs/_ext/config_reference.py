"""Writes ``reference/configuration.md`` when the docs build starts: every section and key of
the configuration with its type and default, taken from the config schema
(:mod:`cgkd.config.schema`) and the composed default config, and every option of every
config group, so the reference cannot fall behind the code."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cgkd.config import SYSTEM_SCHEMAS, Config
from cgkd.config.derive import _ORIGINS

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
PAGE = Path(__file__).resolve().parents[1] / "reference" / "configuration.md"


def _type_name(kind: Any) -> str:
    text = str(kind) if not isinstance(kind, type) else kind.__name__
    text = (
        text.replace("typing.", "").replace("NoneType", "None").replace("cgkd.config.schema.", "")
    )
    return text.replace(" | ", " or ")


def _doc(schema: type) -> str:
    """The docstring of the settings class a schema was derived from (or the schema's own)."""
    origin = _ORIGINS.get(schema)
    source = origin.settings if origin is not None else schema
    text = (source.__doc__ or "").strip()
    return " ".join(line.strip() for line in text.splitlines())


def _value(value: Any) -> str:
    if value is None:
        return "null"
    text = OmegaConf.to_yaml(OmegaConf.create({"v": value})).strip()[3:].strip()
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if text else "`''`"


def _sections(schema: type, node: Any, path: str) -> list[str]:
    """Markdown for the section at ``path``: its description, a table of its scalar keys and
    then its subsections."""
    hints = typing.get_type_hints(schema)
    rows, nested = [], []
    for field in dataclasses.fields(schema):
        value = node.get(field.name) if isinstance(node, dict) else None
        kind = hints.get(field.name, field.type)
        if path == "" and field.name == "system" and isinstance(value, dict):
            kind = SYSTEM_SCHEMAS[value["kind"]]  # the default system's kind
        if dataclasses.is_dataclass(kind):
            nested.append((kind, value, f"{path}.{field.name}" if path else field.name))
        else:
            rows.append(f"| `{field.name}` | {_type_name(kind)} | {_value(value)} |")
    lines = [f"{'#' * min(2 + path.count('.'), 4)} `{path or 'top level'}`", ""]
    if doc := _doc(schema):
        lines += [doc, ""]
    if rows:
        lines += ["| key | type | default |", "|---|---|---|", *rows, ""]
    for kind, value, sub in nested:
        lines += _sections(kind, value, sub)
    return lines


def _groups() -> list[str]:
    """Every config group, its options and the first comment line of each option's file."""
    lines = [
        "## Config groups",
        "",
        "Options are chosen on the command line (`cgkd run system=reline`); each file holds what",
        "its option changes from the defaults above.",
        "",
        "| group | option | what it is |",
        "|---|---|---|",
    ]
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
        for option in sorted(group.glob("*.yaml")):
            comment = next(
                (
                    line.lstrip("# ").strip()
                    for line in option.read_text().splitlines()
                    if line.startswith("#") and "@package" not in line
                ),
                "",
            )
            lines.append(f"| `{group.name}` | `{option.stem}` | {comment} |")
    return lines


def render() -> str:
    """The configuration reference page."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config")
    defaults = OmegaConf.to_container(cfg, resolve=False)
    lines = [
        "# Configuration reference",
        "",
        "Every key of the configuration, with its type and its value in the default run",
        "(`cgkd run --cfg job` prints the composed configuration of any run; `${...}` values",
        "follow another key). Generated from the config schema (`cgkd.config`) when the",
        "documentation is built. Units: nm, ps, kJ/mol, amu, K.",
        "",
        *_sections(Config, defaults, ""),
        *_groups(),
        "",
    ]
    return "\n".join(lines)


def _write(app: Any) -> None:
    PAGE.parent.mkdir(exist_ok=True)
    text = render()
    if not PAGE.is_file() or PAGE.read_text() != text:
        PAGE.write_text(text)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "version": "1"}
