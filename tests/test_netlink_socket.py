"""userspace/netlink_socket.py: the blocking and the trio driver against the real service.

Every scenario that applies to both drivers runs with both (``sock_type``): the service runs in
the test's trio loop (:class:`dpif_support.TrioService`, with the test family of
``pseudodev_support``); the blocking socket's calls run in a worker thread.  The service's
:class:`~ovsdp.pseudodev.device.Device` is inspected directly between awaits.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import pytest
import trio
from dpif_support import DRIVERS, Driver, TrioService, ids, recv_n
from pseudodev_support import (
    CMD_COUNT,
    CMD_DEL,
    CMD_ECHO,
    CMD_GET,
    CMD_NEW,
    CMD_SEND,
    TEST_CODEC,
    TEST_FAMILY,
    TEST_GROUP,
    ServiceThread,
    make_device,
    socket_path,
)

from ovsdp.netlink.constants import NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_REQUEST
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlMessage, encode_genl
from userspace.netlink_socket import (
    AsyncNetlinkSocket,
    NetlinkSocket,
    Request,
    ServiceGone,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
ECHO = NLM_F_REQUEST | NLM_F_ECHO
ACK = NLM_F_REQUEST | NLM_F_ACK


@pytest.fixture(params=["blocking", "trio"])
def sock_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def srv(nursery: trio.Nursery) -> TrioService:
    return await TrioService().start(nursery)


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def expect_errno(code: int, awaitable: Any) -> NetlinkError:
    with pytest.raises(NetlinkError) as info:
        await awaitable
    assert info.value.errno == code, f"{errno.errorcode[code]} expected, got {info.value!r}"
    return info.value


# -- connecting, PIDs -----------------------------------------------------------------------------


async def test_connect_learns_the_pid_and_turns_markers_on(
    srv: TrioService, sock_type: str
) -> None:
    connect = DRIVERS[sock_type].connect
    a, b = await connect(srv.path), await connect(srv.path)
    assert a.pid != b.pid and a.pid > 0 and b.pid > 0
    assert set(srv.device.connections) == {a.pid, b.pid}
    for sock in (a, b):
        props = await sock.properties()
        assert props["sock_pid"] == sock.pid
        assert props["txn_markers"] == 1
        # replies carry the connection's PID
        (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
        assert reply.pid == sock.pid
    a.close()
    b.close()


async def test_claiming_a_pid(srv: TrioService, sock_type: str) -> None:
    connect = DRIVERS[sock_type].connect
    a, b = await connect(srv.path), await connect(srv.path)
    await a.claim_pid(5000)
    assert a.pid == 5000
    assert srv.device.connections[5000] is not None
    assert (await a.properties())["sock_pid"] == 5000
    (reply,) = await a.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    assert reply.pid == 5000
    old = b.pid
    err = await expect_errno(errno.EADDRINUSE, b.claim_pid(5000))
    assert "5000" in str(err)
    assert b.pid == old  # a refused claim changes nothing
    await expect_errno(errno.EINVAL, b.claim_pid(0))
    # unicast to the claimed PID reaches its owner
    await b.transact(TEST_FAMILY, CMD_SEND, {"count": 1, "pid": 5000})
    assert ids(await recv_n(a, 1)) == [0]
    a.close()
    await wait_until(lambda: 5000 not in srv.device.connections)
    await b.claim_pid(5000)  # released with its connection
    assert b.pid == 5000
    b.close()


async def test_connect_without_a_service_is_service_gone(sock_type: str) -> None:
    connect = DRIVERS[sock_type].connect
    path = socket_path()
    with pytest.raises(ServiceGone) as info:
        await connect(path)
    assert path in str(info.value) and "No such file" in str(info.value)
    # a socket file nobody listens on (a service that died without cleaning up)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)
    stale.close()
    with pytest.raises(ServiceGone) as info:
        await connect(path)
    assert path in str(info.value) and "refused" in str(info.value)
    assert isinstance(info.value, ConnectionError)


# -- transactions ---------------------------------------------------------------------------------


async def test_transact_replies_acks_and_errors(srv: TrioService, sock_type: str) -> None:
    sock = await DRIVERS[sock_type].connect(srv.path)
    (reply,) = await sock.transact(TEST_FAMILY, CMD_NEW, {"name": "a"}, flags=NLM_F_ECHO)
    assert isinstance(reply, GenlMessage)
    assert reply.attrs == {"name": "a", "id": 0} and reply.cmd == CMD_NEW and reply.seq != 0
    # silent success: nothing but the marker comes back
    assert await sock.transact(TEST_FAMILY, CMD_NEW, {"name": "b"}) == []
    # an ACK is not a reply
    assert await sock.transact(TEST_FAMILY, CMD_NEW, {"name": "c"}, flags=NLM_F_ACK) == []
    (reply,) = await sock.transact(
        TEST_FAMILY, CMD_NEW, {"name": "d"}, flags=NLM_F_ECHO | NLM_F_ACK
    )
    assert reply.attrs == {"name": "d", "id": 3}
    assert sorted(o["name"] for o in srv.test.objects) == ["a", "b", "c", "d"]
    (got,) = await sock.transact(TEST_FAMILY, CMD_GET, {"id": 1})
    assert got.attrs == {"name": "b", "id": 1} and got.cmd == CMD_GET
    # errors: the errno and the service's reason
    err = await expect_errno(errno.ENOENT, sock.transact(TEST_FAMILY, CMD_DEL, {"id": 99}))
    assert err.reason == "no object 99"
    assert "no object 99" in str(err) and "ENOENT" in str(err)
    await expect_errno(errno.EOPNOTSUPP, sock.transact(TEST_FAMILY, 99))
    await expect_errno(errno.EINVAL, sock.transact(TEST_FAMILY, CMD_NEW, {}))  # name required
    await expect_errno(errno.ERANGE, sock.transact(TEST_FAMILY, CMD_NEW, {"name": "n" * 16}))
    await expect_errno(errno.ENOENT, sock.family("no_such_family", TEST_CODEC))
    # an error changes nothing, and the socket carries on
    assert len(srv.test.objects) == 4
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 5})
    assert reply.attrs == {"id": 5}
    assert await sock.recv(0) == []  # nothing left over as "unsolicited"
    sock.close()


async def test_transact_many_in_order_and_failures_do_not_stop_the_rest(
    srv: TrioService, sock_type: str
) -> None:
    sock = await DRIVERS[sock_type].connect(srv.path)
    results = await sock.transact_many(
        [
            Request(TEST_FAMILY, CMD_NEW, {"name": "a"}, ECHO),
            Request(TEST_FAMILY, CMD_GET, {"id": 77}),
            Request(TEST_FAMILY, CMD_NEW, {"name": "b"}),
            Request(TEST_FAMILY, CMD_GET, {"id": 1}),
            Request(TEST_FAMILY, CMD_DEL, {"id": 0}, ACK),
            Request(TEST_FAMILY, CMD_GET, {"id": 0}),  # deleted by the request before it
            Request(TEST_FAMILY, 99),
            Request(TEST_FAMILY, CMD_ECHO, {"id": 8}),
        ]
    )
    assert [r.error.errno if r.error else None for r in results] == [
        None,
        errno.ENOENT,
        None,
        None,
        None,
        errno.ENOENT,
        errno.EOPNOTSUPP,
        None,
    ]
    assert [[m.attrs for m in r.replies] for r in results] == [
        [{"name": "a", "id": 0}],
        [],
        [],  # silent success
        [{"name": "b", "id": 1}],
        [],  # just the ACK
        [],
        [],
        [{"id": 8}],
    ]
    assert results[1].error is not None and results[1].error.reason == "no object 77"
    # a big batch: 500 requests in one record, every 50th fails
    batch = [
        Request(TEST_FAMILY, CMD_GET, {"id": 10_000 + i})
        if i % 50 == 49
        else Request(TEST_FAMILY, CMD_ECHO, {"id": i})
        for i in range(500)
    ]
    results = await sock.transact_many(batch)
    assert len(results) == 500
    for i, result in enumerate(results):
        if i % 50 == 49:
            assert result.error is not None and result.error.errno == errno.ENOENT
            assert result.error.reason == f"no object {10_000 + i}"
            assert result.replies == []
        else:
            assert result.error is None and [m.attrs for m in result.replies] == [{"id": i}]
    sock.close()


async def test_unsolicited_messages_between_replies_go_to_recv(
    srv: TrioService, sock_type: str
) -> None:
    """Events and upcalls queued before and during a transaction or a dump are neither lost
    nor taken for replies: recv returns them, in order."""
    connect = DRIVERS[sock_type].connect
    sock, sender = await connect(srv.path), await connect(srv.path)
    await sock.join(TEST_FAMILY, TEST_GROUP)
    # queued before the request: read while waiting for its answer
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 20, "payload": b"before"})
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 77})
    assert reply.attrs == {"id": 77}
    # caused by the request itself: queued between the request and its marker
    assert await sock.transact(TEST_FAMILY, CMD_SEND, {"count": 5, "pid": sock.pid}) == []
    results = await sock.transact_many(
        [
            Request(TEST_FAMILY, CMD_ECHO, {"id": 1}),
            Request(TEST_FAMILY, CMD_SEND, {"count": 3, "pid": sock.pid, "payload": b"mid"}),
            Request(TEST_FAMILY, CMD_GET, {"id": 1234}),
            Request(TEST_FAMILY, CMD_ECHO, {"id": 2}),
        ]
    )
    assert [[m.attrs for m in r.replies] for r in results] == [[{"id": 1}], [], [], [{"id": 2}]]
    assert results[2].error is not None and results[2].error.errno == errno.ENOENT
    # during a dump
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 4, "payload": b"dump"})
    entries = await sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 300})
    assert ids(entries) == list(range(300))
    assert all(m.cmd == CMD_COUNT for m in entries)
    events = await recv_n(sock, 20 + 5 + 3 + 4)
    assert all(isinstance(m, GenlMessage) and m.seq == 0 and m.cmd == CMD_SEND for m in events)
    payloads = [m.attrs.get("payload", b"") for m in events]  # type: ignore[union-attr]
    assert payloads == [b"before"] * 20 + [b""] * 5 + [b"mid"] * 3 + [b"dump"] * 4
    assert ids(events) == [*range(20), *range(5), *range(3), *range(4)]
    assert await sock.recv(0.1) == []
    sock.close()
    sender.close()


async def test_late_answers_of_an_abandoned_request_are_not_unsolicited(
    srv: TrioService, sock_type: str
) -> None:
    """A request given up on (a timeout, a cancellation) after it was sent: its replies and
    marker arrive later; they must not come out of recv as upcalls or events."""
    sock = await DRIVERS[sock_type].connect(srv.path)
    batch = [Request(TEST_FAMILY, CMD_ECHO, {"id": i, "payload": b"z" * 100}) for i in range(600)]
    if isinstance(sock.sock, NetlinkSocket):
        blocking = sock.sock
        blocking.timeout = 0  # give up as soon as the request has left
        with pytest.raises(TimeoutError):
            await trio.to_thread.run_sync(blocking.transact_many, batch)
        blocking.timeout = 20
    else:
        asock = sock.sock
        send = asock._send
        with trio.CancelScope() as scope:

            async def send_then_give_up(record: bytes) -> None:
                await send(record)
                scope.cancel()

            asock._send = send_then_give_up  # type: ignore[method-assign]
            await asock.transact_many(batch)
        asock._send = send  # type: ignore[method-assign]
        assert scope.cancelled_caught
    # the next request gets its own answer, not one of the old ones
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 424242})
    assert reply.attrs == {"id": 424242}
    # the old answers are read by now (they came before the new one); none is "unsolicited"
    await sock.transact(TEST_FAMILY, CMD_SEND, {"count": 1, "pid": sock.pid, "payload": b"up"})
    (upcall,) = await recv_n(sock, 1)
    assert isinstance(upcall, GenlMessage) and upcall.attrs == {"id": 0, "payload": b"up"}
    assert await sock.recv(0.1) == []
    sock.close()


# -- dumps ---------------------------------------------------------------------------------------


async def test_dump_entries_and_errors(srv: TrioService, sock_type: str) -> None:
    sock = await DRIVERS[sock_type].connect(srv.path)
    assert await sock.dump(TEST_FAMILY, CMD_GET) == []
    for name in ("x", "y", "z"):
        await sock.transact(TEST_FAMILY, CMD_NEW, {"name": name})
    assert [m.attrs for m in await sock.dump(TEST_FAMILY, CMD_GET)] == [
        {"name": "x", "id": 0},
        {"name": "y", "id": 1},
        {"name": "z", "id": 2},
    ]
    assert ids(await sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 5000})) == list(range(5000))
    # refused before it starts (NLMSG_ERROR): a missing attribute, a command without a dump
    await expect_errno(errno.EINVAL, sock.dump(TEST_FAMILY, CMD_COUNT))
    await expect_errno(errno.EOPNOTSUPP, sock.dump(TEST_FAMILY, CMD_ECHO))
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 3})
    assert reply.attrs == {"id": 3}
    assert ids(await sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 3})) == [0, 1, 2]
    assert not srv.device.connections[sock.pid].dumping
    sock.close()


DUMP_MEMORY = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, {tests!r})
    from pseudodev_support import TEST_CODEC, TEST_FAMILY, CMD_COUNT
    from userspace.netlink_socket import AsyncNetlinkSocket, NetlinkSocket
    import trio

    WARM = {{"count": 2000, "payload": b"p" * 200}}
    FULL = {{"count": {count}, "payload": b"p" * 200}}

    def rss():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def check(i, msg):
        assert msg.attrs["id"] == i and len(msg.attrs["payload"]) == 200, (i, msg)

    def blocking():
        sock = NetlinkSocket({path!r})
        sock.family(TEST_FAMILY, TEST_CODEC)
        for m in sock.dump(TEST_FAMILY, CMD_COUNT, WARM):
            pass
        before = rss()
        n = 0
        for m in sock.dump(TEST_FAMILY, CMD_COUNT, FULL):
            check(n, m)
            n += 1
        return n, rss() - before

    async def main():
        sock = await AsyncNetlinkSocket.connect({path!r})
        await sock.family(TEST_FAMILY, TEST_CODEC)
        async for m in sock.dump(TEST_FAMILY, CMD_COUNT, WARM):
            pass
        before = rss()
        n = 0
        async for m in sock.dump(TEST_FAMILY, CMD_COUNT, FULL):
            check(n, m)
            n += 1
        return n, rss() - before

    n, grown = blocking() if {kind!r} == "blocking" else trio.run(main)
    print(n, grown)
    """
)


