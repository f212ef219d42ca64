"""Shape codecs (:mod:`ovsdp.netlink.shapes`) against the generic codec they stand in for.

A shape codec is generated for one layout and must give exactly the generic codec's result, or
give up so that the generic codec runs.  For every space, with values drawn from the schema
(the strategies of test_codec_roundtrip):

* decode: the shape of a value's bytes decodes them (at any offset of a larger buffer) to what
  the generic decoder returns, with the same types throughout; the same shape on mutated bytes
  (headers kept: the shape runs; anything mutated: it may give up) never disagrees, and through
  the cache a mutant is accepted or refused exactly as the generic decoder does (errno, offset,
  reason);
* encode: the shape for a value's keys encodes it, and other values with the same keys, to the
  generic encoder's bytes; values with bad parts (wrong types, sizes, ranges) anywhere in the
  tree are accepted or refused exactly as by the generic encoder;
* whole messages through decode_record/encode_genl once shapes are learned, the nesting-depth
  limit, learning, the bounds of the caches and the compile budget.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_codec_malformed import mutate, mutation
from test_codec_roundtrip import (
    FAMILIES,
    family_ids,
    fast_codec,
    genl_messages,
    space_strategy,
    value_strategy,
)

from ovsdp.netlink import codec, shapes
from ovsdp.netlink.codec import CODECS, MAX_NEST_DEPTH, MISS
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import decode_record, encode_genl
from ovsdp.netlink.nla import SPACES, Nested
from ovsdp.netlink.structs import OvsKeyEthernet, OvsKeyIpv4, OvsKeyPorts

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = sorted(SPACES)


def forget_shapes() -> None:
    """Empty every cache (shapes other tests or examples taught must not decide anything)."""
    for fs in CODECS.values():
        fs.clear_shapes()


@pytest.fixture(autouse=True)
def _no_learned_shapes() -> Iterator[None]:
    # and no compile budget: what these tests compile must not depend on what ran before
    # (test_compile_budget_is_respected puts one back)
    free = shapes.COMPILE_FREE
    shapes.COMPILE_FREE = 1e9
    forget_shapes()
    yield
    forget_shapes()
    shapes.COMPILE_FREE = free


# --- helpers ------------------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """``value`` with the type of every part made explicit (== alone ignores namedtuple vs tuple
    and list vs tuple)."""
    if isinstance(value, dict):
        return ("dict", tuple((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(typed(v) for v in value))
    if isinstance(value, tuple):
        return (type(value).__name__, tuple(typed(v) for v in value))
    return (type(value).__name__, value)


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a codec call does: ("ok", typed result) or ("refused", errno, offset, reason)."""
    try:
        return ("ok", typed(fn(*args, **kwargs)))
    except NetlinkError as exc:
        return ("refused", exc.errno, exc.offset, exc.reason)


def keys_of(space: Any, value: Any) -> tuple[Any, ...]:
    return tuple(name for name, _ in value) if space.is_seq else tuple(value)


def header_positions(space: Any, raw: bytes, start: int, end: int) -> set[int]:
    """Offsets of every attribute header byte of a valid nest, nested ones included."""
    out: set[int] = set()
    off = start
    while off < end:
        alen, atype = struct.unpack_from("=HH", raw, off)
        out.update(range(off, off + 4))
        field = space.schema.fields.get(atype & 0x3FFF)
        if field is not None and isinstance(field[1], Nested):
            out |= header_positions(CODECS[field[1].space_name], raw, off + 4, off + alen)
        off += (alen + 3) & ~3
    return out


def too_big(fast: Any, raw: bytes) -> bool:
    """More attributes than a shape takes (the generator refuses such layouts)."""
    return len(header_positions(fast, raw, 0, len(raw))) // 4 > shapes.MAX_ATTRS


def same_keys_value(space: Any, value: Any, data: st.DataObject) -> Any:
    """Another value with the keys of ``value`` (each attribute's value drawn afresh)."""

    def draw(name: Any, old: Any) -> Any:
        if not isinstance(name, str):
            return data.draw(st.binary(max_size=12))
        con = space.schema.constructs[name]
        return data.draw(value_strategy(con, 2))

    if space.is_seq:
        return [(name, draw(name, v)) for name, v in value]
    return {name: draw(name, v) for name, v in value.items()}


