"""The reassembly table (ovsdp/tunnel/reassembly.py) on fragments scapy makes: in order, reversed,
shuffled, duplicated, overlapping, missing, expired (a fake clock), tiny first fragments,
inconsistent ones, the per-datagram limits, and the memory cap under a flood of incomplete
datagrams (complete ones keep getting through, memory never passes the cap).
"""

from __future__ import annotations

import random
import warnings

import pytest
from hypothesis import given, settings, strategies as st

from ovsdp.tunnel.reassembly import ENTRY_OVERHEAD, Reassembler

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, UDP, fragment  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402
from scapy.packet import Raw  # noqa: E402

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def datagram(ident: int = 1, size: int = 3000, src: str = "192.0.2.1", tos: int = 0) -> Ether:
    """A whole VXLAN packet (IP id ``ident``) of about ``size`` bytes of UDP payload."""
    inner = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP() / Raw(b"i" * size)
    return (
        ETH
        / IP(src=src, dst="192.0.2.2", id=ident, tos=tos, ttl=30)
        / UDP(sport=40000, dport=4789, chksum=0)
        / VXLAN(vni=7)
        / inner
    )


def frags(pkt: Ether, size: int = 1000) -> list[bytes]:
    """scapy's fragments of ``pkt`` (each fragment's payload at most ``size`` bytes)."""
    return [bytes(ETH / f) for f in fragment(pkt[IP], fragsize=size)]


def check_whole(out: bytes | None, pkt: Ether) -> None:
    """``out`` is ``pkt`` reassembled: same bytes but for a recomputed header."""
    assert out is not None
    whole = bytes(pkt)
    assert out[:14] == whole[:14]
    got = Ether(out)
    assert bytes(got[IP].payload) == whole[34:]
    assert got[IP].len == len(whole) - 14 and got[IP].frag == 0 and not got[IP].flags.MF
    assert (got[IP].src, got[IP].dst, got[IP].id, got[IP].ttl) == ("192.0.2.1", "192.0.2.2", 1, 30)
    copy = got.copy()
    del copy[IP].chksum
    assert Ether(bytes(copy))[IP].chksum == got[IP].chksum
    assert out == whole  # scapy's original, byte for byte


def feed(r: Reassembler, pieces: list[bytes], now: float = 0.0) -> list[bytes]:
    return [out for p in pieces if (out := r.add(p, now)) is not None]


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled", "last first"])
def test_fragments_in_any_order(order: str) -> None:
    pkt = datagram()
    pieces = frags(pkt)
    assert len(pieces) == 4
    if order == "reversed":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(pieces)
    elif order == "last first":
        pieces = pieces[-1:] + pieces[:-1]
    r = Reassembler()
    outs = [r.add(p, 0.0) for p in pieces]
    assert outs[:-1] == [None] * 3
    check_whole(outs[-1], pkt)
    assert r.stats.reassembled == 1 and r.stats.fragments == 4
    assert len(r) == 0 and r.memory == 0
    assert r.last_mru == max(len(p) - 14 for p in pieces)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20000), st.integers(2, 200), st.randoms(use_true_random=False))