def test_a_100k_entry_dump_is_read_as_it_goes(sock_type: str) -> None:
    """A client that read the whole dump before handing out the first entry would hold 100k
    messages of 200-byte payloads (some 40 MiB); read as it goes, it holds about one record."""
    count = 100_000
    attrs = {"count": count, "payload": b"p" * 200}
    device, _test = make_device()
    path = socket_path()
    with ServiceThread(device, path) as thread:

        def dumping(pid: int) -> bool:
            return bool(thread.call(lambda: device.connections[pid].dumping))

        # the first entry comes while the service is still producing the dump; leaving then
        # drains it
        if sock_type == "blocking":
            sock = NetlinkSocket(path, timeout=20)
            sock.family(TEST_FAMILY, TEST_CODEC)
            for msg in sock.dump(TEST_FAMILY, CMD_COUNT, attrs):
                assert msg.attrs["id"] == 0
                assert dumping(sock.pid)
                break
            assert not dumping(sock.pid)
            sock.close()
        else:

            async def first_entry() -> None:
                asock = await AsyncNetlinkSocket.connect(path)
                await asock.family(TEST_FAMILY, TEST_CODEC)
                async with asock.dump(TEST_FAMILY, CMD_COUNT, attrs) as entries:
                    assert (await entries.__anext__()).attrs["id"] == 0
                    assert await trio.to_thread.run_sync(dumping, asock.pid)
                assert not await trio.to_thread.run_sync(dumping, asock.pid)
                asock.close()

            trio.run(first_entry)
        # the client's memory while it reads the whole dump, in a process of its own
        script = DUMP_MEMORY.format(tests=TESTS, path=path, count=count, kind=sock_type)
        env = dict(os.environ, PYTHONPATH=REPO)
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        n, grown_kib = map(int, out.stdout.split())
        assert n == count
        assert grown_kib < 8 * 1024, f"the client grew by {grown_kib} KiB reading the dump"


