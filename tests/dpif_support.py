"""Helpers for the userspace netlink socket and dpif tests.

* :class:`TrioService`: the pseudo-device with the test family (or any device) served in the
  test's own trio loop, which the test can stop and start again on the same path.
* :class:`BlockingDriver` / :class:`TrioDriver`: the two socket drivers behind one async
  interface, so a scenario is written once and run with both (the blocking socket's calls run in
  a worker thread; the trio socket's in the test's loop).
* Frames and flow keys for the dpif tests (no scapy: the frames are built with ``struct``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import trio
from pseudodev_support import TEST_CODEC, TEST_FAMILY, make_device, socket_path

from ovsdp.netlink.message import AnyMessage, GenlMessage
from ovsdp.pseudodev.device import Device
from ovsdp.pseudodev.server import PseudoDevice
from userspace.netlink_socket import AsyncNetlinkSocket, NetlinkSocket, Request, Result
from userspace.odp import parse_actions, parse_key

# -- the service in the test's trio loop ---------------------------------------------------------


class TrioService:
    """A :class:`PseudoDevice` run as a task of ``nursery`` until :meth:`stop`."""

    def __init__(self, device: Device | None = None, path: str | None = None) -> None:
        if device is None:
            device, self.test = make_device()
        self.device = device
        self.path = path or socket_path()
        self.service = PseudoDevice(device, self.path)
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self, nursery: trio.Nursery) -> TrioService:
        await nursery.start(self._run)
        return self

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                await self.service.run(task_status=task_status)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Stop serving: every connection is closed and the socket file removed."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()


# -- one interface, two drivers ------------------------------------------------------------------


class BlockingDriver:
    """A :class:`NetlinkSocket`, its calls run in a worker thread."""

    name = "blocking"

    def __init__(self, sock: NetlinkSocket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, path: str) -> BlockingDriver:
        sock = await trio.to_thread.run_sync(lambda: NetlinkSocket(path, timeout=20))
        await trio.to_thread.run_sync(sock.family, TEST_FAMILY, TEST_CODEC)
        return cls(sock)

    @property
    def pid(self) -> int:
        return self.sock.pid

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def family(self, name: str, codec: Any = None) -> Any:
        return await self._call(self.sock.family, name, codec)

    async def transact(self, family: str, cmd: int, attrs: Any = None, **kw: Any) -> Any:
        return await self._call(self.sock.transact, family, cmd, attrs, **kw)

    async def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        results: list[Result] = await self._call(self.sock.transact_many, requests)
        return results

    async def dump(self, family: str, cmd: int, attrs: Any = None, **kw: Any) -> list[Any]:
        return await self._call(lambda: list(self.sock.dump(family, cmd, attrs, **kw)))

    async def join(self, family: str, group: str) -> None:
        await self._call(self.sock.join, family, group)

    async def leave(self, family: str, group: str) -> None:
        await self._call(self.sock.leave, family, group)

    async def recv(self, timeout: float) -> list[AnyMessage]:
        messages: list[AnyMessage] = await self._call(self.sock.recv, timeout)
        return messages

    async def claim_pid(self, pid: int) -> None:
        await self._call(self.sock.claim_pid, pid)

    async def properties(self, **changes: int) -> dict[str, Any]:
        props: dict[str, Any] = await self._call(self.sock.properties, **changes)
        return props

    def close(self) -> None:
        self.sock.close()


class TrioDriver:
    """An :class:`AsyncNetlinkSocket`; ``recv(timeout)`` is ``recv`` under ``move_on_after``."""

    name = "trio"

    def __init__(self, sock: AsyncNetlinkSocket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, path: str) -> TrioDriver:
        sock = await AsyncNetlinkSocket.connect(path)
        await sock.family(TEST_FAMILY, TEST_CODEC)
        return cls(sock)

    @property
    def pid(self) -> int:
        return self.sock.pid

    async def family(self, name: str, codec: Any = None) -> Any:
        return await self.sock.family(name, codec)

    async def transact(self, family: str, cmd: int, attrs: Any = None, **kw: Any) -> Any:
        return await self.sock.transact(family, cmd, attrs, **kw)

    async def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        return await self.sock.transact_many(requests)

    async def dump(self, family: str, cmd: int, attrs: Any = None, **kw: Any) -> list[Any]:
        return [m async for m in self.sock.dump(family, cmd, attrs, **kw)]

    async def join(self, family: str, group: str) -> None:
        await self.sock.join(family, group)

    async def leave(self, family: str, group: str) -> None:
        await self.sock.leave(family, group)

    async def recv(self, timeout: float) -> list[AnyMessage]:
        with trio.move_on_after(timeout):
            return await self.sock.recv()
        return []

    async def claim_pid(self, pid: int) -> None:
        await self.sock.claim_pid(pid)

    async def properties(self, **changes: int) -> dict[str, Any]:
        return await self.sock.properties(**changes)

    def close(self) -> None:
        self.sock.close()


Driver = BlockingDriver | TrioDriver
DRIVERS: dict[str, type[BlockingDriver] | type[TrioDriver]] = {
    "blocking": BlockingDriver,
    "trio": TrioDriver,
}


async def recv_n(sock: Driver, count: int, timeout: float = 5.0) -> list[AnyMessage]:
    """Exactly ``count`` unsolicited messages (fails on fewer within ``timeout``)."""
    out: list[AnyMessage] = []
    with trio.fail_after(timeout):
        while len(out) < count:
            out += await sock.recv(timeout)
    assert len(out) == count, f"{len(out)} messages, expected {count}: {summary(out)}"
    return out


def summary(messages: Sequence[AnyMessage], limit: int = 10) -> str:
    """A short description of messages (type, seq, cmd) for assertion messages."""
    parts = [
        f"{type(m).__name__}(seq={m.seq}"
        + (f", cmd={m.cmd})" if isinstance(m, GenlMessage) else ")")
        for m in messages[:limit]
    ]
    return ", ".join(parts) + (f", ... ({len(messages)} in all)" if len(messages) > limit else "")


def ids(messages: Sequence[AnyMessage]) -> list[int]:
    """The ``id`` attribute of each test-family message."""
    out = []
    for msg in messages:
        assert isinstance(msg, GenlMessage), msg
        out.append(msg.attrs["id"])
    return out


# -- frames and keys -----------------------------------------------------------------------------

MAC = {
    "vm1": "00:15:5d:00:00:01",
    "vm2": "00:15:5d:00:00:02",
    "vm3": "00:15:5d:00:00:03",
}


def _mac(text: str) -> bytes:
    return bytes.fromhex(MAC.get(text, text).replace(":", ""))


def _ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(
    sport: int = 1000,
    dport: int = 2000,
    *,
    src: str = "vm1",
    dst: str = "vm2",
    ip_src: str = "10.0.0.1",
    ip_dst: str = "10.0.0.2",
    payload: bytes = b"x" * 18,
) -> bytes:
    """Ethernet / IPv4 (ttl 64) / UDP / payload."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, _ip(ip_src), _ip(ip_dst)
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return _mac(dst) + _mac(src) + b"\x08\x00" + header + udp


