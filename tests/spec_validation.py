"""Validate request and response bodies against OpenAI's Images API spec (tests/spec/).

The spec is OpenAPI 3.1, so its schemas are JSON Schema 2020-12, except for two OpenAPI 3.0
leftovers handled here:

* ``nullable: true`` is turned into "or null" (the spec means it; 2020-12 ignores the keyword).
* ``ImagesResponse.size`` lists only ``1024x1024``/``1024x1536``/``1536x1024`` although the same
  spec lets gpt-image-2 take any valid ``WxH``; unless ``strict_size=True`` it is checked as a
  ``WxH`` string (the size is a free string for that model).

Usage::

    from spec_validation import validate_against_spec
    validate_against_spec(request_json, "CreateImageRequest")
    validate_against_spec(response.json(), "ImagesResponse")
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema import ValidationError as SchemaValidationError
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

#: The copy of the spec inside the repository (what the tests load).
SPEC_PATH = Path(__file__).resolve().parent / "spec" / "openai-images.yaml"
#: The shared original (present in the workspace and in CI beside the clone).
SHARED_SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent / "shared" / "spec" / "openai-images.yaml"
)
_URI = "urn:openai-images-spec"
_WXH = {"type": "string", "pattern": r"^[1-9][0-9]*x[1-9][0-9]*$"}

__all__ = [
    "SHARED_SPEC_PATH",
    "SPEC_PATH",
    "SchemaValidationError",
    "load_spec",
    "multipart_instance",
    "spec_errors",
    "validate_against_spec",
]


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The parsed spec (cached; do not mutate).

    Returns:
        The OpenAPI document.
    """
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def _with_nulls(node: Any) -> Any:
    if isinstance(node, list):
        return [_with_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _with_nulls(value) for key, value in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.lru_cache(maxsize=2)
def _registry(strict_size: bool) -> Registry:
    doc = _with_nulls(copy.deepcopy(load_spec()))
    if not strict_size:
        doc["components"]["schemas"]["ImagesResponse"]["properties"]["size"] = dict(_WXH)
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    return Registry().with_resource(_URI, resource)


def _validator(schema_name: str, strict_size: bool) -> Draft202012Validator:
    if schema_name not in load_spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH.name}")
    schema = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=_registry(strict_size))


def spec_errors(instance: Any, schema_name: str, *, strict_size: bool = False) -> list[str]:
    """Every violation of ``components/schemas/<schema_name>`` by ``instance``.

    Args:
        instance: The JSON data.
        schema_name: E.g. ``CreateImageRequest``, ``CreateImageEditRequest``, ``ImagesResponse``.
        strict_size: Check ``ImagesResponse.size`` against the spec's three-value enum.

    Returns:
        Messages like ``"n: 0 is less than the minimum of 1"`` (empty when valid).
    """
    messages = []
    for error in _validator(schema_name, strict_size).iter_errors(instance):
        if error.context:  # anyOf (e.g. "or null"): report the closest branch's complaint
            not_null = [e for e in error.context if e.validator_value != "null"]
            error = best_match(not_null or error.context)
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        messages.append(f"{where}: {error.message}")
    return sorted(messages)


def validate_against_spec(instance: Any, schema_name: str, *, strict_size: bool = False) -> None:
    """Assert that ``instance`` follows the spec's schema ``schema_name``.

    Args:
        instance: The JSON data (a request body, a response body, or see
            :func:`multipart_instance` for multipart edits).
        schema_name: A name under ``components/schemas``.
        strict_size: Check ``ImagesResponse.size`` against the spec's three-value enum.

    Raises:
        AssertionError: Listing every violation.
        KeyError: For an unknown schema name.
    """
    errors = spec_errors(instance, schema_name, strict_size=strict_size)
    assert not errors, f"not a valid {schema_name}:\n  " + "\n  ".join(errors)


_INT = re.compile(r"^[+-]?\d+$")


def multipart_instance(
    fields: dict[str, str], files: dict[str, list[Any]], schema_name: str = "CreateImageEditRequest"
) -> dict[str, Any]:
    """Turn a multipart form into the JSON shape the spec describes, to validate it.

    Text fields are converted to the property's JSON type (``"2"`` -> ``2`` for integers,
    ``"true"`` -> ``True`` for booleans); files become placeholder strings (``format: binary``),
    and repeated or ``image[]`` parts become an array under ``image``.

    Args:
        fields: Non-file fields as strings (e.g. ``RequestRecord.params``).
        files: File fields: name -> list of anything (e.g. ``RequestRecord.files``).
        schema_name: The schema whose property types drive the conversion.

    Returns:
        The instance.
    """
    schemas = load_spec()["components"]["schemas"]
    props = schemas[schema_name]["properties"]

    def types_of(name: str) -> set[str]:
        prop = props.get(name, {})
        if "$ref" in prop:
            prop = schemas[prop["$ref"].rsplit("/", 1)[-1]]
        options = [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]
        return {o["type"] for o in options if isinstance(o.get("type"), str)}

    out: dict[str, Any] = {}
    for name, value in fields.items():
        kinds = types_of(name)
        if "integer" in kinds and isinstance(value, str) and _INT.match(value.strip()):
            out[name] = int(value)
        elif "boolean" in kinds and value in ("true", "false"):
            out[name] = value == "true"
        else:
            out[name] = value
    for name, parts in files.items():
        base = name.removesuffix("[]")
        placeholders = [f"<binary {base} {i}>" for i in range(len(parts))]
        if name.endswith("[]") or len(parts) > 1 or base in out:
            existing = out.get(base)
            prior = (
                existing if isinstance(existing, list) else ([] if existing is None else [existing])
            )
            out[base] = prior + placeholders
        else:
            out[base] = placeholders[0]
    return out