async def test_leaving_a_blocking_dump_early_drains_it(srv: TrioService) -> None:
    sock = await DRIVERS["blocking"].connect(srv.path)
    blocking = sock.sock
    assert isinstance(blocking, NetlinkSocket)

    def leave_early() -> list[int]:
        seen = []
        for msg in blocking.dump(TEST_FAMILY, CMD_COUNT, {"count": 100_000}):
            seen.append(msg.attrs["id"])
            if len(seen) == 10:
                break
        return seen

    def leave_by_exception() -> None:
        for msg in blocking.dump(TEST_FAMILY, CMD_COUNT, {"count": 20_000}):
            if msg.attrs["id"] == 3:
                raise LookupError("the consumer failed")

    assert await trio.to_thread.run_sync(leave_early) == list(range(10))
    await check_socket_is_clean(srv, sock)
    with pytest.raises(LookupError):
        await trio.to_thread.run_sync(leave_by_exception)
    await check_socket_is_clean(srv, sock)
    sock.close()


async def check_socket_is_clean(srv: TrioService, sock: Driver) -> None:
    """Nothing of an earlier dump is left: requests, dumps and recv see only their own."""
    (echo,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 42})
    assert echo.attrs == {"id": 42}
    assert not srv.device.connections[sock.pid].dumping
    assert ids(await sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 3})) == [0, 1, 2]
    assert await sock.recv(0.1) == []


