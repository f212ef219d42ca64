"""Fast attribute codecs compiled from the construct schemas.

Construct interprets its object graph for every field of every message, which costs ~0.5 ms per
flow message.  This module walks the same objects once, at import time, and derives for every
attribute a decoder (a precompiled :class:`struct.Struct` plus the namedtuple class of its Struct)
and an encoder that emits header, payload and padding in a single ``pack`` call where the payload
allows it.  The schema stays the single source of truth; nothing here repeats a number or layout.

This is the *generic* codec: one loop over any attribute stream.  Each :class:`FastSpace` also
counts the layouts it sees and dispatches recurring ones to shape codecs generated for exactly
that layout (:mod:`ovsdp.netlink.shapes`), which give the same results or hand back to the loop.

Use :data:`CODECS` (space name -> :class:`FastSpace`) or :func:`space`.
"""

from __future__ import annotations

import errno
import operator
import struct
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import construct as cs

from . import schema as _schema  # noqa: F401  (registers every space)
from .constants import NLA_TYPE_MASK
from .errors import NetlinkError, einval
from .nla import (
    SPACES,
    AttributeSpace,
    ByLength,
    Masked,
    Nested,
    NestedList,
    NlFlag,
    NulString,
    Pad,
    decode_nul_string,
    encode_nul_string,
    tuple_class,
)

MAX_NEST_DEPTH = 40
"""Attribute nests deeper than this are refused (EINVAL), whatever the space."""

_NLA_HDR = struct.Struct("=HH")
_unpack_hdr = _NLA_HDR.unpack_from
_pack_hdr = _NLA_HDR.pack
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_tuple_new = tuple.__new__

# kinds FastSpace.decode handles inline (without a call per attribute)
_K_CALL = 0
_K_SCALAR = 1
_K_STRUCT = 2
_K_NESTED = 3
_K_FLAG = 4
# kinds FastSpace.encode handles inline
_E_CALL = 0
_E_SCALAR = 1
_E_STRUCT = 2
_E_NESTED = 3

Decoder = Callable[[Any, int, int, int], Any]
Encoder = Callable[[Any], bytes]


class Keyed:
    """What a decoder returns when it also decides the attribute's name (a ByLength attribute);
    the instance :data:`SKIP` means "no value" (a PAD attribute)."""

    __slots__ = ("key", "others", "value")

    def __init__(self, key: Any, value: Any, others: tuple[str, ...] = ()) -> None:
        self.key = key
        self.value = value
        self.others = others  # the other names of the same attribute number


SKIP = Keyed(None, None)


class PayloadCodec:
    """How one attribute's payload is read and written, plus a whole-attribute fast encoder."""

    __slots__ = ("decode", "encode", "encode_attr", "inline", "size")

    def __init__(
        self,
        decode: Decoder,
        encode: Encoder,
        size: int | None = None,
        encode_attr: Callable[[int], tuple[Any, ...]] | None = None,
        inline: tuple[Any, ...] | None = None,
    ) -> None:
        self.decode = decode
        self.encode = encode
        self.size = size  # fixed payload size, when there is one
        # factory: attribute type -> encode spec (kind, ...) of the whole attribute
        self.encode_attr = encode_attr
        # (kind, a, b): lets FastSpace.decode handle the common kinds without a call
        self.inline = inline


