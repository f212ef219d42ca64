"""The packet path's fused decapsulation (Pipeline._decap_fast) decides as the tunnel endpoint
(TunnelEndpoint.receive) does: for any frame from the uplink it either leaves the frame to the
endpoint, or takes it with the very inner frame and flow key the endpoint would give it; and in
a batch it takes a prefix only, so frames keep their order.
"""

from __future__ import annotations

import warnings
from typing import Any

from hypothesis import given, settings, strategies as st

from ovsdp.daemon import ServiceConfig, build_service
from ovsdp.netlink.constants import VportType
from ovsdp.vswitch.config import parse_config

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402
from scapy.packet import Raw  # noqa: E402

VTEP = "192.0.2.1"
CONFIG = f"""
[[port]]
name = "vm2"
type = "vm"
[[port]]
name = "ext"
type = "external"
[[port]]
name = "host"
type = "internal"
ipv4 = "{VTEP}/24"
"""


class Rig:
    """A datapath with vm2 and a VXLAN vport, no flows: every frame the fused path takes is a
    miss, whose key and packet are recorded instead of being sent as an upcall."""

    def __init__(self) -> None:
        service = build_service(ServiceConfig("/nonexistent", switch=parse_config(CONFIG)))
        ext = service.extension
        self.switch = service.switch
        self.pipeline = ext.pipeline
        self.dp = ext.create_datapath("dp", 0)
        ext.add_vport(self.dp, "vm2", VportType.NETDEV, (0,))
        self.vx = ext.add_vport(self.dp, "vx", VportType.VXLAN, (0,), options={"dst_port": 4789})
        self.ports: dict[int, Any] = {4789: ((self.dp, self.vx), self.vx.port_no)}
        self.missed: list[tuple[bytes, bytes]] = []
        # the seam: misses are recorded (the upcall machinery is tested elsewhere)
        record = self.missed.extend
        self.pipeline._upcall_misses = lambda _dp, _vport, misses: record(misses)  # type: ignore[method-assign,assignment]

    def fused(self, frames: list[bytes]) -> int:
        self.missed.clear()
        return self.pipeline._decap_fast(frames, self.ports)

    def endpoint(self, frames: list[bytes]) -> list[tuple[bytes, bytes]]:
        decapsulated, _rest, _consumed = self.pipeline.tunnel.receive(frames, self.ports)
        return decapsulated.get((self.dp, self.vx), [])


RIG = Rig()


def outer(inner: bytes, **ip: Any) -> bytes:
    fields: dict[str, Any] = {"src": "192.0.2.9", "dst": VTEP, "tos": 4, "ttl": 9}
    fields.update(ip)
    return bytes(
        Ether(src="02:00:00:00:00:09", dst="00:15:5d:00:00:20")
        / IP(**fields)
        / UDP(sport=50001, dport=4789, chksum=0)
        / VXLAN(flags=0x08, vni=42)
        / Raw(inner)
    )


def inner_tcp(options: bytes = b"", flags: str = "S") -> bytes:
    return bytes(
        Ether(src="00:15:5d:00:00:01", dst="00:15:5d:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2", tos=8, ttl=30)
        / TCP(sport=1234, dport=80, flags=flags, options=[("NOP", None)] * len(options))
        / Raw(b"data")
    )


def inner_udp(size: int = 30) -> bytes:
    return bytes(
        Ether(src="00:15:5d:00:00:01", dst="00:15:5d:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=7, dport=9)
        / Raw(b"u" * size)
    )


BASES = [
    outer(inner_tcp()),
    outer(inner_tcp(b"1234", "SA")),
    outer(inner_udp()),
    outer(inner_udp(0)),  # 42 bytes: shorter than the fused path reads
]


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(BASES),
    st.lists(st.tuples(st.integers(0, 110), st.integers(0, 255)), max_size=3),
    st.integers(0, 80),
)
def test_the_fused_path_takes_what_the_endpoint_would_decapsulate_alike(
    base: bytes, mutations: list[tuple[int, int]], cut: int
) -> None:
    frame = bytearray(base)
    for offset, value in mutations:
        if offset < len(frame):
            frame[offset] = value
    data = bytes(frame[: max(0, len(frame) - cut)])
    taken = RIG.fused([data])
    assert taken in (0, 1)
    if taken:
        assert RIG.missed == RIG.endpoint([data])
    else:
        assert RIG.missed == []


def test_common_frames_take_the_fused_path() -> None:
    for base in BASES[:3]:
        assert RIG.fused([base]) == 1
        assert RIG.missed == RIG.endpoint([base])
    # an inner frame shorter than the fused path's fixed read is the endpoint's
    assert RIG.fused([BASES[3]]) == 0


def test_a_batch_is_taken_up_to_its_first_other_frame() -> None:
    good = BASES[0]
    fragment = outer(inner_udp(), flags="MF")
    other_port = good[:36] + b"\x12\xb6" + good[38:]
    for odd in (fragment, other_port, good[:60]):
        assert RIG.fused([good, good, odd, good]) == 2
        assert len(RIG.missed) == 2