async def test_leaving_a_trio_dump_early_drains_it(srv: TrioService) -> None:
    sock = await DRIVERS["trio"].connect(srv.path)
    asock = sock.sock
    assert isinstance(asock, AsyncNetlinkSocket)
    # closed explicitly (the way trio recommends)
    async with aclosing(asock.dump(TEST_FAMILY, CMD_COUNT, {"count": 100_000})) as entries:
        async for msg in entries:
            if msg.attrs["id"] == 9:
                break
    await check_socket_is_clean(srv, sock)
    # a plain break: the socket must not stay stuck in the abandoned dump
    seen = []
    with trio.fail_after(10):
        async for msg in asock.dump(TEST_FAMILY, CMD_COUNT, {"count": 100_000}):
            seen.append(msg.attrs["id"])
            if len(seen) == 10:
                break
        assert seen == list(range(10))
        await check_socket_is_clean(srv, sock)
        # cancelled while it reads
        with trio.move_on_after(0.05):
            async for _msg in asock.dump(TEST_FAMILY, CMD_COUNT, {"count": 100_000}):
                await trio.sleep(0)
        await check_socket_is_clean(srv, sock)
    sock.close()


BIG_DUMP = {"count": 2000, "payload": b"q" * 1000}  # 2 MB: more than the socket buffers hold


