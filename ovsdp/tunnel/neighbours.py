"""The VTEP's IPv4 routes and neighbour (ARP) table, sans I/O.

* **Routes**: the VTEP's directly connected subnet (its address and prefix) and a default
  gateway.  A destination in the subnet is its own next hop; any other goes to the gateway; with
  no gateway it has no route.
* **Neighbours**: static entries (configuration, ``ovsdp vswitch add-neighbour``) and entries
  learned from ARP replies to the VTEP seen on the uplink.  A learned entry is used for
  ``lifetime`` seconds after its last confirmation; in the last ``refresh`` seconds of that its
  owner asks again (a broadcast ARP request), so a live neighbour never expires.  Only
  replies for addresses the table asked about or already holds are learned (Linux's default,
  ``arp_accept=0``): an unsolicited reply cannot plant an entry.
* **Resolution**: a lookup that misses makes the address *incomplete*; the endpoint drops the
  packet (as the Windows datapath did on a forwarding-cache miss) and sends an ARP request, at
  most one per ``retry`` seconds per address; an incomplete address nobody asks about again is
  forgotten after ``lifetime``.  The table holds at most ``max_entries`` learned and incomplete
  entries (new ones beyond it are refused, counted).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "ARP_REPLY",
    "ARP_REQUEST",
    "Neighbour",
    "NeighbourTable",
    "Routes",
    "arp_request",
    "parse_arp",
]

ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
_ARP_HEAD = b"\x00\x01\x08\x00\x06\x04"  # Ethernet, IPv4, 6-byte and 4-byte addresses

DEFAULT_LIFETIME = 300.0
DEFAULT_REFRESH = 30.0
DEFAULT_RETRY = 1.0
DEFAULT_MAX_ENTRIES = 1024


def arp_request(src_mac: bytes, src_ip: int, target_ip: int) -> bytes:
    """A broadcast ARP request for ``target_ip`` from the VTEP (padded to 60 bytes)."""
    frame = _ARP.pack(
        BROADCAST,
        src_mac,
        0x0806,
        1,
        0x0800,
        6,
        4,
        ARP_REQUEST,
        src_mac,
        src_ip.to_bytes(4, "big"),
        bytes(6),
        target_ip.to_bytes(4, "big"),
    )
    return frame + bytes(60 - len(frame))


class Arp(NamedTuple):
    """The fields of an Ethernet/IPv4 ARP packet."""

    op: int
    sha: bytes
    spa: int
    tha: bytes
    tpa: int


def parse_arp(frame: bytes) -> Arp | None:
    """An untagged Ethernet/IPv4 ARP packet's fields, or None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[14:20] != _ARP_HEAD:
        return None
    op = frame[20] << 8 | frame[21]
    return Arp(
        op,
        frame[22:28],
        int.from_bytes(frame[28:32], "big"),
        frame[32:38],
        int.from_bytes(frame[38:42], "big"),
    )


class Routes:
    """The VTEP's connected subnet and default gateway."""

    def __init__(self) -> None:
        self.address = 0  # the VTEP address (0: none)
        self.prefix = 0
        self.gateway = 0  # 0: no default route

    @property
    def netmask(self) -> int:
        return (0xFFFFFFFF << (32 - self.prefix)) & 0xFFFFFFFF if self.prefix else 0

    def on_link(self, ip: int) -> bool:
        """Is ``ip`` in the VTEP's connected subnet?"""
        mask = self.netmask
        return bool(self.address) and (ip & mask) == (self.address & mask)

    def next_hop(self, dst: int) -> int | None:
        """Where a packet to ``dst`` goes first: ``dst`` itself when on the link, else the
        gateway; None without a route."""
        if self.on_link(dst):
            return dst
        return self.gateway or None


@dataclass
class Neighbour:
    """One neighbour entry; ``mac`` is None while the address is incomplete (being asked)."""

    ip: int
    mac: bytes | None
    static: bool
    confirmed: float  # last confirmation (learned) or first request (incomplete)
    asked: float = float("-inf")  # last ARP request sent for it

    def state(self, now: float, lifetime: float) -> str:
        if self.static:
            return "static"
        if self.mac is None:
            return "incomplete"
        return "reachable" if now - self.confirmed < lifetime else "expired"


