"""ovsdp and the Linux kernel's own vxlan device exchange real traffic.

Three namespaces and the service (run in the test's trio loop, as ``ovsdp serve`` runs it):

* **V**, the VM: behind a veth whose root end is ovsdp's VM port (afpacket); overlay address
  10.0.0.1/24.
* **R**, the remote host: behind a veth whose root end is ovsdp's external port (afpacket, the
  uplink); underlay address 192.0.2.2/24 on its end, and a kernel vxlan device (VNI 5, local
  192.0.2.2, remote 192.0.2.1, UDP port 4789) with overlay address 10.0.0.2/24.
* **H**, the host's stack behind ovsdp's internal port (a TAP device ovsdp creates, moved into
  H): it holds the VTEP address 192.0.2.1/24, as a Hyper-V host's vNIC does, and answers R's
  ARP requests for it. ovsdp's VTEP resolves R by its own ARP (the neighbour table).

One datapath: VM port -> ``set(tunnel(tun_id=0x5,dst=192.0.2.2,...))`` + the vxlan vport;
``tunnel(tun_id=0x5,src=192.0.2.2,dst=192.0.2.1)`` from the vxlan vport -> VM port; ARP between
the external and internal ports. Overlay ARP goes through the tunnel flows like everything else.

Checked: ICMP echo between V and R, both ways through the kernel's vxlan device, with ovsdp's
and the kernel's counters; a large echo over an underlay MTU smaller than the overlay's, so the
outer packets are fragmented both ways (ovsdp fragments, R reassembles; R fragments, ovsdp
reassembles before decap); the flow dump in ovs-dpctl's syntax from ``ovsdp-dpctl`` as a process.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from netns_support import IS_ROOT, Lab, LoopService, needs_root, ping, unique
from ovs.flow.odp import ODPFlow
from pyroute2.netlink.exceptions import NetlinkError

from ovsdp.nic import AfPacketBackend, TapBackend
from ovsdp.tunnel.endpoint import TunnelEndpoint, endpoint_of
from userspace.dpif import Dpif
from userspace.odp import parse_actions, parse_key

pytestmark = needs_root

DPCTL = os.path.join(os.path.dirname(sys.executable), "ovsdp-dpctl")

VNI = 5
VTEP, REMOTE = "192.0.2.1", "192.0.2.2"  # the underlay: ovsdp's VTEP, R's end of the veth
V_IP, R_IP = "10.0.0.1", "10.0.0.2"  # the overlay
HOST_MAC = "00:15:5d:0e:00:20"  # the internal port's: the VTEP's MAC, the TAP device's in H
VXLAN_DEV = "vx5"  # in R (a private namespace: the name cannot collide)
DATAPATH = "ovx"

TUNNEL_ACTION = f"set(tunnel(tun_id=0x{VNI:x},dst={REMOTE},ttl=64,flags(key)))"
"""The encap action as ovs-dpctl prints it (and as it is put)."""

CONFIG = """
[[port]]
name = "vm1"
type = "vm"
backend = "afpacket"
device = "{vm_dev}"

[[port]]
name = "ext"
type = "external"
backend = "afpacket"
device = "{ext_dev}"
mtu = {mtu}

[[port]]
name = "host"
type = "internal"
mac = "{host_mac}"
mtu = {mtu}
ipv4 = "{vtep}/24"
backend = "tap"
device = "{tap}"
"""


@functools.cache
def kernel_vxlan_missing() -> str | None:
    """Why the kernel's vxlan device cannot be used here (None: it can), probed once in a
    throwaway namespace."""
    if not IS_ROOT:
        return "needs root (network namespaces, veth, TAP, AF_PACKET, the kernel's vxlan device)"
    with Lab(prefix="ovx") as lab:
        ns = lab.namespace("p")
        try:
            lab.rtnl(ns).link("add", ifname=VXLAN_DEV, kind="vxlan", vxlan_id=VNI, vxlan_port=4789)
        except NetlinkError as exc:
            return f"the kernel cannot create a vxlan link (no vxlan module?): {exc}"
    return None


@pytest.fixture(autouse=True)
def kernel_vxlan() -> None:
    reason = kernel_vxlan_missing()
    if reason is not None:
        pytest.skip(reason)


# -- the topology --------------------------------------------------------------------------------


@dataclass
class Topology:
    lab: Lab
    svc: LoopService
    v: str  # the VM's namespace
    r: str  # the remote host's namespace
    h: str  # the host stack behind the internal port
    v_end: str  # V's end of its veth
    r_end: str  # R's end of its veth (the underlay)
    ports: dict[str, int]  # vport numbers: vm1, ext, host, vx

    @property
    def endpoint(self) -> TunnelEndpoint:
        return endpoint_of(self.svc.switch)

    def tunnel_stats(self) -> dict[str, int]:
        return self.endpoint.stats()

    def kernel_vxlan_stats(self) -> dict[str, int]:
        """The IFLA_STATS64 of R's vxlan device."""
        rtnl = self.lab.rtnl(self.r)
        (link,) = rtnl.get_links(self.lab.index(VXLAN_DEV, self.r))
        return dict(link.get("IFLA_STATS64"))

    def kernel_fdb(self, mac: bytes) -> str | None:
        """Where R's vxlan device sends frames for ``mac`` (its forwarding database)."""
        index = self.lab.index(VXLAN_DEV, self.r)
        for entry in self.lab.rtnl(self.r).get_neighbours(family=socket.AF_BRIDGE):
            if entry["ifindex"] == index and entry.get("NDA_LLADDR") == mac_text(mac):
                dst: str | None = entry.get("NDA_DST")
                return dst
        return None

    def ip_stats(self, ns: str) -> dict[str, int]:
        """The ``Ip:`` counters of /proc/net/snmp in ``ns`` (ReasmOKs, FragCreates, ...)."""
        with self.lab.inside(ns), open("/proc/thread-self/net/snmp", encoding="ascii") as f:
            names, values = (line.split()[1:] for line in f if line.startswith("Ip:"))
        return dict(zip(names, map(int, values), strict=True))