# --- decode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_decode_shape_agrees_with_generic(name: str, data: st.DataObject) -> None:
    forget_shapes()  # per example: hypothesis runs many in one test
    fast = fast_codec(name)
    value = data.draw(space_strategy(name), label=name)
    raw = fast.encode_generic(value)
    shape = shapes.compile_decoder(fast, raw)
    if len(raw) < 4 or too_big(fast, raw):
        assert shape is None  # an empty nest has no layout to learn
        return
    assert shape is not None
    expect = typed(fast.decode_generic(raw))
    assert typed(shape(raw, 0, 0)) == expect
    # anywhere in a larger buffer
    pre, post = data.draw(st.binary(max_size=9)), data.draw(st.binary(max_size=9))
    buf = pre + raw + post
    assert typed(shape(buf, len(pre), 0)) == expect
    assert shapes.install_decoder(fast, buf, len(pre), len(pre) + len(raw))  # an offset
    assert typed(fast.decode(buf, len(pre), len(pre) + len(raw))) == expect


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_decode_shape_on_payload_mutants(name: str, data: st.DataObject) -> None:
    # headers kept, payload bytes changed: the shape runs, and must agree or give up
    forget_shapes()  # per example: hypothesis runs many in one test
    fast = fast_codec(name)
    raw = fast.encode_generic(data.draw(space_strategy(name), label=name))
    if len(raw) < 4 or too_big(fast, raw):
        return
    shape = shapes.compile_decoder(fast, raw)
    assert shape is not None
    free = sorted(set(range(len(raw))) - header_positions(fast, raw, 0, len(raw)))
    mutant = bytearray(raw)
    if free:
        for at in data.draw(st.lists(st.sampled_from(free), max_size=6)):
            mutant[at] = data.draw(st.integers(0, 255))
    generic = outcome(fast.decode_generic, bytes(mutant))
    try:
        result = shape(bytes(mutant), 0, 0)
    except Exception:  # a payload decoder refused: the generic decoder must refuse too
        assert generic[0] == "refused"
    else:
        assert result is not MISS  # same headers: the layout matches
        assert generic == ("ok", typed(result))
    assert shapes.install_decoder(fast, raw)
    assert outcome(fast.decode, bytes(mutant)) == generic


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data(), mutations=st.lists(mutation, min_size=1, max_size=3))
def test_decode_shape_on_any_mutants(
    name: str, data: st.DataObject, mutations: list[tuple[str, int, int]]
) -> None:
    forget_shapes()  # per example: hypothesis runs many in one test
    fast = fast_codec(name)
    raw = fast.encode_generic(data.draw(space_strategy(name), label=name))
    if len(raw) < 4 or too_big(fast, raw):
        return
    assert shapes.install_decoder(fast, raw)
    mutant = mutate(raw, mutations)
    if data.draw(st.booleans(), label="keep the length"):
        mutant = (mutant + bytes(len(raw)))[: len(raw)]  # the same cache key, more often
    assert outcome(fast.decode, mutant) == outcome(fast.decode_generic, mutant)
    (shape,) = next(iter(fast.dshapes.values()))
    if len(mutant) >= len(raw):
        try:
            result = shape(mutant, 0, 0)
        except Exception:
            return
        if result is not MISS:
            assert outcome(fast.decode_generic, mutant, 0, len(raw)) == ("ok", typed(result))


def test_decode_shape_is_used() -> None:
    fast = CODECS["ovs_flow"]
    value = {"key": {"in_port": 1, "ethertype": 0x800}, "actions": [("output", 2)]}
    raw = fast.encode_generic(value)
    assert shapes.install_decoder(fast, raw)
    with mock.patch.object(codec, "_decode_attrs", side_effect=AssertionError("generic ran")):
        assert fast.decode(raw) == value
    other = raw[:-4] + struct.pack("<I", 7)  # another output port, same layout
    with mock.patch.object(codec, "_decode_attrs", side_effect=AssertionError("generic ran")):
        assert fast.decode(other)["actions"] == [("output", 7)]


def _encap_chain(nests: int) -> dict[str, Any]:
    key: dict[str, Any] = {"in_port": 1}
    for _ in range(nests - 1):
        key = {"encap": key}
    return {"key": key}


@pytest.mark.parametrize("nests", [1, 2, 5, MAX_NEST_DEPTH])
def test_depth_limit_is_the_generic_one(nests: int) -> None:
    # a shape learned at depth 0 used deeper: the generic decoder's limit, errno and offset
    fast = CODECS["ovs_flow"]
    raw = fast.encode_generic(_encap_chain(nests))
    assert shapes.install_decoder(fast, raw)
    for depth in range(MAX_NEST_DEPTH - nests - 2, MAX_NEST_DEPTH + 2):
        assert outcome(fast.decode, raw, 0, None, depth) == outcome(
            fast.decode_generic, raw, 0, None, depth
        ), depth


