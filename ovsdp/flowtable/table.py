"""The megaflow table: tuple-space search behind an exact-match cache.

Keys and masks are flat byte strings of one fixed layout (:mod:`.flow_key`).  Every distinct mask
has its own hash table, keyed by ``int(key) & int(mask)``; a lookup probes the masks, busiest
first, and the first hit wins (megaflows do not overlap in practice; where they do the kernel
leaves the choice undefined too).  An exact-match cache (a dict from the whole packet key to its
flow) answers repeated packets of a flow with one dict lookup.

Flows keep a slot in a :class:`~ovsdp.slottable.SlotTable` for their whole life, so a dump's
cursor is one integer and a flow present for a whole dump is reported exactly once.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

from ..netlink.errors import NetlinkError
from ..slottable import SlotTable
from .layout import FIELDS


def tcp_flags_of(key: bytes) -> int:
    """The TCP flags a flat key carries (0 for anything but TCP)."""
    if key[_IP_PROTO_AT] == 6 and key[_ETH_TYPE_AT : _ETH_TYPE_AT + 2] in _IP_TYPES:
        return (key[_TCP_FLAGS_AT] << 8) | key[_TCP_FLAGS_AT + 1]
    return 0


_TCP_FLAGS_AT = FIELDS["tcp_flags"].offset
_IP_PROTO_AT = FIELDS["ip_proto"].offset
_ETH_TYPE_AT = FIELDS["eth_type"].offset
_IP_TYPES = (b"\x08\x00", b"\x86\xdd")

DEFAULT_FLOW_LIMIT = 2_000_000
EMC_ENTRIES_PER_MASK_CACHE_SLOT = 32  # MASKS_CACHE_SIZE 256 (the default) -> 8192 entries
RESORT_EVERY = 1 << 16  # lookups between re-orderings of the masks by hits


class Mask:
    """One distinct mask and the flows that use it."""

    __slots__ = ("bits", "flows", "hits", "value")

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.bits = int.from_bytes(value, "big")
        self.flows: dict[int, Flow] = {}  # masked key (as int) -> flow
        self.hits = 0


class Flow:
    """One megaflow: masked key, mask, actions, identity and statistics.

    Like the kernel, a flow keeps its unmasked key only when it was installed without a UFID
    (then the key is its identity); a UFID flow is found by its UFID or by a masked lookup.
    """

    __slots__ = (
        "actions",
        "dead",
        "encap",
        "mask",
        "masked",
        "n_bytes",
        "n_packets",
        "out",
        "program",
        "slot",
        "tcp_flags",
        "ufid",
        "unmasked",
        "used",
    )

    def __init__(
        self,
        key: bytes,
        mask: Mask,
        actions: bytes,
        program: Any,
        ufid: bytes | None = None,
    ) -> None:
        self.unmasked = key if ufid is None else None
        self.mask = mask
        self.masked = int.from_bytes(key, "big") & mask.bits
        self.actions = actions
        self.program = program
        self.out: int | None = None
        self.set_actions(actions, program)
        self.ufid = ufid
        self.n_packets = 0
        self.n_bytes = 0
        self.used = 0  # ms on the monotonic clock, 0 = never
        self.tcp_flags = 0
        self.slot = -1
        self.dead = False

    def set_actions(self, actions: bytes, program: Any) -> None:
        """New actions: ``actions`` as installed (netlink bytes, for replies), ``program`` what
        the packet path runs; ``out`` caches a single output port (the fast path), ``encap``
        what the packet path resolved for other programs (its tunnel encapsulation; None: not
        yet)."""
        self.actions = actions
        self.program = program
        self.out = getattr(program, "single_output", None)
        self.encap: Any = None

    @property
    def key(self) -> bytes:
        """The masked key (flat)."""
        return self.masked.to_bytes(len(self.mask.value), "big")

    def clear_stats(self) -> None:
        """OVS_FLOW_ATTR_CLEAR."""
        self.n_packets = self.n_bytes = self.used = self.tcp_flags = 0


class FlowTable:
    """Megaflows of one datapath."""

    def __init__(self, limit: int = DEFAULT_FLOW_LIMIT, emc_size: int = 8192) -> None:
        self.limit = limit
        self.emc_size = emc_size
        self.masks: list[Mask] = []
        self._masks_by_value: dict[bytes, Mask] = {}
        self.ufids: dict[bytes, Flow] = {}
        # the exact-match cache: a packet key -> (its flow, the TCP flags the key carries)
        self.emc: dict[bytes, tuple[Flow, int]] = {}
        self._slots: SlotTable[Flow] = SlotTable()
        self._lookups = 0
        # counted here, reported in the datapath's megaflow stats
        self.n_mask_hit = 0
        self.n_cache_hit = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def n_masks(self) -> int:
        return len(self.masks)

    # -- the packet path --------------------------------------------------------------------------

    def lookup(self, key: bytes) -> Flow | None:
        """The flow for a packet key: exact-match cache, then the masks."""
        entry = self.emc.get(key)
        if entry is not None and not entry[0].dead:
            # a cache hit finds the flow's mask at once: one mask hit, as the kernel's mask
            # cache counts one, so hits per packet never fall below 1
            self.n_cache_hit += 1
            self.n_mask_hit += 1
            return entry[0]
        return self.classify(key)

    def classify(self, key: bytes) -> Flow | None:
        """Tuple-space search (and an exact-match cache fill on a hit)."""
        bits = int.from_bytes(key, "big")
        probed = 0
        found = None
        for mask in self.masks:
            probed += 1
            found = mask.flows.get(bits & mask.bits)
            if found is not None:
                mask.hits += 1
                break
        self.n_mask_hit += probed
        self._lookups += 1
        if self._lookups >= RESORT_EVERY:
            self._resort()
        if found is not None and self.emc_size:
            emc = self.emc
            if len(emc) >= self.emc_size:
                emc.clear()  # cheaper than LRU bookkeeping; it refills at once
            emc[key] = (found, tcp_flags_of(key))
        return found

    def _resort(self) -> None:
        self._lookups = 0
        self.masks.sort(key=lambda m: m.hits, reverse=True)
        for mask in self.masks:
            mask.hits >>= 1  # old popularity fades

    # -- the control path ---------------------------------------------------------------------

    def mask(self, value: bytes) -> Mask:
        """The shared Mask object for a mask value (created if new, not yet in the search)."""
        mask = self._masks_by_value.get(value)
        return mask if mask is not None else Mask(value)

    def insert(self, flow: Flow) -> None:
        """Add a flow (ENOSPC past the limit; EEXIST if its UFID or masked key is taken)."""
        if len(self._slots) >= self.limit:
            raise NetlinkError(errno.ENOSPC, f"the flow table is full ({self.limit} flows)")
        if flow.ufid is not None and flow.ufid in self.ufids:
            raise NetlinkError(errno.EEXIST, "a flow with this UFID exists")
        mask = self._masks_by_value.get(flow.mask.value)
        if mask is None:
            mask = flow.mask
            self._masks_by_value[mask.value] = mask
            self.masks.append(mask)
        flow.mask = mask
        if flow.masked in mask.flows:
            raise NetlinkError(errno.EEXIST, "a flow with this match exists")
        mask.flows[flow.masked] = flow
        if flow.ufid is not None:
            self.ufids[flow.ufid] = flow
        flow.slot = self._slots.add(flow)

    def remove(self, flow: Flow) -> None:
        """Take a flow out (the exact-match cache drops it on next sight)."""
        flow.dead = True
        mask = flow.mask
        if mask.flows.get(flow.masked) is flow:
            del mask.flows[flow.masked]
            if not mask.flows:
                self.masks.remove(mask)
                del self._masks_by_value[mask.value]
        if flow.ufid is not None and self.ufids.get(flow.ufid) is flow:
            del self.ufids[flow.ufid]
        if flow.slot >= 0:
            self._slots.remove(flow.slot)
            flow.slot = -1

    def flush(self) -> None:
        """Remove every flow."""
        for flow in self._slots:
            flow.dead = True
        self.masks.clear()
        self._masks_by_value.clear()
        self.ufids.clear()
        self.emc.clear()
        self._slots.clear()

    def find_ufid(self, ufid: bytes) -> Flow | None:
        """The flow installed with this UFID."""
        return self.ufids.get(ufid)

    def find_exact(self, unmasked: bytes) -> Flow | None:
        """The flow installed without a UFID whose key is exactly this one, whatever its mask
        (the kernel's lookup for GET, SET and DEL by key)."""
        bits = int.from_bytes(unmasked, "big")
        for mask in self.masks:
            flow = mask.flows.get(bits & mask.bits)
            if flow is not None and flow.unmasked == unmasked:
                return flow
        return None

    def find_masked(self, key: bytes) -> Flow | None:
        """A megaflow matching ``key`` (no cache, no statistics): NEW's overlap check."""
        bits = int.from_bytes(key, "big")
        for mask in self.masks:
            flow = mask.flows.get(bits & mask.bits)
            if flow is not None:
                return flow
        return None

    def iter_from(self, cursor: int = 0) -> Iterator[tuple[int, Flow]]:
        """(slot, flow) from a dump position on; safe while flows come and go."""
        return self._slots.items_from(cursor)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._slots)
