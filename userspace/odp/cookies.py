"""OVS's private ``user_action_cookie``: the USERDATA of userspace() actions ovs-vswitchd emits.

A datapath treats USERDATA as opaque bytes; only the text format interprets it.  The cookie is
48 bytes in host (little-endian) order:

====== ====================================================================================
offset field
====== ====================================================================================
0      u16 type: 1 sFlow, 2 slow_path, 3 flow_sample, 4 ipfix, 5 controller (0 = unspec)
4      u32 ofp_in_port (OFPP_NONE = 0xffff when written from text)
8      16-byte ofproto UUID (zero when written from text)
24     per-type data (24 bytes):
       sFlow: be16 vlan_tci @24, u32 output @28
       slow_path: u32 reason bits @28
       flow_sample: u16 probability @24, u32 collector_set_id @28, obs_domain_id @32,
       obs_point_id @36, output_odp_port @40, u32 direction @44 (1 ingress, 2 egress)
       ipfix: u32 output_odp_port @24
       controller: u8 dont_send @24, u8 continuation @25, u16 reason @26, u32 recirc_id @28,
       be64 rule_cookie @32, u16 controller_id @40, u16 max_len @42
====== ====================================================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

COOKIE_SIZE = 48
OFPP_NONE = 0xFFFF

SFLOW = 1
SLOW_PATH = 2
FLOW_SAMPLE = 3
IPFIX = 4
CONTROLLER = 5

SAMPLE_INGRESS = 1
SAMPLE_EGRESS = 2

SLOW_PATH_REASONS = {
    1 << 0: "cfm",
    1 << 1: "bfd",
    1 << 2: "lacp",
    1 << 3: "stp",
    1 << 4: "lldp",
    1 << 5: "action",
    1 << 6: "match",
}
SLOW_PATH_REASON_MASK = 0x7F

_HEAD = struct.Struct("<H2xI16s")


@dataclass(frozen=True)
class Cookie:
    """A decoded user_action_cookie (only the fields of its ``type`` are meaningful)."""

    type: int
    ofp_in_port: int = OFPP_NONE
    ofproto_uuid: bytes = bytes(16)
    vlan_tci: int = 0
    output: int = 0
    reason: int = 0
    probability: int = 0
    collector_set_id: int = 0
    obs_domain_id: int = 0
    obs_point_id: int = 0
    direction: int = 0
    dont_send: int = 0
    continuation: int = 0
    recirc_id: int = 0
    rule_cookie: int = 0
    controller_id: int = 0
    max_len: int = 0


def encode_cookie(c: Cookie) -> bytes:
    """The 48 cookie bytes."""
    buf = bytearray(COOKIE_SIZE)
    _HEAD.pack_into(buf, 0, c.type, c.ofp_in_port, c.ofproto_uuid)
    if c.type == SFLOW:
        struct.pack_into(">H", buf, 24, c.vlan_tci)
        struct.pack_into("<I", buf, 28, c.output)
    elif c.type == SLOW_PATH:
        struct.pack_into("<I", buf, 28, c.reason)
    elif c.type == FLOW_SAMPLE:
        struct.pack_into("<H", buf, 24, c.probability)
        struct.pack_into(
            "<IIIII",
            buf,
            28,
            c.collector_set_id,
            c.obs_domain_id,
            c.obs_point_id,
            c.output,
            c.direction,
        )
    elif c.type == IPFIX:
        struct.pack_into("<I", buf, 24, c.output)
    elif c.type == CONTROLLER:
        struct.pack_into("<BBHI", buf, 24, c.dont_send, c.continuation, c.reason, c.recirc_id)
        struct.pack_into(">Q", buf, 32, c.rule_cookie)
        struct.pack_into("<HH", buf, 40, c.controller_id, c.max_len)
    return bytes(buf)


def decode_cookie(data: bytes) -> Cookie | None:
    """The cookie in ``data``, or None when it is not a 48-byte cookie of a known type."""
    if len(data) != COOKIE_SIZE:
        return None
    ctype, in_port, uuid = _HEAD.unpack_from(data, 0)
    head = {"type": ctype, "ofp_in_port": in_port, "ofproto_uuid": uuid}
    if ctype == SFLOW:
        return Cookie(
            **head,
            vlan_tci=struct.unpack_from(">H", data, 24)[0],
            output=struct.unpack_from("<I", data, 28)[0],
        )
    if ctype == SLOW_PATH:
        return Cookie(**head, reason=struct.unpack_from("<I", data, 28)[0])
    if ctype == FLOW_SAMPLE:
        prob = struct.unpack_from("<H", data, 24)[0]
        cset, dom, point, out, direction = struct.unpack_from("<IIIII", data, 28)
        return Cookie(
            **head,
            probability=prob,
            collector_set_id=cset,
            obs_domain_id=dom,
            obs_point_id=point,
            output=out,
            direction=direction,
        )
    if ctype == IPFIX:
        return Cookie(**head, output=struct.unpack_from("<I", data, 24)[0])
    if ctype == CONTROLLER:
        dont, cont, reason, recirc = struct.unpack_from("<BBHI", data, 24)
        rule = struct.unpack_from(">Q", data, 32)[0]
        cid, max_len = struct.unpack_from("<HH", data, 40)
        return Cookie(
            **head,
            dont_send=dont,
            continuation=cont,
            reason=reason,
            recirc_id=recirc,
            rule_cookie=rule,
            controller_id=cid,
            max_len=max_len,
        )
    return None
