"""NIC benchmark: ovsdp forwarding between two AF_PACKET ports vs a raw drain-style forwarder.

Topology (root needed): namespace ``gen`` sends prebuilt 64-byte TCP frames of 1,024 connections
as fast as one Python process can, out of a veth whose root end is ``in``; the frames leave
through ``out``, a veth whose peer sits in namespace ``sink`` (which drops them).  Between ``in``
and ``out`` one of these forwards, in turns (interleaved rounds, as bench/harness.py does):

* **ovsdp**: the service's switch and datapath with two ``afpacket`` ports on ``in`` and ``out``
  (ovsdp.nic, the receive tasks under trio) and one megaflow (in_port, eth_type) -> output;
* **raw**: a drain-style trio loop on two plain AF_PACKET sockets on the same interfaces: wait
  until ``in`` is readable, ``recv`` until EAGAIN or 64 frames, ``send`` each one on ``out``;
* **raw-nic**: the same loop on the two sockets ovsdp's backends open (receive ring, auxdata
  fix-ups): ovsdp's I/O without the switch and the datapath;
* **raw+aux** (with ``--aux``): the same with ``recvmsg`` and PACKET_AUXDATA, the receive call
  the backend has to make to see stripped VLAN tags and partial checksums.

Forwarded frames are counted by the kernel (``out``'s tx_packets), so counting costs nothing.
Reported per case: forwarded packets/s and the forwarder's CPU time per frame (this process:
user + system, which includes the kernel's work in its syscalls); the ratios ovsdp / raw of
both, median over rounds.  The sender's offered rate is printed too: a forwarder that keeps up
with it is not saturated and its pps says little (its CPU per frame still does).

Run: sudo .venv/bin/python -m bench.nic [--rounds N] [--seconds S] [--aux]
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ovsdp.daemon import ServiceConfig, build_service
from ovsdp.flowtable.actions import compile_actions
from ovsdp.flowtable.flow_key import exact_mask, extract_key, port_prefix
from ovsdp.flowtable.table import Flow
from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.constants import VportType
from ovsdp.nic import AfPacketBackend, open_nics, run_nics
from ovsdp.nic.afpacket import ANC_SIZE, ETH_P_ALL, PACKET_AUXDATA, SOL_PACKET
from ovsdp.vswitch.config import parse_config

from .packet_path import tcp_frame

BATCH = 64

SENDER = r"""
import socket, sys
frames = [bytes.fromhex(h) for h in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 0))
send = s.send
print("ready", flush=True)
while True:
    for f in frames:
        try:
            send(f)
        except OSError:
            pass
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def tx_packets(ifname: str) -> int:
    with open(f"/sys/class/net/{ifname}/statistics/tx_packets", encoding="ascii") as f:
        return int(f.read())


