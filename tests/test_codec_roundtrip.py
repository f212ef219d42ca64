"""Round trips of the netlink codec, with hypothesis strategies derived from the schema.

The strategies are built by walking every :class:`~ovsdp.netlink.nla.AttributeSpace`'s ``fields``
and translating each construct into a value strategy, so a space or attribute added to the schema
is covered without touching this file (a construct type the walker does not know fails loudly).

For every space, three codecs must agree:

* the fast codec with itself: ``decode(encode(v)) == v``;
* the fast encoder with the construct interpreter: ``encode(v) == space.build(v)``;
* the construct interpreter with the fast decoder: ``space.parse(b) == decode(b)``.

Whole messages go through ``encode_genl``/``decode_record`` for every family of
:mod:`ovsdp.netlink.families`, and NLMSG_ERROR/DONE/NOOP through their encoders.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

import construct as cs
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ovsdp.netlink import families as families_module, message
from ovsdp.netlink.codec import CODECS, MAX_NEST_DEPTH, compile_new_spaces
from ovsdp.netlink.constants import NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_MULTI, NLMSG_MIN_TYPE
from ovsdp.netlink.message import (
    DoneMessage,
    ErrorMessage,
    GenlFamily,
    GenlMessage,
    NoopMessage,
    decode_record,
    encode_done,
    encode_error,
    encode_genl,
    encode_noop,
)
from ovsdp.netlink.nla import (
    SPACES,
    ByLength,
    Masked,
    Nested,
    NestedList,
    NlFlag,
    NulString,
    Pad,
    tuple_class,
)

NLA_TYPE_MAX = 0x3FFF
NEST_BOUND = 3  # how deep generated values nest (the schema is recursive)
# every family families.py declares (one added there is covered without touching this file)
FAMILIES = tuple(
    {f.name: f for f in vars(families_module).values() if isinstance(f, GenlFamily)}.values()
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies derived from construct objects -------------------------------------------------


def _int_strategy(fmtstr: str) -> st.SearchStrategy[int]:
    code = fmtstr.lstrip("<>=!@")
    bits = 8 * struct.calcsize(fmtstr)
    if code.islower():  # b h i l q: signed
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def _utf8_at_most(maxlen: int) -> st.SearchStrategy[str]:
    """Text without NUL whose UTF-8 encoding fits in ``maxlen`` bytes."""
    chars = st.characters(codec="utf-8", exclude_characters="\0")
    return st.text(chars, max_size=maxlen).map(
        lambda s: s.encode()[:maxlen].decode("utf-8", "ignore")
    )


def _fixed_size(con: Any) -> int | None:
    try:
        return int(con.sizeof())
    except (cs.SizeofError, AttributeError, KeyError):
        return None


def _same_size_pair(con: Any, depth: int) -> st.SearchStrategy[tuple[Any, Any]]:
    """(value, mask) whose encodings have the same length, for Masked(con)."""
    if isinstance(con, cs.Renamed):
        return _same_size_pair(con.subcon, depth)
    if con is cs.GreedyBytes:
        return st.integers(0, 24).flatmap(
            lambda n: st.tuples(
                st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n)
            )
        )
    if isinstance(con, cs.GreedyRange):
        elem = value_strategy(con.subcon, depth)
        return st.integers(0, 4).flatmap(
            lambda n: st.tuples(
                st.lists(elem, min_size=n, max_size=n).map(tuple),
                st.lists(elem, min_size=n, max_size=n).map(tuple),
            )
        )
    if _fixed_size(con) is not None:
        inner = value_strategy(con, depth)
        return st.tuples(inner, inner)
    raise NotImplementedError(f"no same-size (value, mask) strategy for {con!r}")


def _named(name: str, value: Any) -> dict[str, Any]:
    return {name: value}


def value_strategy(con: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy of codec values for one construct (an attribute's payload)."""
    if isinstance(con, cs.Renamed):
        return value_strategy(con.subcon, depth)
    if isinstance(con, Nested):
        return space_strategy(con.space_name, depth + 1)
    if isinstance(con, NestedList):
        return st.lists(space_strategy(con.space_name, depth + 1), max_size=3)
    if isinstance(con, Masked):
        return _same_size_pair(con.subcon, depth)
    if isinstance(con, NlFlag):
        return st.just(True)
    if isinstance(con, ByLength):
        # the value of one of the alternatives (their names are drawn by space_strategy)
        return st.one_of(*(value_strategy(alt, depth) for _, alt in con.alternatives.values()))
    if isinstance(con, NulString):
        return _utf8_at_most(con.maxlen)
    if con is cs.GreedyBytes:
        return st.binary(max_size=40)
    if isinstance(con, cs.GreedyRange):
        return st.lists(value_strategy(con.subcon, depth), max_size=6).map(tuple)
    if isinstance(con, cs.Struct):
        named = [sub for sub in con.subcons if getattr(sub, "name", None)]
        return st.builds(tuple_class(con), *(value_strategy(sub, depth) for sub in named))
    if isinstance(con, cs.FormatField):
        return _int_strategy(con.fmtstr)
    if isinstance(con, cs.Bytes) and isinstance(con.length, int):
        return st.binary(min_size=con.length, max_size=con.length)
    raise NotImplementedError(f"no strategy for {con!r}: teach value_strategy about it")


