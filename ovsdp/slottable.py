"""A table whose entries keep their slot for life, so a dump cursor is just a slot number.

Dumps are read as the client reads, so the table changes while a dump is in progress.  An entry
never moves while it exists, and a cursor walks the slots in increasing order, so an entry present
for the whole dump is reported exactly once; entries added or removed meanwhile may or may not be
(the guarantee Linux gives for netlink dumps, made exact).  The cursor costs one integer.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotTable(Generic[T]):
    """Entries in stable slots; the lowest free slot is reused first."""

    __slots__ = ("_free", "_len", "_slots")

    def __init__(self) -> None:
        self._slots: list[T | None] = []
        self._free: list[int] = []  # heap of free slot numbers below len(_slots)
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def add(self, item: T) -> int:
        """Store ``item``; returns its slot."""
        slots = self._slots
        while self._free:
            slot = heapq.heappop(self._free)
            if slot < len(slots) and slots[slot] is None:
                slots[slot] = item
                self._len += 1
                return slot
        slots.append(item)
        self._len += 1
        return len(slots) - 1

    def remove(self, slot: int) -> T:
        """Take the entry out of its slot (KeyError if the slot is empty)."""
        slots = self._slots
        if not 0 <= slot < len(slots) or slots[slot] is None:
            raise KeyError(slot)
        item = slots[slot]
        slots[slot] = None
        self._len -= 1
        if slot == len(slots) - 1:
            while slots and slots[-1] is None:  # keep the list as short as the last entry
                slots.pop()
        else:
            heapq.heappush(self._free, slot)
        assert item is not None
        return item

    def get(self, slot: int) -> T | None:
        """The entry in ``slot``, or None."""
        if 0 <= slot < len(self._slots):
            return self._slots[slot]
        return None

    def clear(self) -> None:
        """Remove everything."""
        self._slots.clear()
        self._free.clear()
        self._len = 0

    def items_from(self, start: int = 0) -> Iterator[tuple[int, T]]:
        """``(slot, entry)`` from slot ``start`` on; safe while the table changes."""
        slots = self._slots
        slot = start
        while slot < len(slots):
            item = slots[slot]
            if item is not None:
                yield slot, item
            slot += 1

    def __iter__(self) -> Iterator[T]:
        for _slot, item in self.items_from(0):
            yield item