def install_flows(path: str) -> dict[str, int]:
    """(blocking) The datapath, its vports and the four megaflows; the vport numbers."""
    dpif = Dpif.open(DATAPATH, create=True, path=path)
    try:
        ports = {
            "vm1": dpif.port_add("vm1"),
            "ext": dpif.port_add("ext"),
            "host": dpif.port_add("host", "internal"),
            "vx": dpif.port_add("vx", "vxlan", options={"dst_port": 4789}),
        }
        vm1, ext, host, vx = ports["vm1"], ports["ext"], ports["host"], ports["vx"]
        flows = {
            # everything from the VM, overlay ARP included, into the tunnel to R
            f"in_port({vm1}),eth()": f"{TUNNEL_ACTION},{vx}",
            # everything R's vxlan device sends on VNI 5, to the VM (a tunnel key needs a TTL,
            # as the kernel's does: any)
            f"tunnel(tun_id=0x{VNI:x},src={REMOTE},dst={VTEP},ttl=0/0,flags(+key)),"
            f"in_port({vx}),eth()": f"{vm1}",
            # underlay ARP between the wire and the host stack (R asks for the VTEP's MAC)
            f"in_port({ext}),eth(),eth_type(0x0806),arp()": f"{host}",
            f"in_port({host}),eth(),eth_type(0x0806),arp()": f"{ext}",
        }
        for key_text, actions in flows.items():
            key, mask = parse_key(key_text)
            dpif.flow_put(key, mask, parse_actions(actions))
        return ports
    finally:
        dpif.sock.close()


def sysctl(lab: Lab, ns: str, path: str, value: str) -> None:
    """Write /proc/sys/``path`` in ``ns`` (net sysctls are per namespace)."""
    with lab.inside(ns), open(f"/proc/sys/{path}", "w", encoding="ascii") as f:
        f.write(value)


def vport_stats(path: str, port_no: int) -> Any:
    """(blocking) A vport's ovs_vport_stats, as ``ovsdp-dpctl show -s`` reads them."""
    dpif = Dpif.open(DATAPATH, path=path)
    try:
        return dpif.port_query_by_number(port_no).stats
    finally:
        dpif.sock.close()


def set_mtu(lab: Lab, ifname: str, ns: str | None, mtu: int) -> None:
    lab.rtnl(ns).link("set", index=lab.index(ifname, ns), mtu=mtu)


