"""OVS's own ODP text vectors (tests/odp.at, extracted to tests/vectors/) through
userspace.odp: exact keys (with OVS's key -> flow -> key normalization and fitness), wildcarded
keys, valid and invalid action lists.  Independent oracle for tnl_push header bytes: scapy."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from userspace.odp import (
    Fitness,
    OdpParseError,
    format_actions,
    format_key,
    key_fitness,
    normalize_key,
    parse_actions,
    parse_key,
)

VECTORS = Path(os.environ.get("OVSDP_ODP_VECTORS", Path(__file__).parent / "vectors"))


def _lines(name: str) -> list[str]:
    path = VECTORS / name
    if not path.exists():  # a missing vector file must fail, never skip
        raise FileNotFoundError(f"ODP vector file {path} is missing (set OVSDP_ODP_VECTORS)")
    return path.read_text().splitlines()


EXACT = _lines("odp-keys-exact.txt")
EXACT_EXPECTED = _lines("odp-keys-exact.expected.txt")
WILDCARDED = _lines("odp-keys-wildcarded.txt")
ACTIONS = _lines("odp-actions.txt")
INVALID_ACTIONS = _lines("odp-actions-invalid.txt")


def test_vector_files_have_the_documented_sizes() -> None:
    assert len(EXACT) == len(EXACT_EXPECTED) == 268
    assert len(WILDCARDED) == 177
    assert len(ACTIONS) == 130
    assert len(INVALID_ACTIONS) == 9
    assert sum(line.startswith("ODP_FIT_TOO_LITTLE: ") for line in EXACT_EXPECTED) == 20


# --- exact keys -----------------------------------------------------------------------------------


def _as_ovs_test_prints(line: str) -> str:
    """What OVS's `test-odp parse-keys` prints: parse, key -> flow (fitness), flow -> key,
    format the key alone (verbose, no mask)."""
    key, _mask = parse_key(line)
    fitness, canonical = normalize_key(key)
    prefix = "" if fitness is Fitness.PERFECT else f"{fitness.value}: "
    return prefix + format_key(canonical, None, verbose=True)


@pytest.mark.parametrize("index", range(len(EXACT)))
def test_exact_key_vector(index: int) -> None:
    assert _as_ovs_test_prints(EXACT[index]) == EXACT_EXPECTED[index]


@pytest.mark.parametrize("index", range(len(EXACT)))
def test_exact_key_formats_back_verbatim(index: int) -> None:
    # before normalization, the verbose form of the parsed key is the input itself
    key, mask = parse_key(EXACT[index])
    assert format_key(key, None, verbose=True) == EXACT[index]
    if "erspan(" not in EXACT[index]:
        # OVS prints ERSPAN options with their masks even when exact (upstream quirk, which
        # is also why odp.at's ERSPAN wildcard sections are empty)
        assert format_key(key, mask) == EXACT[index]


def test_fitness_of_mpls_without_bottom_of_stack() -> None:
    key, _ = parse_key(
        "eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x8847),"
        "mpls(label=100,tc=7,ttl=100,bos=0)"
    )
    assert key_fitness(key) is Fitness.TOO_LITTLE
    key, _ = parse_key(
        "eth(src=00:01:02:03:04:05,dst=10:11:12:13:14:15),eth_type(0x8847),"
        "mpls(label=100,tc=7,ttl=100,bos=1)"
    )
    assert key_fitness(key) is Fitness.PERFECT


# --- wildcarded keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(WILDCARDED)))
def test_wildcarded_key_vector(index: int) -> None:
    key, mask = parse_key(WILDCARDED[index])
    assert format_key(key, mask) == WILDCARDED[index]


# --- actions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(ACTIONS)))
def test_action_vector(index: int) -> None:
    assert format_actions(parse_actions(ACTIONS[index])) == ACTIONS[index]


INVALID_REASONS = [
    "unknown action 'encap_nsh'",
    "segments_left=2 needs 3 segments, got 2",
    "more than segments_left+1 = 3 SRv6 segments",
    "unknown psample field 'group_id'",
    "psample needs group=",
    "duplicate psample field 'group'",
    "expected psample group",
    "psample cookie must be hex",
    "psample needs group=",
]


@pytest.mark.parametrize("index", range(len(INVALID_ACTIONS)))
def test_invalid_action_vector(index: int) -> None:
    with pytest.raises(OdpParseError) as info:
        parse_actions(INVALID_ACTIONS[index])
    assert INVALID_REASONS[index] in str(info.value)
    assert info.value.pos is not None  # says where


# --- tnl_push header bytes, checked by an independent decoder -------------------------------------


def _tnl_headers() -> list[tuple[str, object]]:
    out = []
    for line in ACTIONS:
        if line.startswith("tnl_push("):
            ((name, value),) = parse_actions(line)
            assert name == "tunnel_push"
            out.append((line, value))
    return out


TNL = _tnl_headers()


def test_tnl_push_vectors_present() -> None:
    assert len(TNL) == 14


@pytest.mark.parametrize("index", range(len(TNL)))
def test_tnl_push_header_bytes(index: int) -> None:
    pytest.importorskip("scapy", reason="scapy (a test dependency) decodes the headers")
    from scapy.contrib.geneve import GENEVE
    from scapy.layers.inet import GRE, IP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    line, value = TNL[index]
    hdr = value.header  # type: ignore[attr-defined]
    # exactly the header bytes, as OVS sends them (no padding to the 512-byte array)
    assert len(hdr) == value.header_len  # type: ignore[attr-defined]
    eth = Ether(hdr[:14])
    assert eth.dst == "f8:bc:12:44:34:b6" and eth.src == "f8:bc:12:46:58:e0"
    if eth.type == 0x0800:
        ip = IP(hdr[14:34])
        assert (ip.version, ip.ihl, ip.src, ip.dst, ip.ttl) == (4, 5, "1.1.2.88", "1.1.2.92", 64)
        assert ip.flags == "DF"
        recomputed = ip.copy()
        del recomputed.chksum
        assert IP(bytes(recomputed)).chksum == ip.chksum  # a valid header checksum
        l4 = 34
        proto = ip.proto
    else:
        ip6 = IPv6(hdr[14:54])
        assert (ip6.version, ip6.src, ip6.dst, ip6.hlim) == (
            6,
            "2001:cafe::88",
            "2001:cafe::92",
            64,
        )
        l4 = 54
        proto = ip6.nh
    if "vxlan(" in line:
        udp = UDP(hdr[l4 : l4 + 8])
        assert udp.dport == 4789 and proto == 17
        vx = VXLAN(hdr[l4 + 8 :])
        assert vx.vni == 0x1C7 and vx.flags == 0x08
    elif "geneve(" in line:
        udp = UDP(hdr[l4 : l4 + 8])
        assert udp.dport == 6081 and udp.chksum == (0xFFFF if "csum=0xffff" in line else 0)
        gn = GENEVE(hdr[l4 + 8 :])
        assert gn.vni == 0x1C7 and gn.proto == 0x6558
        assert bool(gn.oam) == ("oam," in line) and bool(gn.critical) == ("crit," in line)
        if "options(" in line:
            assert gn.optionlen == 2
            assert hdr[l4 + 16 : l4 + 24] == struct.pack("!HBBI", 0xFFFF, 0x80, 1, 0xA)
    elif "gre(" in line:
        gre = GRE(hdr[l4:])
        assert proto == 47 and gre.proto == 0x6558 and gre.key_present == 1
        assert gre.key == 0x1E241
        assert gre.chksum_present == (1 if "csum=" in line else 0)
    elif "srv6(" in line:
        srh = IPv6ExtHdrSegmentRouting(hdr[l4:])
        segs = line.split("segs(")[1].split(")")[0].split(",")
        assert proto == 43 and srh.type == 4
        assert srh.segleft == len(segs) - 1 and srh.lastentry == len(segs) - 1
        assert list(reversed(srh.addresses)) == segs  # the header lists the last segment first
    else:
        pytest.fail(f"unexpected tunnel in {line}")
