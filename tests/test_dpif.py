"""userspace/dpif.py against the whole service (``build_service`` in a thread: the default switch
with vm1, vm2, vm3, ext and host).

What dpif-netlink does is the reference (/work/shared/reference/ovs-netlink.md section 6):
feature negotiation when opening, the port calls, the flow put flags, batching, upcalls, port
events.  A :class:`~dpif_support.RecordingSocket` shows what went over the socket.  The fixture
checks the completion invariant (nothing outstanding) after every scenario.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import Client, Harness, expect_errno
from dpif_support import (
    RecordingSocket,
    actions,
    inject,
    key,
    key_mask,
    take,
    udp_frame,
    udp_key_text,
    ufid,
)
from flow_support import check_idle

import ovsdp.datapath.datapath as datapath_module
import ovsdp.datapath.extension as extension_module
from ovsdp.netlink.constants import (
    NLM_F_ECHO,
    OVS_DP_F_UNSUPPORTED,
    DpCmd,
    DpFeature,
    PacketCmd,
    VportCmd,
    VportType,
)
from ovsdp.netlink.message import GenlMessage
from userspace.dpif import (
    DP,
    OVSP_NONE,
    VPORT,
    DpFlow,
    Dpif,
    Execute,
    FlowDel,
    FlowGet,
    FlowPut,
    FlowStats,
    PortEvent,
    PortMonitor,
)
from userspace.netlink_socket import NetlinkSocket, Request

UNALIGNED = int(DpFeature.UNALIGNED)
VPORT_PIDS = int(DpFeature.VPORT_PIDS)
PER_CPU = int(DpFeature.DISPATCH_UPCALL_PER_CPU)
TC = int(DpFeature.TC_RECIRC_SHARING)
BIT31 = OVS_DP_F_UNSUPPORTED


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness
        check_idle(harness)  # after the scenario's traffic: nothing outstanding


@pytest.fixture
def c(h: Harness) -> Client:
    return h.client()


@pytest.fixture
def rec(h: Harness) -> Iterator[RecordingSocket]:
    sock = RecordingSocket(h.path)
    yield sock
    sock.close()


@pytest.fixture
def dpif(h: Harness, rec: RecordingSocket) -> Dpif:
    """dp0, opened (created) through the recording socket."""
    dpif = Dpif.open("dp0", create=True, sock=rec)
    rec.log.clear()
    rec.batches.clear()
    return dpif


def features_sent(rec: RecordingSocket) -> list[tuple[str, int, int]]:
    """(command, USER_FEATURES, errno) of each ovs_datapath request that carried features."""
    return [
        (DpCmd(cmd).name, attrs["user_features"], code)
        for cmd, attrs, code in rec.requests(DP)
        if "user_features" in attrs
    ]


def dp_features(h: Harness, name: str) -> int:
    features: int = h.call(lambda: h.extension.datapaths[name].user_features)
    return features


# -- opening and negotiation ----------------------------------------------------------------------


def test_create_negotiates_per_cpu_dispatch_like_dpif_netlink(
    h: Harness, rec: RecordingSocket
) -> None:
    dpif = Dpif.open("dp0", create=True, sock=rec)
    assert features_sent(rec) == [
        ("NEW", UNALIGNED | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),  # the datapath checks bits
        ("NEW", UNALIGNED | PER_CPU, 0),  # per-CPU dispatch preferred
        ("SET", UNALIGNED | PER_CPU | TC, errno.EOPNOTSUPP),  # no tc here: ignored
    ]
    new = rec.requests(DP)[0][1]
    assert new["upcall_pid"] == 0 and new["name"] == "dp0"
    assert dpif.user_features == UNALIGNED | PER_CPU == dp_features(h, "dp0")
    assert dpif.per_cpu and not dpif.vport_pids
    assert dpif.name == "dp0"
    assert dpif.dp_ifindex == h.datapath("dp0").ifindex
    assert Dpif.enumerate(rec) == ["dp0"]


def test_a_second_create_opens_the_existing_datapath(h: Harness, rec: RecordingSocket) -> None:
    first = Dpif.open("dp0", create=True, sock=rec)
    first.port_add("vm1")
    first.flow_put(*key_mask(udp_key_text(1)), actions("2"))
    rec.log.clear()
    second = Dpif.open("dp0", create=True, sock=rec)
    assert features_sent(rec) == [
        # EOPNOTSUPP before EEXIST: the features are checked before the name
        ("NEW", UNALIGNED | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),
        ("NEW", UNALIGNED | PER_CPU, errno.EEXIST),
        # then open: GET, and SETs with the existing features
        ("SET", UNALIGNED | PER_CPU | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),
        ("SET", UNALIGNED | PER_CPU, 0),
        ("SET", UNALIGNED | PER_CPU | TC, errno.EOPNOTSUPP),
    ]
    assert [DpCmd(cmd).name for cmd, _a, _c in rec.requests(DP)][2] == "GET"
    assert second.dp_ifindex == first.dp_ifindex
    assert second.user_features == UNALIGNED | PER_CPU
    # the same datapath: its port and flow are still there
    assert sorted(p.name for p in second.port_dump()) == ["dp0", "vm1"]
    assert second.get_stats().n_flows == 1
    assert Dpif.enumerate(rec) == ["dp0"]


def test_open_without_create(h: Harness, c: Client, rec: RecordingSocket) -> None:
    err = expect_errno(errno.ENODEV, Dpif.open, "dp0", sock=rec)
    assert "dp0" in str(err)
    assert Dpif.enumerate(rec) == []
    # a datapath an older ovs-vswitchd left in per-vport mode
    reply = c.dp_new("dp0", user_features=UNALIGNED | VPORT_PIDS)
    assert reply is not None
    rec.log.clear()
    dpif = Dpif.open("dp0", sock=rec)
    assert next(DpCmd(cmd).name for cmd, _a, _c in rec.requests(DP)) == "GET"
    assert features_sent(rec) == [
        ("SET", UNALIGNED | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),
        # dpif-netlink asks for per-CPU dispatch instead of per-vport PIDs, not on top of them
        ("SET", UNALIGNED | PER_CPU, 0),
        ("SET", UNALIGNED | PER_CPU | TC, errno.EOPNOTSUPP),
    ]
    assert dpif.user_features == UNALIGNED | PER_CPU == dp_features(h, "dp0")
    assert dpif.dp_ifindex == reply.dp_ifindex


def test_open_with_a_path_makes_its_own_socket(h: Harness) -> None:
    dpif = Dpif.open("dp0", create=True, path=h.path)
    assert isinstance(dpif.sock, NetlinkSocket) and dpif.sock.path == h.path
    assert Dpif.open("dp0", path=h.path).dp_ifindex == dpif.dp_ifindex
    dpif.sock.close()


@pytest.fixture
def no_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The datapath of a kernel older than per-CPU dispatch (5.x before 5.14)."""
    monkeypatch.setattr(datapath_module, "SUPPORTED_FEATURES", DpFeature(UNALIGNED | VPORT_PIDS))


