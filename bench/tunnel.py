"""VXLAN benchmark: encapsulation and decapsulation against plain forwarding, in one run.

Frames enter through the switch's ingress (``VSwitch.receive``) in batches of 32 on memory ports,
as in bench/packet_path.py, and every case is measured side by side (bench/harness.py: interleaved
rounds, ratios taken inside each round):

* **plain**: VM to VM, a flow whose action is one output;
* **encap**: VM to the uplink, a flow ``set(tunnel(...)),output(vxlan)``: header template,
  UDP source port from the inner flow, IPv4 checksum, out of the external port;
* **decap**: VXLAN packets for the VTEP from the uplink: VTEP check, outer header validation
  (IPv4 header checksum, VXLAN flags), key with tunnel metadata, lookup, output to a VM;
* **reassembly**: the same VXLAN packets, each cut into two IPv4 fragments: reassembly, then
  decap as above (rates in datagrams per second).

Each with the same number of flows on both sides of a ratio: (a) one megaflow and 1,024 inner
connections; (b) 1,000 megaflows (one per inner destination, encap to 100 VTEPs) and 4,000
connections.  Plain forwarding of (a) and (b) uses the same inner frames.

Targets (issue 7): encap / plain >= 0.6 and decap / plain >= 0.6 with the same flow count;
reassembly + decap / decap >= 0.4.

Run: .venv/bin/python -m bench.tunnel [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import random
import warnings
from collections.abc import Callable

from ovsdp.daemon import ServiceConfig, build_service
from ovsdp.datapath.datapath import Datapath
from ovsdp.flowtable.actions import compile_actions
from ovsdp.flowtable.flow_key import exact_mask, extract_key, port_prefix, set_field
from ovsdp.flowtable.table import Flow
from ovsdp.netlink.codec import CODECS
from ovsdp.netlink.constants import VportType
from ovsdp.tunnel.endpoint import TunnelEndpoint
from ovsdp.tunnel.fragment import fragment_ipv4
from ovsdp.tunnel.vxlan import OuterTemplate
from ovsdp.vswitch.config import parse_config
from ovsdp.vswitch.switch import SwitchPort, VSwitch

from .harness import measure, print_ratios, print_table
from .packet_path import BATCH, batched, tcp_frame

VTEP = 0xC0000201  # 192.0.2.1
PEERS = [0xC0000202 + i for i in range(100)]  # 192.0.2.2 ...
PEER_MAC = bytes.fromhex("020000000002")
EXT_MAC = bytes.fromhex("00155d000010")

CONFIG = f"""
[[port]]
name = "vm1"
type = "vm"
mac = "00:15:5d:00:00:01"
[[port]]
name = "vm2"
type = "vm"
mac = "00:15:5d:00:00:02"
[[port]]
name = "ext"
type = "external"
mac = "00:15:5d:00:00:10"
mtu = 9000
[[port]]
name = "host"
type = "internal"
mac = "00:15:5d:00:00:20"
ipv4 = "192.0.2.1/24"
{
    "".join(
        f'''
[[neighbour]]
ip = "192.0.2.{2 + i}"
mac = "02:00:00:00:{i >> 8:02x}:{(i & 0xFF) + 2:02x}"'''
        for i in range(100)
    )
}
"""


class Bench:
    """A switch with vm1, vm2, ext and a VXLAN vport in one datapath; helpers for flows."""

    def __init__(self) -> None:
        service = build_service(ServiceConfig("/nonexistent", switch=parse_config(CONFIG)))
        self.switch: VSwitch = service.switch
        ext = service.extension
        self.tunnel: TunnelEndpoint = ext.pipeline.tunnel
        self.dp: Datapath = ext.create_datapath("bench", 0)
        for name in ("vm1", "vm2", "ext"):
            ext.add_vport(self.dp, name, VportType.NETDEV, (0,))
        self.vx = ext.add_vport(self.dp, "vx", VportType.VXLAN, (0,), options={"dst_port": 4789})
        self.vm1: SwitchPort = self.switch.port("vm1")
        self.ext: SwitchPort = self.switch.port("ext")

    def add_flow(self, key: bytes, mask: bytes, actions: list[tuple[str, object]]) -> None:
        table = self.dp.flows
        raw = CODECS["ovs_action"].encode(actions)
        table.insert(Flow(key, table.mask(mask), raw, compile_actions(actions)))

    def run(self, port: SwitchPort, out: str, batches: list[list[bytes]]) -> Callable[[], None]:
        """One call pushes the next batch in through ``port``; ``out``'s queue is emptied."""
        receive = self.switch.receive
        backend = self.switch.port(out).nic.backend
        state = [0]
        n = len(batches)

        def step() -> None:
            i = state[0]
            receive(port, batches[i])
            state[0] = (i + 1) % n
            backend.frames.clear()  # type: ignore[union-attr]

        return step

    def decap_key(self, outer: bytes) -> bytes:
        """The flow key the endpoint gives a VXLAN packet from the uplink."""
        ports = {4789: ((self.dp, self.vx), self.vx.port_no)}
        decapsulated, _, _ = self.tunnel.receive([outer], ports)
        ((key, _inner),) = decapsulated[(self.dp, self.vx)]
        self.tunnel.counters.decap_packets = 0
        return key