@contextlib.asynccontextmanager
async def vxlan_topology(underlay_mtu: int = 1500) -> AsyncIterator[Topology]:
    """V, R and H around a running service with the flows installed; the overlay MTU is 1500
    everywhere, the underlay's (R's veth, ovsdp's external port and its veth) ``underlay_mtu``.
    Everything goes away at the end, failed or not."""
    with Lab(prefix="ovx") as lab:
        v, r, h = lab.namespace("v"), lab.namespace("r"), lab.namespace("h")
        vm_dev, v_end = lab.veth(v, cidr=f"{V_IP}/24")
        # V asks again for 10.0.0.2 after 0.1 s, not 1 s: its first request is dropped while
        # ovsdp's VTEP resolves R (neighbour_miss)
        sysctl(lab, v, f"net/ipv4/neigh/{v_end}/retrans_time_ms", "100")
        ext_dev, r_end = lab.veth(r, cidr=f"{REMOTE}/24")
        set_mtu(lab, ext_dev, None, underlay_mtu)
        set_mtu(lab, r_end, r, underlay_mtu)
        rtnl_r = lab.rtnl(r)
        rtnl_r.link(
            "add",
            ifname=VXLAN_DEV,
            kind="vxlan",
            vxlan_id=VNI,
            vxlan_local=REMOTE,
            vxlan_group=VTEP,  # a unicast "group" is iproute2's "remote"
            vxlan_port=4789,
        )
        # the overlay MTU, explicitly (no lower device: the kernel would cap it at the
        # underlay's minus 50)
        set_mtu(lab, VXLAN_DEV, r, 1500)
        lab.configure(VXLAN_DEV, r, cidr=f"{R_IP}/24")
        tap = unique("ovxt")
        svc = LoopService(
            CONFIG.format(
                vm_dev=vm_dev, ext_dev=ext_dev, mtu=underlay_mtu, host_mac=HOST_MAC, vtep=VTEP,
                tap=tap,
            )
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            await svc.start(nursery)
            try:
                assert isinstance(svc.backend("vm1"), AfPacketBackend)
                assert isinstance(svc.backend("ext"), AfPacketBackend)
                assert isinstance(svc.backend("host"), TapBackend)
                lab.move(tap, h, cidr=f"{VTEP}/24")
                ports = await trio.to_thread.run_sync(install_flows, svc.path)
                yield Topology(lab, svc, v, r, h, v_end, r_end, ports)
            finally:
                await svc.stop()


def ipv4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


# -- the tests -----------------------------------------------------------------------------------


async def test_ping_through_the_kernel_vxlan_device() -> None:
    async with vxlan_topology() as topo:
        kernel_before = topo.kernel_vxlan_stats()
        assert await ping(topo.lab, topo.v, R_IP, count=3) == 3

        stats = topo.tunnel_stats()
        # ovsdp asked for R's MAC (the first overlay ARP request was dropped meanwhile) and
        # learned it from R's kernel: the MAC of R's end of the veth
        assert stats["arp_requests"] >= 1 and stats["arp_learned"] >= 1
        r_mac = topo.lab.mac(topo.r_end, topo.r)
        ep = topo.endpoint
        assert ep.neighbours.lookup(ipv4(REMOTE), ep.clock()) == r_mac
        # encapsulated: V's ARP request and three echo requests at least; decapsulated: R's ARP
        # reply and three echo replies at least
        assert stats["encap_packets"] >= 4 and stats["decap_packets"] >= 4
        for bad in ("bad_ip", "bad_ip_csum", "bad_udp", "bad_udp_csum", "bad_vxlan", "truncated"):
            assert stats[bad] == 0, bad
        assert stats["encap_fragmented"] == stats["reasm_fragments"] == 0  # nothing that big

        # the kernel's vxlan device took ovsdp's packets in and sent the replies back
        kernel = moved(kernel_before, topo.kernel_vxlan_stats())
        assert kernel["rx_packets"] >= 4 and kernel["tx_packets"] >= 4, kernel
        assert kernel["rx_errors"] == kernel["tx_errors"] == 0, kernel
        # ... and learned V's MAC behind ovsdp's VTEP
        assert topo.kernel_fdb(topo.lab.mac(topo.v_end, topo.v)) == VTEP

        # ovsdp's vxlan vport counted the same traffic
        vx = await trio.to_thread.run_sync(vport_stats, topo.svc.path, topo.ports["vx"])
        assert vx.tx_packets >= 4 and vx.rx_packets >= 4
        assert topo.svc.switch.outstanding == 0


UNDERLAY_MTU = 1000
BIG = bytes(range(256)) * 5 + bytes(120)  # 1400 bytes: a 1428-byte IPv4 packet in the overlay


async def test_fragmented_outer_packets_both_ways() -> None:
    """Overlay MTU 1500, underlay 1000: a 1428-byte inner packet makes a 1478-byte outer one.
    Neither side sets DF (ovsdp's flow does not ask for it; Linux's vxlan leaves it clear by
    default), so ovsdp splits the request's outer packet and R's kernel reassembles it, and
    R's kernel splits the reply's outer packet and ovsdp reassembles it before decap."""
    async with vxlan_topology(UNDERLAY_MTU) as topo:
        (link,) = topo.lab.rtnl(topo.r).get_links(topo.lab.index(VXLAN_DEV, topo.r))
        assert link.get("IFLA_MTU") == 1500
        assert link.get(("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_DF")) == 0  # unset
        assert topo.svc.switch.port("ext").mtu == UNDERLAY_MTU
        assert await ping(topo.lab, topo.v, R_IP, count=1) == 1  # ARP everywhere, small
        before = topo.tunnel_stats()
        r_before = topo.ip_stats(topo.r)

        assert await ping(topo.lab, topo.v, R_IP, count=1, payload=BIG) == 1

        stats = moved(before, topo.tunnel_stats())
        r_ip = moved(r_before, topo.ip_stats(topo.r))
        # there: ovsdp sent the request as outer fragments (of at most 1000 bytes), which
        # R's kernel reassembled and decapsulated
        assert stats["encap_fragmented"] >= 1 and stats["encap_fragments"] >= 2, stats
        assert r_ip["ReasmOKs"] >= 1 and r_ip["ReasmFails"] == 0, r_ip
        # back: R's kernel fragmented the reply's outer packet; ovsdp reassembled it, then
        # decapsulated the whole VXLAN datagram
        assert r_ip["FragOKs"] >= 1 and r_ip["FragCreates"] >= 2, r_ip
        assert stats["reasm_fragments"] >= 2 and stats["reasm_reassembled"] >= 1, stats
        for bad in ("reasm_overlapped", "reasm_malformed", "reasm_tiny", "reasm_over_limit"):
            assert stats[bad] == 0, bad
        assert stats["too_big"] == 0
        # more of them; R's vxlan driver has meanwhile lowered its route's PMTU to V (recent
        # kernels do, to the underlay's MTU minus 50), so R may fragment the replies inside
        # the tunnel instead (V reassembles them): they cross in fragments either way
        before, v_before = topo.tunnel_stats(), topo.ip_stats(topo.v)
        assert await ping(topo.lab, topo.v, R_IP, count=2, payload=BIG) == 2
        stats = moved(before, topo.tunnel_stats())
        v_ip = moved(v_before, topo.ip_stats(topo.v))
        assert stats["encap_fragmented"] >= 2, stats
        assert stats["reasm_reassembled"] + v_ip["ReasmOKs"] >= 2, (stats, v_ip)
        ext = topo.svc.backend("ext").stats()
        assert ext.tx_errors == ext.rx_errors == 0, ext
        assert topo.svc.switch.outstanding == 0


async def test_flow_dump_in_ovs_syntax() -> None:
    """``ovsdp-dpctl dump-flows`` (the installed program, against the service's socket) prints
    the tunnel flows as ovs-dpctl prints the kernel's: the key as installed (no UFID: the
    unmasked key; the kernel's mask of it carries ETHERTYPE 0, hence ``eth_type(0/0x0000)``;
    a wildcarded tunnel TTL is left out), the tunnel action with the TTL the kernel always
    echoes; and both flows counted the traffic."""
    if not os.path.exists(DPCTL):
        pytest.skip("ovsdp-dpctl not installed")
    async with vxlan_topology() as topo:
        assert await ping(topo.lab, topo.v, R_IP, count=2) == 2
        result = await trio.run_process(
            [DPCTL, "dump-flows"],
            capture_stdout=True,
            capture_stderr=True,
            env=dict(os.environ, OVSDP_SOCKET=topo.svc.path),
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, b"")
        lines = result.stdout.decode().splitlines()
        vm1, vx = topo.ports["vm1"], topo.ports["vx"]
        encap_match = f"in_port({vm1}),eth(),eth_type(0/0x0000)"
        decap_match = (
            f"tunnel(tun_id=0x{VNI:x},src={REMOTE},dst={VTEP},flags(+key)),in_port({vx}),"
            "eth(),eth_type(0/0x0000)"
        )
        (encap,) = [line for line in lines if line.startswith(encap_match + ", ")]
        (decap,) = [line for line in lines if line.startswith(decap_match + ", ")]
        assert encap.endswith(f", actions:{TUNNEL_ACTION},{vx}"), encap
        assert decap.endswith(f", actions:{vm1}"), decap
        assert len(lines) == 4, lines  # and the two ARP flows

        # OVS's own parser reads them back, with the traffic counted
        flow = ODPFlow(encap)
        assert flow.info["packets"] >= 2, encap
        (set_action, output) = flow.actions
        tunnel = set_action["set"]["tunnel"]
        assert (tunnel["tun_id"].value, str(tunnel["dst"].ip), tunnel["ttl"].value) == (
            VNI,
            REMOTE,
            64,
        )
        assert tunnel["flags"] == "key" and "src" not in tunnel
        assert output == {"output": {"port": vx}}
        flow = ODPFlow(decap)
        assert flow.info["packets"] >= 2, decap
        tunnel = flow.match["tunnel"]
        assert (tunnel["tun_id"].value, str(tunnel["src"].ip), str(tunnel["dst"].ip)) == (
            VNI,
            REMOTE,
            VTEP,
        )
        assert flow.match["in_port"] == vx and flow.actions == [{"output": {"port": vm1}}]
