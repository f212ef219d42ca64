"""dpif benchmark: flow puts and flow dumps through the pseudo-device, against a real service.

The service runs as its own process (``ovsdp serve``); this process is the client, through
userspace's dpif layer on one connection:

* raw no-op transactions (the control family's GET_PID) on that connection: the floor;
* flow puts one at a time (``Dpif.flow_put``), each a distinct L2 megaflow of the kind
  ovsdp-handler installs (in_port, eth src/dst, eth_type exact; IPv4 and TCP wildcarded);
* flow puts batched, 64 per record (``Dpif.operate``);

measured in interleaved rounds; then a dump of 100,000 flows: flows per second, and the
service's resident memory during the dump compared with before it.

Targets (issue 6): puts one at a time >= 0.5x the no-op transactions; the service's memory
growth during the 100,000-flow dump <= 5 MiB.

Run: .venv/bin/python -m bench.dpif_ops [--rounds N] [--flows N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from ovsdp.netlink.structs import OvsKeyEthernet, OvsKeyIpv4, OvsKeyPorts
from userspace.dpif import Dpif, FlowPut
from userspace.netlink_socket import CONTROL_FAMILY, CTRL_GET_PID, NetlinkSocket

ZERO_IPV4 = OvsKeyIpv4(0, 0, 0, 0, 0, 0)


def l2_flow(n: int) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, Any]]]:
    """A distinct L2 megaflow: vm1's MAC to the n-th destination, out of port 2."""
    dst = (0x020000000000 | n).to_bytes(6, "big")
    key = {
        "recirc_id": 0,
        "in_port": 1,
        "ethernet": OvsKeyEthernet(bytes.fromhex("00155d000001"), dst),
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(0x0A000001, 0x0A000002, 6, 0, 64, 0),
        "tcp": OvsKeyPorts(40000, 80),
        "tcp_flags": 0,
    }
    mask = {
        "recirc_id": 0xFFFFFFFF,
        "in_port": 0xFFFFFFFF,
        "ethernet": OvsKeyEthernet(b"\xff" * 6, b"\xff" * 6),
        "ethertype": 0xFFFF,
        "ipv4": ZERO_IPV4,
        "tcp": OvsKeyPorts(0, 0),
        "tcp_flags": 0,
    }
    return key, mask, [("output", 2)]


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_service(path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovsdp", "serve", "--socket", path],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "listening on ..."
    return proc


def main() -> int:
    """Measure and print; exit status 0 when the targets are met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=3000, help="puts per round, one at a time")
    parser.add_argument("--flows", type=int, default=100_000, help="flows in the dump")
    args = parser.parse_args()

    path = os.path.join(tempfile.mkdtemp(prefix="ovsdp-bench-"), "ovsdp.sock")
    service = start_service(path)
    try:
        sock = NetlinkSocket(path)
        dpif = Dpif.open("bench", create=True, sock=sock)
        for name in ("vm1", "vm2"):
            dpif.port_add(name)
        counter = itertools.count()
        rates: dict[str, list[float]] = {"noop": [], "put": [], "batched": []}

        def noop(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                sock.transact(CONTROL_FAMILY, CTRL_GET_PID)
            return n / (time.perf_counter() - start)

        def put(n: int) -> float:
            flows = [l2_flow(next(counter)) for _ in range(n)]
            start = time.perf_counter()
            for key, mask, actions in flows:
                dpif.flow_put(key, mask, actions)
            return n / (time.perf_counter() - start)

        def batched(n: int) -> float:
            ops = [FlowPut(*l2_flow(next(counter))) for _ in range(n)]
            start = time.perf_counter()
            results = dpif.operate(ops, batch=64)
            elapsed = time.perf_counter() - start
            assert not any(r.error for r in results), [r.error for r in results if r.error][:3]
            return n / elapsed

        noop(500), put(500), batched(640)  # warm up every path
        for _ in range(args.rounds):
            rates["noop"].append(noop(args.ops))
            rates["put"].append(put(args.ops))
            rates["batched"].append(batched(args.ops * 4))
        dpif.flow_flush()

        # the dump: install the flows, then read them while sampling the service's memory
        dpif.operate([FlowPut(*l2_flow(next(counter))) for _ in range(args.flows)], batch=64)
        time.sleep(0.5)
        before = _rss(service.pid)
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss(service.pid))
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        dumped = sum(1 for _ in dpif.flow_dump())
        dump_time = time.perf_counter() - start
        stop.set()
        sampler.join()
        assert dumped == args.flows, (dumped, args.flows)
    finally:
        service.terminate()
        service.wait()

    def med(name: str) -> float:
        return statistics.median(rates[name])

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    growth = peak[0] - before
    put_ratio = ratio("put", "noop")
    ok = put_ratio >= 0.5 and growth <= 5 << 20
    print(f"{args.rounds} interleaved rounds, one connection, service in its own process")
    print(f"  no-op transactions (GET_PID)  : {med('noop'):>9,.0f} /s")
    print(f"  flow puts, one at a time      : {med('put'):>9,.0f} /s")
    print(f"  flow puts, 64 per record      : {med('batched'):>9,.0f} /s")
    print(
        f"  puts / no-op = {put_ratio:.2f}x  target >= 0.5: "
        f"{'met' if put_ratio >= 0.5 else 'NOT MET'}"
    )
    print(f"  batched puts / no-op = {ratio('batched', 'noop'):.2f}x")
    print(
        f"dump of {dumped:,} flows: {dumped / dump_time:,.0f} flows/s; service RSS "
        f"{before / 2**20:.1f} MiB before, peak {peak[0] / 2**20:.1f} MiB during: "
        f"+{growth / 2**20:.2f} MiB  target <= 5 MiB: {'met' if growth <= 5 << 20 else 'NOT MET'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