def test_truncated_buffer_is_the_generic_error() -> None:
    # an end past the buffer (a header read fails): the same EINVAL and offset
    fast = CODECS["ovs_flow"]
    value = {"key": {"in_port": 1, "ethernet": OvsKeyEthernet(bytes(6), bytes(6))}}
    raw = fast.encode_generic(value)
    assert shapes.install_decoder(fast, raw)
    for cut in range(1, len(raw)):
        short = raw[:-cut]
        got = outcome(fast.decode, short, 0, len(raw))
        assert got == outcome(fast.decode_generic, short, 0, len(raw))
        assert got[:2] == ("refused", errno.EINVAL)


# --- encode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_encode_shape_agrees_with_generic(name: str, data: st.DataObject) -> None:
    forget_shapes()  # per example: hypothesis runs many in one test
    fast = fast_codec(name)
    value = data.draw(space_strategy(name), label=name)
    key = keys_of(fast, value)
    shape = shapes.compile_encoder(fast, key)
    if not all(isinstance(k, str) for k in key):
        assert shape is None  # raw attributes by number stay generic
        return
    assert shape is not None
    assert shape(value) == fast.encode_generic(value)
    other = same_keys_value(fast, value, data)
    assert shape(other) == fast.encode_generic(other)
    assert shapes.install_encoder(fast, value)
    assert fast.encode(other) == fast.encode_generic(other)


BAD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.binary(max_size=20),
    st.lists(st.integers(-2, 300), max_size=4),
    st.lists(st.binary(max_size=7), max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["in_port", "output", "x", 0, 1]), st.integers(0, 9)),
)


def _slots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a value tree a part can be replaced at (dict entries, pair values,
    tuple fields)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, ("d", k))
            yield from _slots(v, (*path, ("d", k)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, tuple) and len(item) == 2:
                yield (*path, ("s", i))
                yield from _slots(item[1], (*path, ("s", i)))
    elif isinstance(value, tuple):
        for i in range(len(value)):
            yield (*path, ("t", i))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    (kind, where), rest = path[0], path[1:]
    if kind == "d":
        return {**value, where: _replace(value[where], rest, new)}
    if kind == "s":
        out = list(value)
        name, inner = out[where]
        out[where] = (name, _replace(inner, rest, new))
        return out
    parts = list(value)
    parts[where] = _replace(parts[where], rest, new)
    return type(value)(*parts) if hasattr(value, "_fields") else tuple(parts)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_encode_shape_on_bad_values(name: str, data: st.DataObject) -> None:
    forget_shapes()  # per example: hypothesis runs many in one test
    fast = fast_codec(name)
    value = data.draw(space_strategy(name), label=name)
    key = keys_of(fast, value)
    if not all(isinstance(k, str) for k in key):
        return
    shape = shapes.compile_encoder(fast, key)
    assert shape is not None
    slots = list(_slots(value))
    bad = value
    for path in data.draw(st.lists(st.sampled_from(slots), max_size=2)) if slots else []:
        try:
            bad = _replace(bad, path, data.draw(BAD, label=f"at {path}"))
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # an earlier replacement removed the place
    # nested spaces' shapes too, learned from the intact value
    for _ in range(codec.SHAPE_AFTER):
        fast.encode(value)
    generic = outcome(fast.encode_generic, bad)
    try:
        result = shape(bad)
    except Exception:
        pass
    else:
        assert generic == ("ok", typed(result))  # a shape never accepts what generic refuses
    assert outcome(fast.encode, bad) == generic


def test_encode_shape_is_used() -> None:
    fast = CODECS["ovs_key"]
    value = {"in_port": 1, "ipv4": OvsKeyIpv4(1, 2, 6, 0, 64, 0), "tcp": OvsKeyPorts(1, 2)}
    expect = fast.encode_generic(value)
    assert shapes.install_encoder(fast, value)
    with mock.patch.object(codec, "_encode_into", side_effect=AssertionError("generic ran")):
        assert fast.encode(value) == expect


def test_seq_shape_checks_the_names_it_unpacks() -> None:
    # an item whose first element (what the cache key saw) is not what unpacking gives
    fast = CODECS["ovs_action"]
    assert shapes.install_encoder(fast, [("output", 1)])
    tricky: list[Any] = [{0: "output", 1: 5}]  # itemgetter(0) says "output"; unpacking 0, 1
    assert outcome(fast.encode, tricky) == outcome(fast.encode_generic, tricky)
    assert outcome(fast.encode, tricky)[:2] == ("refused", errno.EINVAL)


# --- whole messages, learning, bounds ------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@SETTINGS
@given(data=st.data())
def test_messages_through_learned_shapes(family: Any, data: st.DataObject) -> None:
    forget_shapes()
    family_id = data.draw(family_ids, label="family id")
    msg = data.draw(genl_messages(family, family_id), label="message")
    families = {family_id: family}
    raw = encode_genl(msg, family)
    for _ in range(codec.SHAPE_AFTER + 2):  # learned on the way, used at the end
        assert encode_genl(msg, family) == raw
        assert decode_record(raw, families) == [msg]
    fast = CODECS[family.space]
    assert typed(fast.decode(raw, 20 + family.hdrsize)) == typed(msg.attrs)


def test_layouts_are_learned_after_a_few_sightings() -> None:
    fast = CODECS["ovs_flow"]
    value = {"key": {"in_port": 1}, "ufid": bytes(16)}
    raw = fast.encode_generic(value)
    for _ in range(codec.SHAPE_AFTER - 1):
        assert fast.decode(raw) == value
        fast.encode(value)
    assert not fast.dshapes and not fast.eshapes
    assert fast.decode(raw) == value
    assert fast.encode(value) == raw
    assert len(fast.dshapes) == 1 and len(fast.eshapes) == 1


def test_shapes_can_be_turned_off() -> None:
    fast = CODECS["ovs_flow"]
    raw = fast.encode({"key": {"in_port": 1}})
    shapes.set_enabled(False)
    try:
        for _ in range(10):
            fast.decode(raw)
            fast.encode({"key": {"in_port": 1}})
        assert not fast.dshapes and not fast.eshapes
        assert not fast.dseen and not fast.eseen  # no bookkeeping either
        assert fast.decode(raw) == fast.decode_generic(raw)
    finally:
        shapes.set_enabled(True)
    assert codec.SHAPES


def test_compile_budget_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes, "COMPILE_FREE", -1.0)
    monkeypatch.setattr(shapes, "COMPILE_SHARE", 0.0)
    fast = CODECS["ovs_flow"]
    value = {"key": {"in_port": 1}}
    raw = fast.encode(value)
    for _ in range(3 * codec.SHAPE_AFTER):
        assert fast.decode(raw) == value
        assert fast.encode(value) == raw
    assert not fast.dshapes and not fast.eshapes