def udp_key_text(
    in_port: int = 1,
    sport: int = 1000,
    dport: int = 2000,
    *,
    src: str = "vm1",
    dst: str = "vm2",
    ip_src: str = "10.0.0.1",
    ip_dst: str = "10.0.0.2",
) -> str:
    """The exact key text of :func:`udp_frame` received on ``in_port``."""
    return (
        f"recirc_id(0),in_port({in_port}),"
        f"eth(src={MAC.get(src, src)},dst={MAC.get(dst, dst)}),"
        f"eth_type(0x0800),ipv4(src={ip_src},dst={ip_dst},proto=17,tos=0,ttl=64,frag=no),"
        f"udp(src={sport},dst={dport})"
    )


def key_mask(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Key and mask of an OVS key text."""
    return parse_key(text)


def key(text: str) -> dict[str, Any]:
    return parse_key(text)[0]


def actions(text: str) -> list[tuple[str, Any]]:
    """An OVS actions text as an action list (``""``: drop)."""
    return parse_actions(text) if text else []


def ufid(n: int) -> bytes:
    """A 16-byte UFID."""
    return n.to_bytes(4, "little") + b"\x5a" * 12


# -- the dpif against the whole service ----------------------------------------------------------


class RecordingSocket(NetlinkSocket):
    """A socket that notes what it sends and how each request ended: ``log`` holds
    (family, cmd, attrs, errno or 0); ``batches`` the size of each record sent by transact_many."""

    def __init__(self, path: str) -> None:
        self.log: list[tuple[str, int, dict[str, Any], int]] = []
        self.batches: list[int] = []
        super().__init__(path, timeout=20)
        self.log.clear()
        self.batches.clear()

    def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        results = super().transact_many(requests)
        self.batches.append(len(requests))
        for req, result in zip(requests, results, strict=True):
            code = result.error.errno if result.error is not None else 0
            self.log.append((req.family, req.cmd, dict(req.attrs), code))
        return results

    def requests(self, family: str) -> list[tuple[int, dict[str, Any], int]]:
        """(cmd, attrs, errno) of the requests of ``family``, in order."""
        return [(cmd, attrs, code) for fam, cmd, attrs, code in self.log if fam == family]


def inject(h: Any, port: str, frames: Sequence[bytes]) -> None:
    """Frames as if ``port``'s NIC received them (one batch), in the service's thread."""
    h.call(h.switch.receive, h.switch.port(port), list(frames))


def take(h: Any, port: str) -> list[bytes]:
    """What ``port``'s memory NIC received (removed)."""
    frames: list[bytes] = h.call(lambda: h.switch.port(port).nic.backend.take())
    return frames