async def test_one_trio_socket_shared_by_tasks(srv: TrioService) -> None:
    """A task waiting in recv does not hold the socket: other tasks' transactions and a dump
    run meanwhile, each gets its own answers, and recv gets the unsolicited messages."""
    asock = await AsyncNetlinkSocket.connect(srv.path)
    await asock.family(TEST_FAMILY, TEST_CODEC)
    got: list[Any] = []
    echoes: dict[int, int] = {}

    async def receiver() -> None:
        while len(got) < 6:
            got.extend(await asock.recv())

    async def echoer(base: int) -> None:
        for i in range(base, base + 20):
            (reply,) = await asock.transact(TEST_FAMILY, CMD_ECHO, {"id": i})
            echoes[i] = reply.attrs["id"]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.sleep(0.05)  # the receiver is now blocked reading
            nursery.start_soon(echoer, 0)
            nursery.start_soon(echoer, 100)
            dumped = [m.attrs["id"] async for m in asock.dump(TEST_FAMILY, CMD_COUNT, BIG_DUMP)]
            await asock.transact(TEST_FAMILY, CMD_SEND, {"count": 6, "pid": asock.pid})
    assert dumped == list(range(2000))
    assert echoes == {i: i for i in [*range(20), *range(100, 120)]}
    assert len(got) == 6 and all(m.seq == 0 and m.cmd == CMD_SEND for m in got)
    # a cancelled reader leaves the socket usable
    with trio.move_on_after(0.05):
        await asock.recv()
    (reply,) = await asock.transact(TEST_FAMILY, CMD_ECHO, {"id": 5})
    assert reply.attrs["id"] == 5
    asock.close()


