"""Pseudo-device benchmark: transactions and a one-way flood, against raw trio baselines.

One server process runs, in one trio loop, side by side:

* the pseudo-device (``Device`` + ``PseudoDevice``) with a small bench family;
* a raw drain-style trio echo server on the same kind of socket (AF_UNIX SOCK_SEQPACKET): wait
  until readable, receive until EAGAIN, send every record straight back;
* a raw drain-style trio sender: on request, sends N prebuilt records, waiting for room only when
  the socket is full.

A blocking client (this process) alternates rounds between them:

* no-op transactions: send one request record, wait for its reply; round trips per second;
* flood: ask for N unsolicited messages of the same size and read them; messages per second.
  In the service they go the way upcalls go: ``Device.unicast_batch`` into the connection's
  bounded queue, 256 at a time (an ingress batch's upcalls), from a producer task that lets the
  writer run after each batch.

Every round runs in two placements, set with sched_setaffinity: both processes on one CPU, and
each on its own CPU (when there are two).  They give very different pictures of a transaction:
on one CPU a round trip is two context switches; on two CPUs each side idles while the other
works, and on a virtual machine waking an idle vCPU (an interrupt across vCPUs, a VM exit) costs
more than the request itself and makes the server's code run colder (docs/PERFORMANCE.md).

Targets (issue 3): transactions >= 0.8x the raw echo server; flood >= 0.8x the raw sender.

Run: .venv/bin/python -m bench.pseudodev [--rounds N] [--transactions N] [--flood N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

FLOOD_SIZE = 128  # bytes per unsolicited message, about an upcall's key and a small packet
BENCH_FAMILY = "ovsdp_bench"
CMD_NOOP = 1
CMD_FLOOD = 2


def _declare_space() -> None:
    from construct import GreedyBytes, Int32ul

    from ovsdp.netlink.codec import compile_new_spaces
    from ovsdp.netlink.nla import SPACES, AttributeSpace

    if "ovsdp_bench" not in SPACES:
        AttributeSpace("ovsdp_bench", {1: "count" / Int32ul, 2: "payload" / GreedyBytes})
        compile_new_spaces()


# --- server side ------------------------------------------------------------------------------


def _server(directory: str) -> None:
    import trio

    from ovsdp.netlink.message import GenlMessage, encode_genl
    from ovsdp.pseudodev.device import Device, Request
    from ovsdp.pseudodev.registry import Command, Family
    from ovsdp.pseudodev.server import PseudoDevice

    _declare_space()
    floods: list[tuple[int, int]] = []
    wake = trio.lowlevel.ParkingLot()

    def noop(request: Request) -> list[GenlMessage]:
        return [request.reply(CMD_NOOP, {})]

    def flood(request: Request) -> list[GenlMessage]:
        floods.append((request.pid, request.attrs["count"]))
        wake.unpark_all()
        return []

    device = Device(rxq_limit=64 << 20)
    family = device.register(
        Family(
            BENCH_FAMILY,
            1,
            0,
            "ovsdp_bench",
            {
                CMD_NOOP: Command(CMD_NOOP, "NOOP", do=noop),
                CMD_FLOOD: Command(CMD_FLOOD, "FLOOD", do=flood),
            },
        )
    )
    payload = b"x" * (FLOOD_SIZE - 24)  # nlmsghdr 16, genl 4, attribute header 4
    unsolicited = encode_genl(
        GenlMessage(family.id, 0, 0, 0, CMD_FLOOD, 1, None, {"payload": payload}), family.genl
    )
    assert len(unsolicited) == FLOOD_SIZE

    async def producer() -> None:
        # The datapath's role: queue unsolicited messages for a PID, a batch at a time.
        while True:
            while not floods:
                await wake.park()
            pid, count = floods.pop(0)
            batch = [unsolicited] * 256
            for start in range(0, count, 256):
                device.unicast_batch(pid, batch[: min(256, count - start)])
                await trio.sleep(0)

    async def raw_echo(sock: socket.socket) -> None:
        recv, send = sock.recv, sock.send
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                while True:
                    try:
                        data = recv(65536)
                    except BlockingIOError:
                        break
                    if not data:
                        return
                    while True:
                        try:
                            send(data)
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(sock)
        finally:
            sock.close()

    async def raw_flood(sock: socket.socket) -> None:
        record = b"x" * FLOOD_SIZE
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                data = sock.recv(64)
                if not data:
                    return
                (count,) = struct.unpack("I", data[:4])
                send = sock.send
                sent = 0
                while sent < count:
                    try:
                        send(record)
                        sent += 1
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
        finally:
            sock.close()

    async def raw_listener(path: str, handler: Any) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(16)
        listener.setblocking(False)
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(listener)
                sock, _ = listener.accept()
                sock.setblocking(False)
                nursery.start_soon(handler, sock)

    async def main() -> None:
        service = PseudoDevice(device, os.path.join(directory, "ovsdp.sock"))
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            nursery.start_soon(producer)
            nursery.start_soon(raw_listener, os.path.join(directory, "echo.sock"), raw_echo)
            nursery.start_soon(raw_listener, os.path.join(directory, "flood.sock"), raw_flood)
            print("ready", flush=True)

    trio.run(main)


# --- client side ------------------------------------------------------------------------------


def _connect(path: str) -> socket.socket:
    for _ in range(200):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            time.sleep(0.02)
    raise SystemExit(f"cannot connect to {path}")


def _round_trips(sock: socket.socket, record: bytes, n: int) -> float:
    send, recv = sock.send, sock.recv
    start = time.perf_counter()
    for _ in range(n):
        send(record)
        recv(65536)
    return n / (time.perf_counter() - start)


def _read_flood(sock: socket.socket, request: bytes, n: int) -> float:
    recv = sock.recv
    sock.send(request)
    recv(65536)  # first message: the clock starts when the flow is established
    start = time.perf_counter()
    for _ in range(n - 1):
        recv(65536)
    return (n - 1) / (time.perf_counter() - start)


def _resolve(sock: socket.socket, name: str) -> int:
    from ovsdp.netlink.constants import NLM_F_REQUEST, CtrlCmd
    from ovsdp.netlink.families import NLCTRL
    from ovsdp.netlink.message import GenlMessage, decode_record, encode_genl

    msg = GenlMessage(0x10, NLM_F_REQUEST, 1, 0, CtrlCmd.GETFAMILY, 2, None, {"family_name": name})
    sock.send(encode_genl(msg, NLCTRL))
    reply = decode_record(sock.recv(65536), {0x10: NLCTRL})[0]
    family_id: int = reply.attrs["family_id"]  # type: ignore[union-attr]
    return family_id


def _placements() -> dict[str, tuple[set[int], set[int]]]:
    """CPU sets (server, client) to measure on: both processes on one CPU, and each on its own
    CPU when there are two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    placements = {"one CPU": ({cpus[0]}, {cpus[0]})}
    if len(cpus) > 1:
        placements["two CPUs"] = ({cpus[1]}, {cpus[0]})
    return placements


