"""Shape codecs: straight-line decoders and encoders generated for recurring message layouts.

The generic codec (:mod:`ovsdp.netlink.codec`) pays, per attribute, a header unpack, a table
lookup, a kind test and a payload unpack.  Real traffic repeats a few layouts (every TCP flow
key has the same attributes of the same sizes), so once a layout has been seen
:data:`~ovsdp.netlink.codec.SHAPE_AFTER` times this module generates Python source for exactly
that layout and compiles it with ``exec`` (as ``dataclasses`` does):

* **decode**, per nest *and everything nested in it*: one ``struct`` unpack in little-endian
  order reads every attribute header (as one 32-bit word each), every host-order field and every
  byte string; a second unpack in big-endian order reads the network-order fields (a Struct
  may mix both).  The header words are compared with the learned ones in one tuple comparison;
  then the dict, lists and namedtuples are built by one expression.  The cache key is the nest
  length and its first header word; a key holds up to :data:`MAX_VARIANTS` layouts.
* **encode**, per nest: keyed by the dict's keys (or a seq space's names in order).  The
  attributes' fixed parts are packed by as few ``struct`` calls as byte order allows (headers
  are constants, stored byte-swapped inside a big-endian run); nested spaces go through their
  own shape dispatch; variable payloads (byte strings, strings, arrays) are separate pieces.

Correctness rule: a shape codec either returns exactly what the generic codec returns for the
same input, or gives up (returns ``MISS``, or raises anything) and the generic codec runs
instead; errors therefore always come from the generic codec, with its errno and offset.  What
the generic decoder validates per message, a decode shape validates by comparing every header
(types, lengths, so sizes and duplicates are as learned) and by calling the generic payload
decoder for any payload whose validity depends on its content (strings, nested lists).  An
encode shape checks what the generic encoder checks: byte-string lengths, struct arity (by
unpacking), flags being ``True``, raw payloads being byte strings, nest and attribute lengths;
integer ranges are checked by ``struct`` itself, with the same format codes.

Compilation is bounded: at most :data:`MAX_SHAPES` keys per space and direction (oldest first
out), layouts of at most :data:`MAX_ATTRS` attributes, and compile time at most
:data:`COMPILE_SHARE` of the process's wall time after a :data:`COMPILE_FREE` allowance, so a
stream of ever-new layouts costs a bounded share of CPU.
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import construct as cs

from . import codec as _codec
from .codec import _E_CALL, _E_NESTED, CODECS, MAX_NEST_DEPTH, MISS, FastSpace
from .constants import NLA_TYPE_MASK
from .nla import ByLength, Masked, Nested, NlFlag, Pad, tuple_class

MAX_SHAPES = 64
"""Shape codecs kept per space and direction."""
MAX_VARIANTS = 4
"""Decode layouts kept under one (nest length, first header word) key."""
MAX_ATTRS = 128
"""Layouts with more attributes (all nests counted) are left to the generic codec."""
MAX_ARRAY = 256
"""Arrays with more elements than this are decoded by a call, not inline."""
COMPILE_FREE = 0.05
COMPILE_SHARE = 0.02

_HDR = struct.Struct("=HH")
_WORD = struct.Struct("<I")
_LITTLE = sys.byteorder == "little"
_T0 = time.perf_counter()
_spent = 0.0
_compiled = 0

Build = Callable[[list[str], Callable[[Any], str]], str]


class _NotCompilable(Exception):
    """The layout holds something the generator does not handle: stay generic."""


class Fallback(Exception):
    """Raised by an encode shape that cannot encode a value; the generic encoder then runs."""


# -- budget and caches ---------------------------------------------------------------------------


def _budget_ok() -> bool:
    return _spent <= COMPILE_FREE + COMPILE_SHARE * (time.perf_counter() - _T0)


def _timed(make: Callable[[], Any]) -> Any:
    global _spent, _compiled
    t = time.perf_counter()
    try:
        return make()
    finally:
        _spent += time.perf_counter() - t
        _compiled += 1


def learn_decoder(space: FastSpace, buf: Any, start: int, end: int, key: int) -> None:
    """Called by the dispatcher when the layout under ``key`` has recurred: compile it."""
    seen = space.dseen
    if not _budget_ok():
        seen[key] = 0  # try again after a few more sightings
        return
    shape = _timed(lambda: compile_decoder(space, buf, start, end))
    if shape is None:
        seen[key] = -(1 << 62)  # never again (until the counts are forgotten)
    else:
        seen[key] = 0  # another variant under the same key would be learned in turn
        _insert_decoder(space, key, shape)


def _insert_decoder(space: FastSpace, key: int, shape: Callable[..., Any]) -> None:
    shapes = space.dshapes
    variants = shapes.get(key)
    if variants is None:
        if len(shapes) >= MAX_SHAPES:
            del shapes[next(iter(shapes))]
        shapes[key] = [shape]
    else:
        variants.insert(0, shape)
        del variants[MAX_VARIANTS:]


def learn_encoder(space: FastSpace, key: tuple[Any, ...]) -> None:
    """Called by the dispatcher when the keys ``key`` have recurred: compile an encoder."""
    seen = space.eseen
    if not _budget_ok():
        seen[key] = 0
        return
    shape = _timed(lambda: compile_encoder(space, key))
    if shape is None:
        seen[key] = -(1 << 62)
    else:
        shapes = space.eshapes
        if len(shapes) >= MAX_SHAPES:
            del shapes[next(iter(shapes))]
        shapes[key] = shape


def install_decoder(space: FastSpace, buf: Any, start: int = 0, end: int | None = None) -> bool:
    """Compile the layout of ``buf[start:end]`` (which must decode) into ``space``'s cache now,
    whatever the thresholds and budget; returns whether it could be compiled (for tests)."""
    end = len(buf) if end is None else end
    shape = compile_decoder(space, buf, start, end)
    if shape is None:
        return False
    _insert_decoder(space, (end - start) << 32 | _WORD.unpack_from(buf, start)[0], shape)
    return True


def install_encoder(space: FastSpace, value: Any) -> bool:
    """Compile an encoder for the keys of ``value`` into ``space``'s cache now (for tests)."""
    key = tuple(name for name, _ in value) if space.is_seq else tuple(value)
    shape = compile_encoder(space, key)
    if shape is None:
        return False
    space.eshapes[key] = shape
    return True


