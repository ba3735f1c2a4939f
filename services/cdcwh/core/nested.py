"""Nested Connect types: arrays, maps and structs, decoded recursively through their element codecs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from cdcwh.core.codec import TOAST_PLACEHOLDER, Codec, ValueMismatch


class ListCodec(Codec):
    """Connect array -> list<element>."""

    toastable = True

    def __init__(self, element: Codec, element_optional: bool) -> None:
        self.element, self.element_optional = element, element_optional
        self.arrow_type = pa.list_(element.arrow_type)
        self.label = f"array<{element.label}>"

    def one(self, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueMismatch("not an array")
        return [self._item(item) for item in value]

    def _item(self, item: Any) -> Any:
        if item is None:
            if not self.element_optional:
                raise ValueMismatch("null element in an array of non-optional elements")
            return None
        return self.element.one(item)

    def is_toasted(self, value: Any) -> bool:
        return bool(value == [TOAST_PLACEHOLDER])


class MapCodec(Codec):
    """Connect map -> map<key, value>: a JSON object, or [key, value] pairs for non-string keys."""

    def __init__(self, key: Codec, value: Codec) -> None:
        self.key, self.value = key, value
        self.arrow_type = pa.map_(key.arrow_type, value.arrow_type)
        self.label = f"map<{key.label}, {value.label}>"

    def one(self, value: Any) -> Any:
        if isinstance(value, dict):
            pairs: list[Any] = list(value.items())
        elif isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
            pairs = value
        else:
            raise ValueMismatch("not a map")
        out = []
        for k, v in pairs:
            if k is None:
                raise ValueMismatch("null map key")
            out.append((self.key.one(k), None if v is None else self.value.one(v)))
        return out


@dataclass(frozen=True, slots=True)
class FieldCodec:
    """A named field of a struct or row: its codec and whether null is allowed."""

    name: str
    codec: Codec
    optional: bool = True


class StructCodec(Codec):
    """Connect struct -> struct<fields>. Missing optional fields are null; extra fields are ignored."""

    def __init__(self, fields: tuple[FieldCodec, ...], label: str = "struct") -> None:
        self.fields = fields
        self.arrow_type = pa.struct([pa.field(f.name, f.codec.arrow_type) for f in fields])
        self.label = label

    def one(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueMismatch("not a struct")
        out: dict[str, Any] = {}
        for f in self.fields:
            item = value.get(f.name)
            if item is None:
                if not f.optional:
                    raise ValueMismatch(f"field {f.name!r} is null but not optional")
                out[f.name] = None
            else:
                out[f.name] = f.codec.one(item)
        return out
