"""The metadata that travels with a packet through the action pipeline (the kernel's skb fields
and OVS_CB: priority, mark, tunnel info, MRU, hash ...)."""

from __future__ import annotations

from typing import Any

__all__ = ["PacketMeta"]


class PacketMeta:
    """Mutable per-packet metadata.

    Actions never modify a PacketMeta they were given or have handed to a sink: they copy it
    first (copy-on-write), so a sink may keep the object it receives, but must not modify it.

    * ``in_port``: the input port number;
    * ``priority``, ``skb_mark``: the skb fields (``set(skb_priority)``, ``set(skb_mark)``);
    * ``recirc_id``, ``dp_hash``: the recirculation id and the ``hash`` action's result;
    * ``tunnel``: the ingress tunnel key of a decapsulated packet (whatever the datapath uses,
      e.g. a :class:`~.layout.TunnelKey`), None otherwise;
    * ``egress_tunnel``: the tunnel key set by ``set(tunnel(...))``, as its netlink dict, for a
      later output to a tunnel port (None when not set);
    * ``mru``: maximum received fragment size of a reassembled packet (0: not reassembled);
    * ``hash``: the packet's 5-tuple hash (the skb hash, ``OVS_PACKET_ATTR_HASH``), 0 while not
      computed; actions that rewrite addresses or ports reset it to 0.
    """

    __slots__ = (
        "dp_hash",
        "egress_tunnel",
        "hash",
        "in_port",
        "mru",
        "priority",
        "recirc_id",
        "skb_mark",
        "tunnel",
    )

    def __init__(
        self,
        in_port: int = 0,
        *,
        priority: int = 0,
        skb_mark: int = 0,
        recirc_id: int = 0,
        dp_hash: int = 0,
        tunnel: Any = None,
        egress_tunnel: dict[str, Any] | None = None,
        mru: int = 0,
        hash: int = 0,
    ) -> None:
        self.in_port = in_port
        self.priority = priority
        self.skb_mark = skb_mark
        self.recirc_id = recirc_id
        self.dp_hash = dp_hash
        self.tunnel = tunnel
        self.egress_tunnel = egress_tunnel
        self.mru = mru
        self.hash = hash

    def copy(self) -> PacketMeta:
        """A shallow copy (the tunnel keys are treated as immutable and shared)."""
        new = PacketMeta.__new__(PacketMeta)
        new.in_port = self.in_port
        new.priority = self.priority
        new.skb_mark = self.skb_mark
        new.recirc_id = self.recirc_id
        new.dp_hash = self.dp_hash
        new.tunnel = self.tunnel
        new.egress_tunnel = self.egress_tunnel
        new.mru = self.mru
        new.hash = self.hash
        return new

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PacketMeta):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        parts = [f"in_port={self.in_port}"]
        for name in ("priority", "skb_mark", "recirc_id", "dp_hash", "mru", "hash"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value:#x}" if name == "dp_hash" else f"{name}={value}")
        if self.tunnel is not None:
            parts.append(f"tunnel={self.tunnel!r}")
        if self.egress_tunnel is not None:
            parts.append(f"egress_tunnel={self.egress_tunnel!r}")
        return f"PacketMeta({', '.join(parts)})"
