"""The host's tunnel endpoint (VTEP): one per switch, sans I/O.

As in the Hyper-V design (reference windows-datapath.md section 4), the switch's internal port
(the host vNIC) is the VTEP: it holds the VTEP's IPv4 address, and its MAC is the outer source
MAC.  Tunnel vports are ports of a datapath; an output to one encapsulates the packet and sends
it out of the switch's external port (the *uplink*) as if the VTEP had sent it.  A VXLAN packet
that arrives on the uplink for the VTEP is decapsulated and its inner frame goes through the
flow table of the datapath holding the VXLAN vport of that UDP port.

:class:`TunnelEndpoint` holds the VTEP's configuration (address, prefix, gateway, uplink),
routes, neighbour table, reassembly table, the outer-header templates and the counters.  The
packet path (``ovsdp/datapath/pipeline.py``) calls:

* :meth:`TunnelEndpoint.receive` with each batch from the uplink: VXLAN packets for the VTEP
  come back as flow keys and inner frames per tunnel port, fragments for the VTEP are
  reassembled first, ARP replies to the VTEP are learned, everything else is left for the
  ordinary path;
* :meth:`TunnelEndpoint.template` and :meth:`TunnelEndpoint.wrap` (or
  :meth:`TunnelEndpoint.encapsulate`) for outputs to tunnel ports;
* :meth:`TunnelEndpoint.take_tx` for frames the endpoint itself sends out of the uplink (ARP
  requests), and :meth:`TunnelEndpoint.tick` for housekeeping (reassembly timeouts, neighbour
  ageing and refresh).
"""

from __future__ import annotations

import functools
import ipaddress
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ..flowtable.flow_key import (
    KEY_SIZE,
    PREFIX_SIZE,
    Metadata,
    TunnelKey,
    extract_key,
    metadata_prefix,
)
from ..flowtable.layout import AF_INET, TUN_F_CSUM, TUN_F_KEY
from ..vswitch.switch import PortType, SwitchPort
from . import vxlan
from .fragment import FragmentError, fragment_ipv4
from .neighbours import ARP_REPLY, NeighbourTable, Routes, arp_request, parse_arp
from .reassembly import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FRAGMENTS,
    DEFAULT_TIMEOUT,
    MAX_DATAGRAM,
    Reassembler,
    ReassemblyStats,
)
from .vxlan import OuterTemplate, inner_flow_hash, udp_source_port

if TYPE_CHECKING:
    from ..vswitch.switch import VSwitch

__all__ = [
    "IP_SUM_CONSTANT",
    "NO_CSUM_VXLAN_I",
    "RX_FLAGS_PROTO",
    "RX_INNER",
    "RX_INNER_ULEN",
    "RX_KEY",
    "RX_OUTER",
    "RX_PREFIX",
    "STAT_NAMES",
    "TCP_MIN_ULEN",
    "TunnelCounters",
    "TunnelEndpoint",
    "TunnelParams",
    "TunnelSettings",
    "check_unicast",
    "endpoint_of",
    "format_ipv4",
    "key_head",
    "parse_interface",
    "parse_ipv4",
]

T = TypeVar("T")

TICK_INTERVAL = 0.1
"""Seconds between two housekeeping runs the packet path triggers."""
MAX_TEMPLATES = 4096

_ETH_IPV4 = b"\x08\x00"
_ETH_ARP = b"\x08\x06"

# The flow key's metadata prefix of a decapsulated packet, packed in one call: in_port,
# recirc_id, dp_hash, priority, skb_mark, then the tunnel fields (layout.py's order).
_PREFIX = struct.Struct("!HIIIIQIIBBBBHH")
assert _PREFIX.size == PREFIX_SIZE
assert _PREFIX.pack(7, 0, 0, 0, 0, 5, 1, 2, 3, 4, TUN_F_KEY | TUN_F_CSUM, AF_INET, 9, 10) == (
    metadata_prefix(Metadata(7, tunnel=TunnelKey(5, 1, 2, 3, 4, csum=True, tp_src=9, tp_dst=10)))
)


# The outer headers of a frame from the uplink as receive() reads them, in one call (offsets 12
# to 49, as many fields as its checks and the flow key need, so that nearly every check is one
# comparison of a small integer): ethertype; IPv4 version/IHL, TOS, total length, id,
# flags/offset, TTL, protocol, header checksum, source, destination; UDP source and destination
# ports, length; the UDP checksum with the VXLAN flags word (6 bytes: the fast path takes them
# when they are 0 and the I flag alone); the VNI (its 3 bytes, as the key holds them) and the
# reserved byte.
RX_OUTER = struct.Struct("!12xHBBHHHBBHIIHHH6s3sB")
assert RX_OUTER.size == vxlan.OUTER_HLEN

