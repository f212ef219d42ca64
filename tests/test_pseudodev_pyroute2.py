"""pyroute2's GenericNetlinkSocket on the pseudo-device (docs/pseudodev.md section 4: "enough
for pyroute2's GenericNetlinkSocket").

pyroute2 0.9 accepts ``use_socket=``: it hands that object to asyncio as a datagram socket and
calls ``bind((pid, groups))``, ``setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)``,
``send``/``recvfrom`` on it.  :class:`DeviceTransport` is a connection to the device that answers
those calls the way the pseudo-device says a netlink socket's are answered: ``bind`` claims the
PID (``SET_PID``) and memberships go through ``MC_SUBSCRIBE``.
"""

from __future__ import annotations

import errno
import itertools
import select
import socket
from typing import Any

import trio
from pseudodev_support import CMD_COUNT, CMD_ECHO, CMD_GET, CMD_NEW, CMD_SEND, TEST_FAMILY
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket
from test_pseudodev_tools import (
    C_GET_PID,
    C_MC_SUBSCRIBE,
    C_SET_PID,
    CONTROL_CODEC,
    RECV_BUFFER,
    encode,
    serving,
    wait_until,
)

from ovsdp.netlink.message import ErrorMessage, GenlMessage, decode_record

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_GENERIC = 16
CONTROL_ID = 0x11  # resolved through nlctrl in the test, then used by the transport


class TestMsg(genlmsg):
    """The ``ovsdp_test`` family as pyroute2 describes it (4-byte family header)."""

    __test__ = False
    fields = (*genlmsg.fields, ("dp_ifindex", "i"))
    nla_map = (
        ("TEST_UNSPEC", "none"),
        ("TEST_ID", "uint32"),
        ("TEST_NAME", "asciiz"),
        ("TEST_COUNT", "uint32"),
        ("TEST_PAYLOAD", "hex"),
        ("TEST_PID", "uint32"),
    )


class DeviceTransport:
    """A connection to the pseudo-device with the socket API pyroute2 uses.

    Control transactions (``bind``, memberships) are done synchronously on the socket; pyroute2
    calls them when nothing else is in flight on it.
    """

    type = socket.SOCK_DGRAM  # asyncio.create_datagram_endpoint() insists on a datagram socket
    family = socket.AF_NETLINK
    proto = NETLINK_GENERIC

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        self._seq = itertools.count(0x70000000)
        self.groups: set[int] = set()
        self.pid = self._control(C_GET_PID, {})["sock_pid"]

    def _control(self, cmd: int, attrs: dict[str, Any], flags: int = 0) -> dict[str, Any]:
        seq = next(self._seq)
        self.sock.send(encode(CONTROL_CODEC, CONTROL_ID, cmd, attrs, seq=seq, flags=flags | 1))
        while True:
            ready, _, _ = select.select([self.sock], [], [], 10)
            assert ready, "the service did not answer a control request"
            for msg in decode_record(self.sock.recv(RECV_BUFFER), {CONTROL_ID: CONTROL_CODEC}):
                assert msg.seq == seq, f"unexpected message during a control request: {msg}"
                if isinstance(msg, ErrorMessage):
                    if msg.error:
                        raise OSError(-msg.error, msg.reason)
                    return {}
                assert isinstance(msg, GenlMessage)
                return dict(msg.attrs)

    # -- what asyncio and pyroute2 call ------------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def gettimeout(self) -> float | None:
        return self.sock.gettimeout()

    def getsockname(self) -> tuple[int, int]:
        groups = sum(1 << (g - 1) for g in self.groups if 0 < g <= 32)
        return (self.pid, groups)

    def getpeername(self) -> tuple[int, int]:
        return (0, 0)

    def bind(self, address: tuple[int, int]) -> None:
        pid, groups = address
        if pid:
            self.pid = self._control(C_SET_PID, {"sock_pid": pid})["sock_pid"]
        for bit in range(32):
            if groups & (1 << bit):
                self.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, bit + 1)

    def setsockopt(self, level: int, option: int, value: Any) -> None:
        if level == SOL_NETLINK and option in (NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP):
            join = int(option == NETLINK_ADD_MEMBERSHIP)
            self._control(C_MC_SUBSCRIBE, {"mcast_grp": value, "mcast_join": join}, NLM_F_ACK)
            (self.groups.add if join else self.groups.discard)(value)
        # buffer sizes and the like: the service paces itself

    def getsockopt(self, level: int, option: int, *args: Any) -> int:
        return 0

    def send(self, data: bytes, flags: int = 0) -> int:
        return self.sock.send(data, flags)

    def sendto(self, data: bytes, address: Any = None) -> int:
        return self.sock.send(data)

    def recvfrom(self, bufsize: int) -> tuple[bytes, tuple[int, int]]:
        return self.sock.recv(max(bufsize, RECV_BUFFER)), (0, 0)

    def close(self) -> None:
        self.sock.close()


def _test_msg(cmd: int, attrs: list[tuple[str, Any]]) -> TestMsg:
    msg = TestMsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["attrs"] = attrs
    return msg


