"""The JSON Schema of the spec language, generated from specs/zoo.proto's descriptor.

Generated rather than hand-kept, so the JSON form cannot drift from the text form;
specs/zoo.schema.json is this output, written by `zoo schema --out specs/zoo.schema.json`
and checked by a test. Fields use their proto names; enums their names; int64 fields are
JSON integers bounded to int64.
"""

from __future__ import annotations

import functools

from google.protobuf.descriptor import FieldDescriptor

from . import spec_pb2
from .errors import SpecError

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
_TYPES = {
    FieldDescriptor.TYPE_INT64: {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "minimum": INT32[0], "maximum": INT32[1]},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string", "maxLength": 4096},
}


def _field_schema(f, defs: dict) -> dict:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        _message_schema(f.message_type, defs)
        item = {"$ref": f"#/$defs/{f.message_type.name}"}
    elif f.type == FieldDescriptor.TYPE_ENUM:
        item = {"enum": [v.name for v in f.enum_type.values]}
    else:
        item = dict(_TYPES[f.type])
    repeated = f.is_repeated
    return {"type": "array", "items": item, "maxItems": 100000} if repeated else item


def _message_schema(desc, defs: dict) -> None:
    if desc.name in defs:
        return
    defs[desc.name] = {}  # placeholder against recursion
    defs[desc.name] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field_schema(f, defs) for f in desc.fields},
    }


@functools.cache
def json_schema() -> dict:
    defs: dict = {}
    _message_schema(spec_pb2.NetSpec.DESCRIPTOR, defs)
    root = defs.pop("NetSpec")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://zoo.invalid/specs/zoo.schema.json",
        "title": "zoo network spec (JSON form of specs/zoo.proto)",
        **root,
        "required": ["name", "layer"],
        "$defs": defs,
    }


def validate_json(data, file: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return
    layer = None
    path = list(error.absolute_path)
    if len(path) >= 2 and path[0] == "layer" and isinstance(path[1], int):
        try:
            layer = data["layer"][path[1]].get("name")
        except (AttributeError, IndexError, KeyError, TypeError):
            layer = None
    raise SpecError(error.message, file=file, path=error.json_path, layer=layer)
