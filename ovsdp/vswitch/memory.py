"""The in-memory NIC backend: frames delivered to a port wait in a bounded queue."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

DEFAULT_DEPTH = 4096


class MemoryBackend:
    """A NIC whose received frames a test or a tool reads (netdev-dummy's role in OVS)."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        self.frames: deque[bytes] = deque(maxlen=depth)
        self.transmitted = 0  # every frame ever delivered, including ones the queue dropped
        self._taken = 0

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Frames the switch delivers to this NIC."""
        self.frames.extend(frames)
        self.transmitted += len(frames)

    @property
    def dropped(self) -> int:
        """Frames that fell out of the bounded queue unread."""
        return self.transmitted - len(self.frames) - self._taken

    def take(self, limit: int | None = None) -> list[bytes]:
        """Remove and return the oldest frames (all, or up to ``limit``)."""
        count = len(self.frames) if limit is None else min(limit, len(self.frames))
        out = [self.frames.popleft() for _ in range(count)]
        self._taken += count
        return out
