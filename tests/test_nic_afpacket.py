"""The AF_PACKET backend against the kernel: two namespaces, each behind a veth whose root end is
an afpacket port of the service (run in the test's trio loop, as ``ovsdp serve`` runs it), two
megaflows cross-connecting the ports.  Real traffic (ICMP echo between the namespaces; VLAN 10
frames built by scapy, since this kernel has no 8021q module for VLAN subinterfaces), counters,
a VLAN tag the kernel strips re-inserted, a frame with a partial
checksum completed, transmit that never blocks, the frames ovsdp sends not read back.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
import warnings

import pytest
import trio
from netns_support import Lab, LoopService, inet_checksum, needs_root, ping, unique

from ovsdp.nic import AfPacketBackend, NicError
from ovsdp.nic.afpacket import RING_SAFE, complete_checksum

warnings.filterwarnings("ignore", module="scapy")
from scapy.config import conf  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402
from scapy.sendrecv import AsyncSniffer, sendp  # noqa: E402

# the receive ring (PACKET_MMAP, the default on x86) and recvmsg with PACKET_AUXDATA
RINGS = pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvmsg"])

PORTS = """
[[port]]
name = "vm1"
backend = "afpacket"
device = "{a}"

[[port]]
name = "vm2"
backend = "afpacket"
device = "{b}"
"""


def two_hosts(lab: Lab) -> tuple[str, str, str, str, str, str]:
    """Namespaces a and b (10.77.1.1 and .2) behind veths.

    Returns (ns a, ns b, root end a, root end b, ns end a, ns end b)."""
    a, b = lab.namespace("a"), lab.namespace("b")
    root_a, end_a = lab.veth(a, cidr="10.77.1.1/24")
    root_b, end_b = lab.veth(b, cidr="10.77.1.2/24")
    return a, b, root_a, root_b, end_a, end_b


@needs_root
async def test_ping_counters_and_vlan() -> None:
    with Lab() as lab:
        a, b, root_a, root_b, end_a, end_b = two_hosts(lab)
        svc = LoopService(PORTS.format(a=root_a, b=root_b))
        async with trio.open_nursery() as nursery:
            await svc.start(nursery)
            vm1, vm2 = svc.backend("vm1"), svc.backend("vm2")
            assert isinstance(vm1, AfPacketBackend) and isinstance(vm2, AfPacketBackend)
            assert vm1.use_ring == vm2.use_ring == RING_SAFE
            await svc.cross_connect("vm1", "vm2", vlans=(10,))

            assert await ping(lab, a, "10.77.1.2") == 3
            assert vm1.stats().rx >= 4 and vm2.stats().tx >= 4  # ARP + 3 echo requests
            assert vm2.stats().rx >= 3 and vm1.stats().tx >= 3  # the replies (+ ARP)
            assert svc.switch.port("vm1").rx_frames == vm1.counters.rx
            for counters in (vm1.stats(), vm2.stats()):
                assert counters.tx_dropped == counters.rx_errors == counters.tx_errors == 0
                assert counters.rx_dropped == 0

            # an 802.1Q frame from a: the veth strips the tag into the skb on the way to ovsdp
            # and again on the way into b; scapy's sniffer in b (which reads the tag back from
            # PACKET_AUXDATA as well) sees VLAN 10 only if ovsdp re-inserted it
            marker = b"ovsdp-vlan-" + unique("m").encode()
            got = await trio.to_thread.run_sync(
                sniff_while_sending, lab, b, end_b, a, end_a, marker
            )
            assert got is not None, "the tagged frame did not arrive"
            assert got.haslayer(Dot1Q), got.summary()
            assert (got[Dot1Q].vlan, got[Dot1Q].prio) == (10, 3)
            assert bytes(got[Raw].load) == marker

            assert svc.switch.outstanding == 0
            await svc.stop()
        assert vm1.fileno() == -1 and vm2.fileno() == -1
        assert svc.switch.port("vm1").nic.backend is None


def tagged(marker: bytes) -> Ether:
    return (
        Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:10:01")
        / Dot1Q(vlan=10, prio=3)
        / IP(src="10.77.10.1", dst="10.77.10.2")
        / UDP(sport=5000, dport=5001)
        / Raw(marker)
    )


def sniff_while_sending(
    lab: Lab, rx_ns: str, rx_if: str, tx_ns: str, tx_if: str, marker: bytes
) -> Packet | None:
    """(blocking) Sniff ``rx_if`` in ``rx_ns`` for a frame carrying ``marker`` while scapy sends
    one tagged with VLAN 10 on ``tx_if`` in ``tx_ns``; the frame sniffed, or None.

    (This kernel has no 8021q module, so no VLAN subinterfaces: scapy builds the tag.)"""
    with lab.inside(rx_ns):
        listener = conf.L2listen(iface=rx_if)
    sniffer = AsyncSniffer(
        opened_socket=listener,
        lfilter=lambda p: p.haslayer(Raw) and marker in bytes(p[Raw].load),
        count=1,
    )
    sniffer.start()
    try:
        with lab.inside(tx_ns):
            sendp(tagged(marker), iface=tx_if, verbose=False)
        sniffer.join(timeout=5)
    finally:
        if sniffer.running:
            sniffer.stop()
        listener.close()
    results = list(sniffer.results or [])
    return results[0] if results else None


@needs_root
@RINGS
async def test_stripped_vlan_tag_is_reinserted(ring: bool) -> None:
    """The kernel moves the tag of a frame received on a veth into the skb: a plain packet
    socket reads the frame untagged, the backend reads it as it was sent."""
    with Lab() as lab:
        ns = lab.namespace("v")
        root, end = lab.veth(ns)
        plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        plain.bind((root, 0x0003))
        plain.settimeout(2)
        backend = AfPacketBackend(root, ring=ring)
        backend.open()
        try:
            marker = b"ovsdp-strip-" + unique("m").encode()
            sent = bytes(tagged(marker))
            with lab.inside(ns):
                sendp(Ether(sent), iface=end, verbose=False)
            while marker not in (seen := plain.recv(65536)):
                pass
            assert seen == sent[:12] + sent[16:], "the kernel did not strip the tag"
            frames = wait_frames(backend, marker)
            assert frames == [sent]
        finally:
            backend.close()
            plain.close()


def wait_frames(backend: AfPacketBackend, marker: bytes, timeout: float = 2.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    found: list[bytes] = []
    while not found and time.monotonic() < deadline:
        found = [f for f in backend.read_batch(64) if marker in f]
        time.sleep(0.01)
    return found


@needs_root
@RINGS
async def test_own_transmissions_are_not_read_back(ring: bool) -> None:
    with Lab() as lab:
        ns = lab.namespace("o")
        root, _end = lab.veth(ns)
        backend = AfPacketBackend(root, ring=ring)
        backend.open()
        try:
            frame = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / IP() / UDP())
            backend.transmit([frame] * 10)
            assert backend.counters.tx == 10
            time.sleep(0.05)
            assert frame not in backend.read_batch(64)  # (the namespace's own IPv6 chatter)
        finally:
            backend.close()


@needs_root
@RINGS
async def test_partial_checksums_are_completed(ring: bool) -> None:
    """UDP from a stack with checksum offload on a veth: the frame's checksum is left partial
    (TP_STATUS_CSUMNOTREADY), as a plain packet socket shows; the backend completes it."""
    with Lab() as lab:
        ns = lab.namespace("c")
        root, end = lab.veth(ns, cidr="10.77.3.1/24")
        lab.rtnl(ns).neigh(  # a static neighbour: the datagram leaves without ARP
            "add",
            dst="10.77.3.2",
            lladdr="02:00:00:00:77:02",
            ifindex=lab.index(end, ns),
            state=0x80,
        )
        plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        plain.bind((root, 0x0003))
        plain.settimeout(2)
        backend = AfPacketBackend(root, ring=ring)
        backend.open()
        try:
            marker = b"ovsdp-csum-" + unique("m").encode()
            with lab.socket(ns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("10.77.3.1", 4000))
                sock.sendto(marker * 8, ("10.77.3.2", 4001))
            while marker not in (seen := plain.recv(65536)):
                pass
            (frame,) = wait_frames(backend, marker)
            assert frame != seen and len(frame) == len(seen)
            for data, good in ((seen, False), (frame, True)):
                parsed = Ether(data)
                claimed = parsed[UDP].chksum
                del parsed[UDP].chksum
                assert (Ether(bytes(parsed))[UDP].chksum == claimed) is good
        finally:
            backend.close()
            plain.close()


def test_complete_checksum_tcp_and_udp() -> None:
    """The fix-up on frames built here: a checksum-offloading stack leaves the pseudo-header's
    folded sum in the field; completing it gives scapy's checksum."""
    for tag in ([], [Dot1Q(vlan=5)], [Dot1Q(vlan=5, type=0x8100), Dot1Q(vlan=6)]):
        for l4, proto, field in ((TCP(sport=1, dport=2), 6, 16), (UDP(sport=1, dport=2), 17, 6)):
            packet = Ether()
            for layer in tag:
                packet = packet / layer
            packet = packet / IP(src="10.0.0.1", dst="10.0.0.2") / l4 / Raw(b"payload!" * 5)
            right = bytes(packet)
            l4_offset = 14 + 4 * len(tag) + 20
            length = len(right) - l4_offset
            pseudo = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2")
            pseudo += struct.pack("!BBH", 0, proto, length)
            partial = bytearray(right)
            struct.pack_into("!H", partial, l4_offset + field, ~inet_checksum(pseudo) & 0xFFFF)
            assert bytes(partial) != right
            assert complete_checksum(bytes(partial)) == right
    arp = bytes(Ether(type=0x0806) / (b"\x00" * 28))
    assert complete_checksum(arp) == arp  # nothing it knows: unchanged


