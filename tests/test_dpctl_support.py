"""Helpers for the ovsdp-dpctl tests: the CLI run in-process against a :class:`Harness`, frames
to inject, and the ``ovs`` package's parser as the oracle for dump-flows lines.

(A module of helpers, named so that it sits with the tests it serves; it has no tests.)
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from datapath_support import Harness
from flow_support import check_idle as check_idle  # the completion invariant, for dpctl tests

from ovsdp.netlink.constants import DpCmd
from userspace.dpctl import run

warnings.filterwarnings("ignore", module="scapy")
from ovs.flow.odp import ODPFlow  # noqa: E402
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Dot1Q, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(sys.executable), "ovsdp-dpctl")
"""The installed console script (``pip install -e .`` puts it next to the interpreter)."""
OVS_SCRIPT = os.path.join(os.path.dirname(sys.executable), "ovs-dpctl")
"""The same entry point installed under ovs-dpctl's name (for scripts written for it)."""

MAC = {
    "vm1": "00:15:5d:00:00:01",
    "vm2": "00:15:5d:00:00:02",
    "vm3": "00:15:5d:00:00:03",
}

UDP_KEY = (
    "in_port(1),eth(src=00:15:5d:00:00:01,dst=00:15:5d:00:00:02),eth_type(0x0800),"
    "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),udp(src=1000,dst=2000)"
)
"""The exact key of :func:`udp_frame` from vm1 (port 1)."""


@dataclass
class Out:
    """What one run printed, and its exit status."""

    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


class TtyText(io.StringIO):
    """A text stream that says it is a terminal (for the progress line)."""

    def isatty(self) -> bool:
        return True


class Dpctl:
    """``ovsdp-dpctl --socket PATH ARGS`` run in this process."""

    def __init__(self, h: Harness) -> None:
        self.h = h

    def __call__(self, *args: str, stdin: str = "", tty: bool = False) -> Out:
        out = io.StringIO()
        err: io.StringIO = TtyText() if tty else io.StringIO()
        rc = run(["--socket", self.h.path, *args], stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return Out(rc, out.getvalue(), err.getvalue())

    def ok(self, *args: str, stdin: str = "") -> Out:
        """Run and check it succeeded without a word on standard error."""
        result = self(*args, stdin=stdin)
        assert result.rc == 0 and result.err == "", result
        return result

    def flows(self, *args: str, every: int = 1) -> list[str]:
        """``dump-flows ARGS`` lines, checked with the ``ovs`` package's parser (every one, or
        every ``every``-th of a big dump)."""
        lines = self.ok("dump-flows", *args).lines
        for line in lines[::every]:
            check_odp_flow(line)
        return lines


@pytest.fixture(name="h")
def harness_fixture() -> Iterator[Harness]:
    """The service, in a thread (import this to use ``h`` in a test)."""
    with Harness() as harness:
        yield harness


@pytest.fixture(name="dpctl")
def dpctl_fixture(h: Harness) -> Dpctl:
    """The CLI on ``h`` (import this to use ``dpctl`` in a test)."""
    return Dpctl(h)


def check_odp_flow(line: str) -> ODPFlow:
    """Parse a dump-flows line with OVS's own parser; it must find statistics and actions."""
    flow = ODPFlow(line)
    assert "packets" in flow.info and "bytes" in flow.info and "used" in flow.info, line
    assert flow.match is not None and flow.actions is not None, line
    return flow


# -- traffic -------------------------------------------------------------------------------------


def udp_frame(sport: int = 1000, dport: int = 2000, payload: bytes = b"x" * 18) -> bytes:
    return bytes(
        Ether(src=MAC["vm1"], dst=MAC["vm2"])
        / IP(src="10.0.0.1", dst="10.0.0.2", ttl=64)
        / UDP(sport=sport, dport=dport)
        / Raw(payload)
    )


def tcp_frame(flags: str = "S", dport: int = 80) -> bytes:
    return bytes(
        Ether(src=MAC["vm1"], dst=MAC["vm2"])
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=1000, dport=dport, flags=flags)
    )


def vlan_frame(vid: int = 10) -> bytes:
    return bytes(
        Ether(src=MAC["vm1"], dst=MAC["vm2"])
        / Dot1Q(vlan=vid)
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1, dport=2)
    )


def inject(h: Harness, port: str, frames: Iterable[bytes]) -> None:
    """Frames as if ``port``'s NIC received them, in one batch."""
    h.call(h.switch.receive, h.switch.port(port), list(frames))


def take(h: Harness, port: str) -> list[bytes]:
    """What ``port``'s memory NIC received (removed)."""
    frames: list[bytes] = h.call(lambda: h.switch.port(port).nic.backend.take())
    return frames


def dp_attrs(h: Harness, name: str = "dp0") -> dict[str, Any]:
    """A datapath's GET reply attributes."""
    client = h.client()
    attrs: dict[str, Any] = client.transact("ovs_datapath", DpCmd.GET, {"name": name})[0].attrs
    return attrs
