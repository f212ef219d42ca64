"""IPv4 reassembly (RFC 791, RFC 815) before decapsulation, sans I/O.

Fragments of UDP datagrams addressed to the VTEP are collected here; the whole datagram then
goes through decap.  (The Windows datapath handed such fragments to the host IP stack and took the
datagram back with a WFP callout.)

* **Key** ``(source, destination, protocol, id)``; fragments may come in any order.
* **Timeout**: an entry lives ``timeout`` seconds (30 by default, as Windows and Linux) from its
  first fragment; expiry frees it and counts (``expired``).  The clock is whatever the caller
  passes as ``now`` (tests use a fake one).
* **Limits per datagram**: at most ``max_fragments`` fragments and 65,535 bytes of IP datagram
  (``over_limit``, the datagram is discarded).
* **Limit in total**: the bytes held (fragment data plus a fixed overhead per fragment and per
  entry) never exceed ``max_bytes``; a fragment that would pass it evicts the oldest entries
  first (``evicted``).  A flood of incomplete datagrams therefore stays within the cap, and a
  datagram whose fragments arrive close together still completes.
* **Overlaps**: a fragment that lies wholly inside one already received is a duplicate and is
  ignored (``duplicates``); any other overlap discards the whole datagram (``overlapped``), as
  Linux does since FragmentSmack (and RFC 5722 for IPv6).
* **Tiny first fragments**: a first fragment too short to hold ``min_first`` bytes of payload
  (the UDP and VXLAN headers: 16) is refused and its datagram discarded (``tiny``).
* Malformed fragments (a non-final fragment whose length is not a multiple of 8, a second final
  fragment disagreeing on the length, data past the final fragment's end) discard the datagram
  (``malformed``).

:meth:`Reassembler.add` returns the reassembled frame (the first fragment's link header, its IP
header with offset and flags cleared, a new total length and checksum, then the data) once the
last missing piece arrives.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass, fields

from .vxlan import IP_DF, IP_MF, IP_OFFSET

__all__ = ["Reassembler", "ReassemblyStats"]

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_FRAGMENTS = 64
DEFAULT_MAX_BYTES = 4 << 20
MAX_DATAGRAM = 65535
MIN_FIRST = 16  # UDP header + VXLAN header
ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its fragments (its objects, its key)
FRAGMENT_OVERHEAD = 128  # bytes a fragment costs beyond its data

_IP = struct.Struct("!BBHHHBB")  # version/IHL, TOS, total length, id, flags/offset, TTL, proto
_HEAD12 = struct.Struct("!HHHHHH")  # the first 12 bytes of an IPv4 header, as words
_HEAD5 = struct.Struct("!HHHHH")  # total length, id, flags/offset, TTL/protocol, checksum

_Key = tuple[bytes, int, int]  # (source and destination, id, protocol)


@dataclass
class ReassemblyStats:
    """Counters of the reassembly table."""

    fragments: int = 0  # fragments taken in
    reassembled: int = 0  # datagrams completed
    expired: int = 0  # entries freed by the timeout
    evicted: int = 0  # entries freed to stay within the memory cap
    overlapped: int = 0  # datagrams discarded for overlapping fragments
    over_limit: int = 0  # datagrams discarded for too many fragments or bytes
    tiny: int = 0  # datagrams discarded for a tiny first fragment
    malformed: int = 0  # datagrams discarded for inconsistent fragments
    duplicates: int = 0  # fragments ignored as duplicates

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Entry:
    """One datagram being reassembled."""

    __slots__ = ("cost", "deadline", "end", "first", "max_size", "pieces", "received", "starts")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.starts: list[int] = []  # sorted fragment offsets (bytes)
        self.pieces: list[tuple[int, int, bytes]] = []  # (start, end, data), by start
        self.received = 0  # data bytes held
        self.end = -1  # the datagram's data length, once the final fragment came
        self.first: bytes | None = None  # link header + IP header of the offset-0 fragment
        self.cost = 0  # bytes it holds in the table's budget (0 until its first piece)
        self.max_size = 0  # the largest fragment (its IP length): the MRU


class Reassembler:
    """The reassembly table (see the module docstring)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_first: int = MIN_FIRST,
    ) -> None:
        if timeout <= 0 or max_fragments < 2 or max_bytes < ENTRY_OVERHEAD:
            raise ValueError("reassembly limits out of range")
        self.timeout = timeout
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.min_first = min_first
        self.entries: OrderedDict[_Key, _Entry] = OrderedDict()  # oldest first
        self._next_expiry = math.inf  # the oldest entry's deadline
        self.memory = 0  # bytes held, within max_bytes
        self.stats = ReassemblyStats()
        self.last_mru = 0  # the largest fragment of the datagram add() completed last

    def __len__(self) -> int:
        return len(self.entries)

    def expire(self, now: float) -> int:
        """Free the entries whose time is up; how many."""
        entries = self.entries
        count = 0
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.deadline > now:
                self._next_expiry = entry.deadline  # entries are in deadline order
                break
            del entries[key]
            self.memory -= entry.cost
            count += 1
        else:
            self._next_expiry = math.inf
        self.stats.expired += count
        return count

    def _drop(self, key: _Key, entry: _Entry | None) -> None:
        if entry is not None:
            del self.entries[key]
            self.memory -= entry.cost

    def add(self, frame: bytes, now: float, l3: int = 14) -> bytes | None:
        """Take one fragment (an IPv4 fragment whose header starts at ``l3``); the reassembled
        frame when this fragment completes its datagram, else None (kept, or dropped and
        counted).  The caller checked that it is IPv4 with a valid header length."""
        stats = self.stats
        stats.fragments += 1
        if now >= self._next_expiry:
            self.expire(now)
        vhl, _tos, total, ident, frag, _ttl, proto = _IP.unpack_from(frame, l3)
        ihl = (vhl & 15) << 2
        size = total - ihl
        if size < 0 or l3 + total > len(frame):
            stats.malformed += 1
            return None
        start = (frag & IP_OFFSET) << 3
        end = start + size
        last = not frag & IP_MF
        key = (frame[l3 + 12 : l3 + 20], ident, proto)
        entries = self.entries
        entry = entries.get(key)
        # what is wrong with the fragment alone
        if start == 0 and size < self.min_first:
            stats.tiny += 1
            self._drop(key, entry)
            return None
        if ihl + end > MAX_DATAGRAM:
            stats.over_limit += 1
            self._drop(key, entry)
            return None
        if not last and (size & 7 or not size):
            stats.malformed += 1
            self._drop(key, entry)
            return None
        cost = size + FRAGMENT_OVERHEAD
        if start == 0:
            cost += l3 + ihl
        data = frame[l3 + ihl : l3 + total]
        if entry is None:
            # the datagram's first fragment to arrive
            cost += ENTRY_OVERHEAD
            if self.memory + cost > self.max_bytes:
                self._make_room(cost, None)
                if self.memory + cost > self.max_bytes:
                    stats.over_limit += 1
                    return None
            entry = entries[key] = _Entry(now + self.timeout)
            if self._next_expiry == math.inf:
                self._next_expiry = entry.deadline
            entry.starts.append(start)
            entry.pieces.append((start, end, data))
            entry.received = size
            entry.cost = cost
            entry.max_size = total
            self.memory += cost
            if last:
                entry.end = end
            if start == 0:
                entry.first = frame[: l3 + ihl]
                if last:  # not a fragment at all: whole already
                    return self._complete(key, entry, l3, [data], total)
            return None
        pieces = entry.pieces
        if len(pieces) == 1:
            # the other half of a two-fragment datagram (the common case) completes it at once
            p_start, p_end, p_data = pieces[0]
            if start == p_end and last and p_start == 0:
                return self._complete(key, entry, l3, [p_data, data], total)
            if start == 0 and end == p_start and p_end == entry.end and not last:
                entry.first = frame[: l3 + ihl]
                return self._complete(key, entry, l3, [data, p_data], total)
        if (
            (last and entry.end >= 0 and entry.end != end)
            or (last and pieces[-1][1] > end)
            or (not last and entry.end >= 0 and end > entry.end)
        ):
            stats.malformed += 1
            self._drop(key, entry)
            return None
        # where it goes among the pieces: a duplicate, an overlap, or a new piece
        starts = entry.starts
        i = bisect.bisect_right(starts, start)
        if i and pieces[i - 1][0] <= start and end <= pieces[i - 1][1]:
            stats.duplicates += 1
            return None
        if (i and pieces[i - 1][1] > start) or (i < len(pieces) and pieces[i][0] < end):
            stats.overlapped += 1
            self._drop(key, entry)
            return None
        if len(pieces) >= self.max_fragments:
            stats.over_limit += 1
            self._drop(key, entry)
            return None
        if self.memory + cost > self.max_bytes:
            self._make_room(cost, key)
            if self.memory + cost > self.max_bytes:
                stats.over_limit += 1
                self._drop(key, entry)
                return None
        if last:
            entry.end = end
        starts.insert(i, start)
        pieces.insert(i, (start, end, data))
        entry.received += size
        entry.cost += cost
        self.memory += cost
        if total > entry.max_size:
            entry.max_size = total
        if start == 0:
            entry.first = frame[: l3 + ihl]
        if entry.received != entry.end or entry.first is None:
            return None
        # complete: no overlaps and every byte received, so the pieces tile [0, end)
        return self._complete(key, entry, l3, [piece[2] for piece in pieces], 0)

    def add_pair(self, first: bytes, second: bytes, now: float, l3: int = 14) -> bytes | None:
        """:meth:`add` of two fragments that arrived one after the other: with an empty table,
        when they are the two halves of one datagram (the first at offset 0 with MF, the
        second the last, right after it: the usual way a sender's fragments leave) they are
        joined without going through the table; otherwise each is added in turn."""
        if not self.entries:
            _v, _t, total, ident, frag, _ttl, proto = _IP.unpack_from(first, l3)
            csum = first[l3 + 10] << 8 | first[l3 + 11]
            _v2, _t2, total2, ident2, frag2, _ttl2, proto2 = _IP.unpack_from(second, l3)
            if proto == proto2:
                joined = self.join_adjacent(
                    first, second, l3, total, ident, frag, csum, total2, ident2, frag2
                )
                if joined is not None:
                    return joined[0]
        self.add(first, now, l3)  # (alone, the first fragment completes nothing)
        return self.add(second, now, l3)

    def join_adjacent(
        self,
        first: bytes,
        second: bytes,
        l3: int,
        total: int,
        ident: int,
        frag: int,
        csum: int,
        total2: int,
        ident2: int,
        frag2: int,
    ) -> tuple[bytes, int, int, int] | None:
        """The fast path of :meth:`add_pair` for a caller that has read both headers (total
        length, id, flags and offset; the first's checksum; the same protocol): the whole
        datagram with its new total length, flags and checksum, or None when the two are not
        one whole datagram (nothing was done).  Only for an empty table."""
        ihl = (first[l3] & 15) << 2
        size = total - ihl
        ihl2 = (second[l3] & 15) << 2
        whole = ihl + size + total2 - ihl2
        if (
            frag & (IP_MF | IP_OFFSET) != IP_MF
            or frag2 & IP_MF
            or (frag2 & IP_OFFSET) << 3 != size
            or ident != ident2
            or size < self.min_first
            or size & 7
            or whole > MAX_DATAGRAM
            or ihl2 > total2
            or l3 + total > len(first)
            or l3 + total2 > len(second)
            or first[l3 + 12 : l3 + 20] != second[l3 + 12 : l3 + 20]
        ):
            return None
        stats = self.stats
        stats.fragments += 2
        stats.reassembled += 1
        self.last_mru = total if total > total2 else total2
        flags = frag & IP_DF  # keep DF, clear MF and the offset
        # the first header's checksum adjusted for the new length and flags (RFC 1624)
        new_csum = (csum + total + frag - whole - flags) % 0xFFFF
        ttl_proto = first[l3 + 8] << 8 | first[l3 + 9]
        header = _HEAD5.pack(whole, ident, flags, ttl_proto, new_csum)
        data = (
            first[: l3 + 2],
            header,
            first[l3 + 12 : l3 + total],
            second[l3 + ihl2 : l3 + total2],
        )
        return b"".join(data), whole, flags, new_csum

    def _complete(self, key: _Key, entry: _Entry, l3: int, data: list[bytes], total: int) -> bytes:
        """The whole datagram (``data`` in order; ``total``, the IP length of the fragment that
        completed it, counts for the MRU): the first fragment's headers with offset, MF and
        checksum redone, then the data."""
        del self.entries[key]
        self.memory -= entry.cost
        self.stats.reassembled += 1
        self.last_mru = max(entry.max_size, total)
        first = entry.first
        assert first is not None
        return _join(first, l3, (first[l3] & 15) << 2, data)

    def _make_room(self, cost: int, keep: _Key | None) -> None:
        """Evict the oldest entries (never ``keep``) until ``cost`` more bytes fit."""
        entries = self.entries
        victims = []
        freed = 0
        for key, entry in entries.items():
            if self.memory - freed + cost <= self.max_bytes:
                break
            if key != keep:
                victims.append(key)
                freed += entry.cost
        for key in victims:
            self._drop(key, entries[key])
        self.stats.evicted += len(victims)
        if not entries:
            self._next_expiry = math.inf


def _join(first: bytes, l3: int, ihl: int, data: list[bytes]) -> bytes:
    """A whole datagram from its first fragment's headers (``first``: link and IP headers)
    with offset, MF and checksum redone, and its data in order."""
    vhl_tos, _total, ident, frag, ttl_proto, _csum = _HEAD12.unpack_from(first, l3)
    total = ihl + sum(map(len, data))
    frag &= IP_DF  # keep DF, clear MF and the offset
    rest = first[l3 + 12 : l3 + ihl]  # addresses and options
    s = (vhl_tos + total + ident + frag + ttl_proto + int.from_bytes(rest, "big")) % 0xFFFF
    header = _HEAD12.pack(vhl_tos, total, ident, frag, ttl_proto, 0xFFFF - s if s else 0)
    return b"".join((first[:l3], header, rest, *data))