@needs_root
@RINGS
async def test_a_frame_larger_than_a_ring_slot_is_counted(ring: bool) -> None:
    """The ring's slots are sized for the MTU at open; a frame that outgrew them (the MTU was
    raised since) is an rx error there, while recvmsg reads it whole."""
    with Lab() as lab:
        ns = lab.namespace("j")
        root, end = lab.veth(ns)
        backend = AfPacketBackend(root, ring=ring)
        backend.open()
        try:
            lab.ipr.link("set", index=lab.index(root), mtu=9000)
            lab.rtnl(ns).link("set", index=lab.index(end, ns), mtu=9000)
            marker = b"ovsdp-jumbo-" + unique("m").encode()
            big = bytes(Ether(dst="02:00:00:00:00:02") / IP() / UDP() / Raw(marker * 300))
            with lab.inside(ns):
                sendp(Ether(big), iface=end, verbose=False)
            if ring:
                deadline = time.monotonic() + 2
                while not backend.counters.rx_errors and time.monotonic() < deadline:
                    backend.read_batch(64)
                    time.sleep(0.01)
                assert backend.counters.rx_errors == 1
            else:
                assert wait_frames(backend, marker) == [big]
        finally:
            backend.close()


@needs_root
async def test_transmit_never_blocks() -> None:
    """A NIC whose queue does not drain (a slow qdisc, a small socket buffer): transmit returns
    at once, drops what does not fit and counts it."""
    with Lab() as lab:
        ns = lab.namespace("t")
        root, _end = lab.veth(ns)
        lab.slow_qdisc(root)
        backend = AfPacketBackend(root, sndbuf=4096)
        backend.open()
        try:
            frame = bytes(Ether(dst="02:00:00:00:00:02") / IP() / UDP() / Raw(b"z" * 1000))
            start = time.perf_counter()
            for _ in range(100):
                backend.transmit([frame] * 64)
            elapsed = time.perf_counter() - start
            counters = dataclasses.replace(backend.counters)
            assert counters.tx + counters.tx_dropped == 6400
            assert counters.tx_dropped > 6000, counters
            assert counters.tx_errors == 0
            assert elapsed < 1.0, f"transmit took {elapsed:.2f} s"
        finally:
            backend.close()
        assert backend.transmitted == 6400
        backend.transmit([frame])  # closed: dropped and counted, no error
        assert backend.counters.tx_dropped == counters.tx_dropped + 1


@needs_root
def test_errors_are_clear() -> None:
    missing = unique("nx")
    try:
        AfPacketBackend(missing).open()
    except NicError as exc:
        assert str(exc) == f"no interface named {missing!r}"
    else:
        raise AssertionError("opened a missing interface")
