"""Permissions with real credentials (docs/pseudodev.md sections 1 and 2).

The service runs in the test's trio loop as root; each client is a forked child that drops to
uid 65534 with chosen groups before it connects, so the service learns who it is from
SO_PEERCRED/SO_PEERGROUPS exactly as in production.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio
from pseudodev_support import CMD_COUNT, CMD_DEL, CMD_ECHO, CMD_GET, CMD_NEW, CMD_SEND, TEST_FAMILY
from test_pseudodev_tools import (
    C_MC_SUBSCRIBE,
    C_SET_PID,
    C_SOCK_PROP,
    RECV_BUFFER,
    Served,
    codecs_of,
    nlctrl_request,
    serving,
)

from ovsdp.netlink.constants import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from ovsdp.netlink.message import DoneMessage, ErrorMessage, GenlMessage, decode_record

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: clients run as another uid, the socket is chowned"
)

ADMIN_GID = 4242
NOBODY = 65534


def run_as(uid: int, gid: int, groups: list[int], fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child with these credentials; its JSON-able result."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            payload = {"result": fn()}
        except BaseException as exc:
            payload = {"error": repr(exc)}
        os.write(wfd, json.dumps(payload).encode())
        os._exit(0)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    payload = json.loads(b"".join(chunks))
    assert "error" not in payload, payload["error"]
    return payload["result"]


def client_session(srv: Served) -> Callable[[], dict[str, Any]]:
    """What the child does: connect, then every kind of request; the outcome of each."""
    codecs = codecs_of(srv.device)
    group = srv.device.group_id(TEST_FAMILY, "test_events")
    requests = {
        "nlctrl": nlctrl_request({"family_name": TEST_FAMILY}),
        "get": srv.family_request(CMD_GET, {"id": 0}),
        "dump": srv.family_request(CMD_GET, flags=NLM_F_REQUEST | NLM_F_DUMP),
        "count": srv.family_request(CMD_COUNT, {"count": 3}, flags=NLM_F_REQUEST | NLM_F_DUMP),
        "echo": srv.family_request(CMD_ECHO, {"id": 1}),
        "sock_prop": srv.control_request(C_SOCK_PROP, {"rxq_limit": 8192}),
        "join": srv.control_request(
            C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}, flags=NLM_F_REQUEST | NLM_F_ACK
        ),
        "set_pid": srv.control_request(C_SET_PID, {"sock_pid": 5000 + os.getpid() % 1000}),
        "new": srv.family_request(CMD_NEW, {"name": "mine"}, flags=NLM_F_REQUEST | NLM_F_ACK),
        "del": srv.family_request(CMD_DEL, {"id": 0}, flags=NLM_F_REQUEST | NLM_F_ACK),
        "send": srv.family_request(
            CMD_SEND, {"count": 1, "pid": 999_999}, flags=NLM_F_REQUEST | NLM_F_ACK
        ),
    }

    def session() -> dict[str, Any]:
        outcome: dict[str, Any] = {"uid": os.getuid()}
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(10)
        try:
            sock.connect(srv.path)
        except PermissionError:
            outcome["connect"] = "EACCES"
            return outcome
        outcome["connect"] = "ok"
        for name, request in requests.items():
            sock.send(request)
            kinds: list[str] = []
            while not kinds or (name in ("dump", "count") and kinds[-1] == "reply"):
                for msg in decode_record(sock.recv(RECV_BUFFER), codecs):
                    if isinstance(msg, ErrorMessage):
                        kinds.append(errno.errorcode.get(-msg.error, "ACK"))
                    elif isinstance(msg, DoneMessage):
                        kinds.append("DONE")
                    else:
                        assert isinstance(msg, GenlMessage)
                        kinds.append("reply")
            outcome[name] = kinds
        sock.close()
        return outcome

    return session


READS = {
    "nlctrl": ["reply"],
    "get": ["reply"],
    "dump": ["reply", "DONE"],
    "count": ["reply", "reply", "reply", "DONE"],
    "echo": ["reply"],
    "sock_prop": ["reply"],
    "join": ["ACK"],
    "set_pid": ["reply"],
}


async def _run(srv: Served, gid: int, groups: list[int]) -> dict[str, Any]:
    session = client_session(srv)
    return await trio.to_thread.run_sync(run_as, NOBODY, gid, groups, session)


def _prepare(srv: Served) -> None:
    """One object to read and delete; a socket directory the other uid can enter."""
    obj: dict[str, Any] = {"name": "seed"}
    obj["id"] = srv.test.objects.add(obj)
    os.chmod(os.path.dirname(srv.path), 0o755)


async def test_a_non_member_may_read_but_not_change_state() -> None:
    async with serving({"admin_gid": ADMIN_GID}, mode=0o666, group=ADMIN_GID) as srv:
        _prepare(srv)
        with trio.fail_after(30):
            outcome = await _run(srv, NOBODY, [])
        assert outcome["uid"] == NOBODY and outcome["connect"] == "ok"
        for name, expected in READS.items():
            assert outcome[name] == expected, (name, outcome[name])
        for name in ("new", "del", "send"):
            assert outcome[name] == ["EPERM"], (name, outcome[name])
        assert len(srv.test.objects) == 1  # nothing changed
        assert srv.test.objects.get(0) == {"name": "seed", "id": 0}


async def test_the_socket_file_keeps_out_who_is_neither_owner_nor_in_the_group() -> None:
    async with serving({"admin_gid": ADMIN_GID}, group=ADMIN_GID) as srv:  # mode 0660
        _prepare(srv)
        with trio.fail_after(30):
            outcome = await _run(srv, NOBODY, [])
        assert outcome == {"uid": NOBODY, "connect": "EACCES"}
        assert not srv.device.connections


@pytest.mark.parametrize(
    ("gid", "groups"),
    [(NOBODY, [ADMIN_GID]), (ADMIN_GID, [])],
    ids=["supplementary-group", "primary-group"],
)
async def test_a_member_of_the_group_may_change_state(gid: int, groups: list[int]) -> None:
    async with serving({"admin_gid": ADMIN_GID}, group=ADMIN_GID) as srv:  # mode 0660
        _prepare(srv)
        with trio.fail_after(30):
            outcome = await _run(srv, gid, groups)
        assert outcome["uid"] == NOBODY and outcome["connect"] == "ok"
        for name, expected in READS.items():
            assert outcome[name] == expected, (name, outcome[name])
        for name in ("new", "del", "send"):
            assert outcome[name] == ["ACK"], (name, outcome[name])
        # NEW made "mine" (slot 1), DEL removed the seed
        assert [obj["name"] for obj in srv.test.objects] == ["mine"]