def set_enabled(enabled: bool) -> None:
    """Turn shape codecs on or off for every space (off: the generic codec only, without the
    dispatch and its bookkeeping); either way the caches start empty."""
    _codec.SHAPES = enabled
    for fs in CODECS.values():
        fs.clear_shapes()


def stats() -> dict[str, float]:
    """How many shape codecs were compiled and the seconds spent compiling them."""
    return {"compiled": _compiled, "seconds": _spent}


# -- layouts of payloads -------------------------------------------------------------------------


def _csize(code: str) -> int:
    """Standard size of a struct code (native sizes differ: "L" is 8 bytes natively)."""
    return struct.calcsize("<" + code)


def _order(fmtstr: str) -> tuple[str, str]:
    """(order class, struct code) of a FormatField: "N" when byte order does not matter."""
    order, code = fmtstr[0], fmtstr[1:]
    if _csize(code) == 1:
        return "N", code
    if order == "<" or (order == "=" and _LITTLE):
        return "L", code
    if order in ">!" or order == "=":
        return "B", code
    raise _NotCompilable(f"byte order {order!r}")


def _flat(con: Any, length: int | None = None) -> list[tuple[str | None, int, str, str]] | None:
    """(name, offset, order class, struct code) of every field of a fixed layout, or None.

    A bare value is one field named ""; padding has no name; a Struct's GreedyBytes tail takes
    what ``length`` leaves after the fixed fields (no tail without a length: encoders treat
    such a Struct as variable).
    """
    if isinstance(con, cs.Renamed):
        con = con.subcon
    if isinstance(con, cs.FormatField):
        return [("", 0, *_order(con.fmtstr))]
    if isinstance(con, cs.Bytes) and isinstance(con.length, int):
        return [("", 0, "N", f"{con.length}s")]
    if not isinstance(con, cs.Struct):
        return None
    out: list[tuple[str | None, int, str, str]] = []
    off = 0
    last = len(con.subcons) - 1
    for index, sub in enumerate(con.subcons):
        name = getattr(sub, "name", None) or None
        inner = sub.subcon if isinstance(sub, cs.Renamed) else sub
        if isinstance(inner, cs.FormatField):
            order, code = _order(inner.fmtstr)
            size = _csize(code)
        elif isinstance(inner, cs.Bytes) and isinstance(inner.length, int):
            order, code, size = "N", f"{inner.length}s", inner.length
        elif (
            isinstance(inner, cs.Padded)
            and inner.subcon is cs.Pass
            and isinstance(inner.length, int)
            and name is None
        ):
            order, code, size = "N", f"{inner.length}x", inner.length
        elif inner is cs.GreedyBytes and name and index == last and length is not None:
            size = length - off
            if size < 0:
                return None
            order, code = "N", f"{size}s"
        else:
            return None
        out.append((name, off, order, code))
        off += size
    return out


