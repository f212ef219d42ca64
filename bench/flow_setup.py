"""Flow setup benchmark: miss -> upcall -> ovsdp-handler -> put -> the next packet hits.

The service runs in this process (one trio loop, as ``ovsdp serve`` runs it), ovsdp-handler in
its own process (as a user runs it). Frames with N distinct source/destination MAC pairs are
injected on vm1 in batches of 64, the way a NIC backend hands the switch its frames; each is a
miss the handler turns into a new megaflow (learning the source, flooding the unknown
destination) plus an execute of the packet. The clock stops when the datapath holds all N
flows; then the same frames are injected again and must all hit (no new miss).

Target (issue 6): >= 10,000 new flows per second.

Run: .venv/bin/python -m bench.flow_setup [--flows N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TypeVar

import trio

from ovsdp.daemon import ServiceConfig, build_service, tune_gc
from ovsdp.pseudodev.server import PseudoDevice

BATCH = 64
T = TypeVar("T")
_ETH_IP_UDP = struct.Struct("!6s6sH BBHHHBBH4s4s HHHH")


def frame(n: int, round_no: int) -> bytes:
    """A UDP frame from a distinct source MAC to a distinct destination MAC."""
    src = (0x02_00_00_00_00_00 | (round_no << 24) | n).to_bytes(6, "big")
    dst = (0x06_00_00_00_00_00 | (round_no << 24) | n).to_bytes(6, "big")
    head = _ETH_IP_UDP.pack(
        dst,
        src,
        0x0800,
        0x45,
        0,
        28,
        1,
        0,
        64,
        17,
        0,
        b"\x0a\x00\x00\x01",
        b"\x0a\x00\x00\x02",
        1000,
        2000,
        8,
        0,
    )
    return head + bytes(60 - len(head))


def handler_config(path: str, flows: int) -> str:
    """ovsdp-handler's config: the embedded switch's ports, a MAC table the run fits in."""
    text = f"""
[datapath]
name = "ovs-system"
[flows]
idle_timeout = 60.0
[mac]
table_size = {4 * flows + 1024}
[[port]]
name = "vm1"
type = "netdev"
[[port]]
name = "vm2"
type = "netdev"
[[port]]
name = "vm3"
type = "netdev"
[[port]]
name = "ext"
type = "netdev"
"""
    with open(path, "w") as f:
        f.write(text)
    return path


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(flows: int, rounds: int) -> tuple[list[float], list[tuple[float, float]]]:
    directory = tempfile.mkdtemp(prefix="ovsdp-bench-")
    path = os.path.join(directory, "ovsdp.sock")
    service = build_service(ServiceConfig(path))
    switch = service.switch
    rates = []
    cpu: list[tuple[float, float]] = []  # per round: (service, handler) CPU us per flow
    async with trio.open_nursery() as nursery:
        await nursery.start(PseudoDevice(service.device, path).run)
        handler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "userspace.handler.cli",
                "--socket",
                path,
                "--config",
                handler_config(os.path.join(directory, "handler.toml"), flows),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            found = await wait_for(lambda: service.extension.datapaths.get("ovs-system"))
            assert found is not None
            dp = found
            await wait_for(
                lambda: (
                    len(dp.vports) >= 5
                    and all(v.upcall_pids != (0,) or dp.per_cpu_pids for v in dp.vports)
                )
            )
            vm1 = switch.port("vm1")
            for round_no in range(rounds):
                frames = [frame(i, round_no + 1) for i in range(flows)]
                start_flows = dp.n_flows
                start = time.perf_counter()
                cpu_start = (time.process_time(), process_cpu(handler.pid))
                for i in range(0, flows, BATCH):
                    switch.receive(vm1, frames[i : i + BATCH])
                    await trio.sleep(0)  # the upcalls go out, the handler's puts come in
                target = start_flows + flows

                def reached(target: int = target) -> bool:
                    return dp.n_flows >= target

                await wait_for(reached, timeout=120)
                elapsed = time.perf_counter() - start
                rates.append(flows / elapsed)
                service_s = time.process_time() - cpu_start[0]
                handler_s = process_cpu(handler.pid) - cpu_start[1]
                cpu.append((service_s / flows * 1e6, handler_s / flows * 1e6))
                missed = dp.stats.n_missed
                for i in range(0, flows, BATCH):
                    switch.receive(vm1, frames[i : i + BATCH])
                await trio.sleep(0.2)
                assert dp.stats.n_missed == missed, "second pass missed: flows were not hit"
                for port in switch.ports.values():
                    port.nic.backend.frames.clear()  # type: ignore[union-attr]
        finally:
            handler.send_signal(signal.SIGTERM)
            await trio.to_thread.run_sync(handler.wait)
            nursery.cancel_scope.cancel()
    return rates, cpu


async def wait_for(condition: Callable[[], T], timeout: float = 30.0) -> T:
    """Poll ``condition()`` until it is truthy, yielding to the service; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        await trio.sleep(0.001)


def main() -> int:
    """Measure and print; exit status 0 when the target is met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as ovsdp serve does
    rates, cpu = trio.run(run, args.flows, args.rounds)
    median = statistics.median(rates)
    ok = median >= 10_000
    print(
        f"flow setup, {args.flows:,} new flows per round, {args.rounds} rounds: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + " flows/s"
    )
    print(
        "  CPU per new flow (service / handler): "
        + ", ".join(f"{s:.0f} / {h:.0f} us" for s, h in cpu)
    )
    print(f"  median {median:,.0f} flows/s  target >= 10,000: {'met' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
