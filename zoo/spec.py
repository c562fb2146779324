"""Reading and writing specs: protobuf text format (.prototxt) and JSON, into one `NetSpec`.

Both formats load into the same protobuf message (zoo/spec_pb2.py, generated from
specs/zoo.proto). Text format is parsed by protobuf's own `text_format`; JSON is parsed by
`json` with duplicate keys, NaN/Infinity and deep nesting refused, checked against the JSON
Schema (zoo/schema.py), then converted by `json_format`. Errors name the file and the line
(text) or JSON path, and the layer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor

from . import spec_pb2
from .errors import SpecError

MAX_SPEC_BYTES = 16 * 2**20   # far above any real spec; refuse before parsing
MAX_NESTING = 32              # a spec nests 3 deep; text and JSON beyond this are refused


@dataclass
class Source:
    """Where a spec came from, for error messages: file, format and each layer's place."""

    file: str = "<spec>"
    fmt: str = "prototxt"                      # "prototxt" or "json"
    layer_lines: list[int] = field(default_factory=list)   # prototxt: line of each layer {

    def place(self, index: int | None) -> dict:
        if index is None:
            return {"file": self.file}
        if self.fmt == "prototxt":
            line = self.layer_lines[index] if index < len(self.layer_lines) else None
            return {"file": self.file, "line": line}
        return {"file": self.file, "path": f"$.layer[{index}]"}


def _scan_prototxt(text: str, file: str) -> list[int]:
    """Line numbers of the top-level `layer {` blocks; refuses absurd nesting up front
    (protobuf's recursive parser would otherwise hit Python's recursion limit)."""
    return _scan(text, file)[0]


_SCAN_TOKENS = re.compile(r"""\n|#[^\n]*|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|[{<}>]|[A-Za-z_][A-Za-z0-9_]*""")


def _scan(text: str, file: str) -> tuple[list[int], str | None, int | None]:
    """(line of each top-level `layer`, a hint about an unclosed brace, its line).

    The hint is used only when protobuf's parser fails: a `layer` inside another block, or
    a block still open at the end, means a missing '}' whose line protobuf cannot name."""
    lines, opened, line = [], [], 1
    hint = hint_line = None
    # one regex step per token (a Python loop per character took ~1 s on 100,000 layers);
    # a string ends at its quote or at the end of its line, as protobuf's tokenizer reads it
    for m in _SCAN_TOKENS.finditer(text):
        tok = m.group()
        ch = tok[0]
        if ch == "\n":
            line += 1
        elif ch in "{<":
            opened.append(line)
            if len(opened) > MAX_NESTING:
                raise SpecError(f"nesting deeper than {MAX_NESTING} levels", file=file, line=line)
        elif ch in "}>":
            if opened:
                opened.pop()
        elif tok == "layer":
            if not opened:
                lines.append(line)
            elif hint is None:
                hint, hint_line = (f"this block is not closed: 'layer' at line {line} is inside "
                                   "it (missing '}')"), opened[0]
    if opened and hint is None:
        hint, hint_line = "this block is never closed (missing '}')", opened[-1]
    return lines, hint, hint_line


def _read(path: Path) -> str:
    from .files import read_bytes

    data = read_bytes(path, MAX_SPEC_BYTES, lambda msg: SpecError(msg, file=str(path)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"cannot read as UTF-8 text: {e}", file=str(path)) from None


def parse_prototxt(text: str, file: str = "<spec>") -> tuple[spec_pb2.NetSpec, Source]:
    layer_lines, hint, hint_line = _scan(text, file)
    msg = spec_pb2.NetSpec()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        if hint is not None:
            raise SpecError(hint, file=file, line=hint_line) from None
        # protobuf says "LINE:COL : message"; keep its words, put the place in front
        m = re.match(r"(\d+):(\d+) : (.*)", str(e), re.S)
        if m:
            raise SpecError(m.group(3).strip().replace("zoo.", ""), file=file,
                            line=int(m.group(1))) from None
        raise SpecError(str(e), file=file) from None
    except RecursionError:
        raise SpecError("nesting too deep", file=file) from None
    return msg, Source(file, "prototxt", layer_lines)


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not a number zoo accepts")


def _depth(obj) -> int:
    stack, deepest = [(obj, 1)], 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(o, dict):
            stack += [(v, d + 1) for v in o.values()]
        elif isinstance(o, list):
            stack += [(v, d + 1) for v in o]
    return deepest


def parse_json(text: str, file: str = "<spec>") -> tuple[spec_pb2.NetSpec, Source]:
    from .schema import validate_json   # jsonschema is only needed for JSON specs

    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise SpecError(f"invalid JSON: {e.msg}", file=file, line=e.lineno) from None
    except ValueError as e:
        raise SpecError(f"invalid JSON: {e}", file=file) from None
    except RecursionError:
        raise SpecError("invalid JSON: nesting too deep", file=file) from None
    if _depth(data) > MAX_NESTING:
        raise SpecError(f"nesting deeper than {MAX_NESTING} levels", file=file)
    validate_json(data, file)
    msg = spec_pb2.NetSpec()
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as e:
        raise SpecError(str(e).replace("zoo.", ""), file=file) from None
    return msg, Source(file, "json")


def _int64_to_int(d, descriptor) -> None:
    """json_format writes int64 as strings (for JavaScript); zoo's JSON uses numbers."""
    for f in descriptor.fields:
        if f.name not in d:
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            items = d[f.name] if _is_repeated(f) else [d[f.name]]
            for item in items:
                _int64_to_int(item, f.message_type)
        elif f.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64):
            d[f.name] = [int(v) for v in d[f.name]] if _is_repeated(f) else int(d[f.name])


def _is_repeated(f) -> bool:
    return f.is_repeated


def to_dict(msg: spec_pb2.NetSpec) -> dict:
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    _int64_to_int(d, msg.DESCRIPTOR)
    return d


def to_json(msg: spec_pb2.NetSpec) -> str:
    return json.dumps(to_dict(msg), indent=2) + "\n"


def to_prototxt(msg: spec_pb2.NetSpec) -> str:
    return text_format.MessageToString(msg)


def read(path: str | Path) -> tuple[spec_pb2.NetSpec, Source]:
    """Parse a spec file by its extension: .json is JSON, anything else text format."""
    path = Path(path)
    text = _read(path)
    if path.suffix.lower() == ".json":
        return parse_json(text, str(path))
    return parse_prototxt(text, str(path))


def specs_dir() -> Path:
    """The built-in zoo's folder (specs/, installed as the package zoo.specs)."""
    from . import specs
    return Path(specs.__file__).resolve().parent


def zoo_names() -> list[str]:
    """The built-in zoo: every specs/*.prototxt, by file name."""
    return sorted(p.stem for p in specs_dir().glob("*.prototxt"))


def resolve(name_or_path: str | Path) -> Path:
    """A zoo NAME (e.g. "alexnet-r") or a path to a spec file."""
    p = Path(name_or_path)
    if p.suffix in (".prototxt", ".json", ".pbtxt") or p.exists():
        if not p.exists():
            raise SpecError("no such file", file=str(p))
        return p
    candidate = specs_dir() / f"{name_or_path}.prototxt"
    if candidate.exists():
        return candidate
    raise SpecError(f"no zoo network or file named {str(name_or_path)!r}; "
                    f"zoo networks: {', '.join(zoo_names())}", file=str(name_or_path))