def test_caches_are_bounded() -> None:
    fast = CODECS["ovs_key"]
    for port in range(shapes.MAX_SHAPES + 10):
        # a different length each time: a new key each time
        raw = fast.encode_generic({"in_port": 1, 1000: bytes(4 * port)})
        assert shapes.install_decoder(fast, raw)
    assert len(fast.dshapes) == shapes.MAX_SHAPES
    # one key (length and first header), many layouts: the variants are bounded
    for atype in range(shapes.MAX_VARIANTS + 3):
        raw = fast.encode_generic({"in_port": 1, 2000 + atype: b""})
        assert shapes.install_decoder(fast, raw)
    assert max(len(v) for v in fast.dshapes.values()) == shapes.MAX_VARIANTS
    assert len(fast.dshapes) == shapes.MAX_SHAPES
    # and every remaining variant still decodes its own layout
    raw = fast.encode_generic({"in_port": 1, 2000 + shapes.MAX_VARIANTS + 2: b""})
    assert fast.decode(raw) == fast.decode_generic(raw)


def test_sighting_counts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # layouts that never recur (here: ever longer raw attributes) must not pile up
    monkeypatch.setattr(codec, "SEEN_LIMIT", 50)
    flow, key = CODECS["ovs_flow"], CODECS["ovs_key"]
    for n in range(200):
        value = {"key": {"in_port": 1, 1000: bytes(4 * n)}}
        raw = flow.encode_generic(value)
        assert flow.decode(raw) == value
        assert key.encode(value["key"]) == key.encode_generic(value["key"])
    assert 0 < len(flow.dseen) <= 50 and 0 < len(key.dseen) <= 50
    # (encode keys are the attribute names: these values all share one)
    assert len(key.eseen) == 1


def test_too_many_attributes_stay_generic() -> None:
    fast = CODECS["ovs_action"]
    many = [("output", i) for i in range(shapes.MAX_ATTRS + 1)]
    raw = fast.encode_generic(many)
    assert shapes.compile_decoder(fast, raw) is None
    assert shapes.compile_encoder(fast, keys_of(fast, many)) is None
    for _ in range(codec.SHAPE_AFTER + 1):
        assert fast.decode(raw) == many
        assert fast.encode(many) == raw


def test_bench_message_shapes() -> None:
    # the benchmark's message: all of it inline in one decode shape
    fast = CODECS["ovs_flow"]
    eth = OvsKeyEthernet(bytes(6), bytes(6))
    key = {"in_port": 1, "ethernet": eth, "ethertype": 0x800, "tcp_flags": 2}
    value = {"key": key, "mask": key, "actions": [("output", 2)]}
    raw = fast.encode_generic(value)
    shape = shapes.compile_decoder(fast, raw)
    assert shape is not None
    assert shape(raw, 0, 0) == value
    assert shape(raw[:-4] + bytes(4), 0, 0) == {**value, "actions": [("output", 0)]}
    assert shape(bytes(len(raw)), 0, 0) is MISS
