"""The schema language: construct classes for netlink attributes.

An attribute space is declared once, as construct objects::

    ovs_key_ipv4 = Struct("src" / Int32ub, "dst" / Int32ub, ...)
    ovs_key = AttributeSpace("ovs_key", {
        1: "encap" / Nested("ovs_key"),
        7: "ipv4" / ovs_key_ipv4,
        ...
    })

Such a space is a working construct: ``space.parse(data)`` and ``space.build(value)`` interpret it
(slowly: construct walks the object graph for every field).  :mod:`ovsdp.netlink.codec` compiles
the same objects into precompiled ``struct`` codecs for the hot paths, so the declaration here stays
the single source of truth for numbers, names, sizes and byte orders.

Decoded values:

* a ``set`` space (the usual kind) decodes to ``dict[name, value]``; each attribute at most once;
* a ``seq`` space (action lists) decodes to ``list[(name, value)]``, repeats allowed, order kept;
* a ``Struct`` decodes to a namedtuple whose fields are the Struct's named fields;
* integers to ``int``, ``Bytes``/``GreedyBytes`` to ``bytes``, ``NulString`` to ``str``,
  ``NlFlag`` to ``True``, ``GreedyRange(x)`` to a ``tuple``;
* ``Nested(name)`` to the nested space's value, ``NestedList(name)`` to a ``list`` of them,
  ``Masked(x)`` (value followed by an equally long mask) to a ``(value, mask)`` pair;
* ``ByLength("a" / x, "b" / y)``: one attribute number whose meaning depends on its payload
  length (a kernel/userspace header difference); it decodes under the name of the alternative
  the length selects, and either name encodes to that number.

An attribute number the space does not declare is kept: under its number (``int`` key, or an
``(int, bytes)`` item in a ``seq`` space) with its raw payload, so it survives a decode/encode
round trip and the caller can see and judge it.
"""

from __future__ import annotations

import errno
import io
import struct
from collections import namedtuple
from collections.abc import Mapping
from typing import Any

import construct as cs

from .constants import NLA_TYPE_MASK
from .errors import NetlinkError, einval

SPACES: dict[str, AttributeSpace] = {}
"""Every declared attribute space, by name (Nested() refers to spaces by name)."""

_NLA_HDR = struct.Struct("=HH")


def _write(stream: Any, data: bytes, path: str) -> None:
    cs.stream_write(stream, data, len(data), path)


class NlFlag(cs.Construct):
    """A zero-length attribute whose presence means true (NLA_FLAG)."""

    def _parse(self, stream: Any, context: Any, path: str) -> bool:
        rest = cs.stream_read_entire(stream, path)
        if rest:
            raise cs.ExplicitError(f"flag attribute carries {len(rest)} bytes")
        return True

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        if obj is not True:
            raise cs.ExplicitError("a flag attribute's value is True (present)")
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return 0


