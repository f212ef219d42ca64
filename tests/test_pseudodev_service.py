"""The pseudo-device served over its socket (docs/pseudodev.md), in the test's own trio loop.

The service runs as a task of the test (:func:`serving`); clients are raw trio sockets
(:class:`AsyncClient`) or the blocking ``NetlinkSocket`` in a worker thread.  The device is in
the same process and thread as the service, so the tests inspect it directly between awaits.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import stat
import struct
from typing import Any

import pytest
import trio
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
    make_device,
    socket_path,
)
from test_pseudodev_tools import (
    C_GET_PID,
    C_MC_SUBSCRIBE,
    C_SET_PID,
    C_SOCK_PROP,
    AsyncClient,
    Served,
    error_code,
    expect_error,
    genl,
    is_marker,
    nla,
    nlmsg,
    serving,
    split_record,
    string,
    wait_until,
)

from ovsdp.netlink.constants import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_ECHO,
    NLM_F_MULTI,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import (
    DoneMessage,
    ErrorMessage,
    GenlMessage,
    NoopMessage,
    decode_record,
)
from ovsdp.pseudodev.server import PseudoDevice, ServiceError
from userspace.netlink_socket import NetlinkSocket, Request, ServiceGone

DUMP = NLM_F_REQUEST | NLM_F_DUMP
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
ACK = NLM_F_REQUEST | NLM_F_ACK
ECHO = NLM_F_REQUEST | NLM_F_ECHO


def blocking_client(path: str) -> NetlinkSocket:
    sock = NetlinkSocket(path, timeout=20)
    sock.family(TEST_FAMILY, TEST_CODEC)
    return sock


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


# -- connecting (section 1) and PIDs (section 3) --------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown of the socket file needs root")
async def test_socket_file_is_0660_and_owner_and_group_are_set() -> None:
    path = socket_path()
    service = PseudoDevice(make_device()[0], path, owner=65534, group=65534)
    service.open()
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    finally:
        service.close()
    assert not os.path.exists(path)
    service = PseudoDevice(make_device()[0], path, mode=0o600)
    service.open()
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        service.close()


async def test_one_connection_is_one_socket_with_its_own_pid() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            clients = [await srv.client() for _ in range(3)]
            pids = []
            for client in clients:
                await client.send(srv.control_request(C_GET_PID, seq=1))
                (reply,) = await client.recv_messages()
                assert isinstance(reply, GenlMessage) and reply.pid == reply.attrs["sock_pid"]
                pids.append(reply.attrs["sock_pid"])
            assert sorted(pids) == [1, 2, 3]
            clients[0].close()
            clients[1].close()
            await wait_until(lambda: len(srv.device.connections) == 1)
            # never reused while the service runs, even after the disconnects
            again = [await srv.client() for _ in range(2)]
            for client in again:
                await client.send(srv.control_request(C_GET_PID, seq=1))
            new_pids = [(await c.recv_messages())[0].attrs["sock_pid"] for c in again]  # type: ignore[union-attr]
            assert sorted(new_pids) == [4, 5]


async def test_claiming_pids_over_the_socket() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            a = await in_thread(blocking_client, srv.path)
            b = await in_thread(blocking_client, srv.path)
            await in_thread(a.claim_pid, 1000)
            assert a.pid == 1000 and srv.device.connections[1000].pid == 1000
            with pytest.raises(NetlinkError) as info:
                await in_thread(b.claim_pid, 1000)
            assert info.value.errno == errno.EADDRINUSE
            # replies now carry the claimed PID
            (echo,) = await in_thread(a.transact, TEST_FAMILY, CMD_ECHO, {"id": 3})
            assert echo.pid == 1000
            a.close()
            await wait_until(lambda: 1000 not in srv.device.connections)
            await in_thread(b.claim_pid, 1000)  # free again: it can be claimed
            assert b.pid == 1000
            b.close()


async def test_200_clients_at_once() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            clients = [await srv.client() for _ in range(200)]
            results: dict[int, int] = {}

            async def transact(i: int, client: AsyncClient) -> None:
                await client.send(srv.family_request(CMD_ECHO, {"id": i}, seq=i + 1))
                (reply,) = await client.recv_messages()
                assert isinstance(reply, GenlMessage)
                assert reply.seq == i + 1 and reply.attrs == {"id": i}
                results[i] = reply.pid

            async with trio.open_nursery() as nursery:
                for i, client in enumerate(clients):
                    nursery.start_soon(transact, i, client)
            assert len(results) == 200
            assert sorted(results.values()) == list(range(1, 201))
            assert len(srv.device.connections) == 200
            for client in clients:
                client.close()
            await wait_until(lambda: not srv.device.connections)
            assert not srv.service.connections


# -- requests and replies (section 6) -------------------------------------------------------


async def test_blocking_client_transactions_batches_and_dumps() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            sock = await in_thread(blocking_client, srv.path)

            def work() -> None:
                assert sock.transact(TEST_FAMILY, CMD_ECHO, {"name": "hi"})[0].attrs == {
                    "name": "hi"
                }
                # a batch: one record, handled in order, a failure does not stop the others
                results = sock.transact_many(
                    [
                        Request(TEST_FAMILY, CMD_NEW, {"name": "a"}, NLM_F_REQUEST | NLM_F_ECHO),
                        Request(TEST_FAMILY, CMD_GET, {"id": 77}),
                        Request(TEST_FAMILY, CMD_NEW, {"name": "b"}),
                        Request(TEST_FAMILY, CMD_GET, {"id": 1}),
                        Request(TEST_FAMILY, CMD_DEL, {"id": 0}, NLM_F_REQUEST | NLM_F_ACK),
                        Request(TEST_FAMILY, CMD_GET, {"id": 0}),
                    ]
                )
                assert [r.error.errno if r.error else None for r in results] == [
                    None,
                    errno.ENOENT,
                    None,
                    None,
                    None,
                    errno.ENOENT,
                ]
                assert results[0].replies[0].attrs == {"name": "a", "id": 0}
                assert results[2].replies == []  # silent success
                assert results[3].replies[0].attrs == {"name": "b", "id": 1}
                assert results[4].replies == []  # just the ACK
                assert [m.attrs["name"] for m in sock.dump(TEST_FAMILY, CMD_GET)] == ["b"]
                assert sum(1 for _ in sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 5000})) == 5000
                with pytest.raises(NetlinkError) as info:
                    sock.transact(TEST_FAMILY, 99)
                assert info.value.errno == errno.EOPNOTSUPP
                assert not sock._unsolicited

            await in_thread(work)
            sock.close()


async def test_blocking_client_groups_upcalls_and_leaving_a_dump_early() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            sock = await in_thread(blocking_client, srv.path)
            sender = await in_thread(blocking_client, srv.path)

            def work() -> None:
                # leaving a dump early drains it: the next transaction is not confused
                for n, msg in enumerate(sock.dump(TEST_FAMILY, CMD_COUNT, {"count": 100_000})):
                    if n == 10:
                        break
                    assert msg.attrs["id"] == n
                (echo,) = sock.transact(TEST_FAMILY, CMD_ECHO, {"id": 42})
                assert echo.attrs == {"id": 42}
                # group events while joined, none after leaving
                sock.join(TEST_FAMILY, TEST_GROUP)
                sender.transact(TEST_FAMILY, CMD_SEND, {"count": 2})
                events = sock.recv(timeout=5)
                while len(events) < 2:
                    events += sock.recv(timeout=5)
                assert [e.attrs["id"] for e in events] == [0, 1]
                assert all(e.seq == 0 for e in events)
                sock.leave(TEST_FAMILY, TEST_GROUP)
                assert sock.properties()["mcast_groups"] == ()
                sender.transact(TEST_FAMILY, CMD_SEND, {"count": 2})
                # upcalls unicast to the PID arrive without joining anything
                sender.transact(TEST_FAMILY, CMD_SEND, {"count": 1, "pid": sock.pid})
                (upcall,) = sock.recv(timeout=5)
                assert upcall.pid == sock.pid and upcall.attrs["id"] == 0
                assert sock.recv(timeout=0.2) == []

            await in_thread(work)
            assert not srv.device.connections[sock.pid].dumping
            sock.close()
            sender.close()


async def test_requests_on_one_connection_are_answered_in_order() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            client = await srv.client()
            n = 1000

            async def send_all() -> None:
                for i in range(1, n + 1):
                    cmd = CMD_ECHO if i % 3 else CMD_GET
                    await client.send(srv.family_request(cmd, {"id": 10**6 + i}, seq=i))

            seqs: list[int] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                while len(seqs) < n:
                    for msg in await client.recv_messages():
                        seqs.append(msg.seq)
                        if msg.seq % 3:
                            assert (
                                isinstance(msg, GenlMessage) and msg.attrs["id"] == 10**6 + msg.seq
                            )
                        else:
                            assert error_code(msg) == errno.ENOENT
            assert seqs == list(range(1, n + 1))


async def test_errors_carry_errno_header_and_reason_over_the_socket() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            client = await srv.client()
            request = srv.family_request(CMD_DEL, {"id": 5}, seq=0xABCDEF)
            await client.send(request)
            record = await client.recv()
            ((hdr, data),) = split_record(record)
            assert hdr[1] == NLMSG_ERROR and hdr[3] == 0xABCDEF
            assert struct.unpack_from("=i", data, 16) == (-errno.ENOENT,)
            assert data[20:36] == request[:16]
            (err,) = decode_record(record, client.codecs)
            assert isinstance(err, ErrorMessage) and err.reason and "5" in err.reason


async def test_silent_success_and_markers_over_a_raw_socket() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            client = await srv.client()
            # markers off: a silent NEW then an ECHO: the next record is the ECHO's answer
            await client.send(srv.family_request(CMD_NEW, {"name": "quiet"}, seq=1))
            await client.send(srv.family_request(CMD_ECHO, {"id": 2}, seq=2))
            (reply,) = await client.recv_messages()
            assert isinstance(reply, GenlMessage) and reply.seq == 2
            assert await client.nothing_within(0.2)
            assert len(srv.test.objects) == 1
            # the record that turns markers on has no marker
            await client.markers_on(srv.control_id)
            assert await client.nothing_within(0.2)
            # a silent DEL: only the marker; NEW with ACK: the ACK then the marker
            await client.send(srv.family_request(CMD_DEL, {"id": 0}, seq=3))
            record = await client.recv()
            assert record == struct.pack("=IHHII", 16, 1, 0, 3, client.pid)
            await client.send(srv.family_request(CMD_NEW, {"name": "x"}, flags=ACK, seq=4))
            out = await client.until_marker(4)
            assert [error_code(m) for m in out] == [0]
            # MC_SUBSCRIBE is silent too
            group = srv.device.group_id(TEST_FAMILY, TEST_GROUP)
            await client.send(
                srv.control_request(C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}, seq=5)
            )
            assert await client.until_marker(5) == []
            # the dump's marker comes after its DONE
            await client.send(srv.family_request(CMD_COUNT, {"count": 3}, flags=DUMP, seq=6))
            out = await client.until_marker(6)
            assert [type(m) for m in out] == [GenlMessage] * 3 + [DoneMessage]


# -- dumps (section 8) ----------------------------------------------------------------------


async def test_dump_records_over_the_socket() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            client = await srv.client()
            count = 20_000
            await client.send(
                srv.family_request(
                    CMD_COUNT, {"count": count, "payload": b"z" * 40}, flags=DUMP, seq=9
                )
            )
            records = []
            while True:
                record = await client.recv()
                records.append(record)
                if split_record(record)[-1][0][1] == NLMSG_DONE:
                    break
            messages = [m for r in records for m in split_record(r)]
            *entries, (done_hdr, _done) = messages
            assert len(entries) == count
            assert all(h[2] & NLM_F_MULTI and h[3] == 9 for h, _ in entries)
            assert done_hdr[1:4] == (NLMSG_DONE, NLM_F_MULTI, 9)
            size = entries[0][0][0]
            assert max(len(r) for r in records) <= (32 << 10) + size
            assert len(records) < count / 100  # packed: many messages per record
            ids = [struct.unpack_from("=I", d, 28)[0] for _h, d in entries]
            assert ids == list(range(count))


async def test_requests_during_a_dump_are_answered_before_it_ends() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            client = await srv.client()
            await client.markers_on(srv.control_id)
            await client.send(srv.family_request(CMD_COUNT, {"count": 100_000}, flags=DUMP, seq=1))
            await client.recv()  # the dump is under way
            await client.send(
                srv.family_request(CMD_COUNT, {"count": 1}, flags=DUMP, seq=2),
                srv.family_request(CMD_ECHO, {"id": 3}, seq=3),
            )
            out = await client.until_marker(1)  # the dump's marker: everything has come
            first_answer = next(i for i, m in enumerate(out) if m.seq != 1)
            answers = [m for m in out if m.seq != 1]
            dump_messages_after = sum(1 for m in out[first_answer:] if m.seq == 1)
            assert isinstance(out[-1], DoneMessage)
            assert error_code(answers[0]) == errno.EBUSY and answers[0].seq == 2
            assert isinstance(answers[1], GenlMessage) and answers[1].attrs == {"id": 3}
            assert is_marker(answers[2], 3, client.pid)
            assert len(answers) == 3
            # the answers came before most of the dump: they did not wait for it
            assert dump_messages_after > 80_000


async def test_entries_present_for_a_whole_dump_appear_exactly_once_over_sockets() -> None:
    async with serving(device_kwargs={"dump_record_bytes": 512}) as srv:
        with trio.fail_after(60):
            writer = await in_thread(blocking_client, srv.path)

            def populate() -> None:
                for i in range(3000):
                    writer.transact(TEST_FAMILY, CMD_NEW, {"name": f"o{i}"})

            await in_thread(populate)
            reader = await srv.client()
            doomed = list(range(0, 3000, 2))
            rng = random.Random(7)
            rng.shuffle(doomed)
            stable = {f"o{i}" for i in range(1, 3000, 2)}
            await reader.send(srv.family_request(CMD_GET, flags=DUMP, seq=1))
            seen: list[str] = []
            done = False
            rounds = 0
            while not done:
                for msg in await reader.recv_messages():
                    if isinstance(msg, DoneMessage):
                        done = True
                    else:
                        assert isinstance(msg, GenlMessage)
                        seen.append(msg.attrs["name"])
                if doomed:
                    batch, doomed[:] = doomed[:20], doomed[20:]
                    requests = [Request(TEST_FAMILY, CMD_DEL, {"id": i}) for i in batch]
                    requests += [
                        Request(TEST_FAMILY, CMD_NEW, {"name": f"n{rounds}.{j}"}) for j in range(10)
                    ]
                    results = await in_thread(writer.transact_many, requests)
                    assert all(r.error is None for r in results)
                rounds += 1
            assert rounds > 20
            assert not doomed or len(doomed) < 1500  # the table changed during the dump
            counted = {name: seen.count(name) for name in stable}
            assert set(counted.values()) == {1}
            assert len(seen) == len(set(seen))
            writer.close()


async def test_a_dump_error_before_it_starts_is_an_nlmsg_error() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            client = await srv.client()
            await client.markers_on(srv.control_id)
            # COUNT without its count attribute: refused, the service and the connection go on
            await client.send(srv.family_request(CMD_COUNT, {}, flags=DUMP, seq=1))
            out = await client.until_marker(1)
            expect_error(out, errno.EINVAL)
            await client.send(srv.family_request(CMD_COUNT, {"count": 2}, flags=DUMP, seq=2))
            out = await client.until_marker(2)
            assert [type(m) for m in out] == [GenlMessage, GenlMessage, DoneMessage]


# -- robustness -----------------------------------------------------------------------------


def _malformed(srv: Served) -> list[tuple[str, bytes, int]]:
    fid = srv.test_id
    hdr4 = b"\0" * 4
    garbage = random.Random(1).randbytes(3000)
    return [
        ("truncated header", b"\x10\0\0\0\x12", errno.EINVAL),
        ("15 bytes", b"\x01" * 15, errno.EINVAL),
        ("nlmsg_len 0", struct.pack("=IHHII", 0, fid, 1, 0, 0), errno.EINVAL),
        (
            "nlmsg_len past record",
            struct.pack("=IHHII", 4000, fid, 1, 0, 0) + b"\0" * 8,
            errno.EMSGSIZE,
        ),
        ("header only", nlmsg(fid), errno.EINVAL),
        ("no family header", genl(fid, CMD_ECHO), errno.EINVAL),
        (
            "attribute past message",
            genl(fid, CMD_ECHO, struct.pack("=HH", 99, 1), fam_hdr=hdr4),
            errno.EINVAL,
        ),
        ("attribute too short", genl(fid, CMD_ECHO, nla(1, b"\1"), fam_hdr=hdr4), errno.EINVAL),
        (
            "string too long",
            genl(fid, CMD_ECHO, nla(2, string("y" * 40)), fam_hdr=hdr4),
            errno.ERANGE,
        ),
        ("unknown family", genl(0x5555, 1, fam_hdr=hdr4), errno.ENOENT),
        ("unknown command", genl(fid, 77, fam_hdr=hdr4), errno.EOPNOTSUPP),
        ("unknown nlctrl command", genl(0x10, 9), errno.EOPNOTSUPP),
        ("garbage", garbage, -1),
        ("zeros", b"\0" * 64, errno.EINVAL),
        ("ones", b"\xff" * 64, errno.EMSGSIZE),
    ]


async def test_malformed_records_get_errors_and_other_clients_notice_nothing() -> None:
    async with serving() as srv:
        with trio.fail_after(60):
            bystander = await in_thread(blocking_client, srv.path)
            bystander_pid = bystander.pid
            stop = trio.Event()
            done_count = 0

            def bystander_loop() -> int:
                n = 0
                while not stop.is_set() or n < 200:
                    (reply,) = bystander.transact(TEST_FAMILY, CMD_ECHO, {"id": n})
                    assert reply.attrs == {"id": n} and reply.pid == bystander_pid
                    n += 1
                assert not bystander._unsolicited
                return n

            async def run_bystander() -> None:
                nonlocal done_count
                done_count = await in_thread(bystander_loop)

            client = await srv.client()
            await client.markers_on(srv.control_id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_bystander)
                for name, record, code in _malformed(srv):
                    await client.sock.send(record)
                    errors = []
                    while True:
                        # each record ends with a marker (its seq is whatever the header said)
                        msgs = await client.recv_messages()
                        errors += [m for m in msgs if isinstance(m, ErrorMessage)]
                        if any(isinstance(m, NoopMessage) for m in msgs):
                            break
                    assert errors, name
                    if code != -1:
                        assert [-e.error for e in errors] == [code], (name, errors)
                    else:
                        assert all(e.error < 0 for e in errors), name
                    # still usable
                    await client.send(srv.family_request(CMD_ECHO, {"name": "ok"}, seq=424242))
                    out = await client.until_marker(424242)
                    assert len(out) == 1 and isinstance(out[0], GenlMessage), name
                stop.set()
            assert done_count >= 200
            assert srv.device.connections[bystander_pid].rxq_dropped == 0
            bystander.close()


async def test_an_empty_record_does_not_close_the_connection() -> None:
    async with serving() as srv:
        with trio.fail_after(20):
            client = await srv.client()
            await client.markers_on(srv.control_id)
            await client.sock.send(b"")
            (marker,) = await client.recv_messages()
            assert is_marker(marker, 0, client.pid)  # a record with no messages: no answer
            assert client.pid in srv.device.connections
            await client.send(srv.family_request(CMD_ECHO, {"id": 1}, seq=5))
            out = await client.until_marker(5)
            assert isinstance(out[0], GenlMessage) and out[0].seq == 5


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_SNDBUFFORCE (records over 1 MiB) needs root")
async def test_record_size_limit_is_1_mib() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            client = await srv.client()
            client.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            await client.markers_on(srv.control_id)
            # exactly 1 MiB: fifteen big ECHOs and filler that is not a request (ignored)
            echoes = [
                srv.family_request(CMD_ECHO, {"id": i, "payload": bytes([i]) * 65000}, seq=100 + i)
                for i in range(15)
            ]
            body = b"".join(echoes)
            filler = nlmsg(1, b"\0" * ((1 << 20) - len(body) - 16), flags=0, seq=200)
            record = body + filler
            assert len(record) == 1 << 20
            await client.sock.send(record)
            out = await client.until_marker(200)
            assert [(m.seq, len(m.attrs["payload"])) for m in out] == [  # type: ignore[union-attr]
                (100 + i, 65000) for i in range(15)
            ]
            # 4 bytes more, and a 2 MiB record: EMSGSIZE with the header echoed, then the
            # record's marker (markers follow the answers to every request record)
            for size in ((1 << 20) + 4, 2 << 20):
                big = struct.pack("=IHHII", size, srv.test_id, 1, 300, 0).ljust(size, b"\0")
                await client.sock.send(big)
                out = await client.until_marker(300)
                err = expect_error(out, errno.EMSGSIZE)
                assert err.request == (size, srv.test_id, 1, 300, 0) and err.reason
            await client.send(srv.family_request(CMD_ECHO, {"id": 1}, seq=301))
            out = [m for m in await client.until_marker(301) if not isinstance(m, NoopMessage)]
            assert len(out) == 1 and isinstance(out[0], GenlMessage)


async def test_a_client_that_never_reads_is_no_longer_read_after_4096_answers() -> None:
    async with serving() as srv:
        with trio.fail_after(60):
            client = await srv.client()  # markers off: one answer per request
            await wait_until(lambda: len(srv.device.connections) == 1)
            (conn,) = srv.device.connections.values()
            sent = 0
            stalled = False
            while sent < 20_000:
                with trio.move_on_after(1.0) as scope:
                    await client.send(srv.family_request(CMD_ECHO, {"id": sent}, seq=sent))
                if scope.cancelled_caught:
                    stalled = True
                    break
                sent += 1
            assert stalled, "the service kept reading a client that never reads"
            assert 4096 <= sent < 4096 + 5000
            assert 4096 <= conn.queued_replies <= 4096 + 1
            # the client catches up: every answer, in order, and the service reads again
            seqs: list[int] = []
            while len(seqs) < sent:
                for msg in await client.recv_messages():
                    assert isinstance(msg, GenlMessage) and msg.attrs == {"id": msg.seq}
                    seqs.append(msg.seq)
            assert seqs == list(range(sent))
            await client.send(srv.family_request(CMD_ECHO, {"id": 1}, seq=99_999))
            (reply,) = await client.recv_messages()
            assert reply.seq == 99_999


# -- unsolicited messages (section 9) -------------------------------------------------------


@pytest.mark.parametrize("bursts", [1, 2])
async def test_queue_overflow_over_the_socket(bursts: int) -> None:
    async with serving() as srv:
        with trio.fail_after(60):
            group = srv.device.group_id(TEST_FAMILY, TEST_GROUP)
            slow, fast = await srv.client(), await srv.client()
            for client in (slow, fast):
                await client.markers_on(srv.control_id)
                await client.send(
                    srv.control_request(
                        C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}, seq=1
                    )
                )
                assert await client.until_marker(1) == []
            await slow.send(srv.control_request(C_SOCK_PROP, {"rxq_limit": 4096}, seq=2))
            await slow.until_marker(2)
            sender = await in_thread(blocking_client, srv.path)
            total = 3000
            fast_seen: list[int] = []

            async def read_fast() -> None:
                while len(fast_seen) < bursts * total:
                    for msg in await fast.recv_messages():
                        assert isinstance(msg, GenlMessage), msg
                        fast_seen.append(msg.attrs["id"])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                # bursts while the slow member does not read
                for _ in range(bursts):
                    await in_thread(
                        sender.transact,
                        TEST_FAMILY,
                        CMD_SEND,
                        {"count": total, "payload": b"e" * 100},
                    )
            assert fast_seen == list(range(total)) * bursts  # the fast member lost nothing
            conn = srv.device.connections[slow.pid]
            assert conn.rxq_dropped > 0 and conn.rxq_bytes <= 4096
            # replies still get through and are not counted against the limit
            await slow.send(srv.family_request(CMD_ECHO, {"payload": b"r" * 10000}, seq=3))
            received = overruns = 0
            props = None
            with trio.fail_after(30):
                while props is None:
                    for msg in await slow.recv_messages():
                        if isinstance(msg, ErrorMessage):
                            assert msg.error == -errno.ENOBUFS and msg.seq == 0
                            assert msg.request == (16, 0, 0, 0, slow.pid)
                            overruns += 1
                        elif isinstance(msg, GenlMessage) and msg.type == srv.control_id:
                            assert msg.cmd == C_SOCK_PROP and msg.seq == 4
                            props = msg.attrs
                        elif isinstance(msg, GenlMessage) and msg.cmd == CMD_SEND:
                            assert msg.seq == 0
                            received += 1
                        elif isinstance(msg, GenlMessage) and msg.cmd == CMD_ECHO:
                            assert msg.seq == 3
                            await slow.send(srv.control_request(C_SOCK_PROP, seq=4))
                        else:  # markers
                            assert isinstance(msg, NoopMessage) and msg.seq in (3, 4), msg
            assert props["rxq_dropped"] == bursts * total - received
            assert overruns == 1  # one ENOBUFS: the client did not read in between
            assert props["rxq_bytes"] == 0
            sender.close()


async def test_netlink_socket_recv_reports_the_overrun() -> None:
    async with serving() as srv:
        with trio.fail_after(30):
            listener = await in_thread(blocking_client, srv.path)
            sender = await in_thread(blocking_client, srv.path)
            await in_thread(listener.join, TEST_FAMILY, TEST_GROUP)
            await in_thread(lambda: listener.properties(rxq_limit=4096))
            await in_thread(
                sender.transact, TEST_FAMILY, CMD_SEND, {"count": 2000, "payload": b"p" * 200}
            )

            def drain() -> tuple[int, int]:
                got = 0
                while True:
                    try:
                        messages = listener.recv(timeout=2)
                    except NetlinkError as exc:
                        assert exc.errno == errno.ENOBUFS
                        return got, listener.properties()["rxq_dropped"]
                    assert messages, "no ENOBUFS came"
                    got += len(messages)

            got, dropped = await in_thread(drain)
            assert got > 0 and got + dropped == 2000
            # after the overrun, the socket works and later events arrive
            await in_thread(sender.transact, TEST_FAMILY, CMD_SEND, {"count": 3})
            later = await in_thread(lambda: listener.recv(timeout=5))
            assert [m.attrs["id"] for m in later][:1] == [0]
            listener.close()
            sender.close()


# -- disconnecting (section 10) -------------------------------------------------------------


async def test_disconnects_leave_nothing_behind() -> None:
    async with serving() as srv:
        with trio.fail_after(60):
            group = srv.device.group_id(TEST_FAMILY, TEST_GROUP)
            sender = await in_thread(blocking_client, srv.path)
            # mid-dump
            dumper = await srv.client()
            await dumper.markers_on(srv.control_id)
            await dumper.send(srv.family_request(CMD_COUNT, {"count": 1_000_000}, flags=DUMP))
            await dumper.recv()
            # mid-transaction: many requests sent, nothing read
            talker = await srv.client()
            await talker.markers_on(srv.control_id)
            for i in range(1500):
                await talker.send(srv.family_request(CMD_ECHO, {"payload": b"q" * 500}, seq=i))
            # queued unsolicited messages and group memberships, with a claimed PID
            member = await srv.client()
            await member.markers_on(srv.control_id)
            await member.send(
                srv.control_request(C_MC_SUBSCRIBE, {"mcast_grp": group, "mcast_join": 1}, seq=1),
                srv.control_request(C_MC_SUBSCRIBE, {"mcast_grp": 0x10, "mcast_join": 1}, seq=2),
                srv.control_request(C_SET_PID, {"sock_pid": 777}, seq=3),
            )
            await member.until_marker(3)
            member.pid = 777
            await in_thread(
                sender.transact, TEST_FAMILY, CMD_SEND, {"count": 5000, "payload": b"m" * 100}
            )
            conns = {c.pid: srv.device.connections[c.pid] for c in (dumper, talker, member)}
            await wait_until(lambda: conns[talker.pid].queued_replies > 100)
            assert conns[dumper.pid].dumping
            assert conns[member.pid].rxq_bytes > 0
            assert conns[member.pid] in srv.device.groups[group]
            for client in (dumper, talker, member):
                client.close()
            await wait_until(lambda: set(srv.device.connections) == {sender.pid})
            for conn in conns.values():
                assert conn.closed and not conn.dumping and not conn.groups
                assert conn.queued_replies == 0 and conn.rxq_bytes == 0
                assert conn.pop_output() is None
            assert all(not members for members in srv.device.groups.values())
            assert len(srv.service.connections) == 1
            # later events to the group and to PID 777 go nowhere; the sender is fine
            await in_thread(sender.transact, TEST_FAMILY, CMD_SEND, {"count": 10})
            await in_thread(sender.transact, TEST_FAMILY, CMD_SEND, {"count": 10, "pid": 777})
            assert srv.device.unicast(777, b"\0" * 16) is False
            (echo,) = await in_thread(sender.transact, TEST_FAMILY, CMD_ECHO, {"id": 1})
            assert echo.attrs == {"id": 1}
            sender.close()


async def test_service_refuses_a_live_socket_and_replaces_a_stale_one() -> None:
    async with serving() as srv:
        with pytest.raises(ServiceError, match="another service is listening"):
            PseudoDevice(make_device()[0], srv.path).open()
        client = await srv.client()  # the running service is untouched
        await client.send(srv.control_request(C_GET_PID, seq=1))
        assert isinstance((await client.recv_messages())[0], GenlMessage)
    path = socket_path()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)
    stale.close()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    service = PseudoDevice(make_device()[0], path)
    service.open()
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        probe.connect(path)
        probe.close()
    finally:
        service.close()
    assert not os.path.exists(path)


async def test_cancelling_the_service_closes_connections_and_removes_the_socket() -> None:
    device, _test = make_device()
    path = socket_path()
    service = PseudoDevice(device, path)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            clients = [await AsyncClient.connect(path, {}) for _ in range(3)]
            blocking = await in_thread(blocking_client, path)
            await wait_until(lambda: len(device.connections) == 4)
            nursery.cancel_scope.cancel()
        assert not os.path.exists(path)
        assert not device.connections
        for client in clients:
            assert await client.sock.recv(100) == b""  # EOF
        with pytest.raises(ServiceGone):
            await in_thread(blocking.transact, TEST_FAMILY, CMD_ECHO, {"id": 1})
        blocking.close()
        with pytest.raises(ServiceGone):
            NetlinkSocket(path)
