"""Network namespaces, veth pairs, VLANs and TAP devices for the NIC tests, made with pyroute2.

:class:`Lab` creates what a test asks for under unique names and removes all of it when the
``with`` block ends, failed or not: the interfaces it made in the root namespace, then its
namespaces (which takes every interface inside them along).  :func:`ping` is an ICMP echo from a
namespace (this machine has no ``ping`` binary), waited for in trio so a service in the same loop
keeps running.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root (network namespaces, veth, TAP, AF_PACKET)"
)


def unique(prefix: str) -> str:
    """A fresh interface or namespace name (at most 15 characters)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    assert len(name) <= 15, name
    return name


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


class Lab:
    """Namespaces and links of one test; everything goes away at the end of the ``with``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix  # before every name this lab makes (tests that share a host)
        self.ipr = IPRoute()
        self.namespaces: list[str] = []
        self.root_links: list[str] = []
        self._ns: dict[str, Any] = {}

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete what was made; errors are ignored (it may be gone already)."""
        for name in reversed(self.root_links):
            with contextlib.suppress(Exception):
                found = self.ipr.link_lookup(ifname=name)
                if found:
                    self.ipr.link("del", index=found[0])
        self.root_links.clear()
        for ns in self._ns.values():
            with contextlib.suppress(Exception):
                ns.close()
        self._ns.clear()
        for name in reversed(self.namespaces):
            with contextlib.suppress(Exception):
                netns.remove(name)
        self.namespaces.clear()
        self.ipr.close()

    # -- namespaces --------------------------------------------------------------------------

    def namespace(self, label: str = "n") -> str:
        """A new network namespace with its loopback up."""
        name = unique(f"{self.prefix or 'nic'}{label}")
        netns.create(name)
        self.namespaces.append(name)
        ns = self.rtnl(name)
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        return name

    def rtnl(self, ns: str | None) -> Any:
        """An rtnetlink socket in namespace ``ns`` (None: the root namespace)."""
        if ns is None:
            return self.ipr
        if ns not in self._ns:
            self._ns[ns] = NetNS(ns)
        return self._ns[ns]

    def index(self, ifname: str, ns: str | None = None) -> int:
        found = self.rtnl(ns).link_lookup(ifname=ifname)
        assert found, f"no interface {ifname} in {ns or 'the root namespace'}"
        return int(found[0])

    def exists(self, ifname: str, ns: str | None = None) -> bool:
        return bool(self.rtnl(ns).link_lookup(ifname=ifname))

    def mac(self, ifname: str, ns: str | None = None) -> bytes:
        (link,) = self.rtnl(ns).get_links(self.index(ifname, ns))
        return bytes.fromhex(link.get("IFLA_ADDRESS").replace(":", ""))

    # -- links -------------------------------------------------------------------------------

    def veth(
        self, ns: str, *, cidr: str | None = None, mac: bytes | None = None
    ) -> tuple[str, str]:
        """A veth pair: one end up in the root namespace, the other in ``ns`` (configured).

        Returns (root end, namespace end)."""
        root_end, ns_end = unique(f"{self.prefix}nr"), unique(f"{self.prefix}nn")
        self.ipr.link("add", ifname=root_end, kind="veth", peer={"ifname": ns_end})
        self.root_links.append(root_end)
        self.ipr.link("set", index=self.index(root_end), state="up")
        self.move(ns_end, ns, cidr=cidr, mac=mac)
        return root_end, ns_end

    def move(
        self,
        ifname: str,
        ns: str,
        *,
        cidr: str | None = None,
        mac: bytes | None = None,
    ) -> None:
        """Move a root-namespace interface into ``ns``; set its MAC, address, link up."""
        self.ipr.link("set", index=self.index(ifname), net_ns_fd=ns)
        self.configure(ifname, ns, cidr=cidr, mac=mac)

    def configure(
        self, ifname: str, ns: str | None, *, cidr: str | None = None, mac: bytes | None = None
    ) -> None:
        rtnl = self.rtnl(ns)
        index = self.index(ifname, ns)
        if mac is not None:
            rtnl.link("set", index=index, address=format_mac(mac))
        rtnl.link("set", index=index, state="up")
        if cidr is not None:
            address, prefix = cidr.split("/")
            rtnl.addr("add", index=index, address=address, prefixlen=int(prefix))

    def persistent_tap(self, name: str | None = None) -> str:
        """A TAP device nobody holds open (as ``ip tuntap add mode tap`` makes)."""
        name = name or unique(f"{self.prefix}nt")
        self.ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        self.root_links.append(name)
        return name

    def slow_qdisc(self, ifname: str) -> None:
        """A token bucket of 8 kbit/s that holds up to 16 MB: frames sent out of ``ifname`` wait
        there, so the sender's socket buffer fills (a NIC whose ring does not drain)."""
        self.ipr.tc(
            "add", "tbf", index=self.index(ifname), rate="8kbit", burst=1600, limit=16 << 20
        )

    # -- sockets inside a namespace ------------------------------------------------------------

    @contextlib.contextmanager
    def inside(self, ns: str) -> Iterator[None]:
        """Run the block with this thread in ``ns`` (sockets made there stay there)."""
        netns.pushns(ns)
        try:
            yield
        finally:
            netns.popns()

    def socket(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket in namespace ``ns``."""
        with self.inside(ns):
            return socket.socket(family, kind, proto)


def wait_for(check: Any, timeout: float = 5.0) -> Any:
    """Poll ``check`` (blocking) until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


async def ping(
    lab: Lab,
    ns: str,
    address: str,
    count: int = 3,
    timeout: float = 2.0,
    payload: bytes = b"ovsdp-nic-test" * 4,
) -> int:
    """Send ``count`` ICMP echo requests carrying ``payload`` from ``ns`` to ``address``; how
    many were answered (with the same payload)."""
    sock = lab.socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = secrets.randbelow(0xFFFF)
    answered = 0
    try:
        for seq in range(count):
            body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
            body = body[:2] + struct.pack("!H", inet_checksum(body)) + body[4:]
            sock.sendto(body, (address, 0))
            with trio.move_on_after(timeout):
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        packet = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    icmp = packet[(packet[0] & 0x0F) * 4 :]
                    kind, _code, _sum, got_id, got_seq = struct.unpack_from("!BBHHH", icmp)
                    if kind == 0 and (got_id, got_seq, icmp[8:]) == (ident, seq, payload):
                        answered += 1
                        break
    finally:
        sock.close()
    return answered


def rtnl_error_code(exc: BaseException) -> int | None:
    """The errno of a pyroute2 netlink error (None for other exceptions)."""
    return exc.code if isinstance(exc, NetlinkError) else None


# -- the ovsdp service in the test's trio loop ---------------------------------------------------


class LoopService:
    """``ovsdp serve`` (ovsdp.daemon.run_service) as a task of the test's nursery, with the
    :class:`~ovsdp.daemon.Service` at hand; ports from a TOML snippet."""

    def __init__(self, ports_toml: str) -> None:
        from pseudodev_support import socket_path

        from ovsdp.daemon import ServiceConfig, build_service
        from ovsdp.vswitch.config import parse_config

        self.path = socket_path()
        self.config = ServiceConfig(self.path, switch=parse_config(ports_toml, "<test>"))
        self.service = build_service(self.config)
        self.switch = self.service.switch
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    async def start(self, nursery: trio.Nursery) -> LoopService:
        await nursery.start(self._run)
        return self

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from ovsdp.daemon import run_service

        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                await run_service(
                    self.config,
                    service=self.service,
                    on_listening=lambda _path: task_status.started(),
                )
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Cancel the service and wait until it has closed its NICs and its socket."""
        assert self._scope is not None
        self._scope.cancel()
        await self._done.wait()

    def backend(self, port: str) -> Any:
        return self.switch.port(port).nic.backend

    async def cross_connect(self, a: str, b: str, vlans: tuple[int, ...] = ()) -> None:
        """A datapath with ports ``a`` and ``b``; megaflows send all of a to b and back."""
        await trio.to_thread.run_sync(cross_connect, self.path, a, b, vlans)


def cross_connect(
    path: str, a: str, b: str, vlans: tuple[int, ...] = (), datapath: str = "nictest"
) -> None:
    """(blocking) Create ``datapath`` with vports ``a`` and ``b``; flows in_port(a) -> b and back,
    everything else wildcarded; and the same for IPv4 in each VLAN of ``vlans``.

    (As in the kernel, a flow whose mask has no VLAN attribute matches only untagged frames:
    the TCI is always matched.)"""
    from userspace.dpif import Dpif
    from userspace.odp import parse_actions, parse_key

    dpif = Dpif.open(datapath, create=True, path=path)
    try:
        port_a = dpif.port_add(a)
        port_b = dpif.port_add(b)
        for src, dst in ((port_a, port_b), (port_b, port_a)):
            texts = [f"in_port({src}),eth()"]
            texts += [
                f"in_port({src}),eth(),eth_type(0x8100),vlan(vid={vid}),"
                "encap(eth_type(0x0800),ipv4())"
                for vid in vlans
            ]
            for text in texts:
                key, mask = parse_key(text)
                dpif.flow_put(key, mask, parse_actions(str(dst)))
    finally:
        dpif.sock.close()