def main() -> int:
    """Start the server process, measure, print; exit status 0 when targets are met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=20000)
    parser.add_argument("--flood", type=int, default=200000)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server:
        _server(args.server)
        return 0

    from ovsdp.netlink.constants import NLM_F_REQUEST
    from ovsdp.netlink.message import GenlFamily, GenlMessage, encode_genl

    placements = _placements()
    everywhere = os.sched_getaffinity(0)
    directory = tempfile.mkdtemp(prefix="ovsdp-bench-")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.pseudodev", "--server", directory],
        stdout=subprocess.PIPE,
        text=True,
    )
    rates: dict[str, dict[str, list[float]]] = {
        where: {"txn": [], "echo": [], "flood": [], "raw_flood": []} for where in placements
    }
    try:
        assert server.stdout is not None
        server.stdout.readline()
        ovsdp = _connect(os.path.join(directory, "ovsdp.sock"))
        echo = _connect(os.path.join(directory, "echo.sock"))
        ovsdp_flood = _connect(os.path.join(directory, "ovsdp.sock"))
        raw_flood = _connect(os.path.join(directory, "flood.sock"))
        family_id = _resolve(ovsdp, BENCH_FAMILY)
        _resolve(ovsdp_flood, BENCH_FAMILY)
        codec = GenlFamily(BENCH_FAMILY, 1, 0, "ovsdp_bench")
        _declare_space()
        noop = encode_genl(
            GenlMessage(family_id, NLM_F_REQUEST, 7, 0, CMD_NOOP, 1, None, {}), codec
        )
        flood_request = encode_genl(
            GenlMessage(family_id, NLM_F_REQUEST, 8, 0, CMD_FLOOD, 1, None, {"count": args.flood}),
            codec,
        )
        raw_flood_request = struct.pack("I", args.flood)

        _round_trips(ovsdp, noop, 2000)  # warm up both paths
        _round_trips(echo, noop, 2000)
        for _ in range(args.rounds):
            for where, (server_cpus, client_cpus) in placements.items():
                os.sched_setaffinity(server.pid, server_cpus)
                os.sched_setaffinity(0, client_cpus)
                time.sleep(0.05)  # let both settle where they now belong
                got = rates[where]
                got["txn"].append(_round_trips(ovsdp, noop, args.transactions))
                got["echo"].append(_round_trips(echo, noop, args.transactions))
                got["flood"].append(_read_flood(ovsdp_flood, flood_request, args.flood))
                got["raw_flood"].append(_read_flood(raw_flood, raw_flood_request, args.flood))
    finally:
        os.sched_setaffinity(0, everywhere)
        server.terminate()
        server.wait()

    print(
        f"{args.rounds} interleaved rounds; client: a blocking process; "
        f"{FLOOD_SIZE}-byte records on AF_UNIX SOCK_SEQPACKET"
    )
    ok = True
    for where, got in rates.items():

        def med(name: str, got: dict[str, list[float]] = got) -> float:
            return statistics.median(got[name])

        def ratio(a: str, b: str, got: dict[str, list[float]] = got) -> float:
            return statistics.median(x / y for x, y in zip(got[a], got[b], strict=True))

        server_cpus, client_cpus = placements[where]
        print(f"on {where} (server on CPU {min(server_cpus)}, client on CPU {min(client_cpus)}):")
        print(f"  no-op transactions, pseudo-device : {med('txn'):>10,.0f} round trips/s")
        print(f"  raw drain-style trio echo server  : {med('echo'):>10,.0f} round trips/s")
        print(f"  flood, pseudo-device (unicast)    : {med('flood'):>10,.0f} messages/s")
        print(f"  raw drain-style trio sender       : {med('raw_flood'):>10,.0f} messages/s")
        t, f = ratio("txn", "echo"), ratio("flood", "raw_flood")
        ok = ok and t >= 0.8 and f >= 0.8
        print(
            f"  transactions / echo = {t:.2f}x  target >= 0.8: {'met' if t >= 0.8 else 'NOT MET'}"
        )
        print(
            f"  flood / raw sender  = {f:.2f}x  target >= 0.8: {'met' if f >= 0.8 else 'NOT MET'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
