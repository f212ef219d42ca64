"""Generic-netlink families as data: the table each family registers with the device.

A family is a name, a version, a header size, an attribute space and a table of commands; each
command says which operations may carry it (a transaction, a dump), whether it changes state (and
so needs privilege), which attributes it requires, and whether it answers only when asked to
(NLM_F_ECHO).  The device reads these tables; the handlers never see a request the table refused.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..netlink.codec import CODECS, compile_new_spaces
from ..netlink.message import GenlFamily, GenlMessage

if TYPE_CHECKING:
    from .device import Request


class Ops(enum.Flag):
    """The operations a command may arrive on (as the Windows dispatch table tags them)."""

    TRANSACT = enum.auto()
    DUMP = enum.auto()
    BOTH = TRANSACT | DUMP


class Reply(enum.Enum):
    """When a successful transaction is answered with the handler's messages."""

    ALWAYS = "always"  # GET-style: the reply is the point
    ECHO = "echo"  # NEW/SET/DEL-style: a reply only with NLM_F_ECHO (the kernel's rule)


# A transaction handler returns the reply messages (possibly none); a dump handler returns an
# iterator that yields them as the client reads, so its position is the dump's cursor.
TransactHandler = Callable[["Request"], Iterable[GenlMessage] | None]
DumpHandler = Callable[["Request"], Iterator[GenlMessage]]


@dataclass(frozen=True)
class Command:
    """One row of a family's command table."""

    cmd: int
    name: str
    do: TransactHandler | None = None
    dump: DumpHandler | None = None
    mutating: bool = False
    required: tuple[str, ...] = ()
    reply: Reply = Reply.ALWAYS

    @property
    def always_replies(self) -> bool:
        """Whether a successful transaction is answered even without NLM_F_ECHO."""
        return self.reply is Reply.ALWAYS

    @property
    def ops(self) -> Ops:
        ops = Ops(0)
        if self.do is not None:
            ops |= Ops.TRANSACT
        if self.dump is not None:
            ops |= Ops.DUMP
        return ops


@dataclass
class Family:
    """A family as registered with the device: codec description plus the command table.

    ``id`` and the multicast group ids are assigned by the device at registration.
    """

    name: str
    version: int
    hdrsize: int
    space: str
    commands: dict[int, Command] = field(default_factory=dict)
    mcast_groups: tuple[str, ...] = ()
    id: int = 0
    group_ids: dict[str, int] = field(default_factory=dict)
    codec_family: GenlFamily = field(init=False)

    def __post_init__(self) -> None:
        if self.space not in CODECS:
            compile_new_spaces()
        if self.space not in CODECS:
            raise ValueError(f"family {self.name}: no attribute space {self.space!r}")
        self.codec_family = GenlFamily(
            self.name, self.version, self.hdrsize, self.space, self.mcast_groups
        )

    @classmethod
    def from_codec(cls, codec_family: GenlFamily, commands: Iterable[Command]) -> Family:
        """A family whose codec description already exists (the OVS families)."""
        return cls(
            codec_family.name,
            codec_family.version,
            codec_family.hdrsize,
            codec_family.space,
            {c.cmd: c for c in commands},
            codec_family.mcast_groups,
        )

    @property
    def genl(self) -> GenlFamily:
        """What the codec needs of this family (name, version, hdrsize, space, groups)."""
        return self.codec_family

    @property
    def maxattr(self) -> int:
        return int(CODECS[self.space].schema.maxattr)

    def add(self, command: Command) -> None:
        """Add a command to the table (before the family is registered)."""
        self.commands[command.cmd] = command

    def message(self, cmd: int, attrs: Any, dp_ifindex: Any = None, flags: int = 0) -> GenlMessage:
        """A message of this family (type filled in from the registered id)."""
        return GenlMessage(self.id, flags, 0, 0, cmd, self.version, dp_ifindex, attrs)