class Topology:
    """gen --veth--> [in  forwarder  out] --veth--> sink; removed on close."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.gen, self.sink = f"bgen{tag}", f"bsink{tag}"
        self.inp, self.out = f"bin{tag}", f"bout{tag}"
        self.sender: subprocess.Popen[str] | None = None
        sh("ip", "netns", "add", self.gen)
        sh("ip", "netns", "add", self.sink)
        sh("ip", "link", "add", self.inp, "type", "veth", "peer", "name", "g0", "netns", self.gen)
        sh("ip", "link", "add", self.out, "type", "veth", "peer", "name", "s0", "netns", self.sink)
        for ns, dev in ((self.gen, "g0"), (self.sink, "s0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for dev in (self.inp, self.out):
            sh("ip", "link", "set", dev, "up")

    def start_sender(self, frames: list[bytes]) -> None:
        cmd = ["ip", "netns", "exec", self.gen, sys.executable, "-c", SENDER, "g0"]
        self.sender = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.sender.stdin is not None and self.sender.stdout is not None
        self.sender.stdin.write(" ".join(f.hex() for f in frames))
        self.sender.stdin.close()
        assert self.sender.stdout.readline().strip() == "ready"

    def close(self) -> None:
        if self.sender is not None:
            self.sender.kill()
            self.sender.wait()
        for dev in (self.inp, self.out):
            subprocess.run(["ip", "link", "del", dev], check=False, capture_output=True)
        for ns in (self.gen, self.sink):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def raw_socket(ifname: str, aux: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    if aux:
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.setsockopt(SOL_PACKET, 23, 1)  # PACKET_IGNORE_OUTGOING, as the backend
    sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE, as the backend
    sock.bind((ifname, ETH_P_ALL))
    sock.setblocking(False)
    return sock


async def raw_forwarder(inp: str, out: str, aux: bool, *, task_status: Any) -> None:
    """The baseline: drain ``inp``, copy every frame to ``out``; nothing else."""
    rx, tx = raw_socket(inp, aux), raw_socket(out)
    send = tx.send
    try:
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(rx)
            while True:
                n = 0
                if aux:
                    recvmsg = rx.recvmsg
                    for n in range(1, BATCH + 1):  # noqa: B007
                        try:
                            data = recvmsg(65536, ANC_SIZE)[0]
                        except BlockingIOError:
                            break
                        try:
                            send(data)
                        except OSError:
                            pass
                else:
                    recv = rx.recv
                    for n in range(1, BATCH + 1):  # noqa: B007
                        try:
                            data = recv(65536)
                        except BlockingIOError:
                            break
                        try:
                            send(data)
                        except OSError:
                            pass
                if n < BATCH:
                    break
                await trio.lowlevel.checkpoint()
    finally:
        rx.close()
        tx.close()


async def backend_forwarder(inp: str, out: str, *, task_status: Any) -> None:
    """The same two sockets ovsdp's afpacket ports open (receive ring, PACKET_AUXDATA fix-ups),
    frames copied from one to the other in a drain loop: ovsdp's I/O without the datapath."""
    rx, tx = AfPacketBackend(inp), AfPacketBackend(out)
    rx.open()
    tx.open()
    read_batch, transmit = rx.read_batch, tx.transmit
    try:
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(rx.fileno())
            while True:
                frames = read_batch(BATCH)
                if frames:
                    transmit(frames)
                if len(frames) < BATCH:
                    break
                await trio.lowlevel.checkpoint()
    finally:
        rx.close()
        tx.close()


class Ovsdp:
    """The service's switch with afpacket ports vm1 (in) and vm2 (out) and one megaflow."""

    def __init__(self, inp: str, out: str) -> None:
        text = (
            f'[[port]]\nname = "vm1"\nbackend = "afpacket"\ndevice = "{inp}"\n'
            f'[[port]]\nname = "vm2"\nbackend = "afpacket"\ndevice = "{out}"\n'
        )
        self.wanted = [("vm1", "afpacket", inp), ("vm2", "afpacket", out)]
        service = build_service(ServiceConfig("/nonexistent", switch=parse_config(text)))
        self.switch = service.switch
        ext = service.extension
        self.dp = ext.create_datapath("bench", 0)
        ext.add_vport(self.dp, "vm1", VportType.NETDEV, (0,))
        ext.add_vport(self.dp, "vm2", VportType.NETDEV, (0,))
        actions = [("output", 2)]
        key = extract_key(tcp_frame(1, 2, 3, 4), port_prefix(1))
        table = self.dp.flows
        mask = table.mask(exact_mask("in_port", "mac_proto", "eth_type"))
        table.insert(
            Flow(key, mask, CODECS["ovs_action"].encode(actions), compile_actions(actions))
        )

    async def run(self, *, task_status: Any) -> None:
        nics = open_nics(self.switch, self.wanted)
        await run_nics(self.switch, nics, task_status=task_status)


