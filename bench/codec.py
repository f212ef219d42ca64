"""Netlink codec benchmark: encode + decode of a representative OVS_FLOW_CMD_NEW.

The message: nlmsghdr, genlmsghdr, ovs_header; a key with in_port, ethernet, eth_type, ipv4, tcp
and tcp_flags; the matching mask; actions with one output.  Measured side by side in one run:

* ovsdp: the compiled codec (encode_genl + decode_record), with its shape codecs for the
  message's layout (learned in the first few calls); ``--generic`` turns them off;
* pyroute2: the same message declared as pyroute2 genlmsg/nla classes, .encode() and .decode();
* hand-written: a minimal struct codec that knows exactly this message and nothing else;
* construct: the schema interpreted by construct (what the hot path must never do).

Targets (issue 2): ovsdp >= 10x pyroute2 and >= 0.5x the hand-written codec.

Run: .venv/bin/python -m bench.codec [--rounds N] [--seconds S] [--generic]
"""

from __future__ import annotations

import argparse
import struct
from typing import Any

from pyroute2.netlink import genlmsg, nla

from ovsdp.netlink import GenlMessage, decode_record, encode_genl, schema, shapes
from ovsdp.netlink.constants import NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, FlowCmd
from ovsdp.netlink.families import OVS_FLOW
from ovsdp.netlink.structs import OvsKeyEthernet, OvsKeyIpv4, OvsKeyPorts

from .harness import measure, print_ratios, print_table

FAMILY_ID = 0x1D


def example_flow_message(family_id: int = FAMILY_ID) -> GenlMessage:
    """The benchmark's message: an OVS_FLOW_CMD_NEW matching one TCP flow, output to port 2."""
    key = {
        "in_port": 1,
        "ethernet": OvsKeyEthernet(bytes.fromhex("525400000001"), bytes.fromhex("525400000002")),
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(0x0A000001, 0x0A000002, 6, 0, 64, 0),
        "tcp": OvsKeyPorts(40000, 80),
        "tcp_flags": 0x002,
    }
    mask = {
        "in_port": 0xFFFFFFFF,
        "ethernet": OvsKeyEthernet(b"\xff" * 6, b"\xff" * 6),
        "ethertype": 0xFFFF,
        "ipv4": OvsKeyIpv4(0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 0, 0, 0xFF),
        "tcp": OvsKeyPorts(0, 0xFFFF),
        "tcp_flags": 0,
    }
    return GenlMessage(
        family_id,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        1,
        0,
        FlowCmd.NEW,
        OVS_FLOW.version,
        7,
        {"key": key, "mask": mask, "actions": [("output", 2)]},
    )


# --- pyroute2: the same message declared with pyroute2's classes ------------------------------


class Pyroute2FlowMsg(genlmsg):
    """ovs_flow as pyroute2 declares messages (only what this message uses)."""

    fields = (*genlmsg.fields, ("dp_ifindex", "i"))
    nla_map = (
        (1, "OVS_FLOW_ATTR_KEY", "key"),
        (2, "OVS_FLOW_ATTR_ACTIONS", "actions"),
        (7, "OVS_FLOW_ATTR_MASK", "key"),
    )

    class key(nla):
        nla_map = (
            (3, "IN_PORT", "uint32"),
            (4, "ETHERNET", "ethernet"),
            (6, "ETHERTYPE", "be16"),
            (7, "IPV4", "ipv4"),
            (9, "TCP", "ports"),
            (18, "TCP_FLAGS", "be16"),
        )

        class ethernet(nla):
            fields = (("src", "6s"), ("dst", "6s"))

        class ipv4(nla):
            fields = (
                ("src", ">I"),
                ("dst", ">I"),
                ("proto", "B"),
                ("tos", "B"),
                ("ttl", "B"),
                ("frag", "B"),
            )

        class ports(nla):
            fields = (("src", ">H"), ("dst", ">H"))

    class actions(nla):
        nla_map = ((1, "OUTPUT", "uint32"),)


def _pyroute2_key(key: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("IN_PORT", key["in_port"]),
        ("ETHERNET", key["ethernet"]._asdict()),
        ("ETHERTYPE", key["ethertype"]),
        ("IPV4", key["ipv4"]._asdict()),
        ("TCP", key["tcp"]._asdict()),
        ("TCP_FLAGS", key["tcp_flags"]),
    ]


def pyroute2_roundtrip(msg: GenlMessage) -> Any:
    """Build the message in pyroute2, encode it, decode the bytes again."""
    out = Pyroute2FlowMsg()
    out["cmd"] = msg.cmd
    out["version"] = msg.version
    out["dp_ifindex"] = msg.dp_ifindex
    out["header"]["type"] = msg.type
    out["header"]["flags"] = msg.flags
    out["header"]["seq"] = msg.seq
    out["attrs"] = [
        ("OVS_FLOW_ATTR_KEY", {"attrs": _pyroute2_key(msg.attrs["key"])}),
        ("OVS_FLOW_ATTR_MASK", {"attrs": _pyroute2_key(msg.attrs["mask"])}),
        ("OVS_FLOW_ATTR_ACTIONS", {"attrs": [("OUTPUT", msg.attrs["actions"][0][1])]}),
    ]
    out.encode()
    back = Pyroute2FlowMsg(bytes(out.data))
    back.decode()
    return back


# --- a minimal hand-written codec for exactly this message ------------------------------------

_HDR = struct.Struct("<IHHIIBBHi")
_A = struct.Struct("<HH")
_U32_ATTR = struct.Struct("<HHI")
_ETH_ATTR = struct.Struct("<HH6s6s")
_IPV4 = struct.Struct(">IIBBBB")
_PORTS = struct.Struct(">HH")
_BE16 = struct.Struct(">H")
_U32 = struct.Struct("<I")