def _size(fields: list[tuple[str | None, int, str, str]]) -> int:
    if not fields:
        return 0
    _name, off, _cls, code = fields[-1]
    return off + _csize(code)


def _tuple_display(items: list[str]) -> str:
    return "(" + "".join(f"{item}, " for item in items) + ")"


def _payload_plan(con: Any, length: int) -> tuple[list[tuple[int, str, str]], Build] | None:
    """How a decode shape reads a payload of ``length`` bytes: the fields to unpack (offset,
    order class, code) and how to build the value from their variables; None: call the
    generic payload decoder instead."""
    if isinstance(con, cs.Renamed):
        return _payload_plan(con.subcon, length)
    if isinstance(con, NlFlag):
        return ([], lambda v, k: "True") if length == 0 else None
    if con is cs.GreedyBytes:
        if length == 0:
            return [], lambda v, k: "b''"
        return [(0, "N", f"{length}s")], lambda v, k: v[0]
    if isinstance(con, Masked):
        if length % 2:
            return None
        half = length // 2
        inner = _payload_plan(con.subcon, half)
        if inner is None:
            return None
        reads, build = inner
        n = len(reads)
        both = reads + [(off + half, order, code) for off, order, code in reads]
        return both, lambda v, k: f"({build(v[:n], k)}, {build(v[n:], k)})"
    if isinstance(con, cs.GreedyRange):
        elem = _flat(con.subcon)
        if elem is None:
            return None
        size = _size(elem)
        if not size or length % size or length // size > MAX_ARRAY:
            return None
        count = length // size
        named = [(off, order, code) for name, off, order, code in elem if name is not None]
        reads = [(i * size + off, order, code) for i in range(count) for off, order, code in named]
        m = len(named)
        if isinstance(con.subcon, cs.Struct):
            cls = tuple_class(con.subcon)

            def build_structs(v: list[str], k: Callable[[Any], str]) -> str:
                return _tuple_display(
                    [
                        f"_new({k(cls)}, {_tuple_display(v[i * m : (i + 1) * m])})"
                        for i in range(count)
                    ]
                )

            return reads, build_structs
        return reads, lambda v, k: _tuple_display(v)
    fields = _flat(con, length)
    if fields is None or _size(fields) != length:
        return None
    named = [(off, order, code) for name, off, order, code in fields if name is not None]
    if isinstance(con, cs.Struct):
        cls = tuple_class(con)
        return named, lambda v, k: f"_new({k(cls)}, {_tuple_display(v)})"
    return named, lambda v, k: v[0]


# -- decode shapes -------------------------------------------------------------------------------