class NulString(cs.Construct):
    """A NUL-terminated string of at most ``maxlen`` characters (NLA_NUL_STRING)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def _parse(self, stream: Any, context: Any, path: str) -> str:
        data = cs.stream_read_entire(stream, path)
        return decode_nul_string(data, self.maxlen)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        _write(stream, encode_nul_string(obj, self.maxlen), path)
        return obj


class Pad(cs.Construct):
    """An alignment filler attribute (OVS_*_ATTR_PAD): skipped when parsing, never built."""

    def _parse(self, stream: Any, context: Any, path: str) -> None:
        cs.stream_read_entire(stream, path)
        return None

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return obj


class Nested(cs.Construct):
    """An attribute whose payload is the attributes of another space (looked up by name)."""

    def __init__(self, space: str) -> None:
        super().__init__()
        self.space_name = space

    @property
    def space(self) -> AttributeSpace:
        return SPACES[self.space_name]

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        return self.space._parse(stream, context, path)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        return self.space._build(obj, stream, context, path)


class NestedList(cs.Construct):
    """A nest of nests, used as a list: nlctrl's ops and multicast groups (types 1, 2, ...),
    meter bands (every element of type 0)."""

    def __init__(self, space: str, first_type: int = 1, same_type: bool = False) -> None:
        super().__init__()
        self.space_name = space
        self.first_type = first_type
        self.same_type = same_type

    @property
    def space(self) -> AttributeSpace:
        return SPACES[self.space_name]

    def element_type(self, index: int) -> int:
        return self.first_type if self.same_type else self.first_type + index

    def _parse(self, stream: Any, context: Any, path: str) -> list[Any]:
        data = cs.stream_read_entire(stream, path)
        out = []
        for _atype, payload in iter_raw_attributes(data):
            out.append(self.space.parse(payload))
        return out

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        for index, element in enumerate(obj):
            payload = self.space.build(element)
            _write(stream, raw_attribute(self.element_type(index), payload), path)
        return obj


class Masked(cs.Construct):
    """A value followed by a mask of the same layout (the payload of OVS_ACTION_ATTR_SET_MASKED).

    For a nested space the masking applies attribute by attribute (each nested attribute is
    itself value followed by mask), so ``Masked(Nested(x))`` means ``Nested(masked space of x)``.
    """

    def __init__(self, subcon: Any) -> None:
        super().__init__()
        self.subcon = subcon

    def _parse(self, stream: Any, context: Any, path: str) -> tuple[Any, Any]:
        data = cs.stream_read_entire(stream, path)
        if len(data) % 2:
            raise cs.ExplicitError("masked attribute of odd length")
        half = len(data) // 2
        return (parse_exact(self.subcon, data[:half]), parse_exact(self.subcon, data[half:]))

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        value, mask = obj
        a, b = self.subcon.build(value), self.subcon.build(mask)
        if len(a) != len(b):
            raise cs.ExplicitError("value and mask differ in length")
        _write(stream, a + b, path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return 2 * int(self.subcon._sizeof(context, path))


class ByLength(cs.Construct):
    """One attribute number with several meanings, told apart by the payload's length.

    Each alternative is ``"name" / construct`` of a fixed size, no two of the same size.  The
    owning :class:`AttributeSpace` registers every alternative's name under the one number;
    a payload whose length matches no alternative is refused (EINVAL).
    """

    def __init__(self, *alternatives: Any) -> None:
        super().__init__()
        self.alternatives: dict[int, tuple[str, Any]] = {}
        for renamed in alternatives:
            if not isinstance(renamed, cs.Renamed) or not renamed.name:
                raise TypeError('a ByLength alternative needs a name ("name" / construct)')
            size = int(renamed.subcon.sizeof())
            if size in self.alternatives:
                raise ValueError(f"two ByLength alternatives of {size} bytes")
            self.alternatives[size] = (renamed.name, renamed.subcon)
        self.label = "|".join(name for name, _ in self.alternatives.values())

    def pick(self, size: int, where: str) -> tuple[str, Any]:
        """The (name, construct) a payload of ``size`` bytes means; EINVAL if none."""
        alt = self.alternatives.get(size)
        if alt is None:
            sizes = " or ".join(str(n) for n in self.alternatives)
            raise einval(f"{where}: payload of {size} bytes, expected {sizes}")
        return alt

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        data = cs.stream_read_entire(stream, path)
        _name, con = self.pick(len(data), "ByLength")
        return parse_exact(con, data)

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        raise cs.ExplicitError("a ByLength attribute is built under one of its names")


class AttributeSpace(cs.Construct):
    """One attribute space: attribute number -> ``"name" / construct``.

    ``kind`` is ``"set"`` (dict, unique attributes) or ``"seq"`` (ordered list, repeats allowed).
    Registering the space makes it reachable from ``Nested(name)``.
    """

    def __init__(
        self,
        name: str,
        fields: Mapping[int, Any],
        kind: str = "set",
        too_deep: int = errno.EINVAL,
    ) -> None:
        super().__init__()
        if kind not in ("set", "seq"):
            raise ValueError(f"unknown space kind {kind!r}")
        self.space_name = name
        self.kind = kind
        # the errno of a nest of this space past the codec's depth limit (the kernel answers
        # EOVERFLOW for action lists nested too deep, EINVAL elsewhere)
        self.too_deep = too_deep
        # number -> (name, construct); a ByLength attribute is listed under its label "a|b"
        self.fields: dict[int, tuple[str, Any]] = {}
        # every name (each alternative of a ByLength too) -> number, and -> its construct
        self.numbers: dict[str, int] = {}
        self.constructs: dict[str, Any] = {}
        for number, declared in fields.items():
            if not 0 <= number <= NLA_TYPE_MASK:
                raise ValueError(f"{name}: attribute number {number} out of range")
            if isinstance(declared, ByLength):
                self.fields[number] = (declared.label, declared)
                named = list(declared.alternatives.values())
            elif isinstance(declared, cs.Renamed) and declared.name:
                self.fields[number] = (declared.name, declared.subcon)
                named = [(declared.name, declared.subcon)]
            else:
                raise TypeError(f'{name}: attribute {number} needs a name ("name" / construct)')
            for fname, con in named:
                if fname in self.numbers:
                    raise ValueError(f"{name}: duplicate attribute name {fname}")
                self.numbers[fname] = number
                self.constructs[fname] = con
        self.maxattr = max(self.fields, default=0)
        SPACES[name] = self

    def __repr__(self) -> str:
        return f"<AttributeSpace {self.space_name} ({len(self.fields)} attributes)>"

    # -- the interpreted codec (reference implementation) --------------------------------------

    def _parse(self, stream: Any, context: Any, path: str) -> Any:
        data = cs.stream_read_entire(stream, path)
        items: list[tuple[Any, Any]] = []
        numbers: list[int] = []
        for atype, payload in iter_raw_attributes(data):
            field = self.fields.get(atype)
            if field is None:
                items.append((atype, bytes(payload)))
                numbers.append(atype)
                continue
            name, subcon = field
            if isinstance(subcon, Pad):
                continue
            if isinstance(subcon, ByLength):
                name, subcon = subcon.pick(len(payload), f"{self.space_name}.{name}")
            try:
                value = parse_exact(subcon, payload)
            except cs.ConstructError as exc:
                raise einval(f"{self.space_name}.{name}: {exc}") from None
            items.append((name, to_plain(subcon, value)))
            numbers.append(atype)
        if self.kind == "seq":
            return items
        out: dict[Any, Any] = {}
        seen: set[int] = set()
        for (key, value), number in zip(items, numbers, strict=True):
            # at most once per attribute *number*: the names of a ByLength share one
            if number in seen:
                raise einval(f"{self.space_name}: duplicate attribute {key}")
            seen.add(number)
            out[key] = value
        return out

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        items = obj if self.kind == "seq" else obj.items()
        for key, value in items:
            if isinstance(key, int):
                atype, payload = key, bytes(value)
            else:
                atype = self.numbers[key]
                subcon = self.constructs[key]
                payload = subcon.build(from_plain(subcon, value))
            _write(stream, raw_attribute(atype, payload), path)
        return obj


# -- helpers shared by the interpreted and the compiled codecs ---------------------------------


def parse_exact(con: Any, data: bytes) -> Any:
    """``con.parse(data)``, refusing bytes the construct leaves unread (as the fast codec does)."""
    stream = io.BytesIO(data)
    value = con.parse_stream(stream)
    left = len(data) - stream.tell()
    if left:
        raise cs.ExplicitError(f"{left} trailing bytes after a {len(data) - left}-byte payload")
    return value


def iter_raw_attributes(data: bytes) -> list[tuple[int, bytes]]:
    """Split an attribute stream into ``(type, payload)``; flag bits are masked off."""
    out = []
    off, end = 0, len(data)
    while off < end:
        if end - off < 4:
            raise einval("truncated attribute header")
        alen, atype = _NLA_HDR.unpack_from(data, off)
        if alen < 4 or off + alen > end:
            raise einval(f"attribute length {alen} invalid at offset {off}")
        out.append((atype & NLA_TYPE_MASK, data[off + 4 : off + alen]))
        off += (alen + 3) & ~3
    return out


def raw_attribute(atype: int, payload: bytes) -> bytes:
    """One attribute: header, payload, padding to 4 bytes."""
    alen = 4 + len(payload)
    if alen > 0xFFFF:
        raise NetlinkError(
            errno.EMSGSIZE, f"attribute {atype} payload of {len(payload)} bytes is too long"
        )
    return _NLA_HDR.pack(alen, atype) + payload + b"\0" * (-alen & 3)


def decode_nul_string(data: bytes, maxlen: int) -> str:
    nul = data.find(b"\0")
    if nul < 0:
        raise einval("string attribute is not NUL-terminated")
    if nul > maxlen:
        raise NetlinkError(errno.ERANGE, f"string of {nul} bytes is longer than {maxlen}")
    try:
        return data[:nul].decode()
    except UnicodeDecodeError:
        raise einval("string attribute is not valid UTF-8") from None


def encode_nul_string(value: str, maxlen: int) -> bytes:
    raw = value.encode()
    if len(raw) > maxlen:
        raise NetlinkError(errno.ERANGE, f"string {value!r} is longer than {maxlen} bytes")
    if b"\0" in raw:
        raise einval("string contains a NUL byte")
    return raw + b"\0"


_TUPLE_CLASSES: dict[int, Any] = {}
_namedtuple: Any = namedtuple  # called with computed names: mypy cannot type it anyway


def struct_fields(struct_con: Any) -> list[str]:
    """Named fields of a construct Struct, in order (padding excluded)."""
    return [sub.name for sub in struct_con.subcons if getattr(sub, "name", None)]


def tuple_class(struct_con: Any) -> Any:
    """The namedtuple class a construct Struct decodes to (one per Struct object)."""
    cls: Any = _TUPLE_CLASSES.get(id(struct_con))
    if cls is None:
        name = getattr(struct_con, "struct_name", None) or "Struct"
        cls = _namedtuple(name, struct_fields(struct_con))
        cls.__construct__ = struct_con
        _TUPLE_CLASSES[id(struct_con)] = cls
    return cls


def named_struct(name: str, *subcons: Any) -> Any:
    """A construct Struct with a name for its namedtuple (``OvsKeyIpv4`` and so on)."""
    con = cs.Struct(*subcons)
    con.struct_name = name
    tuple_class(con)
    return con


def to_plain(subcon: Any, value: Any) -> Any:
    """Turn what construct parsed into the codec's value types (namedtuples, tuples)."""
    if isinstance(subcon, cs.Renamed):
        return to_plain(subcon.subcon, value)
    if isinstance(subcon, cs.Struct):
        cls = tuple_class(subcon)
        return cls(*(value[f] for f in cls._fields))
    if isinstance(subcon, cs.GreedyRange):
        return tuple(to_plain(subcon.subcon, v) for v in value)
    if isinstance(subcon, Masked):
        return (to_plain(subcon.subcon, value[0]), to_plain(subcon.subcon, value[1]))
    if isinstance(value, cs.ListContainer):
        return list(value)
    return value