def _is_nest(con: Any) -> bool:
    if isinstance(con, cs.Renamed):
        return _is_nest(con.subcon)
    return isinstance(con, (Nested, NestedList))


_SPACE_CACHE: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def unknown_numbers(name: str) -> st.SearchStrategy[int]:
    declared = SPACES[name].fields
    return st.one_of(st.integers(0, SPACES[name].maxattr + 8), st.integers(0, NLA_TYPE_MAX)).filter(
        lambda n: n not in declared
    )


def space_strategy(name: str, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a whole attribute space: a dict (set) or a list of pairs (seq).

    PAD attributes are never generated (they are skipped when decoding); attribute numbers the
    space does not declare are generated with raw payloads (they must survive a round trip);
    nests stop at NEST_BOUND levels.
    """
    key = (name, min(depth, NEST_BOUND + 1))
    cached = _SPACE_CACHE.get(key)
    if cached is not None:
        return cached
    space = SPACES[name]
    fields = {}
    # a ByLength attribute: at most one of its names (they share one attribute number)
    choices: list[st.SearchStrategy[dict[str, Any]]] = []
    for _number, (fname, con) in sorted(space.fields.items()):
        if isinstance(con, Pad):
            continue
        if depth >= NEST_BOUND and _is_nest(con):
            continue
        if isinstance(con, ByLength):
            alts = [
                value_strategy(alt, depth).map(functools.partial(_named, alt_name))
                for alt_name, alt in con.alternatives.values()
            ]
            choices.append(st.one_of(st.just({}), *alts))
            for alt_name, alt in con.alternatives.values():
                fields[alt_name] = value_strategy(alt, depth)  # for seq spaces' items
            continue
        fields[fname] = value_strategy(con, depth)
    unknown = st.tuples(unknown_numbers(name), st.binary(max_size=12))
    strategy: st.SearchStrategy[Any]
    if space.kind == "seq":
        item = st.one_of(
            *(st.tuples(st.just(fname), strat) for fname, strat in fields.items()),
            unknown,
        )
        strategy = st.lists(item, max_size=6)
    else:
        alternative_names = {
            alt_name
            for con in (c for _, c in space.fields.values())
            if isinstance(con, ByLength)
            for alt_name, _ in con.alternatives.values()
        }
        plain = {k: v for k, v in fields.items() if k not in alternative_names}
        known = st.fixed_dictionaries({}, optional=plain)
        if choices:
            known = st.tuples(known, *choices).map(
                lambda parts: {k: v for part in parts for k, v in part.items()}
            )
        extra = st.lists(unknown, max_size=2, unique_by=lambda kv: kv[0]).map(dict)
        strategy = st.tuples(known, extra).map(lambda pair: {**pair[0], **pair[1]})
    _SPACE_CACHE[key] = strategy
    return strategy


def fast_codec(name: str) -> Any:
    # other tests in the same process may declare spaces (compiled when they register them)
    if name not in CODECS:
        compile_new_spaces()
    return CODECS[name]


def interpreted_equal_fast(name: str, value: Any) -> bytes:
    """The three-way agreement for one value of space ``name``; returns its bytes."""
    fast = fast_codec(name)
    interp = SPACES[name]
    data = fast.encode(value)
    assert fast.decode(data) == value
    assert interp.build(value) == data
    assert interp.parse(data) == fast.decode(data)
    return data


# --- the schema walker itself -----------------------------------------------------------------


def _referenced(con: Any) -> list[str]:
    if isinstance(con, cs.Renamed | Masked):
        return _referenced(con.subcon)
    if isinstance(con, Nested | NestedList):
        return [con.space_name]
    return []


def test_every_space_of_the_families_is_compiled() -> None:
    # the families' spaces and every space they nest, transitively: declared and compiled at
    # import (a Nested() naming a space that does not exist fails here)
    todo = [f.space for f in FAMILIES] + ["nlmsgerr"]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in SPACES and name in CODECS, name
        assert CODECS[name].schema is SPACES[name]
        for _fname, con in SPACES[name].fields.values():
            todo.extend(_referenced(con))
    assert {"ovs_key", "ovs_key_masked", "ovs_action", "ovs_tunnel_key"} <= seen


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_attribute_has_a_strategy(name: str) -> None:
    # building the strategy walks every construct of the space: unknown kinds raise here
    for _number, (_fname, con) in SPACES[name].fields.items():
        if not isinstance(con, Pad):
            assert value_strategy(con) is not None
    assert space_strategy(name) is not None


# --- every space: three codecs agree -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPACES))
@SETTINGS
@given(data=st.data())
def test_space_roundtrip(name: str, data: st.DataObject) -> None:
    value = data.draw(space_strategy(name), label=name)
    interpreted_equal_fast(name, value)


# every name, each alternative of a ByLength attribute included
_FIELDS = sorted(
    (space_name, fname)
    for space_name, sp in SPACES.items()
    for fname, con in sp.constructs.items()
    if not isinstance(con, Pad)
)


@pytest.mark.parametrize(("name", "fname"), _FIELDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_attribute_alone(name: str, fname: str, data: st.DataObject) -> None:
    """Every declared attribute is exercised at least this way (a space-wide draw may skip it)."""
    space = SPACES[name]
    con = space.constructs[fname]
    value = data.draw(value_strategy(con, 1), label=fname)
    wrapped: Any = [(fname, value)] if space.kind == "seq" else {fname: value}
    raw = interpreted_equal_fast(name, wrapped)
    # the attribute header carries the declared number and the exact payload length
    alen, atype = struct.unpack_from("=HH", raw)
    assert atype == space.numbers[fname]
    assert (alen + 3) & ~3 == len(raw)


@pytest.mark.parametrize("name", sorted(n for n, sp in SPACES.items() if sp.kind == "set"))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_unknown_attributes_survive(name: str, data: st.DataObject) -> None:
    unknown = data.draw(
        st.dictionaries(unknown_numbers(name), st.binary(max_size=20), min_size=1, max_size=4)
    )
    raw = interpreted_equal_fast(name, unknown)
    assert fast_codec(name).decode(raw) == unknown


@settings(max_examples=30, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            st.tuples(st.just("output"), st.integers(0, 0xFFFFFFFF)),
            st.tuples(st.just("pop_vlan"), st.just(True)),
            st.tuples(st.sampled_from([0, 29, 200, NLA_TYPE_MAX]), st.binary(max_size=9)),
        ),
        max_size=8,
    )
)
def test_action_list_keeps_order_and_repeats(items: list[tuple[Any, Any]]) -> None:
    raw = interpreted_equal_fast("ovs_action", items)
    assert CODECS["ovs_action"].decode(raw) == items


def test_pad_attributes_are_skipped() -> None:
    pads = [
        (name, n)
        for name, sp in SPACES.items()
        for n, (_, c) in sp.fields.items()
        if isinstance(c, Pad)
    ]
    assert pads  # the schema declares the PAD attributes of the reference
    for name, number in pads:
        unknown = next(n for n in range(NLA_TYPE_MAX, 0, -1) if n not in SPACES[name].fields)
        raw = (
            struct.pack("=HH", 4, number)
            + struct.pack("=HH", 7, unknown)
            + b"abc\0"
            + struct.pack("=HH", 8, number)
            + b"\0" * 4
        )
        assert fast_codec(name).decode(raw) == {unknown: b"abc"}, name
        assert SPACES[name].parse(raw) == {unknown: b"abc"}, name


def test_attribute_type_flag_bits_are_masked() -> None:
    # NLA_F_NESTED and NLA_F_NET_BYTEORDER on the type do not change its meaning
    inner = struct.pack("=HH", 8, 3) + struct.pack("<I", 5)  # in_port 5
    raw = struct.pack("=HH", 4 + len(inner), 0x8000 | 1) + inner  # key, NLA_F_NESTED
    raw += struct.pack("=HH", 5, 0x4000 | 4) + b"\x07\0\0\0"  # tcp_flags, NET_BYTEORDER
    expect = {"key": {"in_port": 5}, "tcp_flags": 7}
    assert CODECS["ovs_flow"].decode(raw) == expect
    assert SPACES["ovs_flow"].parse(raw) == expect


def test_deepest_allowed_nesting_roundtrips() -> None:
    # ovs_flow (depth 0) -> key (1) -> encap ... : MAX_NEST_DEPTH nests in all are accepted
    key: dict[str, Any] = {"in_port": 1}
    for _ in range(MAX_NEST_DEPTH - 1):
        key = {"encap": key}
    value = {"key": key}
    raw = CODECS["ovs_flow"].encode(value)
    assert CODECS["ovs_flow"].decode(raw) == value
    assert SPACES["ovs_flow"].parse(raw) == value
    assert SPACES["ovs_flow"].build(value) == raw


# --- known bytes: the encoder is not just self-consistent -----------------------------------


def test_known_bytes_of_a_flow_key() -> None:
    from ovsdp.netlink.structs import OvsKeyEthernet, OvsKeyIpv4

    value = {
        "in_port": 1,
        "ethernet": OvsKeyEthernet(bytes.fromhex("525400000001"), bytes.fromhex("525400000002")),
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(0x0A000001, 0x0A000002, 6, 0, 64, 0),
        "tunnel": {"id": 0x1122, "ttl": 64, "dont_fragment": True},
        "mpls": (0x12345678,),
    }
    expect = bytes.fromhex(
        "0800 0300 01000000"  # in_port u32 host
        "1000 0400 525400000001 525400000002"  # ethernet: src then dst
        "0600 0600 0800 0000"  # ethertype be16 + pad
        "1000 0700 0a000001 0a000002 06 00 40 00"  # ipv4
        "1c00 1000"  # tunnel nest (28 bytes)
        "0c00 0000 0000000000001122"  # id (type 0) be64
        "0500 0400 40 000000"  # ttl u8 + pad
        "0400 0500"  # dont_fragment flag
        "0800 1500 12345678"  # mpls be32 array
    )
    assert interpreted_equal_fast("ovs_key", value) == expect


def test_known_bytes_of_tunnel_key_attribute_16() -> None:
    # one number, two meanings told apart by length: the kernel's IPV4_INFO_BRIDGE (a flag) and
    # OVS userspace's GTPU_OPTS (struct gtpu_metadata: flags u8, msgtype u8)
    from ovsdp.netlink.structs import GtpuMetadata

    flag = interpreted_equal_fast("ovs_tunnel_key", {"ipv4_info_bridge": True})
    assert flag == bytes.fromhex("0400 1000")
    gtpu = interpreted_equal_fast("ovs_tunnel_key", {"gtpu_opts": GtpuMetadata(0x30, 0xFF)})
    assert gtpu == bytes.fromhex("0600 1000 30ff 0000")
    assert type(CODECS["ovs_tunnel_key"].decode(gtpu)["gtpu_opts"]) is GtpuMetadata
    # in a masked set: value then mask, each 2 bytes; the flag stays a flag
    masked = {"gtpu_opts": (GtpuMetadata(1, 2), GtpuMetadata(0xFF, 0xF0))}
    assert interpreted_equal_fast("ovs_tunnel_key_masked", masked) == bytes.fromhex(
        "0800 1000 0102 fff0"
    )
    flag_masked = interpreted_equal_fast("ovs_tunnel_key_masked", {"ipv4_info_bridge": True})
    assert flag_masked == bytes.fromhex("0400 1000")


def test_known_bytes_of_tunnel_push() -> None:
    # offsetof(struct ovs_action_push_tnl, header) + header_len bytes, as OVS sends it
    from ovsdp.netlink.structs import OvsActionPushTnl

    push = OvsActionPushTnl(tnl_port=3, out_port=4, header_len=6, tnl_type=5, header=b"abcdef")
    raw = interpreted_equal_fast("ovs_action", [("tunnel_push", push)])
    assert raw == bytes.fromhex(
        "1a00 1a00"  # nla_len 4 + 16 + 6, type 26
        "03000000 04000000 06000000 05000000"  # tnl_port, out_port, header_len, tnl_type (host)
        "616263646566 0000"  # the header, then padding to 4
    )
    empty = OvsActionPushTnl(1, 2, 0, 4, b"")
    assert interpreted_equal_fast("ovs_action", [("tunnel_push", empty)])[:2] == b"\x14\x00"


# --- whole messages -------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
s32 = st.integers(-(1 << 31), (1 << 31) - 1)
family_ids = st.integers(NLMSG_MIN_TYPE, 0xFFFF)


def genl_messages(family: Any, family_id: int) -> st.SearchStrategy[GenlMessage]:
    if family.hdrsize == 4:
        header: st.SearchStrategy[Any] = s32
    elif family.hdrsize == 0:
        header = st.none()
    else:
        header = st.binary(min_size=family.hdrsize, max_size=family.hdrsize)
    return st.builds(
        GenlMessage,
        type=st.just(family_id),
        flags=u16,
        seq=u32,
        pid=u32,
        cmd=u8,
        version=u8,
        dp_ifindex=header,
        attrs=space_strategy(family.space),
    )


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
@SETTINGS
@given(data=st.data())
def test_genl_message_roundtrip(family: Any, data: st.DataObject) -> None:
    family_id = data.draw(family_ids, label="family id")
    msg = data.draw(genl_messages(family, family_id), label="message")
    raw = encode_genl(msg, family)
    # nlmsg_len is exact, the headers sit where the reference says
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert (length, mtype, flags, seq, pid) == (len(raw), family_id, msg.flags, msg.seq, msg.pid)
    assert raw[16:20] == bytes([msg.cmd, msg.version, 0, 0])
    if family.hdrsize == 4:
        assert struct.unpack_from("=i", raw, 20)[0] == msg.dp_ifindex
    body = raw[16 + 4 + family.hdrsize :]
    assert body == CODECS[family.space].encode(msg.attrs) == SPACES[family.space].build(msg.attrs)
    assert decode_record(raw, {family_id: family}) == [msg]


@SETTINGS
@given(data=st.data())
def test_record_of_several_messages(data: st.DataObject) -> None:
    families = {0x10 + i: fam for i, fam in enumerate(FAMILIES)}
    picks = data.draw(st.lists(st.sampled_from(sorted(families)), min_size=1, max_size=4))
    msgs: list[Any] = [data.draw(genl_messages(families[fid], fid)) for fid in picks]
    seq, pid = data.draw(u32), data.draw(u32)
    raws = [encode_genl(m, families[m.type]) for m in msgs]
    raws.append(encode_noop(seq, pid))
    msgs.append(NoopMessage(seq, pid, 0))
    raws.append(encode_done(seq, pid))
    msgs.append(DoneMessage(seq, pid, 0, None, NLM_F_MULTI))
    record = b"".join(message.pad_message(r) for r in raws)
    assert decode_record(record, families) == msgs


request_headers = st.tuples(u32, u16, u16, u32, u32)
reasons = st.one_of(
    st.none(), st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=60)
)


@SETTINGS
@given(
    error=st.integers(-4095, 0),
    request=request_headers,
    pid=u32,
    reason=reasons,
    offset=st.one_of(st.none(), u32),
    as_bytes=st.booleans(),
)
def test_error_roundtrip(
    error: int,
    request: tuple[int, int, int, int, int],
    pid: int,
    reason: str | None,
    offset: int | None,
    as_bytes: bool,
) -> None:
    header: Any = struct.pack("=IHHII", *request) + b"payload" if as_bytes else request
    raw = encode_error(error, header, pid, reason, offset)
    assert len(raw) == struct.unpack_from("=I", raw)[0]
    flags = NLM_F_CAPPED | (NLM_F_ACK_TLVS if reason is not None or offset is not None else 0)
    expect = ErrorMessage(request[3], pid, error, request, reason, offset, flags)
    assert decode_record(raw, {}) == [expect]
    (decoded,) = decode_record(raw, {})
    assert isinstance(decoded, ErrorMessage) and decoded.is_ack == (error == 0)


@settings(max_examples=25, deadline=None)
@given(
    chunk=st.sampled_from(["a", "\u00e9", "\u20ac", "\U0001f600", "\udc80", "\0", "ab\0c"]),
    count=st.integers(1, 4200),
    done=st.booleans(),
)
def test_any_reason_still_sends_the_error(chunk: str, count: int, done: bool) -> None:
    # long, multi-byte, unencodable or NUL-carrying reasons: the error itself must go out
    reason = chunk * count
    if done:
        raw = encode_done(9, 5, -22, reason)
    else:
        raw = encode_error(-22, (16, 0x20, 1, 9, 0), 5, reason)
    (msg,) = decode_record(raw, {})
    assert isinstance(msg, DoneMessage if done else ErrorMessage)
    assert (msg.error, msg.seq, msg.pid) == (-22, 9, 5)
    assert msg.reason
    assert len(msg.reason.encode()) <= 4096
    plain = reason.isprintable() and "\0" not in reason
    if plain:
        assert reason.startswith(msg.reason)


@SETTINGS
@given(seq=u32, pid=u32, error=st.integers(-4095, 0), reason=reasons)
def test_done_roundtrip(seq: int, pid: int, error: int, reason: str | None) -> None:
    raw = encode_done(seq, pid, error, reason)
    flags = NLM_F_MULTI | (NLM_F_ACK_TLVS if reason else 0)
    assert decode_record(raw, {}) == [DoneMessage(seq, pid, error, reason or None, flags)]


@SETTINGS
@given(seq=u32, pid=u32)
def test_noop_roundtrip(seq: int, pid: int) -> None:
    raw = encode_noop(seq, pid)
    assert raw == struct.pack("=IHHII", 16, 1, 0, seq, pid)
    assert decode_record(raw, {}) == [NoopMessage(seq, pid, 0)]
