"""Helpers shared by the pseudo-device tests (tests/test_pseudodev_*.py); no tests here.

Three ways to talk to a device:

* :class:`SansClient`: one connection of a :class:`Device` fed directly (no sockets at all).
* :class:`AsyncClient`: a raw non-blocking SOCK_SEQPACKET socket driven by trio, for a service
  running in the test's own trio loop (:func:`serving`).
* ``userspace.netlink_socket.NetlinkSocket`` (blocking) in a thread via ``trio.to_thread``.

Raw encoders (:func:`nla`, :func:`nlmsg`, :func:`genl`) build well-formed and malformed messages
byte by byte; :func:`split_record` and :func:`attrs_of` read layouts without the codec, so the
tests check the wire format itself and not only what the codec makes of it.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pseudodev_support import TEST_CODEC, TEST_FAMILY, TestFamily, make_device, socket_path

from ovsdp.netlink.constants import NLM_F_ACK, NLM_F_REQUEST
from ovsdp.netlink.families import NLCTRL
from ovsdp.netlink.message import (
    AnyMessage,
    ErrorMessage,
    GenlFamily,
    GenlMessage,
    NoopMessage,
    decode_record,
    encode_genl,
)
from ovsdp.pseudodev.device import Connection, Credentials, Device
from ovsdp.pseudodev.server import PseudoDevice

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"

CONTROL_FAMILY = "ovsdp_control"
CONTROL_CODEC = GenlFamily(CONTROL_FAMILY, 1, 0, "ovsdp_control")

# control family commands (docs/pseudodev.md section 5)
C_WIN_PEND_REQ = 0
C_WIN_PEND_PACKET_REQ = 1
C_MC_SUBSCRIBE = 2
C_PACKET_SUBSCRIBE = 3
C_EVENT_NOTIFY = 4
C_READ_NOTIFY = 5
C_SOCK_PROP = 6
C_GET_PID = 7
C_SET_PID = 8

CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3

ROOT = Credentials(pid=1, uid=0, gid=0)
NOBODY = Credentials(pid=2, uid=65534, gid=65534)

RECV_BUFFER = 128 << 10  # the spec promises no record a 128 KiB buffer would truncate
HDR = struct.Struct("=IHHII")


# -- raw encoding ---------------------------------------------------------------------------


def pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def record_of(messages: Iterable[bytes]) -> bytes:
    """Messages back to back, each starting on a 4-byte boundary (the last one unpadded)."""
    parts = list(messages)
    return b"".join(pad4(m) for m in parts[:-1]) + (parts[-1] if parts else b"")


def nla(atype: int, payload: bytes = b"") -> bytes:
    """One attribute, padded."""
    return pad4(struct.pack("=HH", 4 + len(payload), atype) + payload)


def u8(value: int) -> bytes:
    return struct.pack("=B", value)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def string(value: str) -> bytes:
    return value.encode() + b"\0"


def nlmsg(
    mtype: int,
    payload: bytes = b"",
    *,
    flags: int = NLM_F_REQUEST,
    seq: int = 0,
    pid: int = 0,
    length: int | None = None,
) -> bytes:
    """One netlink message (padded to 4 bytes); ``length`` overrides nlmsg_len."""
    if length is None:
        length = 16 + len(payload)
    return pad4(HDR.pack(length, mtype, flags, seq, pid) + payload)


def genl(
    family_id: int,
    cmd: int,
    attrs: bytes = b"",
    *,
    flags: int = NLM_F_REQUEST,
    seq: int = 0,
    fam_hdr: bytes = b"",
    version: int = 1,
) -> bytes:
    """A generic-netlink message built by hand (attributes already encoded)."""
    return nlmsg(
        family_id, struct.pack("=BBH", cmd, version, 0) + fam_hdr + attrs, flags=flags, seq=seq
    )


def encode(
    codec: GenlFamily,
    family_id: int,
    cmd: int,
    attrs: Any = None,
    *,
    flags: int = NLM_F_REQUEST,
    seq: int = 0,
    dp_ifindex: int = 0,
) -> bytes:
    """A well-formed request through the codec."""
    msg = GenlMessage(
        family_id,
        flags,
        seq,
        0,
        cmd,
        codec.version,
        dp_ifindex if codec.hdrsize else None,
        attrs or {},
    )
    return pad4(encode_genl(msg, codec))


# -- raw decoding (no codec) ----------------------------------------------------------------


def split_record(record: bytes) -> list[tuple[tuple[int, int, int, int, int], bytes]]:
    """``(header, message bytes)`` of every message of a record the service sent.

    Strict: the record must be exactly messages back to back on 4-byte boundaries.
    """
    out = []
    off = 0
    while off < len(record):
        assert len(record) - off >= 16, f"truncated header at {off} in {record!r}"
        hdr = HDR.unpack_from(record, off)
        assert 16 <= hdr[0] <= len(record) - off, f"bad nlmsg_len {hdr[0]} at {off}"
        out.append((hdr, record[off : off + hdr[0]]))
        off += (hdr[0] + 3) & ~3
    assert off == len(record) or off - len(record) < 4
    return out


def attrs_of(data: bytes) -> list[tuple[int, bytes]]:
    """``(type, payload)`` of each attribute in ``data`` (strict)."""
    out = []
    off = 0
    while off < len(data):
        length, atype = struct.unpack_from("=HH", data, off)
        assert 4 <= length <= len(data) - off, f"bad nla_len {length} at {off}"
        out.append((atype, data[off + 4 : off + length]))
        off += (length + 3) & ~3
    return out


def error_code(msg: AnyMessage) -> int | None:
    """The positive errno of an NLMSG_ERROR (0 for an ACK), None for anything else."""
    return -msg.error if isinstance(msg, ErrorMessage) else None


def codecs_of(device: Device) -> dict[int, GenlFamily]:
    return {fid: family.genl for fid, family in device.families.items()}


def family_id(device: Device, name: str) -> int:
    return device.families_by_name[name].id


# -- sans-I/O client ------------------------------------------------------------------------


class SansClient:
    """One connection of a Device, fed records directly and read with pop_output."""

    def __init__(self, device: Device, creds: Credentials = ROOT) -> None:
        self.device = device
        self.conn: Connection = device.connect(creds)
        self.codecs = codecs_of(device)

    @property
    def pid(self) -> int:
        return self.conn.pid

    def send(self, *messages: bytes) -> None:
        """One record holding ``messages``."""
        self.device.handle_record(self.conn, record_of(messages))

    def pop(self) -> bytes | None:
        return self.conn.pop_output()

    def records(self, limit: int = 1_000_000) -> list[bytes]:
        """Every record the connection has to send (a dump is run to its end)."""
        out = []
        while (record := self.conn.pop_output()) is not None:
            if record:
                out.append(record)
            assert len(out) <= limit
        return out

    def decode(self, record: bytes) -> list[AnyMessage]:
        return decode_record(record, self.codecs)

    def messages(self) -> list[AnyMessage]:
        return [m for r in self.records() for m in self.decode(r)]

    def transact(self, *messages: bytes) -> list[AnyMessage]:
        self.send(*messages)
        return self.messages()

    def close(self) -> None:
        self.device.disconnect(self.conn)


def family_request(device: Device, cmd: int, attrs: Any = None, **kw: Any) -> bytes:
    """A well-formed request of the test family ``ovsdp_test``."""
    return encode(TEST_CODEC, family_id(device, TEST_FAMILY), cmd, attrs, **kw)


def control_request(device: Device, cmd: int, attrs: Any = None, **kw: Any) -> bytes:
    return encode(CONTROL_CODEC, family_id(device, CONTROL_FAMILY), cmd, attrs, **kw)


def nlctrl_request(attrs: Any = None, **kw: Any) -> bytes:
    return encode(NLCTRL, 0x10, CTRL_CMD_GETFAMILY, attrs, **kw)


# -- the service in the test's trio loop ----------------------------------------------------


@dataclass
class Served:
    device: Device
    test: TestFamily
    path: str
    service: PseudoDevice

    @property
    def test_id(self) -> int:
        return family_id(self.device, TEST_FAMILY)

    @property
    def control_id(self) -> int:
        return family_id(self.device, CONTROL_FAMILY)

    def family_request(self, cmd: int, attrs: Any = None, **kw: Any) -> bytes:
        return encode(TEST_CODEC, self.test_id, cmd, attrs, **kw)

    def control_request(self, cmd: int, attrs: Any = None, **kw: Any) -> bytes:
        return encode(CONTROL_CODEC, self.control_id, cmd, attrs, **kw)

    async def client(self) -> AsyncClient:
        return await AsyncClient.connect(self.path, codecs_of(self.device))


@asynccontextmanager
async def serving(
    device_kwargs: dict[str, Any] | None = None, **service_kwargs: Any
) -> AsyncIterator[Served]:
    """A PseudoDevice with the test family, served in the current trio loop."""
    device, test = make_device(**(device_kwargs or {}))
    path = socket_path()
    service = PseudoDevice(device, path, **service_kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        try:
            yield Served(device, test, path, service)
        finally:
            nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (in the trio loop) until true; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


class AsyncClient:
    """A raw SOCK_SEQPACKET client on a trio socket."""

    def __init__(self, sock: trio.socket.SocketType, codecs: dict[int, GenlFamily]) -> None:
        self.sock = sock
        self.codecs = codecs
        self.pid = 0

    @classmethod
    async def connect(cls, path: str, codecs: dict[int, GenlFamily]) -> AsyncClient:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        await sock.connect(path)
        return cls(sock, codecs)

    async def send(self, *messages: bytes) -> None:
        """One record holding ``messages``."""
        await self.sock.send(record_of(messages))

    async def recv(self, timeout: float = 10.0) -> bytes:
        """One record (fails the test if none comes in time)."""
        with trio.fail_after(timeout):
            data, _anc, flags, _addr = await self.sock.recvmsg(RECV_BUFFER)
        assert not flags & socket.MSG_TRUNC, "the service sent a record over 128 KiB"
        return data

    async def recv_messages(self, timeout: float = 10.0) -> list[AnyMessage]:
        return decode_record(await self.recv(timeout), self.codecs)

    async def nothing_within(self, seconds: float) -> bool:
        """True if no record arrives within ``seconds`` (for checks that cannot use markers)."""
        with trio.move_on_after(seconds):
            await trio.lowlevel.wait_readable(self.sock)
            return False
        return True

    async def until_marker(self, seq: int, timeout: float = 10.0) -> list[AnyMessage]:
        """Messages up to the transaction marker for ``seq`` (the marker itself excluded)."""
        out: list[AnyMessage] = []
        with trio.fail_after(timeout):
            while True:
                for msg in await self.recv_messages():
                    if isinstance(msg, NoopMessage) and msg.seq == seq:
                        return out
                    out.append(msg)

    async def markers_on(self, control_id: int) -> dict[str, Any]:
        """Turn transaction markers on; returns the socket properties (and learns the PID)."""
        await self.send(
            encode(CONTROL_CODEC, control_id, C_SOCK_PROP, {"txn_markers": 1}, seq=0xFFFF0000)
        )
        (reply,) = await self.recv_messages()
        assert isinstance(reply, GenlMessage), reply
        self.pid = reply.attrs["sock_pid"]
        return dict(reply.attrs)

    async def transact(self, *messages: bytes, seq: int) -> list[AnyMessage]:
        """Send one record (markers on) and return everything up to its marker."""
        await self.send(*messages)
        return await self.until_marker(seq)

    def close(self) -> None:
        self.sock.close()


def is_marker(msg: AnyMessage, seq: int, pid: int) -> bool:
    return isinstance(msg, NoopMessage) and msg.seq == seq and msg.pid == pid and msg.flags == 0


def expect_error(messages: Iterable[AnyMessage], code: int) -> ErrorMessage:
    """The one message of ``messages``, which must be an NLMSG_ERROR with ``code``."""
    (msg,) = list(messages)
    assert isinstance(msg, ErrorMessage), msg
    assert -msg.error == code, (errno.errorcode.get(-msg.error), msg.reason)
    return msg


def ack_flags(flags: int = 0) -> int:
    return NLM_F_REQUEST | NLM_F_ACK | flags


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
