"""Netlink sockets over the pseudo-device, for userspace (the role of OVS's netlink-socket.c).

A :class:`NetlinkSocket` is one connection to the service: it learns its PID, resolves families
through nlctrl, runs transactions (one request, or many in one record) matched by sequence number,
iterates dumps as it reads them, joins multicast groups, and receives unsolicited messages
(upcalls, events).  It turns on the service's transaction markers, so a transaction is complete
when the marker arrives, even for requests that succeed silently (no ACK, no ECHO), which is how
dpif-netlink sends them.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovsdp.netlink.constants import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    CtrlCmd,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.families import NLCTRL, OVS_FAMILIES
from ovsdp.netlink.message import (
    AnyMessage,
    DoneMessage,
    ErrorMessage,
    GenlFamily,
    GenlMessage,
    NoopMessage,
    decode_record,
    encode_genl,
)

DEFAULT_SOCKET = "/run/ovsdp/ovsdp.sock"
CONTROL_FAMILY = "ovsdp_control"
MAX_RECORD = 1 << 20

# The attribute space of each family a client may resolve, by family name.
KNOWN_FAMILIES: dict[str, GenlFamily] = {
    f.name: f for f in (NLCTRL, *OVS_FAMILIES, GenlFamily(CONTROL_FAMILY, 1, 0, "ovsdp_control"))
}

# control family commands and properties (see docs/pseudodev.md)
CTRL_MC_SUBSCRIBE = 2
CTRL_SOCK_PROP = 6
CTRL_GET_PID = 7
CTRL_SET_PID = 8


class ServiceGone(ConnectionError):
    """The service is not there (not started, stopped, or restarted under us)."""


def default_socket_path() -> str:
    """$OVSDP_SOCKET, else /run/ovsdp/ovsdp.sock."""
    return os.environ.get("OVSDP_SOCKET") or DEFAULT_SOCKET


@dataclass(frozen=True)
class ResolvedFamily:
    """A family as nlctrl describes it, with the attribute space the client decodes it with."""

    id: int
    codec: GenlFamily
    groups: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def version(self) -> int:
        return self.codec.version


@dataclass
class Request:
    """One request of a batch (:meth:`NetlinkSocket.transact_many`)."""

    family: str
    cmd: int
    attrs: Any = field(default_factory=dict)
    flags: int = NLM_F_REQUEST
    dp_ifindex: Any = 0


@dataclass
class Result:
    """What one request of a batch got: its replies, or the error it failed with."""

    replies: list[GenlMessage] = field(default_factory=list)
    error: NetlinkError | None = None


class NetlinkSocket:
    """One netlink socket instance on the pseudo-device (blocking API)."""

    def __init__(self, path: str | None = None, *, timeout: float | None = 30.0) -> None:
        self.path = path or default_socket_path()
        self.timeout = timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise ServiceGone(
                f"no ovsdp service on {self.path} ({os.strerror(exc.errno or 0)})"
            ) from None
        except PermissionError:
            sock.close()
            raise
        self.sock = sock
        self._buffer = bytearray(MAX_RECORD)
        self._seq = itertools.count(1)
        self._by_id: dict[int, GenlFamily] = {GENL_ID_CTRL: NLCTRL}
        self._families: dict[str, ResolvedFamily] = {
            NLCTRL.name: ResolvedFamily(GENL_ID_CTRL, NLCTRL, {"notify": GENL_ID_CTRL})
        }
        self._unsolicited: deque[AnyMessage] = deque()
        self._overrun = False
        self.markers = False
        control = self.family(CONTROL_FAMILY)
        props = self.transact(control.name, CTRL_SOCK_PROP, {"txn_markers": 1})[0].attrs
        self.pid: int = props["sock_pid"]
        self.markers = True
        # Learn every family the service has that this client can decode, so unsolicited
        # messages (upcalls, events) of any of them can be read.
        for reply in self.dump(NLCTRL.name, CtrlCmd.GETFAMILY):
            codec = KNOWN_FAMILIES.get(reply.attrs.get("family_name", ""))
            if codec is not None and codec.name not in self._families:
                self._learn(reply.attrs, codec)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (the service frees the PID and everything queued)."""
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        """The socket's file descriptor (for select/poll, or trio.lowlevel.wait_readable)."""
        return self.sock.fileno()

    # -- families ---------------------------------------------------------------------------

    def family(self, name: str, codec: GenlFamily | None = None) -> ResolvedFamily:
        """Resolve a family by name through nlctrl (cached); ENOENT if the service has none."""
        known = self._families.get(name)
        if known is not None:
            return known
        codec = codec or KNOWN_FAMILIES.get(name)
        if codec is None:
            raise ValueError(f"no attribute space known for family {name!r}: pass codec=")
        reply = self.transact(NLCTRL.name, CtrlCmd.GETFAMILY, {"family_name": name})[0].attrs
        return self._learn(reply, codec)

    def _learn(self, reply: dict[str, Any], codec: GenlFamily) -> ResolvedFamily:
        name = reply["family_name"]
        groups = {g["name"]: g["id"] for g in reply.get("mcast_groups", [])}
        codec = GenlFamily(name, reply["version"], reply["hdrsize"], codec.space, tuple(groups))
        resolved = ResolvedFamily(reply["family_id"], codec, groups)
        self._families[name] = resolved
        self._by_id[resolved.id] = codec
        return resolved

    # -- sending and receiving ------------------------------------------------------------------

    def _encode(self, req: Request, seq: int) -> bytes:
        fam = self.family(req.family)
        msg = GenlMessage(
            fam.id,
            req.flags | NLM_F_REQUEST,
            seq,
            self._pid_or_zero(),
            req.cmd,
            fam.version,
            req.dp_ifindex if fam.codec.hdrsize else None,
            req.attrs,
        )
        return encode_genl(msg, fam.codec)

    def _pid_or_zero(self) -> int:
        return getattr(self, "pid", 0)

    def _send(self, record: bytes) -> None:
        try:
            self.sock.sendall(record)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServiceGone(f"the ovsdp service on {self.path} went away ({exc})") from None
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise NetlinkError(
                    errno.EMSGSIZE, f"request of {len(record)} bytes is too big"
                ) from None
            raise

    def _read_record(self, timeout: float | None) -> list[AnyMessage]:
        """Block for one record (TimeoutError after ``timeout`` seconds) and decode it."""
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            if not ready:
                raise TimeoutError("no message from the service in time")
        try:
            nbytes, _anc, _flags, _addr = self.sock.recvmsg_into([self._buffer])
        except ConnectionResetError:
            nbytes = 0
        if nbytes == 0:
            raise ServiceGone(f"the ovsdp service on {self.path} closed the connection")
        return decode_record(memoryview(self._buffer)[:nbytes], self._by_id)

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    def _stash(self, msg: AnyMessage) -> None:
        if isinstance(msg, ErrorMessage) and msg.error == -errno.ENOBUFS and msg.seq == 0:
            self._overrun = True
        self._unsolicited.append(msg)

    # -- transactions -------------------------------------------------------------------------

    def transact(
        self,
        family: str,
        cmd: int,
        attrs: Any = None,
        *,
        flags: int = 0,
        dp_ifindex: Any = 0,
    ) -> list[GenlMessage]:
        """Send one request and return its replies; raise NetlinkError if it failed."""
        result = self.transact_many([Request(family, cmd, attrs or {}, flags, dp_ifindex)])[0]
        if result.error is not None:
            raise result.error
        return result.replies

    def transact_many(self, requests: Sequence[Request]) -> list[Result]:
        """Send several requests in one record; each gets its replies or its error.

        Requests are handled in order; one failing does not stop the others (as Linux handles
        the messages of one datagram).  Needs the transaction markers (on by default).
        """
        seqs = [next(self._seq) for _ in requests]
        record = b"".join(self._encode(r, s) for r, s in zip(requests, seqs, strict=True))
        self._send(record)
        results = {s: Result() for s in seqs}
        last = seqs[-1]
        deadline = self._deadline()
        if not self.markers:
            # Only while setting the markers up: that one request always answers.
            for msg in self._read_record(self._left(deadline)):
                self._collect(msg, results)
            return [results[s] for s in seqs]
        while True:
            for msg in self._read_record(self._left(deadline)):
                if isinstance(msg, NoopMessage) and msg.seq == last:
                    return [results[s] for s in seqs]
                if msg.seq in results:
                    self._collect(msg, results)
                else:
                    self._stash(msg)

    @staticmethod
    def _collect(msg: AnyMessage, results: dict[int, Result]) -> None:
        result = results[msg.seq]
        if isinstance(msg, ErrorMessage):
            if msg.error:
                result.error = NetlinkError(-msg.error, msg.reason or os.strerror(-msg.error))
        elif isinstance(msg, GenlMessage):
            result.replies.append(msg)

    def dump(
        self, family: str, cmd: int, attrs: Any = None, *, dp_ifindex: Any = 0
    ) -> Iterator[GenlMessage]:
        """Iterate a dump, reading records as it goes.  Leaving the loop early drains the rest
        (a socket can run one dump at a time, and its remains would confuse later requests)."""
        seq = next(self._seq)
        fam = self.family(family)
        msg = GenlMessage(
            fam.id,
            NLM_F_REQUEST | NLM_F_DUMP | NLM_F_ACK,
            seq,
            self.pid,
            cmd,
            fam.version,
            dp_ifindex if fam.codec.hdrsize else None,
            attrs or {},
        )
        self._send(encode_genl(msg, fam.codec))
        done = marker = False
        error: NetlinkError | None = None
        try:
            while not marker:
                for reply in self._read_record(self.timeout):
                    if isinstance(reply, NoopMessage) and reply.seq == seq:
                        marker = True
                    elif reply.seq != seq:
                        self._stash(reply)
                    elif isinstance(reply, DoneMessage):
                        done = True
                        if reply.error:
                            error = NetlinkError(-reply.error, reply.reason or "dump failed")
                    elif isinstance(reply, ErrorMessage):
                        if reply.error:
                            error = NetlinkError(-reply.error, reply.reason or "dump refused")
                    elif isinstance(reply, GenlMessage) and not done:
                        yield reply
            if error is not None:
                raise error
        finally:
            while not marker:  # the consumer stopped early: read the dump to its end
                for reply in self._read_record(self.timeout):
                    if isinstance(reply, NoopMessage) and reply.seq == seq:
                        marker = True
                    elif reply.seq != seq:
                        self._stash(reply)

    # -- socket properties and groups -------------------------------------------------------

    def properties(self, **changes: int) -> dict[str, Any]:
        """Read (and optionally change: txn_markers, rxq_limit) the socket's properties."""
        attrs: dict[str, Any] = self.transact(CONTROL_FAMILY, CTRL_SOCK_PROP, changes)[0].attrs
        return attrs

    def claim_pid(self, pid: int) -> None:
        """Take a specific PID, as bind() does (EADDRINUSE if another socket holds it)."""
        reply = self.transact(CONTROL_FAMILY, CTRL_SET_PID, {"sock_pid": pid})[0]
        self.pid = reply.attrs["sock_pid"]

    def group_id(self, family: str, group: str) -> int:
        """The id of a family's multicast group."""
        fam = self.family(family)
        try:
            return fam.groups[group]
        except KeyError:
            raise NetlinkError(errno.ENOENT, f"family {family} has no group {group!r}") from None

    def join(self, family: str, group: str) -> None:
        """Join a multicast group."""
        gid = self.group_id(family, group)
        self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 1}, flags=NLM_F_ACK
        )

    def leave(self, family: str, group: str) -> None:
        """Leave a multicast group."""
        gid = self.group_id(family, group)
        self.transact(
            CONTROL_FAMILY, CTRL_MC_SUBSCRIBE, {"mcast_grp": gid, "mcast_join": 0}, flags=NLM_F_ACK
        )

    # -- unsolicited messages -----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> list[AnyMessage]:
        """Unsolicited messages (upcalls, events): what is queued, else wait up to ``timeout``.

        Raises NetlinkError(ENOBUFS) when the service dropped messages for this socket (its
        queue overflowed): what arrived before the overrun has been returned by earlier calls;
        the caller should resynchronise (re-read state) and call again.
        """
        if not self._unsolicited:
            try:
                for msg in self._read_record(timeout):
                    self._stash(msg)
            except TimeoutError:
                return []
            self._drain_nonblocking()
        out: list[AnyMessage] = []
        while self._unsolicited:
            msg = self._unsolicited.popleft()
            if isinstance(msg, ErrorMessage) and msg.error == -errno.ENOBUFS and msg.seq == 0:
                if out:
                    self._unsolicited.appendleft(msg)
                    return out
                raise NetlinkError(errno.ENOBUFS, msg.reason or "receive queue overrun")
            out.append(msg)
        return out

    def _drain_nonblocking(self) -> None:
        while True:
            try:
                messages = self._read_record(0)
            except TimeoutError:
                return
            for msg in messages:
                self._stash(msg)