async def measure_case(
    topo: Topology, start: Callable[..., Awaitable[None]], seconds: float
) -> tuple[float, float, float]:
    """Run one forwarder for ``seconds`` (after a short warm-up): (forwarded pps, offered pps,
    CPU µs per forwarded frame)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(start)
        await trio.sleep(0.2)
        t0, c0, f0 = time.perf_counter(), time.process_time(), tx_packets(topo.out)
        g0 = _gen_tx(topo)
        await trio.sleep(seconds)
        t1, c1, f1 = time.perf_counter(), time.process_time(), tx_packets(topo.out)
        g1 = _gen_tx(topo)
        nursery.cancel_scope.cancel()
    frames = max(1, f1 - f0)
    return frames / (t1 - t0), (g1 - g0) / (t1 - t0), (c1 - c0) * 1e6 / frames


def _gen_tx(topo: Topology) -> int:
    # what the generator sent = what arrived at "in" (rx_packets of the root end)
    with open(f"/sys/class/net/{topo.inp}/statistics/rx_packets", encoding="ascii") as f:
        return int(f.read())


async def main_async(rounds: int, seconds: float, aux: bool) -> None:
    topo = Topology()
    try:
        frames = [tcp_frame(0x0A000001, 0x0A000002, 1024 + i, 80) for i in range(1024)]
        topo.start_sender(frames)
        ovsdp = Ovsdp(topo.inp, topo.out)

        async def raw(*, task_status: Any) -> None:
            await raw_forwarder(topo.inp, topo.out, False, task_status=task_status)

        async def raw_aux(*, task_status: Any) -> None:
            await raw_forwarder(topo.inp, topo.out, True, task_status=task_status)

        async def same_sockets(*, task_status: Any) -> None:
            await backend_forwarder(topo.inp, topo.out, task_status=task_status)

        cases: dict[str, Callable[..., Awaitable[None]]] = {
            "ovsdp": ovsdp.run,
            "raw": raw,
            "raw-nic": same_sockets,
        }
        if aux:
            cases["raw+aux"] = raw_aux
        history: list[dict[str, tuple[float, float, float]]] = []
        for r in range(rounds):
            this = {name: await measure_case(topo, fn, seconds) for name, fn in cases.items()}
            history.append(this)
            line = "  ".join(
                f"{n} {pps:,.0f} pps ({cpu:.2f} µs/frame)" for n, (pps, _o, cpu) in this.items()
            )
            print(f"round {r + 1}: {line}", flush=True)
        print(f"\nforwarded 64-byte frames, one megaflow, {rounds} rounds of {seconds:g} s:")
        for name in cases:
            pps = statistics.median(h[name][0] for h in history)
            offered = statistics.median(h[name][1] for h in history)
            cpu = statistics.median(h[name][2] for h in history)
            print(
                f"  {name:<8} {pps:>10,.0f} pps   {cpu:6.2f} µs CPU/frame   "
                f"(offered {offered:,.0f} pps)"
            )
        pairs = [("ovsdp", "raw"), ("ovsdp", "raw-nic"), ("raw-nic", "raw")]
        if aux:
            pairs.append(("raw+aux", "raw"))
        for case, base in pairs:
            pps_ratio = statistics.median(h[case][0] / h[base][0] for h in history)
            cpu_ratio = statistics.median(h[base][2] / h[case][2] for h in history)
            print(
                f"  {case} / {base}: {pps_ratio:.2f}x the packets/s, "
                f"{cpu_ratio:.2f}x the frames per CPU second"
            )
        counters = ovsdp.switch.port("vm1")
        print(f"  (ovsdp vm1: {counters.rx_frames:,} frames in, {counters.rx_dropped} dropped)")
        assert ovsdp.switch.outstanding == 0
    finally:
        topo.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--aux", action="store_true", help="also the raw loop with recvmsg")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.nic: needs root (namespaces, veth, AF_PACKET)", file=sys.stderr)
        return 1
    trio.run(main_async, args.rounds, args.seconds, args.aux)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