@pytest.fixture
def no_feature_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A datapath that ignores unknown feature bits (kernels before 5.0)."""
    monkeypatch.setattr(extension_module, "check_features", lambda features: None)


def test_negotiation_falls_back_to_per_vport_pids(
    no_per_cpu: None, h: Harness, rec: RecordingSocket
) -> None:
    dpif = Dpif.open("dp0", create=True, sock=rec)
    assert features_sent(rec) == [
        ("NEW", UNALIGNED | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),
        ("NEW", UNALIGNED | PER_CPU, errno.EOPNOTSUPP),
        ("NEW", UNALIGNED | VPORT_PIDS, 0),
        ("SET", UNALIGNED | VPORT_PIDS | TC, errno.EOPNOTSUPP),
    ]
    assert dpif.user_features == UNALIGNED | VPORT_PIDS == dp_features(h, "dp0")
    assert not dpif.per_cpu and dpif.vport_pids
    # and opening it again negotiates the same way with SET
    rec.log.clear()
    again = Dpif.open("dp0", sock=rec)
    assert features_sent(rec) == [
        ("SET", UNALIGNED | VPORT_PIDS | BIT31, errno.EOPNOTSUPP),
        ("SET", UNALIGNED | PER_CPU, errno.EOPNOTSUPP),
        ("SET", UNALIGNED | VPORT_PIDS, 0),
        ("SET", UNALIGNED | VPORT_PIDS | TC, errno.EOPNOTSUPP),
    ]
    assert again.user_features == UNALIGNED | VPORT_PIDS


def test_a_datapath_that_ignores_unknown_features_gets_the_standard_set(
    no_feature_checks: None, h: Harness, rec: RecordingSocket
) -> None:
    dpif = Dpif.open("dp0", create=True, sock=rec)
    assert features_sent(rec) == [
        ("NEW", UNALIGNED | VPORT_PIDS | BIT31, 0),  # accepted: no negotiation possible
        ("SET", UNALIGNED | VPORT_PIDS, 0),
    ]
    assert dpif.user_features == UNALIGNED | VPORT_PIDS == dp_features(h, "dp0")


# -- enumerate, stats, delete ---------------------------------------------------------------------


def test_enumerate_stats_and_delete(h: Harness, dpif: Dpif) -> None:
    other = Dpif.open("dp1", create=True, sock=dpif.sock)
    assert sorted(Dpif.enumerate(dpif.sock)) == ["dp0", "dp1"]
    stats = dpif.get_stats()
    assert (stats.n_hit, stats.n_missed, stats.n_lost, stats.n_flows) == (0, 0, 0, 0)
    assert (stats.n_mask_hit, stats.n_masks, stats.n_cache_hit) == (0, 0, 0)
    assert stats.user_features == UNALIGNED | PER_CPU
    assert stats.masks_cache_size == 256
    dpif.port_add("vm1")
    dpif.port_add("vm2")
    dpif.flow_put(*key_mask(udp_key_text(1)), actions("2"))
    inject(h, "vm1", [udp_frame(), udp_frame()])  # a hit each
    inject(h, "vm1", [udp_frame(sport=7)])  # a miss, and no PID to send it to: lost
    stats = dpif.get_stats()
    assert (stats.n_hit, stats.n_missed, stats.n_lost, stats.n_flows) == (2, 1, 1, 1)
    assert stats.n_masks == 1 and stats.n_mask_hit >= 2
    assert len(take(h, "vm2")) == 2
    assert other.get_stats().n_flows == 0  # per datapath
    # delete: the datapath, its ports (the switch port is free again) and its flows go
    other.port_add("vm3")
    other.delete()
    assert Dpif.enumerate(dpif.sock) == ["dp0"]
    expect_errno(errno.ENODEV, other.get_stats)
    expect_errno(errno.ENODEV, Dpif.open, "dp1", sock=dpif.sock)
    assert dpif.port_add("vm3") == 3
    dpif.delete()
    assert Dpif.enumerate(dpif.sock) == []


# -- ports ----------------------------------------------------------------------------------------


def test_port_add_query_dump_and_delete(h: Harness, dpif: Dpif) -> None:
    assert dpif.port_add("vm1") == 1
    assert dpif.port_add("host", "internal") == 2
    assert dpif.port_add("vx", "vxlan", options={"dst_port": 4790}) == 3
    assert dpif.port_add("vm2", port_no=10, upcall_pids=(77,)) == 10
    vm1 = dpif.port_query_by_number(1)
    assert (vm1.name, vm1.type, vm1.type_name) == ("vm1", VportType.NETDEV, "system")
    assert vm1.upcall_pids == (0,) and vm1.options == {}
    assert vm1.ifindex == h.call(lambda: h.switch.port("vm1").ifindex)
    host = dpif.port_query_by_name("host")
    assert (host.port_no, host.type_name) == (2, "internal")
    vx = dpif.port_query_by_name("vx")
    assert (vx.port_no, vx.type_name, vx.options) == (3, "vxlan", {"dst_port": 4790})
    assert dpif.port_query_by_number(10).upcall_pids == (77,)
    assert dpif.port_query_by_number(0).name == "dp0"  # the local port
    ports = sorted(dpif.port_dump(), key=lambda p: p.port_no)
    assert [(p.port_no, p.name, p.type_name) for p in ports] == [
        (0, "dp0", "internal"),
        (1, "vm1", "system"),
        (2, "host", "internal"),
        (3, "vx", "vxlan"),
        (10, "vm2", "system"),
    ]
    dpif.port_del(3)
    expect_errno(errno.ENODEV, dpif.port_query_by_number, 3)
    expect_errno(errno.ENODEV, dpif.port_query_by_name, "vx")
    dpif.port_del(1)
    assert sorted(p.port_no for p in dpif.port_dump()) == [0, 2, 10]
    assert dpif.port_add("vm1") == 1  # the lowest free number, the switch port free again


def test_port_errors(h: Harness, dpif: Dpif) -> None:
    dpif.port_add("vm1")
    dpif.port_add("vm2", port_no=10)
    dpif.port_add("vx", "vxlan", options={"dst_port": 4790})
    err = expect_errno(errno.EBUSY, dpif.port_add, "vm3", port_no=10)  # the number is taken
    assert "10" in str(err)
    expect_errno(errno.EBUSY, dpif.port_add, "vm1")  # the switch port is bound already
    expect_errno(errno.ENODEV, dpif.port_add, "vm9")  # no such switch port
    expect_errno(errno.EEXIST, dpif.port_add, "vx2", "vxlan", options={"dst_port": 4790})
    expect_errno(errno.EEXIST, dpif.port_add, "vx", "vxlan", options={"dst_port": 4791})
    expect_errno(errno.EAFNOSUPPORT, dpif.port_add, "vm3", "tap")  # unknown type (client side)
    expect_errno(errno.EFBIG, dpif.port_add, "vm3", port_no=OVSP_NONE)
    expect_errno(errno.ENODEV, dpif.port_query_by_number, 99)
    expect_errno(errno.ENODEV, dpif.port_query_by_name, "nope")
    expect_errno(errno.ENODEV, dpif.port_del, 99)
    expect_errno(errno.EINVAL, dpif.port_del, 0)  # the local port stays
    # a port of another datapath is not this one's, by name or by number
    other = Dpif.open("dp1", create=True, sock=dpif.sock)
    assert other.port_add("vm3", port_no=20) == 20
    expect_errno(errno.ENODEV, dpif.port_query_by_name, "vm3")
    expect_errno(errno.ENODEV, dpif.port_query_by_name, "dp1")  # its local port
    expect_errno(errno.ENODEV, dpif.port_query_by_number, 20)
    expect_errno(errno.ENODEV, dpif.port_del, 20)
    assert other.port_query_by_name("vm3").port_no == 20
    # nothing changed on the way
    assert sorted(p.name for p in dpif.port_dump()) == ["dp0", "vm1", "vm2", "vx"]


# -- port events ----------------------------------------------------------------------------------


def poll_events(mon: PortMonitor, count: int, timeout: float = 5.0) -> list[PortEvent]:
    """Exactly ``count`` events (then none within a short while)."""
    out: list[PortEvent] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out += mon.poll(timeout=max(0.0, deadline - time.monotonic()))
    out += mon.poll(timeout=0.2)
    assert len(out) == count, out
    return out


def kinds(events: list[PortEvent]) -> list[tuple[str, str | None, int | None]]:
    return [(e.kind, e.name, e.port_no) for e in events]


def test_port_monitor_netlink_changes(h: Harness, dpif: Dpif) -> None:
    mon = PortMonitor(dpif)
    try:
        # the first poll asks for a resync (things may have changed before it subscribed)
        assert kinds(mon.poll()) == [("resync", None, None)]
        assert mon.poll(timeout=0.1) == []
        dpif.port_add("vm1")
        dpif.port_add("vx", "vxlan")
        (added, vx) = poll_events(mon, 2)
        assert (added.kind, added.name, added.port_no) == ("added", "vm1", 1)
        assert added.cmd == 1  # OVS_VPORT_CMD_NEW
        assert (vx.kind, vx.name) == ("added", "vx")
        dpif.port_set_upcall_pids(1, [5])
        assert kinds(poll_events(mon, 1)) == [("changed", "vm1", 1)]
        dpif.port_del(1)
        assert kinds(poll_events(mon, 1)) == [("deleted", "vm1", 1)]
        # another datapath's ports are not this monitor's business
        other = Dpif.open("dp1", create=True, sock=dpif.sock)
        other.port_add("vm2")
        other.port_del(1)
        assert poll_events(mon, 0) == []
    finally:
        mon.close()


def test_port_monitor_switch_changes(h: Harness, c: Client, dpif: Dpif) -> None:
    dpif.port_add("vm1")
    mon = PortMonitor(dpif)
    try:
        assert kinds(mon.poll()) == [("resync", None, None)]
        c.link("vm1", False)
        c.link("vm1", True)
        assert kinds(poll_events(mon, 2)) == [("deleted", "vm1", 1), ("added", "vm1", 1)]
        c.set_port("vm1", mtu=9000)
        c.set_port("vm1", mac=bytes.fromhex("00155d0000aa"))
        assert kinds(poll_events(mon, 2)) == [("changed", "vm1", 1), ("changed", "vm1", 1)]
        # a new switch port: userspace may add it
        c.add_port("vm9")
        assert kinds(poll_events(mon, 1)) == [("appeared", "vm9", OVSP_NONE)]
        assert dpif.port_add("vm9") == 2
        assert kinds(poll_events(mon, 1)) == [("added", "vm9", 2)]
        # deleting a bound, connected switch port: the disconnect's DEL and the deletion's
        c.del_port("vm1")
        assert kinds(poll_events(mon, 2)) == [("deleted", "vm1", 1), ("deleted", "vm1", 1)]
    finally:
        mon.close()


def test_port_monitor_overrun_is_a_resync(h: Harness, dpif: Dpif) -> None:
    dpif.port_add("vm1")
    mon = PortMonitor(dpif)
    try:
        assert kinds(mon.poll()) == [("resync", None, None)]
        mon.sock.properties(rxq_limit=4096)
        # one record of 200 changes: 200 SET events at once, far more than 4 KiB holds
        results = dpif.sock.transact_many(
            [
                Request(
                    VPORT,
                    VportCmd.SET,
                    {"port_no": 1, "upcall_pid": (i + 1,)},
                    dp_ifindex=dpif.dp_ifindex,
                )
                for i in range(200)
            ]
        )
        assert all(r.error is None for r in results)
        events: list[PortEvent] = []
        deadline = time.monotonic() + 5
        while not any(e.kind == "resync" for e in events) and time.monotonic() < deadline:
            events += mon.poll(timeout=1)
        *before, resync = events
        assert resync.kind == "resync"
        assert before and all(e.kind == "changed" and e.name == "vm1" for e in before)
        later = [e for e in mon.poll(timeout=0.2)]  # what fitted after the overrun, if any
        assert all(e.kind == "changed" for e in later)
        dropped = mon.sock.properties()["rxq_dropped"]
        assert dropped > 0 and len(before) + len(later) + dropped == 200
        # after the resync, events flow again
        dpif.port_del(1)
        assert kinds(poll_events(mon, 1)) == [("deleted", "vm1", 1)]
    finally:
        mon.close()


# -- flows ----------------------------------------------------------------------------------------


@pytest.fixture
def ports(dpif: Dpif) -> Dpif:
    """dp0 with vm1 (1), vm2 (2) and vm3 (3)."""
    for name in ("vm1", "vm2", "vm3"):
        dpif.port_add(name)
    return dpif


def test_flow_put_create_modify_and_may_create(h: Harness, ports: Dpif) -> None:
    dpif = ports
    k, m = key_mask(udp_key_text(1))
    k2, m2 = key_mask(udp_key_text(1, sport=2))
    assert dpif.flow_put(k, m, actions("2")) is None  # create
    err = expect_errno(errno.EEXIST, dpif.flow_put, k, m, actions("3"))
    assert "exists" in str(err)
    expect_errno(errno.ENOENT, dpif.flow_put, k2, m2, actions("3"), create=False, modify=True)
    # may create: creates when absent...
    dpif.flow_put(k2, m2, actions("3"), create=True, modify=True)
    assert dpif.flow_get(k2).actions == [("output", 3)]
    # ... and replaces the actions when present, keeping the statistics
    inject(h, "vm1", [udp_frame(), udp_frame()])
    assert len(take(h, "vm2")) == 2
    before = dpif.flow_put(k, m, actions("3"), create=True, modify=True, want_stats=True)
    assert before is not None and before.n_packets == 2
    flow = dpif.flow_get(k)
    assert flow.actions == [("output", 3)]
    assert (flow.stats.n_packets, flow.stats.n_bytes) == (2, 2 * len(udp_frame()))
    assert flow.stats.used > 0
    # modify only (a SET): actions changed, statistics kept
    dpif.flow_put(k, m, actions("2"), create=False, modify=True)
    flow = dpif.flow_get(k)
    assert flow.actions == [("output", 2)] and flow.stats.n_packets == 2
    # an empty action list drops
    dpif.flow_put(k, m, [], create=False, modify=True)
    inject(h, "vm1", [udp_frame()])
    assert take(h, "vm2") == [] and take(h, "vm3") == []
    assert dpif.flow_get(k).actions == []
    assert dpif.get_stats().n_flows == 2


def test_flow_put_zero_stats_and_want_stats(h: Harness, ports: Dpif) -> None:
    dpif = ports
    k, m = key_mask(udp_key_text(1))
    created = dpif.flow_put(k, m, actions("2"), want_stats=True)
    assert created == FlowStats(0, 0, 0, 0)  # a new flow: nothing yet
    inject(h, "vm1", [udp_frame()] * 3)
    # ZERO_STATS with create|modify is a NEW: the kernel clears only on SET
    dpif.flow_put(k, m, actions("2"), create=True, modify=True, zero_stats=True)
    assert dpif.flow_get(k).stats.n_packets == 3
    # modify only + ZERO_STATS: a SET with CLEAR
    dpif.flow_put(k, m, actions("2"), create=False, modify=True, zero_stats=True)
    flow = dpif.flow_get(k)
    assert flow.stats == FlowStats(0, 0, 0, 0)
    inject(h, "vm1", [udp_frame()])
    stats = dpif.flow_put(k, m, actions("2"), create=False, modify=True, want_stats=True)
    assert stats is not None and stats.n_packets == 1
    # a probe put behaves like a put
    k2, m2 = key_mask(udp_key_text(1, sport=9))
    dpif.flow_put(k2, m2, actions("2"), probe=True)
    assert dpif.flow_get(k2).actions == [("output", 2)]
    assert len(take(h, "vm2")) == 4


def test_a_modify_with_zero_stats_returns_the_stats_before_the_clear(
    h: Harness, ports: Dpif
) -> None:
    """dpif.h: the stats of a put are the flow's before the operation (the kernel fills the SET
    reply before it clears)."""
    dpif = ports
    k, m = key_mask(udp_key_text(1))
    dpif.flow_put(k, m, actions("2"))
    inject(h, "vm1", [udp_frame()] * 3)
    stats = dpif.flow_put(
        k, m, actions("2"), create=False, modify=True, zero_stats=True, want_stats=True
    )
    assert dpif.flow_get(k).stats.n_packets == 0  # cleared
    assert stats is not None and stats.n_packets == 3


def test_flow_get_and_del_by_key_and_by_ufid(h: Harness, ports: Dpif) -> None:
    dpif = ports
    k, m = key_mask(udp_key_text(1))
    ku, mu = key_mask(udp_key_text(1, sport=5))
    dpif.flow_put(k, m, actions("2"))
    dpif.flow_put(ku, mu, actions("3"), ufid=ufid(1))
    by_key = dpif.flow_get(k)
    assert isinstance(by_key, DpFlow)
    assert by_key.ufid is None and by_key.key is not None and by_key.mask is not None
    # the key as installed (with the metadata the kernel always reports) and its mask
    assert {f: by_key.key[f] for f in k} == k and {f: by_key.mask[f] for f in m} == m
    assert by_key.actions == [("output", 2)]
    by_ufid = dpif.flow_get(ufid=ufid(1))
    assert by_ufid.ufid == ufid(1) and by_ufid.actions == [("output", 3)]
    assert by_ufid.key is not None and {f: by_ufid.key[f] for f in ku} == ku
    expect_errno(errno.ENOENT, dpif.flow_get, ufid=ufid(2))
    expect_errno(errno.ENOENT, dpif.flow_get, key(udp_key_text(1, sport=77)))
    inject(h, "vm1", [udp_frame(sport=5)] * 2)
    final = dpif.flow_del(ufid=ufid(1))
    assert final is not None and final.n_packets == 2 and final.n_bytes > 0
    expect_errno(errno.ENOENT, dpif.flow_get, ufid=ufid(1))
    expect_errno(errno.ENOENT, dpif.flow_del, ufid=ufid(1))
    assert dpif.flow_del(k, want_stats=False) is None
    expect_errno(errno.ENOENT, dpif.flow_del, k)
    expect_errno(errno.EINVAL, dpif.flow_del)  # neither: flush is flow_flush
    assert dpif.get_stats().n_flows == 0
    assert len(take(h, "vm3")) == 2


def test_flow_flush_and_dump_full_and_terse(h: Harness, ports: Dpif) -> None:
    dpif = ports
    for i in range(20):
        k, m = key_mask(udp_key_text(1, sport=100 + i))
        dpif.flow_put(k, m, actions("2"), ufid=ufid(100 + i) if i % 2 else None)
    full = list(dpif.flow_dump())
    assert len(full) == 20
    for flow in full:
        assert flow.key is not None and flow.mask is not None and flow.actions == [("output", 2)]
    assert sorted(f.key["udp"].src for f in full if f.key is not None) == list(range(100, 120))
    assert {f.ufid for f in full if f.ufid is not None} == {ufid(100 + i) for i in range(1, 20, 2)}
    terse = [f for f in dpif.flow_dump(terse=True) if f.ufid is not None]
    assert len(terse) == 10
    for flow in terse:
        assert flow.key is None and flow.mask is None and flow.actions is None
    # a dump of another datapath shows its flows only
    other = Dpif.open("dp1", create=True, sock=dpif.sock)
    assert list(other.flow_dump()) == []
    dpif.flow_flush()
    assert list(dpif.flow_dump()) == [] and dpif.get_stats().n_flows == 0
    dpif.flow_flush()  # flushing nothing is fine


def test_execute(h: Harness, ports: Dpif) -> None:
    dpif = ports
    frame = udp_frame()
    meta = {"in_port": 1}
    dpif.execute(frame, meta, actions("2,3"))
    assert take(h, "vm2") == [frame] and take(h, "vm3") == [frame]
    # a probe validates and sends nothing
    dpif.execute(frame, meta, actions("2"), probe=True)
    assert take(h, "vm2") == []
    err = expect_errno(errno.EINVAL, dpif.execute, frame, meta, actions("set(tcp(src=1)),2"))
    assert "tcp" in str(err).lower()
    expect_errno(errno.EINVAL, dpif.execute, frame, meta, [("no_such_action", 1)])  # no encoding
    expect_errno(errno.EINVAL, dpif.execute, frame[:10], meta, actions("2"))  # < 14 bytes
    assert dpif.get_stats().n_flows == 0  # execute installs nothing


# -- operate --------------------------------------------------------------------------------------


def test_operate_hundreds_of_mixed_ops_in_batches_of_64(
    h: Harness, rec: RecordingSocket, ports: Dpif
) -> None:
    dpif = ports
    rec.batches.clear()

    def km(sport: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return key_mask(udp_key_text(1, sport=sport))

    def uf(sport: int) -> bytes | None:
        """Every 10th flow has a UFID (and is then found by it, as OVS does)."""
        return ufid(sport) if sport % 10 == 0 else None

    ops: list[Any] = []
    expected: list[int] = []  # errno per op
    output: dict[int, int] = {}  # op index -> the port a FlowGet must show
    for i in range(120):  # creates
        ops.append(FlowPut(*km(i), actions("2"), ufid=uf(i)))
        expected.append(0)
    for i in range(0, 120, 6):  # creating again: EEXIST
        ops.append(FlowPut(*km(i), actions("3")))
        expected.append(errno.EEXIST)
    for i in range(100, 140):  # modify only: ENOENT past the ones that exist
        ops.append(FlowPut(*km(i), actions("3"), uf(i), create=False, modify=True, want_stats=True))
        expected.append(0 if i < 120 else errno.ENOENT)
    for i in range(110, 130):  # get: sees the modification made earlier in the same batch
        output[len(ops)] = 3
        ops.append(FlowGet(key(udp_key_text(1, sport=i)), uf(i)))
        expected.append(0 if i < 120 else errno.ENOENT)
    output[len(ops)] = 2
    ops.append(FlowGet(ufid=ufid(30)))
    expected.append(0)
    deleted = list(range(1, 60, 3))
    for i in deleted:  # delete, with stats; each once
        ops.append(FlowDel(key(udp_key_text(1, sport=i)), uf(i), want_stats=True))
        expected.append(0)
    ops.append(FlowDel(key(udp_key_text(1, sport=4))))  # deleted just before
    expected.append(errno.ENOENT)
    for i in range(30):  # executes, a third of them probes, some with bad actions
        bad = i % 10 == 9
        acts = actions("set(tcp(src=1)),2") if bad else actions("2")  # TCP on UDP: EINVAL
        ops.append(Execute(udp_frame(sport=5000 + i), {"in_port": 1}, acts, probe=i % 3 == 0))
        expected.append(errno.EINVAL if bad else 0)
    assert len(ops) == 252

    results = dpif.operate(ops)
    assert len(results) == len(ops)
    got = [r.error.errno if r.error is not None else 0 for r in results]
    assert got == expected
    assert rec.batches == [64, 64, 64, 60]  # 64 requests per record
    # replies where asked for: stats of modified and deleted flows, gets' flows
    for n, (op, result) in enumerate(zip(ops, results, strict=True)):
        if result.error is not None:
            assert result.flow is None and result.stats is None
        elif isinstance(op, FlowGet):
            assert result.flow is not None and result.stats is not None
            assert result.flow.actions == [("output", output[n])]
            assert result.flow.ufid == op.ufid
        elif (isinstance(op, FlowPut) and op.want_stats) or isinstance(op, FlowDel):
            assert result.stats is not None and result.stats.n_packets == 0
        else:
            assert result == type(result)()  # no reply asked for
    # the table as the ops left it: 120 created, 20 deleted
    assert dpif.get_stats().n_flows == 120 - len(deleted) == 100
    sent = take(h, "vm2")  # executes: not the probes, not the bad ones
    assert sorted(int.from_bytes(f[34:36], "big") for f in sent) == [
        5000 + i for i in range(30) if i % 3 and i % 10 != 9
    ]


def test_operate_an_op_that_cannot_be_encoded_fails_alone(
    h: Harness, rec: RecordingSocket, ports: Dpif
) -> None:
    dpif = ports
    ops: list[Any] = [FlowPut(*key_mask(udp_key_text(1, sport=i)), actions("2")) for i in range(4)]
    ops.insert(2, FlowPut(*key_mask(udp_key_text(1, sport=9)), [("no_such_action", 1)]))
    rec.batches.clear()
    results = dpif.operate(ops)
    assert [r.error.errno if r.error else 0 for r in results] == [0, 0, errno.EINVAL, 0, 0]
    assert results[2].error is not None and "no_such_action" in str(results[2].error)
    assert dpif.get_stats().n_flows == 4  # each good op once
    assert sorted(f.key["udp"].src for f in dpif.flow_dump() if f.key) == [0, 1, 2, 3]


# -- upcalls and handler PIDs ---------------------------------------------------------------------


def test_recv_upcalls_miss_and_action(h: Harness, ports: Dpif) -> None:
    dpif = ports
    handler = NetlinkSocket(h.path, timeout=20)
    try:
        dpif.set_handler_pids([handler.pid])
        assert Dpif.recv_upcalls(handler, timeout=0.1) == []
        frame = udp_frame(sport=4242)
        inject(h, "vm1", [frame])
        (miss,) = Dpif.recv_upcalls(handler, timeout=5)
        assert miss.is_miss and miss.cmd == PacketCmd.MISS
        assert miss.dp_ifindex == dpif.dp_ifindex
        assert miss.packet == frame
        assert miss.key["in_port"] == 1 and miss.key["udp"].src == 4242
        assert miss.hash & (1 << 32)
        assert miss.userdata is None
        # a flow with a userspace action: an ACTION upcall with the userdata
        k, m = key_mask(udp_key_text(1, sport=4242))
        acts = actions(f"userspace(pid={handler.pid},userdata(0102030405060708)),2")
        dpif.flow_put(k, m, acts)
        inject(h, "vm1", [frame])
        (action,) = Dpif.recv_upcalls(handler, timeout=5)
        assert not action.is_miss and action.cmd == PacketCmd.ACTION
        assert action.userdata == bytes.fromhex("0102030405060708")
        assert action.packet == frame and action.key["in_port"] == 1
        assert take(h, "vm2") == [frame]
        # execute with a userspace action and an upcall PID
        dpif.execute(
            frame, {"in_port": 1}, actions("userspace(pid=4294967295)"), upcall_pid=handler.pid
        )
        (executed,) = Dpif.recv_upcalls(handler, timeout=5)
        assert executed.cmd == PacketCmd.ACTION and executed.packet == frame
        assert Dpif.recv_upcalls(handler, timeout=0.1) == []
        assert dpif.get_stats().n_lost == 0
        # an upcall without its key (another service's bug) costs only itself
        packet_id = handler.family("ovs_packet").id
        bad = GenlMessage(packet_id, 0, 0, 0, PacketCmd.MISS, 1, dpif.dp_ifindex, {"packet": frame})
        handler.session.unsolicited.append(bad)
        inject(h, "vm3", [frame])
        assert Dpif.recv_upcalls(handler, timeout=5) == []  # the queued bad one, dropped
        (good,) = Dpif.recv_upcalls(handler, timeout=5)
        assert good.key["in_port"] == 3
    finally:
        handler.close()


def handler_sockets(h: Harness, count: int) -> list[NetlinkSocket]:
    return [NetlinkSocket(h.path, timeout=20) for _ in range(count)]


def misses_by_socket(socks: list[NetlinkSocket], total: int) -> list[int]:
    """How many of ``total`` misses each socket received."""
    counts = [0] * len(socks)
    deadline = time.monotonic() + 10
    while sum(counts) < total and time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            counts[i] += len([u for u in Dpif.recv_upcalls(sock, timeout=0.05) if u.is_miss])
    return counts


def test_set_handler_pids_per_cpu(h: Harness, ports: Dpif) -> None:
    dpif = ports
    assert dpif.per_cpu
    socks = handler_sockets(h, 3)
    try:
        pids = [s.pid for s in socks]
        dpif.set_handler_pids(pids)
        attrs = dpif.sock.transact(DP, DpCmd.GET, {"name": "dp0"})[0].attrs
        assert tuple(attrs["per_cpu_pids"]) == tuple(pids)
        assert attrs["user_features"] == UNALIGNED | PER_CPU
        # the ports keep PID 0: misses go by "CPU" (the packet's hash)
        assert all(p.upcall_pids == (0,) for p in dpif.port_dump())
        inject(h, "vm1", [udp_frame(sport=1000 + i) for i in range(60)])
        counts = misses_by_socket(socks, 60)
        assert sum(counts) == 60 and all(counts), counts
    finally:
        for s in socks:
            s.close()


def check_per_vport_handlers(h: Harness, dpif: Dpif, expected_pids: int) -> None:
    socks = handler_sockets(h, 2)
    try:
        pids = [s.pid for s in socks]
        dpif.set_handler_pids(pids)  # a port dump with a SET per port on the same socket
        ports = list(dpif.port_dump())
        assert sorted(p.name for p in ports) == ["dp0", "vm1", "vm2", "vm3"]
        assert all(p.upcall_pids == tuple(pids[:expected_pids]) for p in ports)
        inject(h, "vm1", [udp_frame(sport=1000 + i) for i in range(60)])
        counts = misses_by_socket(socks, 60)
        assert sum(counts) == 60, counts
        if expected_pids == 2:
            assert all(counts), counts  # spread over the port's PIDs
        else:
            assert counts == [60, 0]
        assert dpif.get_stats().n_lost == 0
    finally:
        for s in socks:
            s.close()


def test_set_handler_pids_per_vport_after_negotiation(no_per_cpu: None, h: Harness) -> None:
    dpif = Dpif.open("dp0", create=True, path=h.path)
    assert not dpif.per_cpu and dpif.vport_pids
    for name in ("vm1", "vm2", "vm3"):
        dpif.port_add(name)
    check_per_vport_handlers(h, dpif, expected_pids=2)
    dpif.sock.close()


@pytest.mark.parametrize(
    ("features", "expected_pids"), [(UNALIGNED | VPORT_PIDS, 2), (UNALIGNED, 1)]
)
def test_set_handler_pids_per_vport_with_features_set_by_hand(
    h: Harness, features: int, expected_pids: int
) -> None:
    opened = Dpif.open("dp0", create=True, path=h.path)
    reply = opened.sock.transact(
        DP, DpCmd.SET, {"name": "dp0", "user_features": features}, flags=NLM_F_ECHO
    )[0]
    assert reply.attrs["user_features"] == features
    dpif = Dpif(opened.sock, "dp0", opened.dp_ifindex, reply.attrs["user_features"])
    assert not dpif.per_cpu and dpif.vport_pids == bool(features & VPORT_PIDS)
    for name in ("vm1", "vm2", "vm3"):
        dpif.port_add(name)
    check_per_vport_handlers(h, dpif, expected_pids)
    opened.sock.close()
