"""The packet path through real connections: a datapath with ports, flows, frames, upcalls.

:class:`Env` is a :class:`~datapath_support.Harness` with a datapath ``dp0`` holding the switch
ports vm1, vm2 and vm3 (port numbers 1, 2, 3), a controller connection (``env.c``: flow and packet
requests) and a handler connection (``env.handler``: the upcall PID of the datapath and of every
port).  Keys and actions are written as OVS text (``userspace.odp``).  :func:`flow_env` checks
the completion invariant of docs/datapath.md section 5 when the scenario ends: the switch and the
extension have nothing outstanding (:func:`check_idle`, for any :class:`Harness`).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from datapath_support import Client, Harness

from ovsdp.netlink.constants import NLM_F_ECHO, FlowCmd, PacketCmd
from ovsdp.netlink.message import GenlMessage
from userspace.odp import parse_actions, parse_key

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402

FLOW = "ovs_flow"
PACKET = "ovs_packet"

MAC = {
    "vm1": "00:15:5d:00:00:01",
    "vm2": "00:15:5d:00:00:02",
    "vm3": "00:15:5d:00:00:03",
    "ext": "00:15:5d:00:00:10",
    "host": "00:15:5d:00:00:20",
}

# The kernel's order of the key attributes it emits (reference section 3.5).
KERNEL_KEY_ORDER = [
    "recirc_id",
    "dp_hash",
    "priority",
    "tunnel",
    "in_port",
    "skb_mark",
    "ct_state",
    "ct_zone",
    "ct_mark",
    "ct_labels",
    "ct_orig_tuple_ipv4",
    "ct_orig_tuple_ipv6",
    "ethernet",
    "ethertype",
    "vlan",
    "encap",
    "ipv4",
    "ipv6",
    "ipv6_exthdrs",
    "arp",
    "mpls",
    "tcp",
    "tcp_flags",
    "udp",
    "sctp",
    "icmp",
    "icmpv6",
    "nd",
]


def in_kernel_order(names: Iterable[str]) -> bool:
    """Whether key attribute names come in the kernel's order (ETHERTYPE may come twice around
    a VLAN: the TPID before VLAN, the inner type inside ENCAP)."""
    positions = [KERNEL_KEY_ORDER.index(n) for n in names]
    return positions == sorted(positions)


def key(text: str) -> dict[str, Any]:
    """The key of an OVS key text (``in_port(1),eth(...),...``)."""
    return parse_key(text)[0]


def key_mask(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Key and mask of an OVS key text (fields without ``/mask`` are exact)."""
    return parse_key(text)


def actions(text: str) -> list[tuple[str, Any]]:
    """The action list of an OVS actions text (``""``: drop)."""
    return parse_actions(text) if text else []


# -- frames --------------------------------------------------------------------------------------


def eth(src: str = "vm1", dst: str = "vm2") -> Packet:
    return Ether(src=MAC.get(src, src), dst=MAC.get(dst, dst))


def udp_frame(
    sport: int = 1000,
    dport: int = 2000,
    *,
    src: str = "vm1",
    dst: str = "vm2",
    ip_src: str = "10.0.0.1",
    ip_dst: str = "10.0.0.2",
    ttl: int = 64,
    payload: bytes = b"x" * 18,
) -> bytes:
    return bytes(
        eth(src, dst) / IP(src=ip_src, dst=ip_dst, ttl=ttl) / UDP(sport=sport, dport=dport)
        / Raw(payload)
    )  # fmt: skip


def tcp_frame(
    sport: int = 1000,
    dport: int = 80,
    flags: str = "S",
    *,
    src: str = "vm1",
    dst: str = "vm2",
    ip_src: str = "10.0.0.1",
    ip_dst: str = "10.0.0.2",
) -> bytes:
    return bytes(
        eth(src, dst) / IP(src=ip_src, dst=ip_dst) / TCP(sport=sport, dport=dport, flags=flags)
    )


def udp_key_text(
    in_port: int = 1,
    sport: int = 1000,
    dport: int = 2000,
    *,
    recirc_id: int = 0,
    src: str = "vm1",
    dst: str = "vm2",
    ip_src: str = "10.0.0.1",
    ip_dst: str = "10.0.0.2",
    ttl: int = 64,
) -> str:
    """The exact key text of :func:`udp_frame` received on ``in_port`` (recirc_id exact, as
    OVS userspace always sends it)."""
    return (
        f"recirc_id({recirc_id}),in_port({in_port}),"
        f"eth(src={MAC.get(src, src)},dst={MAC.get(dst, dst)}),"
        f"eth_type(0x0800),ipv4(src={ip_src},dst={ip_dst},proto=17,tos=0,ttl={ttl},frag=no),"
        f"udp(src={sport},dst={dport})"
    )