class _DecodeLayout:
    """Everything one decode shape reads, collected while walking a valid message."""

    def __init__(self, buf: Any, base: int) -> None:
        self.buf = buf
        self.base = base
        self.le: list[tuple[int, str, str]] = []  # (offset from base, code, variable)
        self.be: list[tuple[int, str, str]] = []
        self.headers: list[str] = []
        self.words: list[int] = []
        self.ns: dict[str, Any] = {"_new": tuple.__new__, "_MISS": MISS}
        self.names: dict[int, str] = {}
        self.count = 0
        self.attrs = 0
        self.max_level = -1  # deepest level holding a nested attribute

    def read(self, off: int, order: str, code: str) -> str:
        var = f"v{self.count}"
        self.count += 1
        (self.be if order == "B" else self.le).append((off - self.base, code, var))
        return var

    def const(self, obj: Any) -> str:
        name = self.names.get(id(obj))
        if name is None:
            name = f"_k{len(self.names)}"
            self.names[id(obj)] = name
            self.ns[name] = obj
        return name

    def nest(self, space: FastSpace, s: int, e: int, level: int) -> str:
        """The value expression of the attributes in ``buf[s:e]`` of ``space``."""
        items: list[tuple[Any, str]] = []
        off = s
        while off < e:
            alen, atype = _HDR.unpack_from(self.buf, off)
            self.headers.append(self.read(off, "L", "I"))
            self.words.append(_WORD.unpack_from(self.buf, off)[0])
            self.attrs += 1
            if self.attrs > MAX_ATTRS:
                raise _NotCompilable("too many attributes")
            number = atype & NLA_TYPE_MASK
            ps, pe = off + 4, off + alen
            expr = self.attribute(space, number, ps, pe, level)
            if expr is not None:
                items.append(expr)
            off += (alen + 3) & ~3
        if space.is_seq:
            return "[" + "".join(f"({key!r}, {x}), " for key, x in items) + "]"
        return "{" + ", ".join(f"{key!r}: {x}" for key, x in items) + "}"

    def attribute(
        self,
        space: FastSpace,
        number: int,
        ps: int,
        pe: int,
        level: int,
    ) -> tuple[Any, str] | None:
        field = space.schema.fields.get(number)
        if field is None:
            plan = _payload_plan(cs.GreedyBytes, pe - ps)
            assert plan is not None
            return number, self.inline(plan, ps)
        name, con = field
        decode: Callable[..., Any] | None = space.payloads[number].decode
        if isinstance(con, ByLength):
            name, con = con.alternatives[pe - ps]
            decode = None  # its alternatives are fixed layouts, inlined below
        if isinstance(con, Pad):
            return None
        if isinstance(con, Nested):
            self.max_level = max(self.max_level, level)
            return name, self.nest(CODECS[con.space_name], ps, pe, level + 1)
        plan = _payload_plan(con, pe - ps)
        if plan is not None:
            return name, self.inline(plan, ps)
        if decode is None:
            raise _NotCompilable(f"{space.name}.{name}")
        # content-dependent validity (strings, nested lists): the generic payload decoder
        rel_s, rel_e = ps - self.base, pe - self.base
        return name, f"{self.const(decode)}(buf, start + {rel_s}, start + {rel_e}, depth + {level})"

    def inline(self, plan: tuple[list[tuple[int, str, str]], Build], ps: int) -> str:
        reads, build = plan
        return build([self.read(ps + off, order, code) for off, order, code in reads], self.const)


def _struct_format(prefix: str, fields: list[tuple[int, str, str]]) -> str:
    out = [prefix]
    at = 0
    for off, code, _var in sorted(fields):
        if off > at:
            out.append(f"{off - at}x")
        out.append(code)
        at = off + _csize(code)
    return "".join(out)


def compile_decoder(
    space: FastSpace, buf: Any, start: int = 0, end: int | None = None
) -> Callable[[Any, int, int], Any] | None:
    """A decoder for exactly the layout of ``buf[start:end]`` (which must decode without error),
    or None when the layout is not compilable.  ``shape(buf, start, depth)`` returns the value,
    or ``MISS`` when the bytes at ``start`` have another layout."""
    end = len(buf) if end is None else end
    if end - start < 4:
        return None
    layout = _DecodeLayout(buf, start)
    try:
        expr = layout.nest(space, start, end, 0)
    except _NotCompilable:
        return None
    lines = ["def shape(buf, start, depth):"]
    le_vars = [var for _off, _code, var in sorted(layout.le)]
    layout.ns["_le"] = struct.Struct(_struct_format("<", layout.le)).unpack_from
    lines.append(f"    {', '.join(le_vars)}, = _le(buf, start)")
    if len(layout.words) == 1:
        lines.append(f"    if {layout.headers[0]} != {layout.words[0]}:")
    else:
        layout.ns["_words"] = tuple(layout.words)
        lines.append(f"    if ({', '.join(layout.headers)}) != _words:")
    lines.append("        return _MISS")
    if layout.max_level >= 0:
        # the generic decoder refuses a nest at depth MAX_NEST_DEPTH: leave that to it
        lines.append(f"    if depth >= {MAX_NEST_DEPTH - layout.max_level}:")
        lines.append("        return _MISS")
    if layout.be:
        be_vars = [var for _off, _code, var in sorted(layout.be)]
        layout.ns["_be"] = struct.Struct(_struct_format(">", layout.be)).unpack_from
        lines.append(f"    {', '.join(be_vars)}, = _be(buf, start)")
    lines.append(f"    return {expr}")
    return _exec(lines, layout.ns, f"<decode shape of {space.name}>")