async def test_requests_while_a_dump_runs_on_the_same_socket(
    srv: TrioService, sock_type: str
) -> None:
    """A loop over a dump that makes requests on the same socket (as ``for port in
    port_dump(): port_set_upcall_pids(...)`` does): every entry arrives, the requests get their
    own answers, and a second dump while the service is still producing the first is EBUSY
    without disturbing it.  (Only at the start is that certain: a transaction reads ahead
    through the dump's records to find its reply, and the service produces more as the socket
    empties, so near the end the service may already have sent the whole dump.)"""
    sock = await DRIVERS[sock_type].connect(srv.path)
    seen: list[int] = []
    echoes: list[Any] = []
    if isinstance(sock.sock, NetlinkSocket):
        blocking = sock.sock

        def loop() -> None:
            for msg in blocking.dump(TEST_FAMILY, CMD_COUNT, BIG_DUMP):
                seen.append(msg.attrs["id"])
                if msg.attrs["id"] % 400 == 0:
                    echoes.extend(
                        m.attrs for m in blocking.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
                    )
                if msg.attrs["id"] == 0:
                    with pytest.raises(NetlinkError) as info:
                        list(blocking.dump(TEST_FAMILY, CMD_GET))
                    assert info.value.errno == errno.EBUSY

        with trio.fail_after(20):
            await trio.to_thread.run_sync(loop)
    else:
        asock = sock.sock
        with trio.fail_after(20):
            async for msg in asock.dump(TEST_FAMILY, CMD_COUNT, BIG_DUMP):
                seen.append(msg.attrs["id"])
                if msg.attrs["id"] % 400 == 0:
                    echoes.extend(
                        m.attrs for m in await asock.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
                    )
                if msg.attrs["id"] == 0:
                    await expect_errno(errno.EBUSY, sock.dump(TEST_FAMILY, CMD_GET))
    assert seen == list(range(2000))
    assert echoes == [{"id": 1}] * 5
    await check_socket_is_clean(srv, sock)
    sock.close()


_RAW_DUMPER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.connect(sys.argv[1])
sock.send(bytes.fromhex(sys.argv[2]))
print("sent", flush=True)
total = 0
while True:
    record = sock.recv(1 << 20)
    total += len(record)
    off = 0
    while off + 16 <= len(record):
        length = int.from_bytes(record[off : off + 4], "little")
        kind = int.from_bytes(record[off + 4 : off + 6], "little")
        if kind == 3 or length < 16:  # NLMSG_DONE
            print(total, flush=True)
            sys.exit(0)
        off += (length + 3) & ~3
"""


async def test_a_dump_read_as_fast_as_it_is_written_does_not_hold_the_service(
    srv: TrioService,
) -> None:
    """A client that reads a long dump as fast as the service writes it (a process that only
    receives) never fills its socket; the service still answers another client while that dump
    runs (Connection.drain's budget), instead of writing the whole dump first."""
    family_id = srv.device.families_by_name[TEST_FAMILY].id
    request = encode_genl(
        GenlMessage(
            family_id, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, CMD_COUNT, 1, None,
            {"count": 20_000, "payload": b"d" * 1000},
        ),
        TEST_CODEC,
    )  # fmt: skip
    other = await AsyncNetlinkSocket.connect(srv.path)
    await other.family(TEST_FAMILY, TEST_CODEC)
    dumper = await trio.lowlevel.open_process(
        [sys.executable, "-c", _RAW_DUMPER, srv.path, request.hex()], stdout=subprocess.PIPE
    )
    assert dumper.stdout is not None

    def dumping() -> bool:
        return any(io.conn.dumping for io in srv.service.connections)

    with trio.fail_after(60):
        # (a service that wrote the whole dump in one go would never be seen dumping here)
        await wait_until(dumping)
        answered_while_dumping = []
        for i in range(5):
            (reply,) = await other.transact(TEST_FAMILY, CMD_ECHO, {"id": i})
            assert reply.attrs == {"id": i}
            answered_while_dumping.append(dumping())
        out = b""
        while not out.endswith(b"\n") or out.count(b"\n") < 2:
            chunk = await dumper.stdout.receive_some()
            if not chunk:
                break
            out += chunk
        await dumper.wait()
    assert dumper.returncode == 0 and int(out.split()[-1]) > 20_000_000
    assert answered_while_dumping[0], answered_while_dumping
    other.close()


async def test_a_request_too_big_for_one_record(srv: TrioService, sock_type: str) -> None:
    sock = await DRIVERS[sock_type].connect(srv.path)
    batch = [Request(TEST_FAMILY, CMD_ECHO, {"payload": b"b" * 60_000}) for _ in range(20)]
    err = await expect_errno(errno.EMSGSIZE, sock.transact_many(batch))
    assert "too big" in err.reason
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    assert reply.attrs == {"id": 1}
    sock.close()


# -- groups and unsolicited messages ------------------------------------------------------------


async def test_join_leave_and_receive_events(srv: TrioService, sock_type: str) -> None:
    connect = DRIVERS[sock_type].connect
    sock, sender, other = [await connect(srv.path) for _ in range(3)]
    group = srv.device.group_id(TEST_FAMILY, TEST_GROUP)
    await sock.join(TEST_FAMILY, TEST_GROUP)
    assert (await sock.properties())["mcast_groups"] == (group,)
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 3, "payload": b"e"})
    events = await recv_n(sock, 3)
    assert ids(events) == [0, 1, 2]
    for msg in events:
        assert isinstance(msg, GenlMessage)
        assert msg.seq == 0 and msg.cmd == CMD_SEND and msg.attrs["payload"] == b"e"
        assert msg.type == srv.device.families_by_name[TEST_FAMILY].id
    assert await other.recv(0.1) == []  # not a member
    await sock.leave(TEST_FAMILY, TEST_GROUP)
    assert (await sock.properties())["mcast_groups"] == ()
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 3})
    # unicast (an upcall) needs no membership
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 1, "pid": sock.pid, "payload": b"u"})
    (upcall,) = await recv_n(sock, 1)
    assert isinstance(upcall, GenlMessage) and upcall.attrs == {"id": 0, "payload": b"u"}
    assert await sock.recv(0.1) == []
    await expect_errno(errno.ENOENT, sock.join(TEST_FAMILY, "no_such_group"))
    for s in (sock, sender, other):
        s.close()