IPV4_ANY = "ipv4(src=0.0.0.0/0.0.0.0,dst=0.0.0.0/0.0.0.0,proto=0/0,tos=0/0,ttl=0/0)"
"""An IPv4 key attribute with an all-zero mask (the kernel wants one under eth_type 0x0800)."""


def l2_megaflow_text(
    in_port: int = 1, dst: str = "vm2", eth_type: int = 0x0800, *, meta: str = "recirc_id(0)"
) -> str:
    """A megaflow on metadata (``meta``), in_port, Ethernet destination and type; source and L3
    wildcarded."""
    text = (
        f"{meta + ',' if meta else ''}in_port({in_port}),"
        f"eth(src=00:00:00:00:00:00/00:00:00:00:00:00,"
        f"dst={MAC.get(dst, dst)}),eth_type({eth_type:#06x})"
    )
    return text + ("," + IPV4_ANY if eth_type == 0x0800 else "")


# -- the environment -----------------------------------------------------------------------------


class Env:
    """A datapath dp0 with vm1, vm2, vm3 in a fresh service; see the module docstring."""

    def __init__(self, h: Harness, ports: Iterable[str] = ("vm1", "vm2", "vm3")) -> None:
        self.h = h
        self.c: Client = h.client()
        self.handler: Client = h.client()
        reply = self.c.dp_new("dp0", self.handler.pid)
        assert reply is not None and reply.dp_ifindex is not None
        self.dp_name = "dp0"
        self.ifindex: int = reply.dp_ifindex
        self.port_no: dict[str, int] = {}
        for name in ports:
            self.add_port(name)

    @property
    def switch(self) -> Any:
        return self.h.switch

    @property
    def pipeline(self) -> Any:
        return self.h.extension.pipeline

    def add_port(self, name: str, pids: Iterable[int] | None = None, **attrs: Any) -> int:
        pids = [self.handler.pid] if pids is None else list(pids)
        reply = self.c.vport_new(self.ifindex, name, pids=pids, **attrs)
        assert reply is not None
        port_no: int = reply.attrs["port_no"]
        self.port_no[name] = port_no
        return port_no

    # -- ovs_flow -----------------------------------------------------------------------------

    def flow(
        self,
        cmd: int,
        attrs: dict[str, Any],
        *,
        flags: int = NLM_F_ECHO,
        client: Client | None = None,
        dp_ifindex: int | None = None,
    ) -> list[GenlMessage]:
        """One ovs_flow request; its replies."""
        ifindex = self.ifindex if dp_ifindex is None else dp_ifindex
        return (client or self.c).transact(FLOW, cmd, attrs, flags=flags, dp_ifindex=ifindex)

    def put(
        self,
        key_text: str,
        actions_text: str = "",
        *,
        ufid: bytes | None = None,
        mask: bool = True,
        flags: int = NLM_F_ECHO,
        **extra: Any,
    ) -> dict[str, Any]:
        """OVS_FLOW_CMD_NEW from text (``mask=False``: no MASK attribute); the reply's attrs."""
        k, m = key_mask(key_text)
        attrs: dict[str, Any] = {"key": k, "actions": actions(actions_text), **extra}
        if mask:
            attrs["mask"] = m
        if ufid is not None:
            attrs["ufid"] = ufid
        replies = self.flow(FlowCmd.NEW, attrs, flags=flags)
        return replies[0].attrs if replies else {}

    def get(self, key_text: str | None = None, *, ufid: bytes | None = None, **extra: Any) -> Any:
        return self.flow(FlowCmd.GET, self._ident(key_text, ufid, extra))[0].attrs

    def delete(self, key_text: str | None = None, *, ufid: bytes | None = None) -> Any:
        replies = self.flow(FlowCmd.DEL, self._ident(key_text, ufid, {}))
        return replies[0].attrs if replies else None

    def set(self, key_text: str | None = None, *, ufid: bytes | None = None, **extra: Any) -> Any:
        return self.flow(FlowCmd.SET, self._ident(key_text, ufid, extra))[0].attrs

    @staticmethod
    def _ident(key_text: str | None, ufid: bytes | None, extra: dict[str, Any]) -> dict[str, Any]:
        attrs = dict(extra)
        if key_text is not None:
            attrs["key"] = key(key_text)
        if ufid is not None:
            attrs["ufid"] = ufid
        return attrs

    def dump(self, ufid_flags: int | None = None, dp_ifindex: int | None = None) -> list[Any]:
        attrs = {} if ufid_flags is None else {"ufid_flags": ufid_flags}
        ifindex = self.ifindex if dp_ifindex is None else dp_ifindex
        return [m.attrs for m in self.c.dump(FLOW, FlowCmd.GET, attrs, dp_ifindex=ifindex)]

    # -- ovs_packet ---------------------------------------------------------------------------

    def execute(
        self,
        frame: bytes,
        key_text: str,
        acts: str | list[Any],
        *,
        client: Client | None = None,
        dp_ifindex: int | None = None,
        **extra: Any,
    ) -> list[GenlMessage]:
        """OVS_PACKET_CMD_EXECUTE (actions as text or as a list)."""
        attrs = {
            "packet": frame,
            "key": key(key_text),
            "actions": actions(acts) if isinstance(acts, str) else acts,
            **extra,
        }
        ifindex = self.ifindex if dp_ifindex is None else dp_ifindex
        return (client or self.c).transact(PACKET, PacketCmd.EXECUTE, attrs, dp_ifindex=ifindex)

    # -- traffic ----------------------------------------------------------------------------

    def inject(self, port: str, frames: Iterable[bytes]) -> None:
        """Frames as if ``port``'s NIC received them, in one batch."""
        self.h.call(self.switch.receive, self.switch.port(port), list(frames))

    def take(self, port: str) -> list[bytes]:
        """What ``port``'s memory NIC received (removed)."""
        frames: list[bytes] = self.h.call(lambda: self.switch.port(port).nic.backend.take())
        return frames

    def take_all(self, ports: Iterable[str] = ("vm1", "vm2", "vm3", "ext", "host")) -> dict:
        """What each of ``ports`` received (a port the switch does not have: nothing)."""
        present = self.h.call(lambda: set(self.switch.by_name))
        return {p: self.take(p) if p in present else [] for p in ports}

    def upcalls(
        self, count: int, client: Client | None = None, timeout: float = 5
    ) -> list[GenlMessage]:
        """Exactly ``count`` upcalls for a connection (the handler's by default), and no more."""
        sock = client or self.handler
        out: list[GenlMessage] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for msg in sock.recv(timeout=max(0.0, deadline - time.monotonic())):
                assert isinstance(msg, GenlMessage), msg
                out.append(msg)
        assert len(out) >= count, f"{len(out)} upcalls, expected {count}"
        out.extend(sock.events())  # anything else queued before now
        assert len(out) == count, f"{len(out)} upcalls, expected {count}"
        return out

    def closed_pid(self) -> int:
        """The PID of a connection that was opened and closed (the service has forgotten it)."""
        client = Client(self.h.path)
        pid = client.pid
        client.close()
        deadline = time.monotonic() + 10
        while self.h.call(lambda: pid in self.h.service.device.connections):
            assert time.monotonic() < deadline, "the service did not see the close"
            time.sleep(0.01)
        return pid

    def no_upcalls(self, client: Client | None = None) -> None:
        assert (client or self.handler).events() == []

    # -- state ------------------------------------------------------------------------------

    def dp_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = self.c.dp_get(self.dp_name).attrs
        return attrs

    def stats(self) -> Any:
        """The datapath's ovs_dp_stats (n_hit, n_missed, n_lost, n_flows)."""
        return self.dp_attrs()["stats"]

    def vport(self, name: str) -> dict[str, Any]:
        attrs: dict[str, Any] = self.c.vport_get(self.ifindex, name).attrs
        return attrs

    def counters(self) -> dict[str, int]:
        """The extension's and the switch's counters that frames without a place end in."""
        return packet_counters(self.h)

    def check_idle(self) -> None:
        """Nothing outstanding: every frame completed to the switch, every copy released."""
        check_idle(self.h)