def _bytes_value(value: Any) -> bytes:
    """A raw payload: only bytes-like values (``bytes(5)`` would silently be five NULs)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{value!r} is not a byte string")
    return bytes(value)


def _swap16(value: int) -> int:
    return ((value & 0xFF) << 8) | (value >> 8)


def _fixed_struct_parts(con: Any) -> tuple[str, str]:
    """Byte order and struct format of a construct FormatField/Bytes/Padding/Struct."""
    orders: set[str] = set()
    fmt = []

    def walk(sub: Any) -> None:
        if isinstance(sub, cs.Renamed):
            walk(sub.subcon)
        elif isinstance(sub, cs.FormatField):
            order, code = sub.fmtstr[0], sub.fmtstr[1:]
            if struct.calcsize(code) > 1:
                orders.add(order)
            fmt.append(code)
        elif isinstance(sub, cs.Bytes) and isinstance(sub.length, int):
            fmt.append(f"{sub.length}s")
        elif isinstance(sub, cs.Padded) and isinstance(sub.length, int) and sub.subcon is cs.Pass:
            fmt.append(f"{sub.length}x")
        elif isinstance(sub, cs.Struct):
            for field in sub.subcons:
                walk(field)
        else:
            raise TypeError(f"cannot compile {sub!r} into a fixed struct")

    walk(con)
    if len(orders) > 1:
        return "mixed", "".join(fmt)
    return (orders.pop() if orders else "<"), "".join(fmt)


def _byte_fields(con: Any) -> list[tuple[int | None, int]]:
    """(index among the named values or None for a bare Bytes, length) of each Bytes(n)."""
    if isinstance(con, cs.Renamed):
        return _byte_fields(con.subcon)
    if isinstance(con, cs.Bytes):
        return [(None, con.length)]
    if not isinstance(con, cs.Struct):
        return []
    named = [sub for sub in con.subcons if getattr(sub, "name", None)]
    return [
        (index, sub.subcon.length)
        for index, sub in enumerate(named)
        if isinstance(sub.subcon, cs.Bytes)
    ]


def _check_byte_lengths(checks: list[tuple[int | None, int]], where: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        for index, length in checks:
            field = value if index is None else value[index]
            if len(field) != length:
                raise einval(f"{where}: {field!r} is not {length} bytes")

    return check


def _checked_attr_encoder(
    pack: Any, h_len: int, h_type: int, checks: list[tuple[int | None, int]], where: str
) -> Encoder:
    """Header + payload in one pack, after checking the byte strings' lengths (a hot path for
    ethernet keys: the common shapes are spelled out; len() of a non-string raises TypeError)."""
    if checks[0][0] is None:
        (_, n) = checks[0]

        def bare(value: Any) -> bytes:
            if len(value) != n:
                raise einval(f"{where}: {value!r} is not {n} bytes")
            return pack(h_len, h_type, value)

        return bare
    if len(checks) == 2:
        (i, n), (j, m) = checks

        def two(value: Any) -> bytes:
            if len(value[i]) != n or len(value[j]) != m:
                raise einval(f"{where}: a byte string of {value!r} has the wrong length")
            return pack(h_len, h_type, *value)

        return two
    check = _check_byte_lengths(checks, where)

    def other(value: Any) -> bytes:
        check(value)
        return pack(h_len, h_type, *value)

    return other


def _compile_fixed(con: Any, where: str) -> PayloadCodec:
    """A fixed-size payload: integer, byte string of fixed length, or a Struct of those."""
    order, fmt = _fixed_struct_parts(con)
    is_struct = isinstance(con, cs.Struct)
    if order == "mixed":
        return _compile_mixed_struct(con, where)
    byte_fields = _byte_fields(con)
    st = struct.Struct(order + fmt)
    size = st.size
    unpack = st.unpack_from
    pack = st.pack

    if is_struct:
        cls = tuple_class(con)

        def decode(buf: Any, s: int, e: int, depth: int) -> Any:
            if e - s != size:
                raise einval(f"{where}: expected {size} bytes, got {e - s}", s - 4)
            return _tuple_new(cls, unpack(buf, s))

        def encode(value: Any) -> bytes:
            return pack(*value)

    else:

        def decode(buf: Any, s: int, e: int, depth: int) -> Any:
            if e - s != size:
                raise einval(f"{where}: expected {size} bytes, got {e - s}", s - 4)
            return unpack(buf, s)[0]

        def encode(value: Any) -> bytes:
            return pack(value)

    alen = 4 + size
    pad = -alen & 3
    # One pack for header, payload and padding: in a big-endian format the header's (host
    # order) length and type are stored byte-swapped so they come out in host order.
    big = order in (">", "!") and struct.pack("=H", 1) == b"\x01\x00"
    attr_st = struct.Struct(order + "HH" + fmt + (f"{pad}x" if pad else ""))
    attr_pack = attr_st.pack

    def encode_attr(atype: int) -> tuple[Any, ...]:
        h_len, h_type = (_swap16(alen), _swap16(atype)) if big else (alen, atype)
        if byte_fields:
            # struct packs a byte string of the wrong length silently: check them first
            checked = _checked_attr_encoder(attr_pack, h_len, h_type, byte_fields, where)
            return (_E_CALL, checked, None, None, None)
        return (_E_STRUCT if is_struct else _E_SCALAR, attr_pack, h_len, h_type, attr_st.size)

    if byte_fields:
        check_payload = _check_byte_lengths(byte_fields, where)
        unchecked = encode

        def encode(value: Any) -> bytes:
            check_payload(value)
            return unchecked(value)

    inline = (_K_STRUCT, size, unpack, cls) if is_struct else (_K_SCALAR, size, unpack, None)
    return PayloadCodec(decode, encode, size, encode_attr, inline)


def _compile_mixed_struct(con: Any, where: str) -> PayloadCodec:
    """A Struct whose fields disagree on byte order: one Struct per field (rare, cold)."""
    fields: list[tuple[bool, struct.Struct]] = []  # (named?, codec)
    for sub in con.subcons:
        named = bool(getattr(sub, "name", None))
        order, fmt = _fixed_struct_parts(sub)
        fields.append((named, struct.Struct(order + fmt)))
    size = sum(st.size for _, st in fields)
    make = tuple_class(con)._make
    n_named = sum(named for named, _ in fields)
    check_bytes = _check_byte_lengths(_byte_fields(con), where)

    def decode(buf: Any, s: int, e: int, depth: int) -> Any:
        if e - s != size:
            raise einval(f"{where}: expected {size} bytes, got {e - s}", s - 4)
        values = []
        off = s
        for named, st in fields:
            if named:
                values.append(st.unpack_from(buf, off)[0])
            off += st.size
        return make(values)

    def encode(value: Any) -> bytes:
        values = tuple(value)
        if len(values) != n_named:  # as strict as the interpreter (zip(..., strict=True))
            raise ValueError(f"{where}: {len(values)} values for {n_named} fields")
        check_bytes(values)
        it = iter(values)
        return b"".join(st.pack(next(it)) if named else st.pack() for named, st in fields)

    return PayloadCodec(decode, encode, size)


def _compile_tail_struct(con: Any, where: str) -> PayloadCodec:
    """A Struct of fixed fields followed by a GreedyBytes tail (ovs_action_push_tnl's header):
    at least the prefix's size; the tail is whatever follows."""
    prefix = cs.Struct(*con.subcons[:-1])
    order, fmt = _fixed_struct_parts(prefix)
    if order == "mixed":
        raise TypeError(f"{where}: a greedy-tail struct needs one byte order")
    st = struct.Struct(order + fmt)
    size = st.size
    unpack = st.unpack_from
    pack = st.pack
    cls = tuple_class(con)
    n_named = len(cls._fields)
    check_bytes = _check_byte_lengths(_byte_fields(prefix), where)

    def decode(buf: Any, s: int, e: int, depth: int) -> Any:
        if e - s < size:
            raise einval(f"{where}: expected at least {size} bytes, got {e - s}", s - 4)
        return _tuple_new(cls, (*unpack(buf, s), bytes(buf[s + size : e])))

    def encode(value: Any) -> bytes:
        values = tuple(value)
        if len(values) != n_named:
            raise ValueError(f"{where}: {len(values)} values for {n_named} fields")
        check_bytes(values)
        return pack(*values[:-1]) + _bytes_value(values[-1])

    return PayloadCodec(decode, encode)


def _is_tail_struct(con: Any) -> bool:
    """A Struct whose last field is a GreedyBytes (and no other field is)."""
    if not isinstance(con, cs.Struct) or not con.subcons:
        return False
    last = con.subcons[-1]
    return isinstance(last, cs.Renamed) and last.subcon is cs.GreedyBytes


def _compile_array(elem: Any, where: str) -> PayloadCodec:
    """GreedyRange of a fixed-size element: a tuple of ints or namedtuples."""
    order, fmt = _fixed_struct_parts(elem)
    if order == "mixed":
        raise TypeError(f"{where}: arrays of mixed-order structs are not supported")
    st = struct.Struct(order + fmt)
    size = st.size
    make = tuple_class(elem)._make if isinstance(elem, cs.Struct) else None
    single = make is None  # an array of plain integers unpacks in one call

    def decode(buf: Any, s: int, e: int, depth: int) -> Any:
        n, rem = divmod(e - s, size)
        if rem:
            raise einval(f"{where}: {e - s} bytes is not a multiple of {size}", s - 4)
        if single:
            return struct.unpack_from(f"{order}{n}{fmt}", buf, s)
        return tuple(make(st.unpack_from(buf, s + i * size)) for i in range(n))  # type: ignore[misc]

    def encode(value: Any) -> bytes:
        if single:
            return struct.pack(f"{order}{len(value)}{fmt}", *value)
        return b"".join(st.pack(*v) for v in value)

    return PayloadCodec(decode, encode)


def _compile_payload(con: Any, where: str) -> PayloadCodec:
    if isinstance(con, cs.Renamed):
        return _compile_payload(con.subcon, where)
    if isinstance(con, Nested):
        return _nested_codec(con.space_name)
    if isinstance(con, NestedList):
        return _nested_list_codec(con, where)
    if isinstance(con, Masked):
        return _masked_codec(con.subcon, where)
    if isinstance(con, NlFlag):

        def dec_flag(buf: Any, s: int, e: int, depth: int) -> bool:
            if e != s:
                raise einval(f"{where}: flag attribute carries {e - s} bytes", s - 4)
            return True

        def enc_flag(value: Any) -> bytes:
            if value is not True:
                raise einval(f"{where}: a flag attribute's value is True")
            return b""

        return PayloadCodec(dec_flag, enc_flag, 0, inline=(_K_FLAG, 0, None, None))
    if isinstance(con, NulString):
        maxlen = con.maxlen

        def dec_str(buf: Any, s: int, e: int, depth: int) -> str:
            try:
                return decode_nul_string(bytes(buf[s:e]), maxlen)
            except NetlinkError as exc:
                raise NetlinkError(exc.errno, f"{where}: {exc.reason}", s - 4) from None

        return PayloadCodec(dec_str, lambda value: encode_nul_string(value, maxlen))
    if isinstance(con, Pad):
        return PayloadCodec(lambda buf, s, e, d: SKIP, lambda value: b"")
    if con is cs.GreedyBytes:
        return PayloadCodec(lambda buf, s, e, d: bytes(buf[s:e]), _bytes_value)
    if isinstance(con, cs.GreedyRange):
        return _compile_array(con.subcon, where)
    if isinstance(con, ByLength):
        return _by_length_codec(con, where)
    if _is_tail_struct(con):
        return _compile_tail_struct(con, where)
    return _compile_fixed(con, where)


def _by_length_codec(con: ByLength, where: str) -> PayloadCodec:
    """Decoder of a ByLength attribute: the payload length picks the alternative, and the
    result says under which name it goes (a :class:`Keyed`).  Encoding is per name."""
    names = tuple(name for name, _ in con.alternatives.values())
    table = {
        size: (name, _compile_payload(alt, f"{where}.{name}").decode, names)
        for size, (name, alt) in con.alternatives.items()
    }

    def decode(buf: Any, s: int, e: int, depth: int) -> Keyed:
        alt = table.get(e - s)
        if alt is None:
            sizes = " or ".join(str(n) for n in table)
            raise einval(f"{where}: payload of {e - s} bytes, expected {sizes}", s - 4)
        name, dec, others = alt
        return Keyed(name, dec(buf, s, e, depth), others)

    def encode(value: Any) -> bytes:
        raise TypeError(f"{where} is encoded under one of its names {names}")

    return PayloadCodec(decode, encode)


def _nested_codec(space_name: str) -> PayloadCodec:
    def decode(buf: Any, s: int, e: int, depth: int) -> Any:
        return CODECS[space_name].decode(buf, s, e, depth + 1)

    def encode(value: Any) -> bytes:
        return CODECS[space_name].encode(value)

    return PayloadCodec(decode, encode, inline=(_K_NESTED, space_name, None, None))


def _nested_list_codec(con: NestedList, where: str) -> PayloadCodec:
    name = con.space_name

    def decode(buf: Any, s: int, e: int, depth: int) -> list[Any]:
        sub = CODECS[name]
        out = []
        off = s
        while off < e:
            if e - off < 4:
                raise einval(f"{where}: truncated attribute header", off)
            alen, _atype = _unpack_hdr(buf, off)
            if alen < 4 or off + alen > e:
                raise einval(f"{where}: attribute length {alen} invalid", off)
            out.append(sub.decode(buf, off + 4, off + alen, depth + 1))
            off += (alen + 3) & ~3
        return out

    def encode(value: Any) -> bytes:
        sub = CODECS[name]
        parts = []
        for index, element in enumerate(value):
            payload = sub.encode(element)
            alen = 4 + len(payload)
            if alen > 0xFFFF:
                raise NetlinkError(
                    errno.EMSGSIZE, f"{where}: element of {len(payload)} bytes is too long"
                )
            parts.append(_pack_hdr(alen, con.element_type(index)) + payload + _PAD[alen & 3])
        return b"".join(parts)

    return PayloadCodec(decode, encode)


def _masked_codec(inner_con: Any, where: str) -> PayloadCodec:
    inner = _compile_payload(inner_con, where)

    def decode(buf: Any, s: int, e: int, depth: int) -> tuple[Any, Any]:
        half, odd = divmod(e - s, 2)
        if odd:
            raise einval(f"{where}: masked attribute of odd length {e - s}", s - 4)
        return (inner.decode(buf, s, s + half, depth), inner.decode(buf, s + half, e, depth))

    def encode(value: Any) -> bytes:
        val, mask = value
        a, b = inner.encode(val), inner.encode(mask)
        if len(a) != len(b):
            raise einval(f"{where}: value and mask differ in length")
        return a + b

    size = None if inner.size is None else 2 * inner.size
    return PayloadCodec(decode, encode, size)


# what a value of the wrong type or shape raises somewhere inside an encoder
_BAD_VALUE = (struct.error, TypeError, ValueError, OverflowError, AttributeError, LookupError)

_unpack_word = struct.Struct("<I").unpack_from
_first = operator.itemgetter(0)


class FastSpace:
    """The compiled codec of one :class:`~ovsdp.netlink.nla.AttributeSpace`.

    Besides the generic codec (one loop over the attributes, :func:`_decode_attrs` and
    :func:`_encode_into`), each space keeps small caches of *shape* codecs generated for the
    message layouts it sees repeatedly (:mod:`ovsdp.netlink.shapes`); a shape codec gives the
    same result as the generic one or hands the input back to it.
    """

    __slots__ = (
        "by_name",
        "by_type",
        "dseen",
        "dshapes",
        "eseen",
        "eshapes",
        "is_seq",
        "name",
        "numbers",
        "payloads",
        "schema",
        "too_deep",
    )

    def __init__(self, schema: AttributeSpace) -> None:
        self.schema = schema
        self.name = schema.space_name
        self.too_deep: int = schema.too_deep
        self.is_seq = schema.kind == "seq"
        self.numbers = dict(schema.numbers)
        self.by_type: dict[int, tuple[Any, ...]] = {}
        self.by_name: dict[str, tuple[Any, ...]] = {}
        self.payloads: dict[int, PayloadCodec] = {}
        for atype, (fname, con) in schema.fields.items():
            where = f"{self.name}.{fname}"
            codec = _compile_payload(con, where)
            self.payloads[atype] = codec
            kind, a, b, c = codec.inline or (_K_CALL, codec.decode, None, None)
            self.by_type[atype] = (fname, kind, a, b, c)
            if isinstance(con, ByLength):
                for alt_name, alt in con.alternatives.values():
                    alt_codec = _compile_payload(alt, f"{self.name}.{alt_name}")
                    self.by_name[alt_name] = _encode_spec(self.name, alt_name, atype, alt_codec)
            else:
                self.by_name[fname] = _encode_spec(self.name, fname, atype, codec)
        # shape caches: decode key (nest length << 32 | first header word) -> variants;
        # encode key (the dict's keys, or the seq's names) -> encoder; and sighting counts
        self.dshapes: dict[int, list[Callable[..., Any]]] = {}
        self.dseen: dict[int, int] = {}
        self.eshapes: dict[tuple[Any, ...], Callable[[Any], bytes]] = {}
        self.eseen: dict[tuple[Any, ...], int] = {}

    def __repr__(self) -> str:
        return f"<FastSpace {self.name}>"

    def decode(self, buf: Any, start: int = 0, end: int | None = None, depth: int = 0) -> Any:
        """Decode the attributes in ``buf[start:end]`` (dict, or list for a seq space)."""
        if end is None:
            end = len(buf)
        if depth > MAX_NEST_DEPTH:
            raise _too_deep(self, self.name, start)
        try:
            # the shape dispatch of _decode_nest, inline: this is every message's entry point
            if end - start < 4 or not SHAPES:
                return _decode_attrs(self, buf, start, end, depth, SHAPES)
            key = (end - start) << 32 | _unpack_word(buf, start)[0]
            variants = self.dshapes.get(key)
            if variants is not None:
                for shape in variants:
                    try:
                        value = shape(buf, start, depth)
                    except Exception:  # the generic decoder says what is wrong
                        value = FAILED
                    if value.__class__ is not _Miss:
                        return value
                    if value is FAILED:
                        return _decode_attrs(self, buf, start, end, depth, False)
            return _decode_miss(self, buf, start, end, depth, key)
        except struct.error:
            self._truncated(buf, start, end, depth)

    def decode_generic(
        self, buf: Any, start: int = 0, end: int | None = None, depth: int = 0
    ) -> Any:
        """:meth:`decode` without shape codecs (the reference the shapes are tested against)."""
        if end is None:
            end = len(buf)
        if depth > MAX_NEST_DEPTH:
            raise _too_deep(self, self.name, start)
        try:
            return _decode_attrs(self, buf, start, end, depth, False)
        except struct.error:
            self._truncated(buf, start, end, depth)

    def _truncated(self, buf: Any, start: int, end: int, depth: int) -> NoReturn:
        # Only reading a header that runs past the end of ``buf`` fails with struct.error.
        # Decode again with zeros behind the end: that header then fails the length check,
        # which knows its offset however deep in the nests it is.
        padded = bytes(buf[:end]).ljust(end + 4, b"\0")
        try:
            _decode_attrs(self, padded, start, end, depth, False)
        except NetlinkError as exc:
            raise einval(f"{self.name}: truncated attribute header", exc.offset) from None
        raise einval(f"{self.name}: truncated attribute header", start) from None

    def encode(self, value: Any) -> bytes:
        """Encode a dict (or a list of ``(name, value)`` for a seq space) to attribute bytes."""
        try:
            if SHAPES:
                return _encode_value(self, value)
            parts: list[bytes] = []
            _encode_into(self, value, parts, False)
            return b"".join(parts)
        except _BAD_VALUE as exc:
            raise einval(f"{self.name}: cannot encode: {exc}") from None

    def encode_generic(self, value: Any) -> bytes:
        """:meth:`encode` without shape codecs (the reference the shapes are tested against)."""
        parts: list[bytes] = []
        try:
            _encode_into(self, value, parts, False)
        except _BAD_VALUE as exc:
            raise einval(f"{self.name}: cannot encode: {exc}") from None
        return b"".join(parts)

    def clear_shapes(self) -> None:
        """Forget every shape codec and sighting of this space."""
        self.dshapes.clear()
        self.dseen.clear()
        self.eshapes.clear()
        self.eseen.clear()


def _encode_spec(space: str, fname: str, atype: int, codec: PayloadCodec) -> tuple[Any, ...]:
    """How :func:`_encode_into` writes attribute ``fname``: (kind, a, b, c, d)."""
    if codec.encode_attr is not None:
        return codec.encode_attr(atype)
    if codec.inline is not None and codec.inline[0] == _K_NESTED:
        return (_E_NESTED, codec.inline[1], atype, None, None)
    return (_E_CALL, _generic_attr_encoder(atype, codec.encode, space, fname), None, None, None)


# -- shape dispatch ----------------------------------------------------------------------------

SHAPES = True
"""Shape codecs on (see :func:`ovsdp.netlink.shapes.set_enabled`); off, every space is the
generic codec alone, without the dispatch and its bookkeeping."""
SHAPE_AFTER = 3
"""A layout is compiled into a shape codec once it has been seen this many times."""
SEEN_LIMIT = 4096
"""A space's sighting counts are forgotten when a new layout would make them more than this
(layouts that never recur must not grow them without bound)."""


def _decode_nest(space: FastSpace, buf: Any, s: int, e: int, depth: int) -> Any:
    """Decode one nest: a shape codec for its layout if there is one, else the generic loop
    (which counts the layout, and has it compiled once it recurs)."""
    if e - s < 4:
        return _decode_attrs(space, buf, s, e, depth, True)
    key = (e - s) << 32 | _unpack_word(buf, s)[0]
    variants = space.dshapes.get(key)
    if variants is not None:
        for shape in variants:
            try:
                value = shape(buf, s, depth)
            except Exception:  # the generic decoder (without shapes) says what is wrong
                value = FAILED
            if value.__class__ is not _Miss:
                return value
            if value is FAILED:
                return _decode_attrs(space, buf, s, e, depth, False)
    return _decode_miss(space, buf, s, e, depth, key)


def _decode_miss(space: FastSpace, buf: Any, s: int, e: int, depth: int, key: int) -> Any:
    """The generic decoder for a nest no shape took; counts its layout."""
    value = _decode_attrs(space, buf, s, e, depth, True)
    seen = space.dseen
    count = seen.get(key, 0) + 1
    if count == 1 and len(seen) >= SEEN_LIMIT:
        seen.clear()
    seen[key] = count
    if count == SHAPE_AFTER:
        _learn_decode(space, buf, s, e, key)
    return value


def _learn_decode(space: FastSpace, buf: Any, s: int, e: int, key: int) -> None:
    from . import shapes  # the compiler is only needed once a layout recurs

    shapes.learn_decoder(space, buf, s, e, key)


def _encode_value(space: FastSpace, value: Any) -> bytes:
    """Encode one nest's attributes: a shape codec for its keys if there is one, else the
    generic loop (which counts the keys, and has them compiled once they recur)."""
    key: Any = None
    if space.is_seq:
        if type(value) is list:
            try:
                key = tuple(map(_first, value))
            except Exception:  # not pairs: the generic encoder refuses it
                key = None
    elif type(value) is dict:
        key = tuple(value)
    parts: list[bytes] = []
    if key is None:
        _encode_into(space, value, parts, True)
        return b"".join(parts)
    try:
        shape = space.eshapes.get(key)
    except TypeError:  # an unhashable name
        _encode_into(space, value, parts, True)
        return b"".join(parts)
    if shape is not None:
        try:
            return shape(value)
        except Exception:  # the generic encoder (without shapes) says what is wrong
            pass
        _encode_into(space, value, parts, False)
        return b"".join(parts)
    _encode_into(space, value, parts, True)
    seen = space.eseen
    count = seen.get(key, 0) + 1
    if count == 1 and len(seen) >= SEEN_LIMIT:
        seen.clear()
    seen[key] = count
    if count == SHAPE_AFTER:
        from . import shapes

        shapes.learn_encoder(space, key)
    return b"".join(parts)


class _Miss:
    """What a shape decoder returns when the bytes are not of its layout (MISS), and what the
    dispatch notes when one raised (FAILED)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISS = _Miss("MISS")
FAILED = _Miss("FAILED")


# -- the generic codec ---------------------------------------------------------------------------


def _encode_into(
    space: FastSpace,
    value: Any,
    parts: list[bytes],
    shaped: bool,
    _E_STRUCT: int = _E_STRUCT,
    _E_SCALAR: int = _E_SCALAR,
    _E_NESTED: int = _E_NESTED,
    _pack_hdr: Any = _pack_hdr,
) -> int:
    # Appends the attributes to ``parts`` and returns how many bytes it appended.  A nest's
    # header is patched in once its children are written (one join per message), unless it
    # goes through its space's shape dispatch (shaped, and that space has shapes).
    by_name = space.by_name
    total = 0
    items: Iterable[tuple[Any, Any]] = value if space.is_seq else value.items()
    for key, val in items:
        spec = by_name.get(key)
        if spec is None:
            if not isinstance(key, int) or not 0 <= key <= NLA_TYPE_MASK:
                raise einval(f"{space.name}: no attribute named {key!r}")
            payload = _bytes_value(val)
            alen = 4 + len(payload)
            if alen > 0xFFFF:
                raise NetlinkError(errno.EMSGSIZE, f"{space.name}: attribute {key} is too long")
            attr = _pack_hdr(alen, key) + payload + _PAD[alen & 3]
            parts.append(attr)
            total += len(attr)
            continue
        kind, a, b, c, d = spec
        if kind == _E_STRUCT:
            parts.append(a(b, c, *val))
            total += d
        elif kind == _E_SCALAR:
            parts.append(a(b, c, val))
            total += d
        elif kind == _E_NESTED:
            # a child space with shapes goes through its dispatch; one without recurses here
            # (its layouts are learned once this space's own shape calls its dispatch)
            if shaped and a.eshapes:
                nested = _encode_value(a, val)
                inner = len(nested)
                if inner > 0xFFFB:
                    raise NetlinkError(
                        errno.EMSGSIZE,
                        f"{space.name}.{key}: {inner} bytes do not fit an attribute",
                    )
                parts.append(_pack_hdr(4 + inner, b))
                parts.append(nested)
            else:
                slot = len(parts)
                parts.append(b"")
                inner = _encode_into(a, val, parts, shaped)
                if inner > 0xFFFB:
                    raise NetlinkError(
                        errno.EMSGSIZE,
                        f"{space.name}.{key}: {inner} bytes do not fit an attribute",
                    )
                parts[slot] = _pack_hdr(4 + inner, b)
            total += 4 + inner
        else:
            attr = a(val)
            parts.append(attr)
            total += len(attr)
    return total


def _decode_attrs(
    space: FastSpace,
    buf: Any,
    off: int,
    end: int,
    depth: int,
    shaped: bool,
    _unpack_hdr: Any = _unpack_hdr,
    _tuple_new: Any = _tuple_new,
    _K_STRUCT: int = _K_STRUCT,
    _K_SCALAR: int = _K_SCALAR,
    _K_NESTED: int = _K_NESTED,
    _K_FLAG: int = _K_FLAG,
    _unpack_word: Any = _unpack_word,
) -> Any:
    # The generic loop of every decode: the common kinds are handled inline, without a call.
    # Shaped, a nest goes through its space's shape dispatch; unshaped (the reference, and the
    # fallback when a shape codec raised) it recurses here directly.
    by_type = space.by_type
    seq = space.is_seq
    out: Any = [] if seq else {}
    while off < end:
        alen, atype = _unpack_hdr(buf, off)
        nxt = off + alen
        if alen < 4 or nxt > end:
            raise _bad_length(space, off, alen, end)
        field = by_type.get(atype & 0x3FFF)
        if field is None:
            key: Any = atype & 0x3FFF
            value: Any = bytes(buf[off + 4 : nxt])
        else:
            key, kind, a, b, c = field
            if kind == _K_STRUCT:
                if alen - 4 != a:
                    raise _bad_size(space, key, a, alen, off)
                value = _tuple_new(c, b(buf, off + 4))
            elif kind == _K_SCALAR:
                if alen - 4 != a:
                    raise _bad_size(space, key, a, alen, off)
                value = b(buf, off + 4)[0]
            elif kind == _K_NESTED:
                if depth >= MAX_NEST_DEPTH:
                    raise _too_deep(a, f"{space.name}.{key}", off)
                if shaped and nxt - off >= 8:
                    # _decode_nest, inline: shapes of the nested layout, else count it
                    s = off + 4
                    nest_key = (nxt - s) << 32 | _unpack_word(buf, s)[0]
                    variants = a.dshapes.get(nest_key)
                    if variants is None:
                        value = _decode_attrs(a, buf, s, nxt, depth + 1, True)
                        seen = a.dseen
                        count = seen.get(nest_key, 0) + 1
                        if count == 1 and len(seen) >= SEEN_LIMIT:
                            seen.clear()
                        seen[nest_key] = count
                        if count == SHAPE_AFTER:
                            _learn_decode(a, buf, s, nxt, nest_key)
                    else:
                        value = _decode_nest(a, buf, s, nxt, depth + 1)
                else:
                    value = _decode_attrs(a, buf, off + 4, nxt, depth + 1, shaped)
            elif kind == _K_FLAG:
                if alen != 4:
                    raise einval(
                        f"{space.name}.{key}: flag attribute carries {alen - 4} bytes", off
                    )
                value = True
            else:
                value = a(buf, off + 4, nxt, depth)
                if value.__class__ is Keyed:
                    if value is SKIP:
                        off += (alen + 3) & ~3
                        continue
                    if not seq and any(other in out for other in value.others):
                        raise einval(f"{space.name}: duplicate attribute {key}", off)
                    key, value = value.key, value.value
        if seq:
            out.append((key, value))
        elif key in out:
            raise einval(f"{space.name}: duplicate attribute {key}", off)
        else:
            out[key] = value
        off += (alen + 3) & ~3
    return out


def _too_deep(entered: FastSpace, where: str, off: int) -> NetlinkError:
    # the errno is the nested space's: EOVERFLOW for action lists (the kernel's answer), else
    # EINVAL
    return NetlinkError(
        entered.too_deep, f"{where}: attributes nested deeper than {MAX_NEST_DEPTH}", off
    )


def _bad_length(space: FastSpace, off: int, alen: int, end: int) -> NetlinkError:
    why = "is below 4" if alen < 4 else f"runs past its parent ({end - off} bytes left)"
    return einval(f"{space.name}: attribute length {alen} at offset {off} {why}", off)


def _bad_size(space: FastSpace, key: str, size: int, alen: int, off: int) -> NetlinkError:
    return einval(f"{space.name}.{key}: expected {size} bytes, got {alen - 4}", off)


def _generic_attr_encoder(atype: int, encode: Encoder, space: str, fname: str) -> Encoder:
    def encode_attr(value: Any) -> bytes:
        payload = encode(value)
        alen = 4 + len(payload)
        if alen > 0xFFFF:
            raise NetlinkError(
                errno.EMSGSIZE, f"{space}.{fname}: {len(payload)} bytes do not fit an attribute"
            )
        return _pack_hdr(alen, atype) + payload + _PAD[alen & 3]

    return encode_attr


CODECS: dict[str, FastSpace] = {}


def _link(spaces: dict[str, FastSpace]) -> None:
    """Replace nested spaces' names by their FastSpace objects in the inline decode specs."""
    for fs in spaces.values():
        for atype, (fname, kind, a, b, c) in list(fs.by_type.items()):
            if kind == _K_NESTED and isinstance(a, str):
                fs.by_type[atype] = (fname, kind, CODECS[a], b, c)
        for fname, (kind, a, b, c, d) in list(fs.by_name.items()):
            if kind == _E_NESTED and isinstance(a, str):
                fs.by_name[fname] = (kind, CODECS[a], b, c, d)


CODECS.update((name, FastSpace(sp)) for name, sp in SPACES.items())
_link(CODECS)


def space(name: str) -> FastSpace:
    """The compiled codec of the attribute space ``name``."""
    return CODECS[name]


def compile_new_spaces() -> None:
    """Compile spaces declared after import (a family added by a later module or a test)."""
    for name, sp in SPACES.items():
        if name not in CODECS or CODECS[name].schema is not sp:
            CODECS[name] = FastSpace(sp)
    _link(CODECS)
    # shape codecs may refer to a replaced space: start afresh
    for fs in CODECS.values():
        fs.clear_shapes()


def fixed_struct(con: Any) -> struct.Struct:
    """The precompiled struct.Struct of a construct Struct (for headers and hot paths)."""
    order, fmt = _fixed_struct_parts(con)
    if order == "mixed":
        raise TypeError("mixed byte order")
    return struct.Struct(order + fmt)
