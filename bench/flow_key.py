"""Flow key parsing benchmark: ``attrs_to_key`` (a flow put's KEY and MASK attributes to the flat
key and mask) on its fast paths against the rule-by-rule reference it falls back to.

The inputs are megaflows as ovs-vswitchd writes them (parsed from ODP text with
``userspace.odp.parse_key``, so the attribute layouts are OVS's), each with its mask and without
one (an exact-match put).  For each shape: the compiled per-layout functions (the layout seen
before, the steady state of a handler installing flows of one kind), the generic loops (a layout
seen for the first time), and the reference.  Also ``key_to_attrs`` (what a dump or an upcall
emits) against its reference.  There is no target: the figures explain flow-put costs
(bench/dpif_ops.py, bench/flow_setup.py).

Run: .venv/bin/python -m bench.flow_key [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

from ovsdp.flowtable.key_fast import generic_attrs_to_key, install_shapes
from ovsdp.flowtable.key_netlink import (
    _attrs_to_key_reference,
    _key_to_attrs_reference,
    attrs_to_key,
    key_to_attrs,
)
from userspace.odp import parse_key

from .harness import measure, print_ratios, print_table

META = "recirc_id(0),dp_hash(0/0),skb_priority(0/0),in_port(1),skb_mark(0/0),"
ETH = "eth(src=52:54:00:00:00:01,dst=52:54:00:00:00:02),"
SHAPES: dict[str, str] = {
    "ipv4/tcp": META
    + ETH
    + "eth_type(0x0800),ipv4(src=10.0.0.1/0.0.0.0,dst=10.0.0.2/255.255.255.0,proto=6,"
    "tos=0/0,ttl=64/0,frag=no),tcp(src=40000/0,dst=80),tcp_flags(0/0)",
    "ipv6/udp": META
    + ETH
    + "eth_type(0x86dd),ipv6(src=2001:db8::1/::,dst=2001:db8::2,label=0/0,proto=17,"
    "tclass=0/0,hlimit=64/0,frag=no),udp(src=5000/0,dst=53)",
    "vlan": META + ETH + "eth_type(0x8100),vlan(vid=10,pcp=0),encap(eth_type(0x0800),"
    "ipv4(src=10.0.0.1/0.0.0.0,dst=10.0.0.2/0.0.0.0,proto=17/0,tos=0/0,ttl=64/0,frag=no),"
    "udp(src=5000/0,dst=53/0))",
    "tunnel": "tunnel(tun_id=0x5,src=192.168.1.1,dst=192.168.1.2,ttl=64/0,tp_dst=4789,"
    "flags(-df+key)),"
    + META
    + ETH
    + "eth_type(0x0800),ipv4(src=10.0.0.1/0.0.0.0,dst=10.0.0.2,proto=1/0,tos=0/0,ttl=64/0,"
    "frag=no),icmp(type=8/0,code=0/0)",
    "arp": META + ETH + "eth_type(0x0806),arp(sip=10.0.0.1/0.0.0.0,tip=10.0.0.2,op=1/0,"
    "sha=52:54:00:00:00:01/00:00:00:00:00:00,tha=00:00:00:00:00:00/00:00:00:00:00:00)",
}


def cases_for(name: str, text: str) -> dict[str, Callable[[], object]]:
    """The cases of one shape: compiled, generic and reference, with and without the mask."""
    key, mask = parse_key(text)
    cases: dict[str, Callable[[], object]] = {}
    for label, m in (("+mask", mask), ("exact", None)):
        expected = _attrs_to_key_reference(key, m)
        if attrs_to_key(key, m) != expected or generic_attrs_to_key(key, m) != expected:
            raise SystemExit(f"{name} {label}: the fast paths disagree with the reference")
        install_shapes(key, m)
        cases[f"{name} {label} compiled"] = partial(attrs_to_key, key, m)
        cases[f"{name} {label} generic"] = partial(generic_attrs_to_key, key, m)
        cases[f"{name} {label} reference"] = partial(_attrs_to_key_reference, key, m)
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.2)
    args = parser.parse_args()

    cases: dict[str, Callable[[], object]] = {}
    for name, text in SHAPES.items():
        cases |= cases_for(name, text)
    flat, _ = attrs_to_key(*parse_key(SHAPES["ipv4/tcp"]))
    cases["key_to_attrs"] = lambda: key_to_attrs(flat)
    cases["key_to_attrs reference"] = lambda: _key_to_attrs_reference(flat)

    result = measure(cases, rounds=args.rounds, seconds=args.seconds)
    print_table("rates (calls/s):", result, "call/s")
    print("ratios (median over rounds):")
    pairs: list[tuple[str, str, float | None]] = []
    for name in SHAPES:
        for label in ("+mask", "exact"):
            base = f"{name} {label} reference"
            pairs.append((f"{name} {label} compiled", base, None))
            pairs.append((f"{name} {label} generic", base, None))
    pairs.append(("key_to_attrs", "key_to_attrs reference", None))
    print_ratios(result, pairs)


if __name__ == "__main__":
    main()