def _exec(lines: list[str], ns: dict[str, Any], filename: str) -> Any:
    # The source holds only names, numbers and constants made here, never input bytes.
    exec(compile("\n".join(lines) + "\n", filename, "exec"), ns)
    return ns["shape"]


# -- encode shapes -------------------------------------------------------------------------------


def _swap32(word: int) -> int:
    return int.from_bytes(word.to_bytes(4, "little"), "big")


class _EncodeLayout:
    """The runs, pieces and checks of one encode shape, in attribute order."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"Fallback": Fallback, "_PAD": _codec._PAD}
        self.names: dict[int, str] = {}
        self.prep: list[str] = []  # statements before the packing
        self.pieces: list[str] = []  # expressions joined into the result
        self.run: list[tuple[str, str, str | int | None]] = []  # (order class, code, arg)
        self.run_order: str | None = None

    def const(self, obj: Any) -> str:
        name = self.names.get(id(obj))
        if name is None:
            name = f"_k{len(self.names)}"
            self.names[id(obj)] = name
            self.ns[name] = obj
        return name

    def add(self, order: str, code: str, arg: str | int | None) -> None:
        """One field of the current run; "H" is a constant header word (either order)."""
        if order in "LB":
            if self.run_order is None:
                self.run_order = order
            elif self.run_order != order:
                self.close()
                self.run_order = order
        self.run.append((order, code, arg))

    def close(self) -> None:
        if not self.run:
            return
        big = self.run_order == "B"
        fmt = (">" if big else "<") + "".join(code for _, code, _ in self.run)
        args = []
        for order, _code, arg in self.run:
            if arg is None:
                continue
            if order == "H":
                assert isinstance(arg, int)
                args.append(str(_swap32(arg) if big else arg))
            else:
                args.append(str(arg))
        pack = self.const(struct.Struct(fmt).pack)
        self.pieces.append(f"{pack}({', '.join(args)})")
        self.run = []
        self.run_order = None

    def variable(self, word_base: int, var: str, aligned: bool) -> None:
        """A header with the length of byte string ``var``, then the bytes (and padding)."""
        self.prep.append(f"    n_{var} = len({var})")
        self.prep.append(f"    if n_{var} > 0xFFFB:")
        self.prep.append("        raise Fallback")
        self.add("L", "I", f"n_{var} + {word_base}")
        self.close()
        self.pieces.append(var)
        if not aligned:
            self.pieces.append(f"_PAD[n_{var} & 3]")

    def attribute(self, space: FastSpace, index: int, name: str) -> None:
        arg = f"a{index}"
        number = space.numbers[name]
        con = space.schema.constructs[name]
        kind, fn, *_rest = space.by_name[name]
        word_base = 4 | number << 16  # a header word is length | type << 16 (host order)
        if isinstance(con, cs.Renamed):
            con = con.subcon
        if isinstance(con, NlFlag):
            self.prep.append(f"    if {arg} is not True:")
            self.prep.append("        raise Fallback")
            self.add("H", "I", word_base)
            return
        if kind == _E_NESTED:
            # the child space's shape dispatch, inline (a shape that raises makes this whole
            # shape fall back to the generic encoder, which is right, only slower)
            var, shape = f"x{index}", f"s{index}"
            cache = self.const(fn.eshapes)
            if fn.is_seq:
                self.prep.append(
                    f"    {shape} = {cache}.get(tuple(map(_first, {arg})))"
                    f" if type({arg}) is list else None"
                )
            else:
                self.prep.append(
                    f"    {shape} = {cache}.get(tuple({arg})) if type({arg}) is dict else None"
                )
            self.prep.append(
                f"    {var} = {shape}({arg}) if {shape} is not None"
                f" else _encode_value({self.const(fn)}, {arg})"
            )
            self.variable(word_base, var, aligned=True)  # attributes are padded to 4
            return
        if con is cs.GreedyBytes:
            var = f"x{index}"
            self.prep.append(f"    {var} = _bytes_value({arg})")
            self.variable(word_base, var, aligned=False)
            return
        fields = _flat(con)
        if fields is None:
            if kind != _E_CALL:
                raise _NotCompilable(f"{space.name}.{name}")
            # the generic attribute encoder: header, payload and padding
            var = f"x{index}"
            self.prep.append(f"    {var} = {self.const(fn)}({arg})")
            self.close()
            self.pieces.append(var)
            return
        size = _size(fields)
        self.add("H", "I", word_base + size)
        if fields[0][0] == "":  # a bare value
            _name, _off, order, code = fields[0]
            if code.endswith("s"):
                self.prep.append(f"    if len({arg}) != {code[:-1]}:")
                self.prep.append("        raise Fallback")
            self.add(order, code, arg)
        else:
            named = [f for f in fields if f[0] is not None]
            values = [f"{arg}_{i}" for i in range(len(named))]
            # byte strings first, by index, as the generic encoder checks them
            for i, (_name, _off, _order, code) in enumerate(named):
                if code.endswith("s"):
                    self.prep.append(f"    if len({arg}[{i}]) != {code[:-1]}:")
                    self.prep.append("        raise Fallback")
            self.prep.append(f"    {''.join(v + ', ' for v in values)}= {arg}")
            it = iter(values)
            for fname, _off, order, code in fields:
                self.add(order, code, None if fname is None else next(it))
        if (4 + size) & 3:
            self.add("N", f"{-(4 + size) & 3}x", None)


def compile_encoder(space: FastSpace, key: tuple[Any, ...]) -> Callable[[Any], bytes] | None:
    """An encoder for values with exactly the keys ``key`` (a set space's dict keys in order,
    or a seq space's names), or None when they are not compilable."""
    if len(key) > MAX_ATTRS or not all(type(name) is str for name in key):
        return None
    if not all(name in space.by_name for name in key):
        return None
    layout = _EncodeLayout()
    layout.ns["_encode_value"] = _codec._encode_value
    layout.ns["_bytes_value"] = _codec._bytes_value
    layout.ns["_first"] = _codec._first
    lines = ["def shape(v):"]
    args = [f"a{i}" for i in range(len(key))]
    if not key:
        lines.append("    if v:")  # the dispatcher's key says it is empty; be certain
        lines.append("        raise Fallback")
        lines.append("    return b''")
        return _exec(lines, layout.ns, f"<encode shape of {space.name}>")
    if space.is_seq:
        names = [f"n{i}" for i in range(len(key))]
        pairs = "".join(f"({n}, {a}), " for n, a in zip(names, args, strict=True))
        lines.append(f"    {pairs}= v")
        # the names as unpacked (what the generic encoder sees), not as the key was computed
        layout.ns["_names"] = key
        lines.append(f"    if {_tuple_display(names)} != _names:")
        lines.append("        raise Fallback")
    else:
        lines.append(f"    {''.join(a + ', ' for a in args)}= v.values()")
    try:
        for index, name in enumerate(key):
            layout.attribute(space, index, name)
    except _NotCompilable:
        return None
    layout.close()
    lines.extend(layout.prep)
    pieces = layout.pieces
    if len(pieces) == 1:
        lines.append(f"    return {pieces[0]}")
    elif len(pieces) <= 3:
        lines.append(f"    return {' + '.join(pieces)}")
    else:
        lines.append(f"    return b''.join({_tuple_display(pieces)})")
    return _exec(lines, layout.ns, f"<encode shape of {space.name}>")