# The inner frame's headers that extract_key's untagged IPv4 TCP/UDP fast path reads (MACs,
# ethertype, version/IHL, TOS, flags/offset, TTL, protocol, addresses, ports; TCP's data offset
# byte and flags byte), at their offsets in the outer frame (50 to 97).  Read when the inner
# frame has the 54 bytes that fast path needs: a UDP length of at least RX_INNER_ULEN.
RX_INNER = struct.Struct("!50x12sHBB4xHBB2x8s4s8xBB")
RX_INNER_ULEN = 16 + 54

# The whole flow key of a decapsulated untagged IPv4 TCP/UDP packet in one pack: the metadata
# prefix (in_port with the zero metadata after it: _head, one per port; tun_id, i.e. the VNI's 3
# bytes behind 5 zero bytes; outer source and destination, TOS, TTL; tunnel flags and proto; UDP
# source and destination ports), then exactly what extract_key's fast path packs behind a prefix.
RX_KEY = struct.Struct("!18s5x3sIIBBHHH12s8xHBBBBB8s28x4sH28x")
assert RX_KEY.size == KEY_SIZE
# the same prefix alone, for inner frames extract_key reads itself
RX_PREFIX = struct.Struct("!18s5x3sIIBBHHH")
assert RX_PREFIX.size == PREFIX_SIZE
RX_FLAGS_PROTO = TUN_F_KEY << 8 | AF_INET
# IPv4 version/IHL 0x45 and protocol UDP as they count in the header checksum (both checked)
IP_SUM_CONSTANT = 0x4500 + 17
# no UDP checksum, and a valid VXLAN header's flags word
NO_CSUM_VXLAN_I = bytes(2) + vxlan.VXLAN_FLAGS_I.to_bytes(4, "big")

# Per value of a TCP header's data offset byte, the UDP length (outer) from which the inner
# frame holds the whole TCP header, as extract_key's fast path requires; the byte's low bits
# (reserved, NS) must be clear, so that the flags byte alone is the key's tcp_flags: else never.
TCP_MIN_ULEN = tuple(
    16 + 34 + (b >> 4) * 4 if b >= 0x50 and not b & 15 else 1 << 20 for b in range(256)
)


@functools.lru_cache(maxsize=1024)
def key_head(port_no: int) -> bytes:
    """The first 18 bytes of a decapsulated packet's key prefix: in_port, zero metadata."""
    return port_no.to_bytes(2, "big") + bytes(16)


def _items_of(
    ports: Mapping[int, tuple[T, int]], out: dict[T, list[tuple[bytes, bytes]]], dport: int
) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """For TunnelEndpoint.receive, when a packet's UDP port is another than the previous
    one's: the port, the key head of its tunnel vport and the list its decapsulated packets go
    to (None: no tunnel port has it)."""
    target = ports.get(dport)
    if target is None:
        return None
    group, port_no = target
    found = out.get(group)
    if found is None:
        found = out[group] = []
    return dport, key_head(port_no), found


assert RX_PREFIX.pack(key_head(7), b"\0\0\5", 1, 2, 3, 4, RX_FLAGS_PROTO, 9, 10) == _PREFIX.pack(
    7, 0, 0, 0, 0, 5, 1, 2, 3, 4, TUN_F_KEY, AF_INET, 9, 10
)


def _check_rx_key() -> None:
    """RX_KEY packs what extract_key builds behind RX_PREFIX (checked once, at import)."""
    inner = bytes.fromhex(
        "00155d00000200155d0000010800"
        "4501002800014000400601020a0000010a100000"
        "0400005000000001000000005018ffff00000000"
    )
    frame = bytes(50) + inner
    args = (key_head(7), b"\1\2\3", 0x0A0B0C0D, 0x01020304, 5, 6, RX_FLAGS_PROTO, 40000, 4789)
    macs, _et, _vhl, tos, _frag, ttl, proto, addrs, l4_ports, _off, flags = RX_INNER.unpack_from(
        frame
    )
    key = RX_KEY.pack(*args, macs, 0x0800, 1, proto, tos, ttl, 0, addrs, l4_ports, flags)
    assert key == extract_key(inner, RX_PREFIX.pack(*args))


_check_rx_key()

# -- addresses ---------------------------------------------------------------------------------


def parse_ipv4(text: str) -> int:
    """A dotted-quad IPv4 address as an integer (ValueError if it is not one)."""
    return int(ipaddress.IPv4Address(text.strip()))