async def test_pyroute2_resolves_families_and_runs_transactions() -> None:
    async with serving() as srv:
        assert srv.control_id == CONTROL_ID
        group_id = srv.device.group_id(TEST_FAMILY, "test_events")

        def session() -> dict[str, Any]:
            out: dict[str, Any] = {}
            transport = DeviceTransport(srv.path)
            genl = GenericNetlinkSocket(use_socket=transport)
            try:
                genl.bind(TEST_FAMILY, TestMsg)  # bind() (a claimed PID), then nlctrl by name
                out["prid"] = genl.prid
                out["groups"] = dict(genl.mcast_groups)
                out["epid"] = genl.epid
                out["pid"] = transport.pid
                ctrl = genl.discovery("ovsdp_control")
                out["control"] = (
                    ctrl.get_attr("CTRL_ATTR_FAMILY_ID"),
                    ctrl.get_attr("CTRL_ATTR_VERSION"),
                    ctrl.get_attr("CTRL_ATTR_HDRSIZE"),
                )
                ops = [
                    (op.get_attr("CTRL_ATTR_OP_ID"), op.get_attr("CTRL_ATTR_OP_FLAGS"))
                    for op in genl.discovery(TEST_FAMILY).get_attr("CTRL_ATTR_OPS")
                ]
                out["ops"] = ops
                try:
                    genl.discovery("no_such_family")
                except PyrouteNetlinkError as exc:
                    out["unknown"] = exc.code
                # a transaction: ECHO with an ACK
                replies = genl.nlm_request(
                    _test_msg(CMD_ECHO, [("TEST_NAME", "pyroute2"), ("TEST_ID", 7)]),
                    msg_type=genl.prid,
                    msg_flags=NLM_F_REQUEST | NLM_F_ACK,
                )
                out["echo"] = [
                    (r.get_attr("TEST_NAME"), r.get_attr("TEST_ID"), r["header"]["pid"])
                    for r in replies
                ]
                created = genl.nlm_request(
                    _test_msg(CMD_NEW, [("TEST_NAME", "obj")]),
                    msg_type=genl.prid,
                    msg_flags=NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO,
                )
                out["new"] = [(r.get_attr("TEST_NAME"), r.get_attr("TEST_ID")) for r in created]
                dumped = genl.nlm_request(
                    _test_msg(CMD_COUNT, [("TEST_COUNT", 3000)]),
                    msg_type=genl.prid,
                    msg_flags=NLM_F_REQUEST | NLM_F_DUMP,
                )
                out["count"] = [r.get_attr("TEST_ID") for r in dumped]
                try:
                    genl.nlm_request(
                        _test_msg(CMD_GET, [("TEST_ID", 99)]),
                        msg_type=genl.prid,
                        msg_flags=NLM_F_REQUEST | NLM_F_ACK,
                    )
                except PyrouteNetlinkError as exc:
                    out["missing"] = exc.code
                # membership through setsockopt, then an event sent by another connection
                genl.add_membership("test_events")
                out["joined"] = sorted(transport.groups)
                other = DeviceTransport(srv.path)
                other.sock.send(srv.family_request(CMD_SEND, {"count": 1, "payload": b"ev"}, seq=1))
                (event,) = genl.get()
                out["event"] = (event["cmd"], event.get_attr("TEST_ID"), event["header"]["pid"])
                other.close()
            finally:
                genl.close()
            return out

        with trio.fail_after(60):
            out = await trio.to_thread.run_sync(session)
        assert out["prid"] == srv.test_id
        assert out["groups"] == {"test_events": group_id}
        # pyroute2's bind() chose a PID (pid + port << 22) and the service gave it that PID
        assert out["pid"] == out["epid"] and out["epid"] >> 22 == 20
        assert out["control"] == (CONTROL_ID, 1, 0)
        assert dict(out["ops"])[CMD_NEW] == 0x1 | 0x2  # ADMIN_PERM | CAP_DO
        assert out["unknown"] == errno.ENOENT
        assert out["echo"] == [("pyroute2", 7, out["epid"])]
        assert out["new"] == [("obj", 0)]
        assert out["count"] == list(range(3000))
        assert out["missing"] == errno.ENOENT
        assert out["joined"] == [group_id]
        assert out["event"] == (CMD_SEND, 0, 0)
        await wait_until(lambda: not srv.device.connections)


async def test_pyroute2_bind_retries_when_its_pid_is_taken() -> None:
    """Two pyroute2 sockets of one process want the same PID: the second gets EADDRINUSE from
    SET_PID and pyroute2 moves on to its next port, as with a kernel netlink socket."""
    async with serving() as srv:

        def session() -> tuple[int, int, list[int]]:
            first = GenericNetlinkSocket(use_socket=DeviceTransport(srv.path))
            second = GenericNetlinkSocket(use_socket=DeviceTransport(srv.path))
            try:
                first.bind(TEST_FAMILY, TestMsg)
                second.bind(TEST_FAMILY, TestMsg)
                ids = []
                for sock, value in ((first, 1), (second, 2)):
                    (reply,) = sock.nlm_request(
                        _test_msg(CMD_ECHO, [("TEST_ID", value)]),
                        msg_type=sock.prid,
                        msg_flags=NLM_F_REQUEST,
                    )
                    ids.append(reply.get_attr("TEST_ID"))
                return first.epid, second.epid, ids
            finally:
                first.close()
                second.close()

        with trio.fail_after(60):
            first_pid, second_pid, ids = await trio.to_thread.run_sync(session)
        assert first_pid >> 22 == 20 and second_pid >> 22 == 21
        assert first_pid & 0x3FFFFF == second_pid & 0x3FFFFF
        assert ids == [1, 2]
