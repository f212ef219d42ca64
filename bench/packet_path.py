"""Packet path benchmark: ingress send -> key -> lookup -> output, on memory ports.

Frames enter through the switch's ingress (``VSwitch.receive``) in batches of 32 and leave
through another port's memory backend, exactly as a NIC backend would drive them.  Each case is
measured side by side with a raw loop over the same frames that only extracts the key and does
one dict lookup (what any Python forwarder must do at least):

(a) one megaflow (in_port, eth_type), traffic of 1,024 TCP connections;
(b) 1,000 megaflows over 8 masks (IPv4 destination prefixes /25 to /32), 4,000 connections;
(c) 100,000 five-tuple flows, traffic over all of them (the exact-match cache cannot hold them:
    most packets go to the classifier).

Then the classifier's cost per lookup (exact-match cache off) for traffic over 1,000 active flows
while the table holds 1,000 or 1,000,000 flows (does a lookup get slower as flows are added?),
the same for traffic spread over every installed flow (where CPU-cache misses dominate), and the
memory each installed megaflow costs at 1,000,000 flows.

Targets (issue 5): (a) >= 0.6x the raw loop; (b) >= 0.5x with cache hits; lookup cost from
1,000 to 1,000,000 flows within 1.3x; memory <= 1.5 KiB per megaflow at 1,000,000 flows.

Run: .venv/bin/python -m bench.packet_path [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import random
import struct
import time
from collections.abc import Callable

from ovsdp.daemon import ServiceConfig, build_service
from ovsdp.datapath.datapath import Datapath
from ovsdp.flowtable.actions import compile_actions
from ovsdp.flowtable.flow_key import exact_mask, extract_key, port_prefix, set_field
from ovsdp.flowtable.table import Flow
from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.constants import VportType
from ovsdp.vswitch.switch import SwitchPort, VSwitch

from .harness import measure, print_table

BATCH = 32
_ETH_IP_TCP = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH")
_VM1 = bytes.fromhex("00155d000001")
_VM2 = bytes.fromhex("00155d000002")


def tcp_frame(src: int, dst: int, sport: int, dport: int) -> bytes:
    """An Ethernet/IPv4/TCP frame of 64 bytes from vm1 to vm2 (checksums left zero)."""
    head = _ETH_IP_TCP.pack(
        _VM2,
        _VM1,
        0x0800,
        0x45,
        0,
        40,
        1,
        0,
        64,
        6,
        0,
        src.to_bytes(4, "big"),
        dst.to_bytes(4, "big"),
        sport,
        dport,
        1,
        0,
        0x50,
        0x10,
        65535,
        0,
        0,
    )
    return head + bytes(64 - len(head))


class Bench:
    """A switch with two VM ports bound to one datapath, and helpers to fill its table."""

    def __init__(self) -> None:
        service = build_service(ServiceConfig("/nonexistent"))
        self.switch: VSwitch = service.switch
        ext = service.extension
        self.dp: Datapath = ext.create_datapath("bench", 0)
        ext.add_vport(self.dp, "vm1", VportType.NETDEV, (0,))
        ext.add_vport(self.dp, "vm2", VportType.NETDEV, (0,))
        self.vm1: SwitchPort = self.switch.port("vm1")
        self.prefix = port_prefix(1)
        actions = [("output", 2)]
        self.raw_actions = CODECS["ovs_action"].encode(actions)
        self.program = compile_actions(actions)

    def add_flow(self, key: bytes, mask: bytes, ufid: bytes | None = None) -> None:
        table = self.dp.flows
        table.insert(Flow(key, table.mask(mask), self.raw_actions, self.program, ufid))

    def key(self, frame: bytes) -> bytes:
        return extract_key(frame, self.prefix)

    def run(self, batches: list[list[bytes]]) -> Callable[[], None]:
        """One call pushes the next batch through the switch."""
        receive = self.switch.receive
        port = self.vm1
        backend = self.switch.port("vm2").nic.backend
        state = [0]
        n = len(batches)

        def step() -> None:
            i = state[0]
            receive(port, batches[i])
            state[0] = (i + 1) % n
            backend.frames.clear()  # type: ignore[union-attr]

        return step


def raw_loop(
    prefix: bytes, batches: list[list[bytes]], table: dict[bytes, object]
) -> Callable[[], None]:
    """The baseline: extract each key and look it up in one dict; nothing else."""
    state = [0]
    n = len(batches)

    def step() -> None:
        i = state[0]
        get = table.get
        for frame in batches[i]:
            get(extract_key(frame, prefix))
        state[0] = (i + 1) % n

    return step


def batched(frames: list[bytes]) -> list[list[bytes]]:
    return [frames[i : i + BATCH] for i in range(0, len(frames) - BATCH + 1, BATCH)]


_BASE_MASK = ("in_port", "mac_proto", "eth_type")


def case_one_megaflow(rounds: int, seconds: float) -> float:
    b = Bench()
    frames = [tcp_frame(0x0A000001, 0x0A000002, 1024 + i, 80) for i in range(1024)]
    mask = exact_mask(*_BASE_MASK)
    b.add_flow(b.key(frames[0]), mask)
    raw_table = {b.key(f): object() for f in frames}
    batches = batched(frames)
    result = measure(
        {"ovsdp (a)": b.run(batches), "raw loop (a)": raw_loop(b.prefix, batches, raw_table)},
        rounds=rounds,
        seconds=seconds,
        ops_per_call={"ovsdp (a)": BATCH, "raw loop (a)": BATCH},
    )
    print_table("(a) one megaflow, 1,024 connections (packets/s):", result, "pps")
    assert b.switch.outstanding == 0
    return result.ratio("ovsdp (a)", "raw loop (a)")


def case_thousand_megaflows(rounds: int, seconds: float) -> float:
    b = Bench()
    masks = []
    for k in range(8):
        m = bytearray(exact_mask(*_BASE_MASK))
        set_field(m, "ipv4_dst", (0xFFFFFFFF << (32 - (25 + k))) & 0xFFFFFFFF)
        masks.append(bytes(m))
    frames = []
    for i in range(1000):
        k, j = i % 8, i // 8
        dst = (10 << 24) | (k << 16) | (j << 8) | 1
        b.add_flow(b.key(tcp_frame(0x0A640001, dst, 1, 80)), masks[k])
        frames += [tcp_frame(0x0A640001, dst, 1024 + s, 80) for s in range(4)]
    random.Random(1).shuffle(frames)
    assert b.dp.flows.n_masks == 8
    raw_table = {b.key(f): object() for f in frames}
    batches = batched(frames)
    result = measure(
        {"ovsdp (b)": b.run(batches), "raw loop (b)": raw_loop(b.prefix, batches, raw_table)},
        rounds=rounds,
        seconds=seconds,
        ops_per_call={"ovsdp (b)": BATCH, "raw loop (b)": BATCH},
    )
    print_table("(b) 1,000 megaflows over 8 masks, 4,000 connections (packets/s):", result, "pps")
    hits, probes = b.dp.flows.n_cache_hit, b.dp.flows.n_mask_hit
    print(f"    exact-match cache hits {hits:,}, masks probed on misses {probes:,}")
    assert b.switch.outstanding == 0
    return result.ratio("ovsdp (b)", "raw loop (b)")


_FIVE_TUPLE = (*_BASE_MASK, "ip_proto", "ipv4_src", "ipv4_dst", "tp_src", "tp_dst")


def _five_tuple_flows(b: Bench, count: int) -> list[bytes]:
    mask = exact_mask(*_FIVE_TUPLE)
    frames = []
    for i in range(count):
        frame = tcp_frame(0x0B000000 | (i >> 16), 0x0C000000 | (i & 0xFFFF), 1000 + (i & 1023), 80)
        b.add_flow(b.key(frame), mask, ufid=i.to_bytes(16, "little"))
        frames.append(frame)
    return frames


def case_hundred_thousand(rounds: int, seconds: float, count: int) -> float:
    b = Bench()
    frames = _five_tuple_flows(b, count)
    random.Random(2).shuffle(frames)
    raw_table = {b.key(f): object() for f in frames}
    batches = batched(frames)
    result = measure(
        {"ovsdp (c)": b.run(batches), "raw loop (c)": raw_loop(b.prefix, batches, raw_table)},
        rounds=rounds,
        seconds=seconds,
        ops_per_call={"ovsdp (c)": BATCH, "raw loop (c)": BATCH},
    )
    print_table(f"(c) {count:,} five-tuple flows, traffic over all (packets/s):", result, "pps")
    assert b.switch.outstanding == 0
    return result.ratio("ovsdp (c)", "raw loop (c)")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def classifier_cost(count: int, active: int = 1_000) -> tuple[float, float, int]:
    """The classifier's cost per lookup (exact-match cache off) with ``count`` installed flows:
    ns for traffic over ``active`` flows (a working set, as real traffic has), ns for traffic
    over random installed flows (every lookup a CPU-cache miss), and bytes of memory each
    installed flow added."""
    gc.collect()
    b = Bench()
    b.dp.set_masks_cache_size(0)
    rss0 = _rss()
    mask = exact_mask(*_FIVE_TUPLE)
    template = bytearray(b.key(tcp_frame(0, 0, 0, 80)))
    keys = []
    for i in range(count):
        key = template[:]
        set_field(key, "ipv4_src", 0x0B000000 | (i >> 16))
        set_field(key, "ipv4_dst", 0x0C000000 | (i & 0xFFFF))
        set_field(key, "tp_src", 1000 + (i & 1023))
        key_b = bytes(key)
        b.add_flow(key_b, mask, ufid=i.to_bytes(16, "little"))
        keys.append(key_b)
    gc.collect()
    per_flow = (_rss() - rss0) // count
    rng = random.Random(3)
    working = rng.sample(keys, min(active, count)) * (100_000 // min(active, count))
    rng.shuffle(working)
    scattered = rng.sample(keys, min(100_000, count))
    del keys
    classify = b.dp.flows.classify

    def best(sample: list[bytes]) -> float:
        fastest = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for key in sample:
                classify(key)
            fastest = min(fastest, (time.perf_counter() - start) / len(sample))
        return fastest * 1e9

    assert all(classify(k) is not None for k in working[:100])
    hot, cold = best(working), best(scattered)
    del b
    gc.collect()
    return hot, cold, per_flow


def main() -> int:
    """Measure and print; exit status 0 when the targets are met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--quick", action="store_true", help="100k flows instead of 1M")
    args = parser.parse_args()
    ok = True
    ra = case_one_megaflow(args.rounds, args.seconds)
    rb = case_thousand_megaflows(args.rounds, args.seconds)
    rc = case_hundred_thousand(args.rounds, args.seconds, 100_000)
    print("ratios (median over rounds):")
    for label, ratio, target in (("(a)", ra, 0.6), ("(b)", rb, 0.5), ("(c)", rc, None)):
        verdict = ""
        if target is not None:
            ok &= ratio >= target
            verdict = f"  target >= {target}: {'met' if ratio >= target else 'NOT MET'}"
        print(f"  ovsdp {label} / raw loop {label} = {ratio:.2f}x{verdict}")
    big = 100_000 if args.quick else 1_000_000
    small_hot, small_cold, _ = classifier_cost(1_000)
    big_hot, big_cold, per_flow = classifier_cost(big)
    flat = big_hot / small_hot
    ok &= flat <= 1.3 and per_flow <= 1536
    print(
        f"classifier lookup, exact-match cache off, traffic over 1,000 active flows: "
        f"{small_hot:,.0f} ns with 1,000 flows installed, {big_hot:,.0f} ns with {big:,}: "
        f"{flat:.2f}x  target <= 1.3: {'met' if flat <= 1.3 else 'NOT MET'}"
    )
    print(
        f"  (traffic over random installed flows, every lookup a CPU-cache miss: "
        f"{small_cold:,.0f} ns and {big_cold:,.0f} ns: {big_cold / small_cold:.2f}x)"
    )
    print(
        f"memory per installed megaflow at {big:,} flows: {per_flow:,} bytes  "
        f"target <= 1,536: {'met' if per_flow <= 1536 else 'NOT MET'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