def format_ipv4(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def parse_interface(text: str) -> tuple[int, int]:
    """``a.b.c.d/len`` to (address, prefix length); a unicast host address is required."""
    try:
        iface = ipaddress.IPv4Interface(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an IPv4 address/prefix: {text!r} ({exc})") from None
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length (a.b.c.d/len)")
    check_unicast(int(iface.ip))
    return int(iface.ip), iface.network.prefixlen


def check_unicast(address: int) -> None:
    """ValueError unless ``address`` can be a host's address (not 0, multicast, broadcast)."""
    ip = ipaddress.IPv4Address(address)
    if address == 0 or ip.is_multicast or address == 0xFFFFFFFF or ip.is_loopback:
        raise ValueError(f"{ip} cannot be a VTEP, gateway or neighbour address")


# -- configuration and counters ----------------------------------------------------------------


@dataclass
class TunnelSettings:
    """The endpoint's configuration (the switch configuration's ``ipv4`` of the internal port,
    ``[tunnel]`` and ``[[neighbour]]``)."""

    address: int = 0  # the VTEP address; 0: none (no encap, no decap)
    prefix: int = 24
    vtep_port: str | None = None  # the internal port holding it (None: the first internal)
    gateway: int = 0  # 0: no default route
    uplink: str | None = None  # the external port (None: the first external port)
    neighbours: dict[int, bytes] = field(default_factory=dict)  # static entries
    reassembly_timeout: float = DEFAULT_TIMEOUT
    reassembly_memory: int = DEFAULT_MAX_BYTES
    reassembly_fragments: int = DEFAULT_MAX_FRAGMENTS


@dataclass
class TunnelCounters:
    """What the endpoint counted (drops are also counted in the tunnel vport's tx_dropped)."""

    encap_packets: int = 0  # packets encapsulated and sent out of the uplink
    encap_fragmented: int = 0  # of them, sent as several outer IPv4 fragments
    encap_fragments: int = 0  # outer fragments sent for them
    no_tunnel_key: int = 0  # dropped: output to a tunnel port without set(tunnel(...))
    bad_tunnel_key: int = 0  # dropped: a key VXLAN over IPv4 cannot carry (no IPv4 dst)
    no_vtep: int = 0  # dropped: no VTEP address or no internal port
    no_uplink: int = 0  # dropped: no external port, or its NIC not connected and up
    no_route: int = 0  # dropped: destination not on the VTEP's subnet and no gateway
    neighbour_miss: int = 0  # dropped: next hop's MAC unknown (being resolved by ARP)
    too_big: int = 0  # dropped: outer packet over the uplink MTU with DF requested
    arp_requests: int = 0  # ARP requests the VTEP sent
    decap_packets: int = 0  # VXLAN packets decapsulated into the flow table
    truncated: int = 0  # dropped on decap: headers or lengths cut short
    bad_ip: int = 0  # dropped on decap: outer IPv4 header invalid
    bad_ip_csum: int = 0  # dropped on decap: outer IPv4 header checksum wrong
    bad_udp: int = 0  # dropped on decap: UDP length invalid
    bad_udp_csum: int = 0  # dropped on decap: UDP checksum (non-zero) wrong
    bad_vxlan: int = 0  # dropped on decap: I flag clear or reserved bits set

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


STAT_NAMES: tuple[str, ...] = (
    *(f.name for f in fields(TunnelCounters)),
    "arp_learned",  # ARP replies that created or refreshed a neighbour entry
    "arp_ignored",  # ARP replies to the VTEP for addresses it did not ask about
    "neighbour_expired",  # learned or incomplete neighbour entries that timed out
    "neighbour_full",  # neighbour entries refused: the table was full
    *(f"reasm_{f.name}" for f in fields(ReassemblyStats)),
    "reasm_entries",  # datagrams being reassembled now
    "reasm_memory",  # bytes the reassembly table holds now
)
"""The names :meth:`TunnelEndpoint.stats` reports, in order."""


class TunnelParams(NamedTuple):
    """What the outer headers take from a tunnel key (``set(tunnel(...))``)."""

    vni: int
    src: int  # 0: the VTEP address
    dst: int
    tos: int
    ttl: int
    df: bool
    csum: bool
    tp_dst: int  # 0: the tunnel vport's UDP port

    @classmethod
    def from_key(cls, key: Mapping[str, Any]) -> TunnelParams | None:
        """From a tunnel key's netlink attributes; None if VXLAN over IPv4 cannot carry it."""
        dst = key.get("ipv4_dst") or 0
        if not dst or key.get("vxlan_opts") or key.get("geneve_opts"):
            return None
        return cls(
            (key.get("id") or 0) & 0xFFFFFF,
            key.get("ipv4_src") or 0,
            dst,
            key.get("tos") or 0,
            key.get("ttl") or 0,
            bool(key.get("dont_fragment")),
            bool(key.get("csum")),
            key.get("tp_dst") or 0,
        )


class Template(NamedTuple):
    """An outer-header template and where its packets go."""

    outer: OuterTemplate
    uplink: SwitchPort
    mtu: int


# -- the endpoint ------------------------------------------------------------------------------


class TunnelEndpoint:
    """The VTEP of one switch (see the module docstring)."""

    def __init__(
        self,
        switch: VSwitch,
        settings: TunnelSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.switch = switch
        self.clock = clock
        self.counters = TunnelCounters()
        self.routes = Routes()
        self.neighbours = NeighbourTable()
        self.reassembly = Reassembler()
        self.vtep_port_name: str | None = None
        self.uplink_name: str | None = None
        self.vtep_bytes = b""  # the VTEP address as 4 bytes (b"": none), for the rx check
        self.vtep_int = -1  # the VTEP address (-1: none, so no packet's address matches)
        self.ip_id = 0
        self.tx: list[bytes] = []  # frames the endpoint sends out of the uplink (ARP)
        self.next_tick = 0.0
        self._templates: dict[tuple[TunnelParams, int], Template] = {}
        self._signature: tuple[Any, ...] = ()
        self.generation = 0  # advances whenever cached templates become invalid
        self._config_gen = 0
        self._uplink: SwitchPort | None = None
        self._vtep: SwitchPort | None = None
        self.configure(settings or TunnelSettings())

    # -- configuration ---------------------------------------------------------------------------

    def configure(self, settings: TunnelSettings) -> None:
        """Apply a whole configuration (the switch configuration's)."""
        self.reassembly = Reassembler(
            timeout=settings.reassembly_timeout,
            max_fragments=settings.reassembly_fragments,
            max_bytes=settings.reassembly_memory,
        )
        self.uplink_name = settings.uplink
        self.set_gateway(settings.gateway)
        self.set_vtep(settings.address, settings.prefix, settings.vtep_port)
        for ip, mac in settings.neighbours.items():
            self.add_neighbour(ip, mac)

    def set_vtep(self, address: int, prefix: int = 24, port: str | None = None) -> None:
        """The VTEP address and prefix (address 0: none) and the internal port holding it
        (None: the first internal port).  Learned neighbours are forgotten."""
        if address:
            check_unicast(address)
        if not 0 <= prefix <= 32:
            raise ValueError(f"prefix length {prefix} is outside 0..32")
        self.routes.address = address
        self.routes.prefix = prefix
        self.vtep_port_name = port
        self.vtep_bytes = address.to_bytes(4, "big") if address else b""
        self.vtep_int = address if address else -1
        self.neighbours.clear_dynamic()
        self._changed()

    def set_gateway(self, gateway: int) -> None:
        """The default gateway (0: none)."""
        if gateway:
            check_unicast(gateway)
        self.routes.gateway = gateway
        self._changed()

    def set_uplink(self, name: str | None) -> None:
        """The external port encapsulated packets leave by (None: the first external port)."""
        self.uplink_name = name
        self._changed()

    def add_neighbour(self, ip: int, mac: bytes) -> None:
        """A static neighbour entry."""
        check_unicast(ip)
        if len(mac) != 6 or mac[0] & 1 or mac == bytes(6):
            raise ValueError("a neighbour needs a unicast MAC")
        self.neighbours.add_static(ip, mac)

    def remove_neighbour(self, ip: int) -> bool:
        """Forget a neighbour (static or learned); whether there was one."""
        return self.neighbours.remove(ip)

    def _changed(self) -> None:
        self._config_gen += 1

    # -- the switch ports it uses ------------------------------------------------------------------

    def _first(self, port_type: PortType, cached: SwitchPort | None) -> SwitchPort | None:
        ports = self.switch.ports
        if cached is not None and ports.get(cached.id) is cached and cached.type is port_type:
            return cached
        for port_id in sorted(ports):
            if ports[port_id].type is port_type:
                return ports[port_id]
        return None

    def uplink(self) -> SwitchPort | None:
        """The external port: the one named in the configuration, else the first one."""
        if self.uplink_name is not None:
            return self.switch.by_name.get(self.uplink_name)
        self._uplink = self._first(PortType.EXTERNAL, self._uplink)
        return self._uplink

    def vtep_port(self) -> SwitchPort | None:
        """The internal port that is the VTEP (its MAC is the outer source MAC)."""
        if self.vtep_port_name is not None:
            return self.switch.by_name.get(self.vtep_port_name)
        self._vtep = self._first(PortType.INTERNAL, self._vtep)
        return self._vtep

    def is_uplink(self, port: SwitchPort) -> bool:
        """Is ``port`` the uplink of an endpoint with an address (whose frames need the VTEP
        check)?"""
        return bool(self.vtep_bytes) and port is self.uplink()

    # -- housekeeping -----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Reassembly timeouts, neighbour ageing and refresh requests (queued in ``tx``)."""
        if now is None:
            now = self.clock()
        self.next_tick = now + TICK_INTERVAL
        self.reassembly.expire(now)
        for ip in self.neighbours.tick(now):
            self._ask(ip)

    def maybe_tick(self) -> None:
        """Run :meth:`tick` when it is due (the packet path calls this per batch)."""
        now = self.clock()
        if now >= self.next_tick:
            self.tick(now)

    def take_tx(self) -> list[bytes]:
        """The frames the endpoint wants sent out of the uplink (and forgets them)."""
        out, self.tx = self.tx, []
        return out

    def _ask(self, ip: int) -> None:
        port = self.vtep_port()
        if port is None or not self.routes.address:
            return
        self.tx.append(arp_request(port.mac, self.routes.address, ip))
        self.counters.arp_requests += 1

    # -- encapsulation ---------------------------------------------------------------------------

    def _check_signature(self) -> None:
        uplink = self.uplink()
        vtep = self.vtep_port()
        signature = (
            self._config_gen,
            self.neighbours.generation,
            uplink,
            uplink.mtu if uplink is not None else 0,
            vtep,
            vtep.mac if vtep is not None else b"",
        )
        if signature != self._signature:
            self._signature = signature
            self._templates.clear()
            self.generation += 1

    def prepare(self) -> int:
        """Before a batch of encapsulations: housekeeping when it is due, and a check that the
        templates are still valid (ports, MACs, MTU, neighbours, configuration).  Returns the
        templates' generation: a template obtained under the same generation is still good."""
        now = self.clock()
        if now >= self.next_tick:
            self.tick(now)
        self._check_signature()
        return self.generation

    def template(self, params: TunnelParams, dst_port: int) -> Template | None:
        """The outer headers for a tunnel key and a tunnel vport's UDP port, or None: the
        packet cannot be sent now (counted; an ARP request may be queued in ``tx``)."""
        self._check_signature()
        return self.lookup_template(params, dst_port)

    def lookup_template(
        self, params: TunnelParams, dst_port: int, count: bool = True
    ) -> Template | None:
        """:meth:`template` right after :meth:`prepare` (no validity check of its own);
        ``count=False``: a failure is neither counted nor acted on (no ARP request)."""
        found = self._templates.get((params, dst_port))
        if found is not None:
            return found
        counters = self.counters if count else TunnelCounters()
        vtep = self.vtep_port()
        address = self.routes.address
        if vtep is None or not address:
            counters.no_vtep += 1
            return None
        uplink = self.uplink()
        if uplink is None:
            counters.no_uplink += 1
            return None
        hop = self.routes.next_hop(params.dst)
        if hop is None:
            counters.no_route += 1
            return None
        now = self.clock()
        mac = self.neighbours.lookup(hop, now)
        if mac is None:
            counters.neighbour_miss += 1
            if count and self.neighbours.want(hop, now):
                self._ask(hop)
            return None
        outer = OuterTemplate(
            mac,
            vtep.mac,
            params.src or address,
            params.dst,
            vni=params.vni,
            dst_port=params.tp_dst or dst_port,
            tos=params.tos,
            ttl=params.ttl,
            df=params.df,
            csum=params.csum,
        )
        if len(self._templates) >= MAX_TEMPLATES:
            self._templates.clear()
        found = self._templates[(params, dst_port)] = Template(outer, uplink, uplink.mtu)
        return found

    def wrap(self, template: Template, frame: bytes, flow_hash: int = 0) -> list[bytes] | None:
        """The outer frame(s) for ``frame``: one, or its fragments when it exceeds the uplink's
        MTU; None when it exceeds it with DF (counted)."""
        ip_id = self.ip_id = (self.ip_id + 1) & 0xFFFF
        sport = udp_source_port(flow_hash or inner_flow_hash(frame))
        outer = template.outer.build(frame, ip_id, sport)
        counters = self.counters
        if len(outer) - 14 <= template.mtu:
            counters.encap_packets += 1
            return [outer]
        if template.outer.df:
            counters.too_big += 1
            return None
        try:
            pieces = fragment_ipv4(outer, template.mtu)
        except FragmentError:
            counters.too_big += 1
            return None
        counters.encap_packets += 1
        counters.encap_fragmented += 1
        counters.encap_fragments += len(pieces)
        return pieces

    def encapsulate(
        self, frame: bytes, key: Mapping[str, Any] | None, dst_port: int, flow_hash: int = 0
    ) -> tuple[list[bytes], SwitchPort] | None:
        """Encapsulate ``frame`` with the tunnel key ``key`` (``set(tunnel(...))``'s netlink
        attributes) for a tunnel vport of UDP port ``dst_port``: the outer frames and the port
        they leave by, or None when it is dropped (counted)."""
        if key is None:
            self.counters.no_tunnel_key += 1
            return None
        params = TunnelParams.from_key(key)
        if params is None:
            self.counters.bad_tunnel_key += 1
            return None
        template = self.template(params, dst_port)
        if template is None:
            return None
        if not template.uplink.operational:
            self.counters.no_uplink += 1
            return None
        frames = self.wrap(template, frame, flow_hash)
        return None if frames is None else (frames, template.uplink)

    # -- decapsulation ---------------------------------------------------------------------------

    def receive(
        self, frames: list[bytes], ports: Mapping[int, tuple[T, int]]
    ) -> tuple[dict[T, list[tuple[bytes, bytes]]], list[bytes], int]:
        """One batch from the uplink.  ``ports`` maps a UDP port to a tunnel vport's
        (target, port number).

        Returns ``(decapsulated, rest, consumed)``: per target, ``(flow key, inner frame)`` of
        each VXLAN packet for the VTEP (its key carries the tunnel metadata and the vport's
        number as in_port); the frames that are not for the tunnel (they go their ordinary way;
        a reassembled datagram that is not VXLAN among them, in place of its last fragment);
        and how many frames the endpoint consumed (fragments held, packets dropped).  Every
        input frame is in exactly one of the three (a reassembled datagram stands for the
        fragment that completed it).

        The common case -- an unfragmented VXLAN packet without IP options or UDP checksum
        whose inner frame is untagged IPv4 TCP or UDP -- costs one unpack of the outer headers,
        a few comparisons of small integers, one unpack of the inner headers and one pack of
        the whole flow key; anything else goes through :meth:`_rx_other` (``vxlan.parse`` and
        ``extract_key``), which decides the same (tests/test_vxlan.py checks it).
        """
        vtep = self.vtep_int
        out: dict[T, list[tuple[bytes, bytes]]] = {}
        rest: list[bytes] = []
        consumed = 0
        unpack = RX_OUTER.unpack_from
        unpack_inner = RX_INNER.unpack_from
        pack_key = RX_KEY.pack
        tcp_min = TCP_MIN_ULEN
        now = -1.0
        reassembly = self.reassembly
        held: bytes | None = None  # a first fragment, kept for the next one (join_adjacent)
        held_fields: tuple[Any, ...] = ()
        port = -1  # the UDP port of the tunnel port ``items`` and ``head`` are for
        items: list[tuple[bytes, bytes]] = []
        head = b""
        for frame in frames:
            n = len(frame)
            if n < 50:
                consumed += self._rx_other(frame, ports, out, rest)
                continue
            # (see RX_OUTER)
            et, vhl, tos, total, ident, frag, ttl, proto, csum, src, dst, sport, dport, ulen, \
                udp_vx, vni, res = unpack(frame)  # fmt: skip
            if dst != vtep or et != 0x0800:
                if et == 0x0806:
                    self._arp_in(frame)
                rest.append(frame)
                continue
            if frag and frag != 0x4000:  # MF, an offset or the reserved bit (DF alone is fine)
                if not (frag & 0x3FFF and proto == 17 and 0x45 <= vhl <= 0x4F):
                    consumed += self._rx_other(frame, ports, out, rest)
                    continue
                # a fragment of a UDP datagram for the VTEP: reassembled first
                if now < 0:
                    now = self.clock()
                if held is not None:
                    consumed += 1  # the first fragment, whatever becomes of the two
                    first, held = held, None
                    joined = None
                    if not reassembly.entries:
                        h_vhl, h_tos, h_total, h_ident, h_frag, h_csum, h_ttl, h_src, h_sport, \
                            h_dport, h_ulen, h_udp_vx, h_vni, h_res = held_fields  # fmt: skip
                        if h_dport != port:
                            switched = _items_of(ports, out, h_dport)
                            if switched is not None:
                                port, head, items = switched
                        size = h_total - 20
                        if (
                            # the two halves of one datagram, as join_adjacent requires, both
                            # without IP options
                            vhl == 0x45
                            and h_vhl == 0x45
                            and (frag & 0x3FFF) << 3 == size  # the last, right behind the first
                            and ident == h_ident
                            and src == h_src
                            and not size & 7
                            and size >= reassembly.min_first
                            and size + total <= MAX_DATAGRAM
                            and total >= 20
                            and 14 + h_total <= len(first)
                            and 14 + total <= n
                            # and the datagram is the common case of the decap below: its UDP
                            # length is the IP payload's, its header checksum is the first
                            # fragment's (join_adjacent adjusts it for the new length and flags)
                            and h_dport == port
                            and h_udp_vx == NO_CSUM_VXLAN_I
                            and not h_res
                            and h_ulen == size + total - 20
                            and h_ulen >= 30
                            and not (h_tos + h_total + h_ident + h_frag + (h_ttl << 8) + h_csum
                                     + src + dst + IP_SUM_CONSTANT) % 0xFFFF
                        ):  # fmt: skip
                            # the inner frame straight from the two fragments, whose whole
                            # datagram need not be built
                            r_stats = reassembly.stats
                            r_stats.fragments += 2
                            r_stats.reassembled += 1
                            reassembly.last_mru = h_total if h_total > total else total
                            inner = first[50 : 14 + h_total] + frame[34 : 14 + total]
                            prefix = RX_PREFIX.pack(head, h_vni, src, dst, h_tos, h_ttl,
                                                     RX_FLAGS_PROTO, h_sport, h_dport)  # fmt: skip
                            items.append((extract_key(inner, prefix), inner))
                            continue
                        joined = reassembly.join_adjacent(
                            first, frame, 14, h_total, h_ident, h_frag, h_csum, total, ident, frag
                        )
                    if joined is not None:
                        # the datagram's headers are the first fragment's, but for these
                        frame, total, frag, csum = joined
                        n = len(frame)
                        vhl, tos, _total, ident, _frag, _csum, ttl, _src, sport, dport, ulen, \
                            udp_vx, vni, res = held_fields  # fmt: skip
                    else:
                        whole = reassembly.add_pair(first, frame, now)
                        if whole is None or len(whole) < 50:
                            consumed += 1
                            continue
                        frame = whole
                        n = len(frame)
                        et, vhl, tos, total, ident, frag, ttl, proto, csum, src, dst, sport, \
                            dport, ulen, udp_vx, vni, res = unpack(frame)  # fmt: skip
                elif frag & 0x3FFF == 0x2000 and not reassembly.entries:
                    # a first fragment: it and the next one are likely one whole datagram
                    held = frame
                    held_fields = (vhl, tos, total, ident, frag, csum, ttl, src, sport, dport,
                                   ulen, udp_vx, vni, res)  # fmt: skip
                    continue
                else:
                    whole = reassembly.add(frame, now)
                    if whole is None or len(whole) < 50:
                        consumed += 1
                        continue
                    # this switch frame now stands for the whole datagram: decapsulated below
                    frame = whole
                    n = len(frame)
                    et, vhl, tos, total, ident, frag, ttl, proto, csum, src, dst, sport, dport, \
                        ulen, udp_vx, vni, res = unpack(frame)  # fmt: skip
            if dport != port:
                switched = _items_of(ports, out, dport)
                if switched is not None:
                    port, head, items = switched
            if (
                dport == port
                and vhl == 0x45  # no IP options
                and proto == 17
                and udp_vx == NO_CSUM_VXLAN_I  # (a UDP checksum to verify: _rx_other)
                and not res
                and total + 14 <= n
                and 30 <= ulen <= total - 20
                and not (tos + total + ident + frag + (ttl << 8) + csum + src + dst
                         + IP_SUM_CONSTANT) % 0xFFFF  # the IP header checksum
            ):  # fmt: skip
                # the common case, validated as vxlan.parse() would
                inner = frame[50 : 34 + ulen]
                if ulen >= RX_INNER_ULEN:
                    i_macs, i_et, i_vhl, i_tos, i_frag, i_ttl, i_proto, i_addrs, i_ports, \
                        i_off, i_flags = unpack_inner(frame)  # fmt: skip
                    # extract_key's fast path, for an inner frame that is not a fragment
                    if i_et == 0x0800 and i_vhl == 0x45 and (not i_frag or i_frag == 0x4000):
                        if i_proto == 6 and ulen >= tcp_min[i_off]:
                            items.append((pack_key(head, vni, src, dst, tos, ttl, RX_FLAGS_PROTO,
                                sport, dport, i_macs, 0x0800, 1, 6, i_tos, i_ttl, 0, i_addrs,
                                i_ports, i_flags), inner))  # fmt: skip
                            continue
                        if i_proto == 17:
                            items.append((pack_key(head, vni, src, dst, tos, ttl, RX_FLAGS_PROTO,
                                sport, dport, i_macs, 0x0800, 1, 17, i_tos, i_ttl, 0, i_addrs,
                                i_ports, 0), inner))  # fmt: skip
                            continue
                prefix = RX_PREFIX.pack(head, vni, src, dst, tos, ttl, RX_FLAGS_PROTO, sport, dport)
                items.append((extract_key(inner, prefix), inner))
                continue
            consumed += self._rx_other(frame, ports, out, rest)
        if held is not None:
            # alone, a first fragment completes nothing, unless its datagram's other fragments
            # came in another way (a frame too short for the loop above)
            whole = reassembly.add(held, now)
            consumed += 1 if whole is None else self._rx_other(whole, ports, out, rest)
        self.counters.decap_packets += len(frames) - consumed - len(rest)
        return out, rest, consumed

    def _rx_other(
        self,
        frame: bytes,
        ports: Mapping[int, tuple[T, int]],
        out: dict[T, list[tuple[bytes, bytes]]],
        rest: list[bytes],
    ) -> int:
        """:meth:`receive` for any frame but a plain valid VXLAN packet: short frames, ARP,
        fragments, IP options, UDP checksums, broken packets.  Returns 1 if the frame was
        consumed (held for reassembly or dropped), else 0 (appended to ``out`` or ``rest``)."""
        counters = self.counters
        if frame[30:34] != self.vtep_bytes or frame[12:14] != _ETH_IPV4:
            if frame[12:14] == _ETH_ARP:
                self._arp_in(frame)
            rest.append(frame)
            return 0
        if frame[23] != 17:  # not UDP: not a tunnel packet
            rest.append(frame)
            return 0
        if frame[20] & 0x3F or frame[21]:  # a fragment (MF or an offset)
            if frame[14] >> 4 != 4 or frame[14] & 15 < 5:
                counters.bad_ip += 1
                return 1
            whole = self.reassembly.add(frame, self.clock())
            if whole is None:
                return 1
            frame = whole  # this switch frame now stands for the whole datagram
        l4 = 14 + ((frame[14] & 15) << 2)
        if len(frame) < l4 + 4:
            counters.truncated += 1
            return 1
        target = ports.get(frame[l4 + 2] << 8 | frame[l4 + 3])
        if target is None:
            rest.append(frame)
            return 0
        parsed = vxlan.parse(frame)
        if isinstance(parsed, str):
            setattr(counters, parsed, getattr(counters, parsed) + 1)
            return 1
        inner, vni, src, dst, tos, ttl, csum, sport, dport = parsed
        flags = TUN_F_KEY | TUN_F_CSUM if csum else TUN_F_KEY
        group, port_no = target
        prefix = _PREFIX.pack(
            port_no, 0, 0, 0, 0, vni, src, dst, tos, ttl, flags, AF_INET, sport, dport
        )
        out.setdefault(group, []).append((extract_key(inner, prefix), inner))
        return 0

    def _arp_in(self, frame: bytes) -> None:
        """Learn from an ARP reply to the VTEP (the frame itself goes on its way)."""
        arp = parse_arp(frame)
        if arp is None or arp.op != ARP_REPLY or arp.tpa != self.routes.address:
            return
        if not self.routes.on_link(arp.spa) or arp.sha[0] & 1:
            return
        self.neighbours.learn(arp.spa, arp.sha, self.clock())

    # -- reports -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Every counter: the endpoint's, the neighbour table's (``arp_*``, ``neighbour_*``) and
        the reassembly table's (``reasm_*``), with the reassembly memory in use."""
        out = self.counters.as_dict()
        nb = self.neighbours
        out.update(
            arp_learned=nb.learned,
            arp_ignored=nb.ignored,
            neighbour_expired=nb.expired,
            neighbour_full=nb.full,
        )
        out.update({f"reasm_{k}": v for k, v in self.reassembly.stats.as_dict().items()})
        out["reasm_entries"] = len(self.reassembly)
        out["reasm_memory"] = self.reassembly.memory
        return {name: out[name] for name in STAT_NAMES}


def endpoint_of(switch: VSwitch) -> TunnelEndpoint:
    """The switch's tunnel endpoint (made on first use)."""
    endpoint = switch.tunnel
    if not isinstance(endpoint, TunnelEndpoint):
        endpoint = switch.tunnel = TunnelEndpoint(switch)
    return endpoint