def packet_counters(h: Harness) -> dict[str, int]:
    """The switch's and the extension's packet counters of ``h``'s service (read in its
    thread, so between two of its steps)."""

    def snap() -> dict[str, int]:
        p = h.extension.pipeline
        return {
            "switch_outstanding": h.switch.outstanding,
            "pipeline_outstanding": p.outstanding,
            "created": p.created,
            "released": p.released,
            "unbound_rx": p.unbound_rx,
            "output_no_port": p.output_no_port,
            "short_frames": p.short_frames,
            "recirc_limit_drops": p.recirc_limit_drops,
        }

    result: dict[str, int] = h.call(snap)
    return result


def check_idle(h: Harness) -> None:
    """The completion invariant (docs/datapath.md section 5) once traffic has stopped: every
    switch frame completed to the switch, every packet the extension created released."""
    counters = packet_counters(h)
    assert counters["switch_outstanding"] == 0, counters
    assert counters["pipeline_outstanding"] == 0, counters


@contextlib.contextmanager
def flow_env(ports: Iterable[str] = ("vm1", "vm2", "vm3"), **harness: Any) -> Iterator[Env]:
    """An :class:`Env` in a fresh service; the completion invariant is checked at the end."""
    with Harness(**harness) as h:
        env = Env(h, ports)
        yield env
        env.check_idle()