async def test_recv_with_a_timeout_returns_nothing(srv: TrioService, sock_type: str) -> None:
    sock = await DRIVERS[sock_type].connect(srv.path)
    await sock.join(TEST_FAMILY, TEST_GROUP)
    start = time.monotonic()
    assert await sock.recv(0.3) == []
    assert time.monotonic() - start >= 0.25
    assert await sock.recv(0) == []
    # a message that comes while recv waits is returned at once
    sender = await DRIVERS[sock_type].connect(srv.path)

    async def send_later() -> None:
        await trio.sleep(0.2)
        await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 1})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_later)
        start = time.monotonic()
        messages = await sock.recv(10)
    assert ids(messages) == [0] and time.monotonic() - start < 5
    # the socket works after a recv that timed out
    (reply,) = await sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    assert reply.attrs == {"id": 1}
    sock.close()
    sender.close()


async def test_enobufs_is_raised_once_then_messages_continue(
    srv: TrioService, sock_type: str
) -> None:
    connect = DRIVERS[sock_type].connect
    listener, sender = await connect(srv.path), await connect(srv.path)
    await listener.join(TEST_FAMILY, TEST_GROUP)
    await listener.properties(rxq_limit=4096)
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 2000, "payload": b"p" * 200})
    before: list[int] = []
    overruns = 0
    with trio.fail_after(10):
        while True:
            try:
                messages = await listener.recv(1)
            except NetlinkError as exc:
                assert exc.errno == errno.ENOBUFS
                overruns += 1
                break
            assert messages, "no ENOBUFS came"
            before += ids(messages)
    assert overruns == 1
    assert before == list(range(len(before))) and 0 < len(before) < 2000
    props = await listener.properties()
    assert len(before) + props["rxq_dropped"] == 2000
    # raised once: the next recv carries on (nothing more of the burst was queued)
    assert await listener.recv(0.2) == []
    # resynchronise: the socket works, later messages arrive in order
    (reply,) = await listener.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    assert reply.attrs == {"id": 1}
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 5})
    assert ids(await recv_n(listener, 5)) == [0, 1, 2, 3, 4]
    listener.close()
    sender.close()