def test_any_size_any_fragment_size_any_order(size: int, eights: int, rnd: random.Random) -> None:
    eights = max(eights, size // 600)  # at most about 80 fragments (scapy is slow)
    pkt = datagram(size=size)
    pieces = frags(pkt, size=eights * 8)  # at least 16 bytes each: no tiny first fragment
    rnd.shuffle(pieces)
    r = Reassembler(max_fragments=64)
    outs = feed(r, pieces)
    if len(pieces) > 64:
        assert outs == [] and r.stats.over_limit >= 1
    else:
        assert outs == [bytes(pkt)]  # (a single piece is a whole datagram: it comes back)
        assert r.memory == 0


def test_duplicates_are_ignored() -> None:
    pkt = datagram()
    pieces = frags(pkt)
    r = Reassembler()
    outs = feed(r, [pieces[0], pieces[0], pieces[2], pieces[1], pieces[2], pieces[3]])
    assert len(outs) == 1
    check_whole(outs[0], pkt)
    assert r.stats.duplicates == 2 and r.stats.overlapped == 0


def test_interleaved_datagrams_are_kept_apart() -> None:
    a, b = datagram(1), datagram(2)
    c = datagram(1, src="192.0.2.9")  # the same id from another source
    pa, pb, pc = frags(a), frags(b), frags(c)
    mixed = [x for trio in zip(pa, pb, pc, strict=True) for x in trio]
    r = Reassembler()
    outs = feed(r, mixed)
    assert sorted(outs) == sorted([bytes(a), bytes(b), bytes(c)])


def test_overlapping_fragments_discard_the_datagram() -> None:
    pkt = datagram()
    pieces = frags(pkt, size=1000)
    # a fragment at offset 504 overlapping the first (0..1000) and the second (1000..2000)
    overlap = bytes(ETH / fragment(pkt[IP], fragsize=504)[1])
    r = Reassembler()
    assert r.add(pieces[0], 0.0) is None
    assert r.add(overlap, 0.0) is None
    assert r.stats.overlapped == 1 and len(r) == 0 and r.memory == 0
    # the rest starts a new datagram that can never complete: nothing comes out
    assert feed(r, pieces[1:]) == []
    assert r.stats.reassembled == 0


def test_missing_fragment_never_completes_and_expires() -> None:
    pkt = datagram()
    pieces = frags(pkt)
    r = Reassembler(timeout=30.0)
    assert feed(r, pieces[:2] + pieces[3:], now=100.0) == []
    assert len(r) == 1 and r.memory > 0
    r.expire(129.9)
    assert len(r) == 1
    r.expire(130.0)
    assert len(r) == 0 and r.memory == 0 and r.stats.expired == 1
    # the late fragment starts a new entry, which never completes either
    assert r.add(pieces[2], 131.0) is None
    assert r.stats.reassembled == 0


def test_expiry_is_from_the_first_fragment_and_checked_on_add() -> None:
    pkt = datagram()
    pieces = frags(pkt)
    r = Reassembler(timeout=30.0)
    r.add(pieces[0], 0.0)
    r.add(pieces[1], 29.0)
    # 30 s after the first fragment the entry is gone, whatever came since
    assert r.add(pieces[2], 30.0) is None
    assert r.stats.expired == 1
    assert r.add(pieces[3], 30.0) is None  # pieces 2 and 3 alone
    assert r.stats.reassembled == 0


def test_a_tiny_first_fragment_is_refused() -> None:
    pkt = datagram()
    tiny = frags(pkt, size=8)  # 8 bytes of UDP in the first fragment: no VXLAN header
    r = Reassembler()
    assert r.add(tiny[0], 0.0) is None
    assert r.stats.tiny == 1 and len(r) == 0
    # the same datagram cut at 16 bytes is fine
    ok = frags(pkt, size=16)[:64]
    r2 = Reassembler(max_fragments=64)
    assert r2.add(ok[0], 0.0) is None and r2.stats.tiny == 0 and len(r2) == 1


def test_too_many_fragments_discard_the_datagram() -> None:
    pkt = datagram(size=2000)
    pieces = frags(pkt, size=64)
    assert len(pieces) > 8
    r = Reassembler(max_fragments=8)
    assert feed(r, pieces) == []
    assert r.stats.over_limit >= 1
    assert r.stats.reassembled == 0


def test_a_datagram_over_65535_bytes_is_discarded() -> None:
    pkt = datagram(size=100)
    last = bytearray(frags(pkt, size=64)[-1])
    # the final fragment moved to offset 65528: its end is past 65,535 bytes
    last[20:22] = (65528 // 8).to_bytes(2, "big")
    r = Reassembler()
    assert r.add(bytes(last), 0.0) is None
    assert r.stats.over_limit == 1 and len(r) == 0


def test_inconsistent_fragments_are_malformed() -> None:
    pkt = datagram()
    pieces = frags(pkt)
    r = Reassembler()
    # a non-final fragment whose length is not a multiple of 8
    odd = bytearray(pieces[1])
    odd[16:18] = (int.from_bytes(odd[16:18], "big") - 3).to_bytes(2, "big")
    assert r.add(bytes(odd[:-3]), 0.0) is None
    assert r.stats.malformed == 1
    # two final fragments disagreeing on the end
    r = Reassembler()
    r.add(pieces[3], 0.0)
    other_end = bytes(ETH / fragment(datagram(size=2000)[IP], fragsize=1000)[-1])
    assert r.add(other_end, 0.0) is None
    assert r.stats.malformed == 1 and len(r) == 0
    # a fragment past the final one's end
    r = Reassembler()
    r.add(bytes(ETH / fragment(datagram(size=1200)[IP], fragsize=1000)[-1]), 0.0)
    assert r.add(pieces[2], 0.0) is None
    assert r.stats.malformed == 1
    # a total length past the frame
    r = Reassembler()
    assert r.add(pieces[0][:-10], 0.0) is None
    assert r.stats.malformed == 1


def test_memory_cap_evicts_the_oldest() -> None:
    r = Reassembler(max_bytes=20_000)
    firsts = [frags(datagram(i))[0] for i in range(1, 40)]
    for i, first in enumerate(firsts):
        r.add(first, float(i))
        assert r.memory <= 20_000
    assert r.stats.evicted > 0
    assert len(r) < 39
    # the survivors are the newest
    survivors = {ident for _addrs, ident, _proto in r.entries}
    assert survivors == set(range(40 - len(r), 40))


def patched(frame: bytes, ident: int, src: int) -> bytes:
    """``frame`` (a fragment) with another IP id and source (the table does not check the
    header checksum; scapy would take too long to build 20,000 fragments)."""
    return (
        frame[:18] + ident.to_bytes(2, "big") + frame[20:26] + src.to_bytes(4, "big") + frame[30:]
    )


def test_a_flood_of_incomplete_datagrams_stays_within_the_cap() -> None:
    cap = 256 * 1024
    r = Reassembler(max_bytes=cap)
    rng = random.Random(7)
    attack = frags(datagram(1, size=1400), size=1000)[0]
    good = frags(datagram(1, size=1400), size=1000)
    complete = 0
    peak = 0
    for i in range(20_000):
        # an attacker's first fragments, never completed, from random sources
        r.add(patched(attack, i % 65536, 0xC6330000 | rng.randrange(65536)), i * 0.001)
        peak = max(peak, r.memory)
        if i % 50 == 0:
            # a real two-fragment datagram, its fragments a few attack packets apart
            ident = i % 65536
            assert r.add(patched(good[0], ident, 0xC0000201), i * 0.001) is None
            for k in range(3):
                r.add(patched(attack, ident, 0xCB007100 + k), i * 0.001)
            out = r.add(patched(good[1], ident, 0xC0000201), i * 0.001)
            if out is not None:
                assert out[34:] == bytes(datagram(1, size=1400))[34:]
                complete += 1
            peak = max(peak, r.memory)
    assert peak <= cap
    assert complete == 400  # every complete datagram got through the flood
    assert r.stats.evicted > 19_000
    assert r.stats.reassembled == 400


def test_entries_cost_is_accounted_to_zero() -> None:
    r = Reassembler()
    for i in range(1, 100):
        for p in frags(datagram(i))[:3]:
            r.add(p, 0.0)
    assert r.memory >= 99 * ENTRY_OVERHEAD
    r.expire(1000.0)
    assert r.memory == 0 and len(r) == 0


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        Reassembler(timeout=0)
    with pytest.raises(ValueError):
        Reassembler(max_fragments=1)
    with pytest.raises(ValueError):
        Reassembler(max_bytes=10)