def _hand_key(k: tuple[Any, ...]) -> bytes:
    in_port, src, dst, ethertype, ipv4, tcp, tcp_flags = k
    return b"".join(
        (
            _U32_ATTR.pack(8, 3, in_port),
            _ETH_ATTR.pack(16, 4, src, dst),
            _A.pack(6, 6) + _BE16.pack(ethertype) + b"\0\0",
            _A.pack(16, 7) + _IPV4.pack(*ipv4),
            _A.pack(8, 9) + _PORTS.pack(*tcp),
            _A.pack(6, 18) + _BE16.pack(tcp_flags) + b"\0\0",
        )
    )


def hand_encode(v: tuple[Any, ...]) -> bytes:
    """(seq, dp_ifindex, key tuple, mask tuple, out_port) -> bytes."""
    seq, dp_ifindex, key, mask, out_port = v
    kb, mb = _hand_key(key), _hand_key(mask)
    body = b"".join(
        (
            _A.pack(4 + len(kb), 1),
            kb,
            _A.pack(4 + len(mb), 7),
            mb,
            _A.pack(12, 2),
            _U32_ATTR.pack(8, 1, out_port),
        )
    )
    return _HDR.pack(24 + len(body), FAMILY_ID, 0x405, seq, 0, 1, 1, 0, dp_ifindex) + body


def _hand_key_decode(b: bytes, off: int, end: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    while off < end:
        alen, atype = _A.unpack_from(b, off)
        p = off + 4
        if atype == 3:
            out["in_port"] = _U32.unpack_from(b, p)[0]
        elif atype == 4:
            out["ethernet"] = (b[p : p + 6], b[p + 6 : p + 12])
        elif atype == 6:
            out["ethertype"] = _BE16.unpack_from(b, p)[0]
        elif atype == 7:
            out["ipv4"] = _IPV4.unpack_from(b, p)
        elif atype == 9:
            out["tcp"] = _PORTS.unpack_from(b, p)
        elif atype == 18:
            out["tcp_flags"] = _BE16.unpack_from(b, p)[0]
        off += (alen + 3) & ~3
    return out


def hand_decode(b: bytes) -> dict[str, Any]:
    """bytes -> header fields and attribute values of this one message type."""
    length, _mtype, _flags, seq, _pid, cmd, _version, _, dp_ifindex = _HDR.unpack_from(b, 0)
    out: dict[str, Any] = {"seq": seq, "cmd": cmd, "dp_ifindex": dp_ifindex}
    off = 24
    while off < length:
        alen, atype = _A.unpack_from(b, off)
        if atype == 1:
            out["key"] = _hand_key_decode(b, off + 4, off + alen)
        elif atype == 7:
            out["mask"] = _hand_key_decode(b, off + 4, off + alen)
        elif atype == 2:
            out["actions"] = [("output", _U32.unpack_from(b, off + 8)[0])]
        off += (alen + 3) & ~3
    return out


def _hand_values(msg: GenlMessage) -> tuple[Any, ...]:
    def key(k: dict[str, Any]) -> tuple[Any, ...]:
        return (
            k["in_port"],
            k["ethernet"].src,
            k["ethernet"].dst,
            k["ethertype"],
            tuple(k["ipv4"]),
            tuple(k["tcp"]),
            k["tcp_flags"],
        )

    return (
        msg.seq,
        msg.dp_ifindex,
        key(msg.attrs["key"]),
        key(msg.attrs["mask"]),
        msg.attrs["actions"][0][1],
    )


def main() -> int:
    """Measure and print; exit status 0 when the targets are met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument(
        "--generic", action="store_true", help="ovsdp without shape codecs (the generic loop)"
    )
    args = parser.parse_args()
    if args.generic:
        shapes.set_enabled(False)

    msg = example_flow_message(FAMILY_ID)
    families = {FAMILY_ID: OVS_FLOW}
    wire = encode_genl(msg, OVS_FLOW)
    hand = _hand_values(msg)

    # Every codec must produce and read the same bytes before it is timed.
    assert decode_record(wire, families)[0] == msg
    assert hand_encode(hand) == wire, "hand-written codec disagrees with ovsdp"
    assert hand_decode(wire)["key"]["ipv4"] == tuple(msg.attrs["key"]["ipv4"])
    p2 = Pyroute2FlowMsg(wire)
    p2.decode()
    assert p2.get_attr("OVS_FLOW_ATTR_KEY").get_attr("TCP")["dst"] == 80
    body = wire[24:]
    assert schema.ovs_flow.parse(body) == msg.attrs

    cases = {
        "ovsdp": lambda: decode_record(encode_genl(msg, OVS_FLOW), families),
        "hand-written": lambda: hand_decode(hand_encode(hand)),
        "pyroute2": lambda: pyroute2_roundtrip(msg),
        "construct": lambda: schema.ovs_flow.parse(schema.ovs_flow.build(msg.attrs)),
    }
    mode = "generic codec only" if args.generic else "with shape codecs"
    print(
        f"OVS_FLOW_CMD_NEW, {len(wire)} bytes: encode + decode, {args.rounds} interleaved rounds"
        f" (ovsdp {mode})"
    )
    result = measure(cases, rounds=args.rounds, seconds=args.seconds)
    print_table("rates (messages/s, encode + decode):", result, "msg/s")
    print("ratios (median over rounds):")
    ok = print_ratios(
        result,
        [
            ("ovsdp", "pyroute2", 10.0),
            ("ovsdp", "hand-written", 0.5),
            ("ovsdp", "construct", None),
        ],
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
