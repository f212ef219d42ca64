"""Netlink message framing: nlmsghdr, genlmsghdr, the family header, NLMSG_ERROR/DONE/NOOP.

A *record* is what one datagram (one SEQPACKET record on the pseudo-device) carries: one or more
netlink messages back to back, each padded to 4 bytes.  Decoding a record never raises anything
but :class:`~ovsdp.netlink.errors.NetlinkError`.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import schema
from .codec import CODECS, FastSpace, fixed_struct
from .constants import (
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HDRLEN,
    NLMSG_MIN_TYPE,
    NLMSG_NOOP,
)
from .errors import NetlinkError, einval

NLMSGHDR = fixed_struct(schema.nlmsghdr)  # len, type, flags, seq, pid
GENLHDR = fixed_struct(schema.genlmsghdr)  # cmd, version
OVSHDR = fixed_struct(schema.ovs_header)  # dp_ifindex
_ERRNO = fixed_struct(schema.nlmsgerr)
# nlmsghdr + genlmsghdr (+ ovs_header) in one pack for the encoders
_NL_GENL = struct.Struct(NLMSGHDR.format + GENLHDR.format[1:])
_NL_GENL_OVS = struct.Struct(NLMSGHDR.format + GENLHDR.format[1:] + OVSHDR.format[1:])
_unpack_nlhdr = NLMSGHDR.unpack_from
_unpack_genl = GENLHDR.unpack_from
_unpack_ovs = OVSHDR.unpack_from
# a one-message record of an OVS family: nlmsghdr + genlmsghdr + ovs_header in one unpack
_unpack_nl_genl_ovs = _NL_GENL_OVS.unpack_from
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


@dataclass(frozen=True, slots=True)
class GenlFamily:
    """What the codec needs to know of a generic-netlink family: header size and attributes."""

    name: str
    version: int
    hdrsize: int
    space: str  # attribute space of its commands
    mcast_groups: tuple[str, ...] = ()

    @property
    def codec(self) -> FastSpace:
        return CODECS[self.space]


@dataclass(slots=True)
class GenlMessage:
    """One generic-netlink message.

    ``dp_ifindex`` is the family header: the ovs_header's datapath ifindex for the OVS families
    (hdrsize 4), ``None`` for families without a header (nlctrl), raw bytes for other sizes.
    """

    type: int = 0
    flags: int = 0
    seq: int = 0
    pid: int = 0
    cmd: int = 0
    version: int = 0
    dp_ifindex: Any = None
    attrs: Any = field(default_factory=dict)


@dataclass(slots=True)
class ErrorMessage:
    """NLMSG_ERROR: ``error`` is 0 for an ACK, else a negative errno.

    ``request`` is the (len, type, flags, seq, pid) header of the request it answers; ``reason``
    and ``offset`` come from the extended ack when present.
    """

    seq: int
    pid: int
    error: int
    request: tuple[int, int, int, int, int]
    reason: str | None = None
    offset: int | None = None
    flags: int = 0

    @property
    def is_ack(self) -> bool:
        return self.error == 0


@dataclass(slots=True)
class DoneMessage:
    """NLMSG_DONE ending a dump; ``error`` is 0 or the negative errno the dump stopped with."""

    seq: int
    pid: int
    error: int = 0
    reason: str | None = None
    flags: int = NLM_F_MULTI


@dataclass(slots=True)
class NoopMessage:
    """NLMSG_NOOP (the pseudo-device uses it as its end-of-transaction marker)."""

    seq: int
    pid: int
    flags: int = 0


AnyMessage = GenlMessage | ErrorMessage | DoneMessage | NoopMessage


def iter_frames(record: Any) -> Iterator[tuple[int, int, tuple[int, int, int, int, int]]]:
    """Yield ``(offset, end, header)`` for each message in a record.

    Framing errors (truncated header, nlmsg_len below 16, nlmsg_len past the record) raise
    NetlinkError after the valid messages before them have been yielded.
    """
    off = 0
    size = len(record)
    while off < size:
        left = size - off
        if left < NLMSG_HDRLEN:
            raise einval(f"truncated netlink header: {left} bytes at offset {off}", off)
        hdr = _unpack_nlhdr(record, off)
        length = hdr[0]
        if length < NLMSG_HDRLEN:
            raise einval(f"nlmsg_len {length} is shorter than the netlink header", off)
        if length > left:
            raise NetlinkError(
                errno.EMSGSIZE,
                f"nlmsg_len {length} runs past the end of the record ({left} bytes left)",
                off,
            )
        yield off, off + length, hdr
        off += (length + 3) & ~3


def decode_genl(
    record: Any, off: int, end: int, hdr: tuple[int, int, int, int, int], family: GenlFamily
) -> GenlMessage:
    """Decode one generic-netlink message whose frame :func:`iter_frames` found."""
    hdrsize = family.hdrsize
    body = off + NLMSG_HDRLEN
    need = 4 + hdrsize
    if end - body < need:
        raise einval(
            f"{family.name}: message of {end - off} bytes lacks the generic netlink and family "
            f"headers ({NLMSG_HDRLEN + need} bytes)",
            off,
        )
    cmd, version = _unpack_genl(record, body)
    if hdrsize == 4:
        dp_ifindex: Any = _unpack_ovs(record, body + 4)[0]
    elif hdrsize == 0:
        dp_ifindex = None
    else:
        dp_ifindex = bytes(record[body + 4 : body + 4 + hdrsize])
    attrs = CODECS[family.space].decode(record, body + need, end)
    return GenlMessage(hdr[1], hdr[2], hdr[3], hdr[4], cmd, version, dp_ifindex, attrs)


def encode_genl(msg: GenlMessage, family: GenlFamily) -> bytes:
    """Encode a generic-netlink message (nlmsg_len is computed; the family header from msg)."""
    body = CODECS[family.space].encode(msg.attrs)
    hdrsize = family.hdrsize
    if hdrsize == 4:
        return (
            _NL_GENL_OVS.pack(
                24 + len(body),
                msg.type,
                msg.flags,
                msg.seq,
                msg.pid,
                msg.cmd,
                msg.version,
                msg.dp_ifindex or 0,
            )
            + body
        )
    if hdrsize == 0:
        return (
            _NL_GENL.pack(
                20 + len(body), msg.type, msg.flags, msg.seq, msg.pid, msg.cmd, msg.version
            )
            + body
        )
    fixed = bytes(msg.dp_ifindex or b"").ljust(hdrsize, b"\0")
    if len(fixed) != hdrsize:
        raise einval(f"{family.name}: family header must be {hdrsize} bytes")
    length = 20 + hdrsize + len(body)
    return (
        _NL_GENL.pack(length, msg.type, msg.flags, msg.seq, msg.pid, msg.cmd, msg.version)
        + fixed
        + body
    )


def _ack_text(reason: str) -> str:
    """An extended-ack message that always encodes: valid UTF-8, no NUL, at most 4000 bytes."""
    raw = reason.encode("utf-8", "replace").replace(b"\0", b" ")[:4000]
    return raw.decode("utf-8", "ignore")


def encode_error(
    error: int,
    request_header: bytes | tuple[int, int, int, int, int],
    pid: int,
    reason: str | None = None,
    offset: int | None = None,
) -> bytes:
    """NLMSG_ERROR answering a request: ``error`` is 0 (ACK) or a negative errno.

    The request's payload is not echoed (NLM_F_CAPPED); a reason and an offset go in the
    extended-ack TLVs (NLM_F_ACK_TLVS), as Linux does with NETLINK_EXT_ACK.
    """
    if isinstance(request_header, tuple):
        request_header = NLMSGHDR.pack(*request_header)
    else:
        request_header = bytes(request_header[:NLMSG_HDRLEN]).ljust(NLMSG_HDRLEN, b"\0")
    seq = NLMSGHDR.unpack(request_header)[3]
    flags = NLM_F_CAPPED
    tlvs = b""
    if reason is not None or offset is not None:
        ack: dict[str, Any] = {}
        if reason is not None:
            ack["msg"] = _ack_text(reason)
        if offset is not None:
            ack["offs"] = offset
        tlvs = CODECS["nlmsgerr"].encode(ack)
        flags |= NLM_F_ACK_TLVS
    length = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + len(tlvs)
    return (
        NLMSGHDR.pack(length, NLMSG_ERROR, flags, seq, pid)
        + _ERRNO.pack(error)
        + (request_header + tlvs)
    )


def encode_done(seq: int, pid: int, error: int = 0, reason: str | None = None) -> bytes:
    """NLMSG_DONE (NLM_F_MULTI) ending a dump, optionally with the error it stopped on."""
    tlvs = CODECS["nlmsgerr"].encode({"msg": _ack_text(reason)}) if reason else b""
    flags = NLM_F_MULTI | (NLM_F_ACK_TLVS if tlvs else 0)
    length = NLMSG_HDRLEN + 4 + len(tlvs)
    return NLMSGHDR.pack(length, NLMSG_DONE, flags, seq, pid) + _ERRNO.pack(error) + tlvs


def encode_noop(seq: int, pid: int) -> bytes:
    """NLMSG_NOOP: a header and nothing else."""
    return NLMSGHDR.pack(NLMSG_HDRLEN, NLMSG_NOOP, 0, seq, pid)


def decode_error(record: Any, off: int, end: int, hdr: tuple[int, ...]) -> ErrorMessage:
    """Decode an NLMSG_ERROR found by :func:`iter_frames`."""
    flags = hdr[2]
    body = off + NLMSG_HDRLEN
    if end - body < 4 + NLMSG_HDRLEN:
        raise einval(f"NLMSG_ERROR of {end - off} bytes is truncated", off)
    error = _ERRNO.unpack_from(record, body)[0]
    request = _unpack_nlhdr(record, body + 4)
    tlv_start = body + 4 + NLMSG_HDRLEN
    if not flags & NLM_F_CAPPED:
        tlv_start = body + 4 + ((request[0] + 3) & ~3)
    reason = offset = None
    if flags & NLM_F_ACK_TLVS and tlv_start < end:
        ack = CODECS["nlmsgerr"].decode(record, tlv_start, end)
        reason, offset = ack.get("msg"), ack.get("offs")
    return ErrorMessage(hdr[3], hdr[4], error, request, reason, offset, flags)


def decode_done(record: Any, off: int, end: int, hdr: tuple[int, ...]) -> DoneMessage:
    """Decode an NLMSG_DONE (its payload, an int, may be absent in old senders)."""
    body = off + NLMSG_HDRLEN
    error = _ERRNO.unpack_from(record, body)[0] if end - body >= 4 else 0
    reason = None
    if hdr[2] & NLM_F_ACK_TLVS and end - body > 4:
        reason = CODECS["nlmsgerr"].decode(record, body + 4, end).get("msg")
    return DoneMessage(hdr[3], hdr[4], error, reason, hdr[2])


def decode_record(record: Any, families: Mapping[int, GenlFamily]) -> list[AnyMessage]:
    """Decode every message of a record; ``families`` maps family id to its description."""
    # The common record: one message of a family with an ovs_header.  Same checks as the loop
    # below (iter_frames, decode_genl), in one unpack; anything else takes the loop.
    size = len(record)
    if size >= 24:
        length, mtype, flags, seq, pid, cmd, version, dp_ifindex = _unpack_nl_genl_ovs(record, 0)
        if 24 <= length <= size <= ((length + 3) & ~3) and mtype >= NLMSG_MIN_TYPE:
            family = families.get(mtype)
            if family is not None and family.hdrsize == 4:
                attrs = CODECS[family.space].decode(record, 24, length)
                return [GenlMessage(mtype, flags, seq, pid, cmd, version, dp_ifindex, attrs)]
    out: list[AnyMessage] = []
    for off, end, hdr in iter_frames(record):
        mtype = hdr[1]
        if mtype == NLMSG_ERROR:
            out.append(decode_error(record, off, end, hdr))
        elif mtype == NLMSG_DONE:
            out.append(decode_done(record, off, end, hdr))
        elif mtype == NLMSG_NOOP:
            out.append(NoopMessage(hdr[3], hdr[4], hdr[2]))
        else:
            family = families.get(mtype)
            if family is None:
                raise NetlinkError(
                    errno.EOPNOTSUPP, f"message type {mtype} is not a known family", off
                )
            out.append(decode_genl(record, off, end, hdr, family))
    return out


def pad_message(data: bytes) -> bytes:
    """Pad a message to 4 bytes, so several can share a record."""
    return data + _PAD[len(data) & 3]