def from_plain(subcon: Any, value: Any) -> Any:
    """The reverse of :func:`to_plain`, for building with construct."""
    if isinstance(subcon, cs.Renamed):
        return from_plain(subcon.subcon, value)
    if isinstance(subcon, cs.Struct):
        return dict(zip(struct_fields(subcon), value, strict=True))
    if isinstance(subcon, cs.GreedyRange):
        return [from_plain(subcon.subcon, v) for v in value]
    if isinstance(subcon, Masked):
        return (from_plain(subcon.subcon, value[0]), from_plain(subcon.subcon, value[1]))
    return value


def masked_space(name: str, base: str) -> None:
    """Declare ``name`` as the masked twin of space ``base`` (each attribute value‖mask)."""
    src = SPACES[base]
    fields = {}
    for number, (fname, subcon) in src.fields.items():
        if isinstance(subcon, Nested):
            inner = f"{subcon.space_name}_masked"
            if inner != name and inner not in SPACES:
                masked_space(inner, subcon.space_name)
            masked: Any = Nested(inner)
        elif isinstance(subcon, (Pad, NlFlag, NestedList)):
            masked = subcon
        elif isinstance(subcon, ByLength):
            fields[number] = ByLength(
                *(
                    alt_name / (alt if isinstance(alt, NlFlag) else Masked(alt))
                    for alt_name, alt in subcon.alternatives.values()
                )
            )
            continue
        else:
            masked = Masked(subcon)
        fields[number] = fname / masked
    AttributeSpace(name, fields, kind=src.kind)