async def test_messages_before_an_overrun_come_first(srv: TrioService, sock_type: str) -> None:
    """The overrun is raised on its own, after what was queued before it, and before what was
    queued after it, even when all of it was read in one go."""
    connect = DRIVERS[sock_type].connect
    listener, sender = await connect(srv.path), await connect(srv.path)
    await listener.join(TEST_FAMILY, TEST_GROUP)
    await listener.properties(rxq_limit=4096)
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 100, "payload": b"a" * 200})
    # a transaction reads (and keeps aside) everything queued before its answer
    await listener.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    await sender.transact(TEST_FAMILY, CMD_SEND, {"count": 2, "payload": b"b"})
    await listener.transact(TEST_FAMILY, CMD_ECHO, {"id": 2})
    first = await listener.recv(1)
    assert first and all(m.attrs["payload"] == b"a" * 200 for m in first)  # type: ignore[union-attr]
    assert ids(first) == list(range(len(first)))
    await expect_errno(errno.ENOBUFS, listener.recv(1))
    after = await recv_n(listener, 2)
    assert [m.attrs["payload"] for m in after] == [b"b", b"b"]  # type: ignore[union-attr]
    listener.close()
    sender.close()


# -- the service going away -----------------------------------------------------------------------


def check_gone(exc: ServiceGone, path: str) -> None:
    text = str(exc)
    assert path in text
    assert "closed the connection" in text or "went away" in text, text


async def test_service_stopped_mid_use(nursery: trio.Nursery, sock_type: str) -> None:
    srv = await TrioService().start(nursery)
    connect = DRIVERS[sock_type].connect
    idle, waiting, requester = [await connect(srv.path) for _ in range(3)]
    await waiting.join(TEST_FAMILY, TEST_GROUP)
    outcome: dict[str, BaseException] = {}

    async def wait_for_events() -> None:
        try:
            await waiting.recv(30)
        except BaseException as exc:
            outcome["recv"] = exc

    async with trio.open_nursery() as tasks:
        tasks.start_soon(wait_for_events)
        await trio.sleep(0.2)
        with trio.fail_after(10):
            await srv.stop()
            await wait_until(lambda: "recv" in outcome)
    assert isinstance(outcome["recv"], ServiceGone), outcome
    check_gone(outcome["recv"], srv.path)
    with pytest.raises(ServiceGone) as info:
        await requester.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
    check_gone(info.value, srv.path)
    with pytest.raises(ServiceGone):
        await idle.recv(5)
    with pytest.raises(ServiceGone):
        await idle.dump(TEST_FAMILY, CMD_COUNT, {"count": 10})
    with pytest.raises(ServiceGone) as info:
        await connect(srv.path)
    assert srv.path in str(info.value)
    for s in (idle, waiting, requester):
        s.close()


async def test_service_stopped_in_the_middle_of_a_dump(
    nursery: trio.Nursery, sock_type: str
) -> None:
    srv = await TrioService().start(nursery)
    sock = await DRIVERS[sock_type].connect(srv.path)
    seen = 0
    if isinstance(sock.sock, NetlinkSocket):
        blocking = sock.sock
        token = trio.lowlevel.current_trio_token()

        def read() -> None:
            nonlocal seen
            for _msg in blocking.dump(TEST_FAMILY, CMD_COUNT, {"count": 1_000_000}):
                seen += 1
                if seen == 1000:
                    trio.from_thread.run(srv.stop, trio_token=token)

        with trio.fail_after(10), pytest.raises(ServiceGone) as info:
            await trio.to_thread.run_sync(read)
    else:
        with trio.fail_after(10), pytest.raises(ServiceGone) as info:
            async for _msg in sock.sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 1_000_000}):
                seen += 1
                if seen == 1000:
                    await srv.stop()
    check_gone(info.value, srv.path)
    assert 1000 <= seen < 1_000_000
    sock.close()


async def test_service_restarted_on_the_same_path(nursery: trio.Nursery, sock_type: str) -> None:
    srv = await TrioService().start(nursery)
    connect = DRIVERS[sock_type].connect
    old = await connect(srv.path)
    await old.claim_pid(777)
    await srv.stop()
    assert not os.path.exists(srv.path)
    again = await TrioService(path=srv.path).start(nursery)
    # the old connection belongs to the old service: a clear error, every time
    for _ in range(2):
        with pytest.raises(ServiceGone) as info:
            await old.transact(TEST_FAMILY, CMD_ECHO, {"id": 1})
        check_gone(info.value, srv.path)
    old.close()
    # a new one works with the new service, which knows nothing of the old PID
    new = await connect(again.path)
    assert set(again.device.connections) == {new.pid}
    (reply,) = await new.transact(TEST_FAMILY, CMD_ECHO, {"id": 2})
    assert reply.attrs == {"id": 2}
    await new.claim_pid(777)
    assert new.pid == 777
    new.close()
    await again.stop()