def vxlan_frame(inner: bytes, peer: int, sport: int, ip_id: int) -> bytes:
    """A VXLAN packet from ``peer`` to the VTEP (what a remote VTEP sends)."""
    template = OuterTemplate(EXT_MAC, PEER_MAC, peer, VTEP, vni=5)
    return template.build(inner, ip_id, sport)


_MASK_L2 = ("in_port", "mac_proto", "eth_type")
_MASK_TUNNEL = ("tun_id", "tun_ipv4_src", "tun_ipv4_dst", "tun_flags", "tun_proto")


def tunnel_key(peer: int, vni: int = 5) -> dict[str, object]:
    return {"id": vni, "ipv4_dst": peer, "ttl": 64}


def scenario(flows: int, connections: int, rounds: int, seconds: float) -> dict[str, float]:
    """Every case with ``flows`` megaflows over ``connections`` inner connections."""
    rng = random.Random(flows)
    # inner frames vm1 -> vm2: connection c goes to destination c % flows
    inner = [
        tcp_frame(0x0A000001, 0x0A100000 + (c % flows), 1024 + c // flows, 80)
        for c in range(connections)
    ]
    rng.shuffle(inner)
    peers = {c: PEERS[c % len(PEERS)] for c in range(flows)}

    def dst_of(frame: bytes) -> int:
        return int.from_bytes(frame[30:34], "big") - 0x0A100000

    # plain: vm1 -> vm2, one output per flow (masks on the inner destination when flows > 1)
    plain = Bench()
    encap = Bench()
    decap = Bench()
    reasm = Bench()
    mask = bytearray(exact_mask(*_MASK_L2))
    if flows > 1:
        set_field(mask, "ipv4_dst", 0xFFFFFFFF)
    seen: set[int] = set()
    for frame in inner:
        d = dst_of(frame)
        if d in seen:
            continue
        seen.add(d)
        key = extract_key(frame, port_prefix(1))
        plain.add_flow(key, bytes(mask), [("output", 2)])
        actions = [("set", {"tunnel": tunnel_key(peers[d])}), ("output", encap.vx.port_no)]
        encap.add_flow(key, bytes(mask), actions)
    # decap: VXLAN packets from the peers, one flow per (tunnel source, inner destination)
    outers = [vxlan_frame(f, peers[dst_of(f)], 40000 + i % 20000, i) for i, f in enumerate(inner)]
    dmask = bytearray(exact_mask(*_MASK_L2, *_MASK_TUNNEL))
    if flows > 1:
        set_field(dmask, "ipv4_dst", 0xFFFFFFFF)
    seen.clear()
    for outer, frame in zip(outers, inner, strict=True):
        d = dst_of(frame)
        if d not in seen:
            seen.add(d)
            key = decap.decap_key(outer)
            decap.add_flow(key, bytes(dmask), [("output", 2)])
            reasm.add_flow(key, bytes(dmask), [("output", 2)])
    # the same VXLAN packets in two fragments each (both in the same batch)
    fragments = [p for o in outers for p in fragment_ipv4(o, (len(o) - 14 + 40) // 2)]
    assert len(fragments) == 2 * len(outers)

    cases = {
        "plain": plain.run(plain.vm1, "vm2", batched(inner)),
        "encap": encap.run(encap.vm1, "ext", batched(inner)),
        "decap": decap.run(decap.ext, "vm2", batched(outers)),
        "reassembly+decap": reasm.run(reasm.ext, "vm2", batched(fragments)),
    }
    per_call = {name: BATCH for name in cases}
    per_call["reassembly+decap"] = BATCH // 2  # datagrams per batch of fragments
    result = measure(cases, rounds=rounds, seconds=seconds, ops_per_call=per_call)
    title = (
        f"{flows:,} megaflow(s), {connections:,} inner connections "
        "(packets/s; reassembly: datagrams/s)"
    )
    print_table(title, result, "pps")
    for b, out in ((plain, None), (encap, "ext"), (decap, "vm2"), (reasm, "vm2")):
        assert b.switch.outstanding == 0 and b.dp.stats.n_missed == 0
        assert b.switch.extension.pipeline.outstanding == 0  # type: ignore[union-attr]
        if out is not None:
            assert not any(b.tunnel.counters.as_dict()[k] for k in ("neighbour_miss", "bad_vxlan"))
    assert reasm.tunnel.reassembly.stats.reassembled > 0 and len(reasm.tunnel.reassembly) == 0
    return {
        "encap": result.ratio("encap", "plain"),
        "decap": result.ratio("decap", "plain"),
        "reasm": result.ratio("reassembly+decap", "decap"),
        "ok": print_ratios(
            result,
            [
                ("encap", "plain", 0.6),
                ("decap", "plain", 0.6),
                ("reassembly+decap", "decap", 0.4),
            ],
        ),
    }


def main() -> int:
    """Measure and print; exit status 0 when the targets are met."""
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    ok = True
    for flows, connections in ((1, 1024), (1000, 4000)):
        ok &= bool(scenario(flows, connections, args.rounds, args.seconds)["ok"])
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
