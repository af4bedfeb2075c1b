"""The JSON Schema of the spec, generated from the pydantic models (their field docstrings are the
descriptions), for editors: Taplo / Even Better TOML read it through a `#:schema` directive at the
top of a spec and complete, document and validate every key.

The schema is written as JSON Schema draft-07, the newest draft Taplo's validator handles fully:
pydantic's `$defs` become `definitions`, and a `$ref` beside a description is wrapped in `allOf`
(draft-07 ignores a `$ref`'s siblings). `docs/ftc-spec.schema.json` is this output, kept in sync by
tests/test_schema.py; regenerate it with `ftc schema --out docs/ftc-spec.schema.json`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ftc.compiler.methods import METHODS
from ftc.compiler.spec import Spec

SCHEMA_FILE = "docs/ftc-spec.schema.json"
DRAFT = "http://json-schema.org/draft-07/schema#"
TITLE = "ftc spec"


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `root` by its fields, by class name (pydantic's $defs keys)."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [root, *METHODS.values()]
    while todo:
        model = todo.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            for arg in _types_in(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    return found


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [t for arg in args for t in _types_in(arg)]


def _factory_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """pydantic leaves out the defaults made by a `default_factory` (an empty list or table): add them."""
    for name, info in model.model_fields.items():
        prop = schema.get("properties", {}).get(info.alias or name)
        if prop is not None and "default" not in prop and info.default_factory is not None:
            prop["default"] = info.get_default(call_default_factory=True, validated_data={})


def _draft07(node: Any) -> Any:
    """Rewrite pydantic's 2020-12 output in draft-07 terms (see the module docstring)."""
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _draft07(value) for key, value in node.items()}
    if isinstance(out.get("discriminator"), dict):  # OpenAPI's keyword, which editors may read
        mapping = out["discriminator"].get("mapping", {})
        out["discriminator"]["mapping"] = {k: v.replace("#/$defs/", "#/definitions/") for k, v in mapping.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _no_null(prop) for name, prop in out["properties"].items()}
    if "$ref" in out:
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/definitions/")
        if len(out) > 1:
            ref = out.pop("$ref")
            out = {"allOf": [{"$ref": ref}], **out}
    if isinstance(out.get("description"), str):  # docstrings keep their source indentation
        out["description"] = re.sub(r"\n[ \t]+", "\n", out["description"]).strip()
    if "const" in out and "enum" not in out:
        out["enum"] = [out["const"]]
    return out


def _no_null(prop: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: an optional key is one left out, so drop the `null` branch, the `null`
    default and pydantic's generated title (the key name again)."""
    prop = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in prop and len(branches) == 1:
        del prop["anyOf"]
        prop = {**branches[0], **prop}
    elif "anyOf" in prop:
        prop["anyOf"] = branches
    return prop


def spec_schema() -> dict[str, Any]:
    """The spec's JSON Schema (draft-07): every key with its description, type, bounds and default."""
    schema = Spec.model_json_schema(ref_template="#/$defs/{model}")
    models = _models(Spec)
    _factory_defaults(schema, Spec)
    for name, definition in schema.get("$defs", {}).items():
        if name in models:
            _factory_defaults(definition, models[name])
    for cls in METHODS.values():  # the discriminator: a method table must say its kind
        definition = schema["$defs"][cls.__name__]
        definition["required"] = ["kind", *[r for r in definition.get("required", []) if r != "kind"]]
    definitions = schema.pop("$defs", {})
    out = {"$schema": DRAFT, **_draft07(schema),
           "definitions": _draft07(definitions)}
    out["title"] = TITLE
    out["description"] = ("A fine-tuning spec for ftc (ftc compile / plan / run). Every key is documented in "
                          "docs/spec.md; generated by `ftc schema`.")
    return out


def schema_text() -> str:
    """The schema as the checked-in file holds it (keys in spec order, not sorted)."""
    return json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n"


def is_ftc_schema(path: Path) -> bool:
    """Whether `path` holds a schema `ftc schema` wrote (which it may replace without --force)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("title") == TITLE
    except (OSError, ValueError, AttributeError):
        return False