class NeighbourTable:
    """Static and learned neighbours, and addresses being resolved."""

    def __init__(
        self,
        *,
        lifetime: float = DEFAULT_LIFETIME,
        refresh: float = DEFAULT_REFRESH,
        retry: float = DEFAULT_RETRY,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.lifetime = lifetime
        self.refresh = min(refresh, lifetime / 2)
        self.retry = retry
        self.max_entries = max_entries
        self.entries: dict[int, Neighbour] = {}
        self.n_dynamic = 0  # learned and incomplete entries
        self.generation = 0  # advances whenever an address's MAC changes or goes away
        # counters
        self.learned = 0  # replies that created or refreshed an entry
        self.ignored = 0  # replies for addresses the table did not ask about
        self.full = 0  # new entries refused for max_entries
        self.expired = 0  # learned or incomplete entries that timed out

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ip: int, now: float) -> bytes | None:
        """The MAC of a usable entry (static, or learned within its lifetime), else None."""
        entry = self.entries.get(ip)
        if entry is None or entry.mac is None:
            return None
        if entry.static or now - entry.confirmed < self.lifetime:
            return entry.mac
        return None

    def want(self, ip: int, now: float) -> bool:
        """A packet needs ``ip`` resolved (a lookup missed): mark it incomplete; True when an ARP
        request should go out now (at most one per ``retry`` seconds per address)."""
        entry = self.entries.get(ip)
        if entry is None:
            if self.n_dynamic >= self.max_entries:
                self.full += 1
                return False
            entry = self.entries[ip] = Neighbour(ip, None, False, now)
            self.n_dynamic += 1
        elif entry.static:
            return False
        elif entry.mac is not None and now - entry.confirmed >= self.lifetime:
            # expired: incomplete again (its MAC is no longer used)
            entry.mac = None
            entry.confirmed = now
            self.generation += 1
        if now - entry.asked < self.retry:
            return False
        entry.asked = now
        return True

    def learn(self, ip: int, mac: bytes, now: float) -> bool:
        """An ARP reply says ``ip`` is at ``mac``: learned if the table asked about ``ip`` or
        holds it (not over a static entry); whether it was."""
        entry = self.entries.get(ip)
        if entry is None or entry.static:
            self.ignored += 1
            return False
        if entry.mac != mac:
            entry.mac = mac
            self.generation += 1
        entry.confirmed = now
        self.learned += 1
        return True

    def add_static(self, ip: int, mac: bytes) -> None:
        """A static entry (replaces whatever the table had for ``ip``)."""
        old = self.entries.get(ip)
        if old is not None and not old.static:
            self.n_dynamic -= 1
        self.entries[ip] = Neighbour(ip, mac, True, 0.0)
        self.generation += 1

    def remove(self, ip: int) -> bool:
        """Forget ``ip`` (static or learned); whether there was an entry."""
        old = self.entries.pop(ip, None)
        if old is None:
            return False
        if not old.static:
            self.n_dynamic -= 1
        self.generation += 1
        return True

    def clear_dynamic(self) -> None:
        """Forget every learned and incomplete entry (the VTEP address changed)."""
        for ip in [ip for ip, e in self.entries.items() if not e.static]:
            del self.entries[ip]
        self.n_dynamic = 0
        self.generation += 1

    def tick(self, now: float) -> list[int]:
        """Housekeeping: forget entries past their lifetime (incomplete ones nobody asked about
        again, learned ones not confirmed); the learned addresses to ask about again (their
        lifetime ends within ``refresh`` seconds)."""
        refresh: list[int] = []
        stale: list[int] = []
        lifetime = self.lifetime
        for ip, entry in self.entries.items():
            if entry.static:
                continue
            age = now - entry.confirmed
            if entry.mac is None:
                if now - entry.asked >= lifetime and age >= lifetime:
                    stale.append(ip)
            elif age >= lifetime:
                stale.append(ip)
            elif age >= lifetime - self.refresh and now - entry.asked >= self.retry:
                entry.asked = now
                refresh.append(ip)
        for ip in stale:
            del self.entries[ip]
            self.n_dynamic -= 1
        if stale:
            self.expired += len(stale)
            self.generation += 1
        return refresh
