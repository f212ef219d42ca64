"""``ovs_vport`` over the service (docs/vswitch.md section 3; reference ovs-netlink.md 2.2, 6.3).

netdev/internal vports bind to switch ports by FriendlyName, tunnel vports exist only in the
datapath; the two kinds live in separate tables with separate counters (checked directly in the
service).  Port numbers, lookups, upcall PIDs, SET, IFINDEX and the DEL reply.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import (
    GENEVE,
    GRE,
    INTERNAL,
    NETDEV,
    VPORT,
    VXLAN,
    Client,
    Harness,
    content,
    expect_errno,
    names,
)

from ovsdp.netlink.constants import DpFeature, VportCmd
from ovsdp.netlink.message import GenlMessage
from ovsdp.netlink.structs import OvsVportStats
from ovsdp.vswitch.switch import PortType

VPORT_PIDS = int(DpFeature.VPORT_PIDS)


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness


@pytest.fixture
def c(h: Harness) -> Client:
    return h.client()


@pytest.fixture
def dp(c: Client) -> int:
    reply = c.dp_new("dp1", upcall_pid=c.pid)
    assert reply is not None
    ifindex: int = reply.dp_ifindex
    return ifindex


def add(c: Client, dp: int, name: str, vport_type: int = NETDEV, **kw: Any) -> GenlMessage:
    reply = c.vport_new(dp, name, vport_type, **kw)
    assert reply is not None
    return reply


EMPTY_STATS = OvsVportStats(0, 0, 0, 0, 0, 0, 0, 0)


# -- binding to switch ports -----------------------------------------------------------------


def test_netdev_binds_to_the_switch_port_by_name(h: Harness, c: Client, dp: int) -> None:
    reply = add(c, dp, "vm1", NETDEV, pids=[77])
    assert reply.cmd == VportCmd.NEW and reply.dp_ifindex == dp
    switch_port = c.show("vm1")
    assert reply.attrs == {
        "port_no": 1,
        "type": NETDEV,
        "name": "vm1",
        "upcall_pid": (77,),
        "stats": EMPTY_STATS,
        "upcall_stats": {"success": 0, "fail": 0},
        "ifindex": switch_port["ifindex"],
    }
    assert (switch_port["datapath"], switch_port["port_no"]) == ("dp1", 1)
    assert h.binding("vm1") == ("dp1", 1)
    got = c.vport_get(dp, "vm1")
    assert (got.cmd, got.dp_ifindex, got.attrs) == (VportCmd.GET, dp, reply.attrs)
    tables = h.tables("dp1")
    assert tables["by_switch_port"] == {"vm1": "vm1"}
    assert tables["by_tunnel"] == {}
    assert (tables["n_switch_backed"], tables["n_tunnel"]) == (1, 0)


def test_port_types_bind_as_netdev_or_internal(h: Harness, c: Client, dp: int) -> None:
    c.add_port("legacy", PortType.VM_EMULATED)
    assert add(c, dp, "ext", NETDEV).attrs["type"] == NETDEV
    assert add(c, dp, "legacy", NETDEV).attrs["type"] == NETDEV
    host = add(c, dp, "host", INTERNAL)
    assert host.attrs["type"] == INTERNAL
    assert host.attrs["ifindex"] == c.show("host")["ifindex"]
    tables = h.tables("dp1")
    assert tables["by_switch_port"] == {"ext": "ext", "legacy": "legacy", "host": "host"}
    assert tables["n_switch_backed"] == 3
    assert names(c.vport_dump(dp)) == ["dp1", "ext", "legacy", "host"]


@pytest.mark.parametrize(
    ("name", "vport_type", "code"),
    [
        ("nope", NETDEV, errno.ENODEV),  # no such switch port (Linux's errno, not Windows' EINVAL)
        ("nope", INTERNAL, errno.ENODEV),
        ("host", NETDEV, errno.EINVAL),  # the host vNIC binds as internal
        ("vm1", INTERNAL, errno.EINVAL),  # VM and external ports bind as netdev
        ("ext", INTERNAL, errno.EINVAL),
        ("dp1", NETDEV, errno.EEXIST),  # the local port's name
        ("dp1", INTERNAL, errno.EEXIST),
        ("vm1", 99, errno.EAFNOSUPPORT),
        ("vm1", 0, errno.EAFNOSUPPORT),
    ],
)
def test_binding_errors_change_nothing(
    h: Harness, c: Client, dp: int, name: str, vport_type: int, code: int
) -> None:
    before = (content(c.vport_dump(dp)), h.tables("dp1"), c.ports())
    expect_errno(code, c.vport_new, dp, name, vport_type)
    assert (content(c.vport_dump(dp)), h.tables("dp1"), c.ports()) == before
    assert add(c, dp, "vm2").attrs["port_no"] == 1  # no number was used up


def test_a_bound_switch_port_is_ebusy_in_any_datapath(h: Harness, c: Client, dp: int) -> None:
    add(c, dp, "vm1")
    add(c, dp, "host", INTERNAL)
    two = c.dp_new("dp2")
    assert two is not None
    for where in (dp, two.dp_ifindex):
        expect_errno(errno.EBUSY, c.vport_new, where, "vm1", NETDEV)
        expect_errno(errno.EBUSY, c.vport_new, where, "host", INTERNAL)
        expect_errno(errno.EBUSY, c.vport_new, where, "vm1", NETDEV, port_no=30)
    assert h.binding("vm1") == ("dp1", 1)
    assert names(c.vport_dump(two.dp_ifindex)) == ["dp2"]
    assert h.tables("dp2")["n_switch_backed"] == 0


def test_new_errors_for_missing_attributes_and_upcall_pids(c: Client, dp: int) -> None:
    for attrs in (
        {"name": "vm1", "type": NETDEV},
        {"type": NETDEV, "upcall_pid": [0]},
        {"name": "vm1", "upcall_pid": [0]},
    ):
        expect_errno(errno.EINVAL, c.transact, VPORT, VportCmd.NEW, attrs, dp_ifindex=dp)
    expect_errno(errno.EINVAL, c.vport_new, dp, "vm1", NETDEV, pids=[])
    expect_errno(errno.ERANGE, c.vport_new, dp, "a" * 16, NETDEV)
    expect_errno(errno.ENODEV, c.vport_new, dp + 100, "vm1", NETDEV)  # no such datapath
    assert names(c.vport_dump(dp)) == ["dp1"]


# -- tunnel vports -------------------------------------------------------------------------


def test_vxlan_ports_live_in_the_tunnel_table(h: Harness, c: Client, dp: int) -> None:
    plain = add(c, dp, "vxlan_sys_4789", VXLAN, pids=[3])
    assert plain.attrs["options"] == {"dst_port": 4789}  # the default
    assert "ifindex" not in plain.attrs
    assert plain.attrs["type"] == VXLAN and plain.attrs["port_no"] == 1
    other = add(c, dp, "vx2", VXLAN, options={"dst_port": 8472})
    assert other.attrs["options"] == {"dst_port": 8472}
    assert c.vport_get(dp, "vx2").attrs == other.attrs
    add(c, dp, "vm1")
    tables = h.tables("dp1")
    assert tables["by_tunnel"] == {(VXLAN, 4789): "vxlan_sys_4789", (VXLAN, 8472): "vx2"}
    assert tables["by_switch_port"] == {"vm1": "vm1"}
    assert (tables["n_switch_backed"], tables["n_tunnel"]) == (1, 2)
    # one tunnel port per (type, UDP destination port)
    expect_errno(errno.EEXIST, c.vport_new, dp, "vx3", VXLAN)
    expect_errno(errno.EEXIST, c.vport_new, dp, "vx3", VXLAN, options={"dst_port": 4789})
    expect_errno(errno.EEXIST, c.vport_new, dp, "vx3", VXLAN, options={"dst_port": 8472})
    expect_errno(errno.EEXIST, c.vport_new, dp, "vx2", VXLAN, options={"dst_port": 9999})  # name
    assert h.tables("dp1") == tables
    # deleting one frees its UDP port and the tunnel counter, not the switch-backed one
    c.vport_del(dp, "vxlan_sys_4789")
    tables = h.tables("dp1")
    assert tables["by_tunnel"] == {(VXLAN, 8472): "vx2"}
    assert (tables["n_switch_backed"], tables["n_tunnel"]) == (1, 1)
    assert add(c, dp, "vx3", VXLAN).attrs == {**plain.attrs, "name": "vx3", "upcall_pid": (0,)}


def test_one_vxlan_port_per_udp_port_across_datapaths(h: Harness, c: Client, dp: int) -> None:
    """The switch has one VTEP, so a UDP port can feed one tunnel vport: a second one in any
    datapath is EEXIST (as Linux refuses a second vxlan device on the same port) and changes
    nothing."""
    two = c.dp_new("dp2")
    assert two is not None
    dp2 = two.dp_ifindex
    first = add(c, dp, "vx1", VXLAN)  # 4789, the default
    add(c, dp, "vx2", VXLAN, options={"dst_port": 8472})
    add(c, dp2, "vm1")
    before = (content(c.vport_dump(dp)), content(c.vport_dump(dp2)))
    tables = (h.tables("dp1"), h.tables("dp2"))
    sub = h.subscriber()
    for options in (None, {"dst_port": 4789}, {"dst_port": 8472}):
        extra = {} if options is None else {"options": options}
        error = expect_errno(errno.EEXIST, c.vport_new, dp2, "vx9", VXLAN, **extra)
        assert "dp1" in error.reason and "VTEP" in error.reason
        expect_errno(errno.EEXIST, c.vport_new, dp, "vx9", VXLAN, **extra)  # same datapath
    assert (content(c.vport_dump(dp)), content(c.vport_dump(dp2))) == before
    assert (h.tables("dp1"), h.tables("dp2")) == tables
    assert sub.events() == []
    # another UDP port is free; the port number the refusals did not use is the next one
    assert add(c, dp2, "vx9", VXLAN, options={"dst_port": 4790}).attrs["port_no"] == 2
    # freed by deleting the vport, or its datapath
    c.vport_del(dp, "vx1")
    assert add(c, dp2, "vx3", VXLAN).attrs["options"] == first.attrs["options"]
    c.dp_del("dp1")
    assert add(c, dp2, "vx4", VXLAN, options={"dst_port": 8472}).attrs["port_no"] == 4
    assert h.tables("dp2")["by_tunnel"] == {
        (VXLAN, 4790): "vx9",
        (VXLAN, 4789): "vx3",
        (VXLAN, 8472): "vx4",
    }


@pytest.mark.parametrize(
    ("name", "vport_type", "code"),
    [
        # a tunnel vport is a net device on Linux: its name must be a valid one (EINVAL)
        ("", VXLAN, errno.EINVAL),
        (".", VXLAN, errno.EINVAL),
        ("..", VXLAN, errno.EINVAL),
        ("vx/1", VXLAN, errno.EINVAL),
        ("vx:1", VXLAN, errno.EINVAL),
        ("vx 1", VXLAN, errno.EINVAL),
        ("vx\n", VXLAN, errno.EINVAL),
        # a switch-backed vport names a switch port, which never has such a name (as a Linux
        # netdev vport names an existing device: ENODEV)
        ("", NETDEV, errno.ENODEV),
        ("", INTERNAL, errno.ENODEV),
        ("vm 1", NETDEV, errno.ENODEV),
    ],
)
def test_invalid_vport_names_change_nothing(
    h: Harness, c: Client, dp: int, name: str, vport_type: int, code: int
) -> None:
    before = (content(c.vport_dump(dp)), h.tables("dp1"), c.ports())
    expect_errno(code, c.vport_new, dp, name, vport_type)
    assert (content(c.vport_dump(dp)), h.tables("dp1"), c.ports()) == before
    assert add(c, dp, "vx", VXLAN).attrs["port_no"] == 1


@pytest.mark.parametrize(
    ("vport_type", "options", "code"),
    [
        (GENEVE, None, errno.EAFNOSUPPORT),
        (GENEVE, {"dst_port": 6081}, errno.EAFNOSUPPORT),
        (GRE, None, errno.EAFNOSUPPORT),
        (VXLAN, {"extension": {"gbp": True}}, errno.EOPNOTSUPP),
        (VXLAN, {"dst_port": 4790, "extension": {"gpe": True}}, errno.EOPNOTSUPP),
        (VXLAN, {"dst_port": 0}, errno.EINVAL),
    ],
)
def test_tunnel_errors_change_nothing(
    h: Harness, c: Client, dp: int, vport_type: int, options: Any, code: int
) -> None:
    extra = {} if options is None else {"options": options}
    before = h.tables("dp1")
    expect_errno(code, c.vport_new, dp, "tun0", vport_type, **extra)
    assert h.tables("dp1") == before
    expect_errno(errno.ENODEV, c.vport_get, dp, "tun0")


def test_a_tunnel_cannot_take_a_switch_ports_name(h: Harness, c: Client, dp: int) -> None:
    """One namespace, as netdev names on Linux: the switch port keeps its name and can still
    be added afterwards."""
    before = h.tables("dp1")
    expect_errno(errno.EEXIST, c.vport_new, dp, "vm2", VXLAN)
    assert h.tables("dp1") == before
    assert add(c, dp, "vm2").attrs["name"] == "vm2"


def test_switch_ports_take_no_options(c: Client, dp: int) -> None:
    expect_errno(errno.EINVAL, c.vport_new, dp, "vm1", NETDEV, options={"dst_port": 4789})
    assert c.show("vm1").get("datapath") is None


# -- port numbers --------------------------------------------------------------------------


def test_port_numbers_lowest_free_from_1_and_requested(c: Client, dp: int) -> None:
    for name in ("a1", "a2", "a3", "a4", "a5", "a6", "a7"):
        c.add_port(name)
    number = {}

    def new(name: str, **kw: Any) -> int:
        number[name] = add(c, dp, name, **kw).attrs["port_no"]
        return number[name]

    assert [new("a1"), new("a2"), new("a3")] == [1, 2, 3]
    assert new("a4", port_no=5) == 5
    assert new("a5") == 4
    assert new("a6") == 6
    c.vport_del(dp, "a2")
    assert new("a2") == 2  # a freed number is reused, lowest first
    c.vport_del(dp, "a1")
    c.vport_del(dp, "a5")
    assert new("a5") == 1
    assert new("a1") == 4
    assert new("a7", port_no=0) == 7  # 0: pick one
    assert sorted(m.attrs["port_no"] for m in c.vport_dump(dp)) == [0, 1, 2, 3, 4, 5, 6, 7]


def test_requested_port_numbers(h: Harness, c: Client, dp: int) -> None:
    assert add(c, dp, "vm1", port_no=65534).attrs["port_no"] == 65534
    expect_errno(errno.EBUSY, c.vport_new, dp, "vm2", NETDEV, port_no=65534)
    expect_errno(errno.EFBIG, c.vport_new, dp, "vm2", NETDEV, port_no=65535)
    expect_errno(errno.EFBIG, c.vport_new, dp, "vm2", NETDEV, port_no=1 << 20)
    expect_errno(errno.EFBIG, c.vport_new, dp, "vx", VXLAN, port_no=65535)
    assert h.binding("vm2") is None
    assert add(c, dp, "vm2").attrs["port_no"] == 1
    assert add(c, dp, "vx", VXLAN, port_no=2).attrs["port_no"] == 2
    expect_errno(errno.EBUSY, c.vport_new, dp, "vm3", NETDEV, port_no=2)
    # numbers are per datapath
    two = c.dp_new("dp2")
    assert two is not None
    assert add(c, two.dp_ifindex, "vm3", port_no=2).attrs["port_no"] == 2


def test_the_local_port_cannot_be_deleted(c: Client, dp: int) -> None:
    expect_errno(errno.EINVAL, c.vport_del, dp, port_no=0)
    expect_errno(errno.EINVAL, c.vport_del, 0, "dp1")
    expect_errno(errno.EINVAL, c.vport_del, dp, "dp1")
    assert c.vport_get(dp, port_no=0).attrs["name"] == "dp1"


# -- lookups -------------------------------------------------------------------------------


def test_lookups_by_name_and_by_number(c: Client, dp: int) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    vm1 = add(c, dp, "vm1")
    vm2 = add(c, two.dp_ifindex, "vm2")
    assert c.vport_get(0, "vm1").attrs == vm1.attrs  # dp_ifindex 0: any datapath
    assert c.vport_get(dp, "vm1").attrs == vm1.attrs
    assert c.vport_get(0, "vm2").dp_ifindex == two.dp_ifindex
    assert c.vport_get(dp, port_no=1).attrs == vm1.attrs
    assert c.vport_get(two.dp_ifindex, port_no=1).attrs == vm2.attrs
    # the name wins over the number
    assert c.vport_get(dp, "vm1", port_no=0).attrs["name"] == "vm1"
    expect_errno(errno.ENODEV, c.vport_get, two.dp_ifindex, "vm1")  # in another datapath
    expect_errno(errno.ENODEV, c.vport_get, 0, "nope")
    expect_errno(errno.ENODEV, c.vport_get, 0, "vm3")  # a switch port, not a vport
    expect_errno(errno.ENODEV, c.vport_get, dp, port_no=2)
    expect_errno(errno.ENODEV, c.vport_get, dp + 100, port_no=1)  # no such datapath
    expect_errno(errno.EFBIG, c.vport_get, dp, port_no=65535)
    expect_errno(errno.EINVAL, c.vport_get, dp)  # neither
    for fn in (c.vport_del, c.vport_set):
        expect_errno(errno.ENODEV, fn, two.dp_ifindex, "vm1")
        expect_errno(errno.ENODEV, fn, dp, port_no=9)
        expect_errno(errno.EINVAL, fn, dp)
    assert c.vport_get(0, "vm1").attrs == vm1.attrs


def test_dump_lists_a_datapaths_ports(c: Client, dp: int) -> None:
    add(c, dp, "vm2")
    add(c, dp, "vx", VXLAN)
    add(c, dp, "host", INTERNAL)
    dump = c.vport_dump(dp)
    assert names(dump) == ["dp1", "vm2", "vx", "host"]
    assert all(m.dp_ifindex == dp and m.cmd == VportCmd.GET for m in dump)
    assert [m.attrs for m in dump] == [c.vport_get(dp, n).attrs for n in names(dump)]
    expect_errno(errno.ENODEV, c.vport_dump, dp + 100)


# -- upcall PIDs ---------------------------------------------------------------------------


def test_upcall_pids_first_only_without_vport_pids(c: Client, dp: int) -> None:
    reply = add(c, dp, "vm1", pids=[5, 6, 7])
    assert tuple(reply.attrs["upcall_pid"]) == (5,)
    assert tuple(c.vport_get(dp, "vm1").attrs["upcall_pid"]) == (5,)
    # the datapath keeps the array: with VPORT_PIDS on, replies carry all of it
    c.dp_set("dp1", user_features=VPORT_PIDS)
    assert tuple(c.vport_get(dp, "vm1").attrs["upcall_pid"]) == (5, 6, 7)
    reply = add(c, dp, "vm2", pids=[8, 9])
    assert tuple(reply.attrs["upcall_pid"]) == (8, 9)
    assert tuple(c.vport_get(dp, port_no=0).attrs["upcall_pid"]) == (c.pid,)


def test_set_changes_the_upcall_pids(c: Client, dp: int) -> None:
    c.dp_set("dp1", user_features=VPORT_PIDS)
    add(c, dp, "vm1", pids=[1])
    reply = c.vport_set(dp, "vm1", upcall_pid=[4, 5])
    assert reply is not None and reply.cmd == VportCmd.SET
    assert tuple(reply.attrs["upcall_pid"]) == (4, 5)
    assert tuple(c.vport_get(dp, "vm1").attrs["upcall_pid"]) == (4, 5)
    # by number, as dpif-netlink's refresh does (PORT_NO + UPCALL_PID), without echo
    assert c.vport_set(dp, port_no=1, echo=False, upcall_pid=[6]) is None
    assert tuple(c.vport_get(dp, "vm1").attrs["upcall_pid"]) == (6,)
    # the same type is fine; nothing given changes nothing
    reply = c.vport_set(dp, "vm1", type=NETDEV)
    assert reply is not None and tuple(reply.attrs["upcall_pid"]) == (6,)


@pytest.mark.parametrize(
    ("name", "attrs", "code"),
    [
        ("vm1", {"type": INTERNAL, "upcall_pid": [9]}, errno.EINVAL),
        ("vm1", {"type": VXLAN}, errno.EINVAL),
        ("vx", {"type": NETDEV}, errno.EINVAL),
        ("vx", {"options": {"dst_port": 4790}}, errno.EOPNOTSUPP),
        ("vx", {"options": {"dst_port": 4789}, "upcall_pid": [9]}, errno.EOPNOTSUPP),
        ("vm1", {"options": {"dst_port": 4790}}, errno.EOPNOTSUPP),
        ("vm1", {"upcall_pid": []}, errno.EINVAL),
        ("dp1", {"type": NETDEV, "upcall_pid": [9]}, errno.EINVAL),
    ],
)
def test_refused_set_changes_nothing(
    c: Client, dp: int, name: str, attrs: dict[str, Any], code: int
) -> None:
    add(c, dp, "vm1", pids=[1])
    add(c, dp, "vx", VXLAN, pids=[1])
    before = content(c.vport_dump(dp))
    expect_errno(code, c.vport_set, dp, name, **attrs)
    assert content(c.vport_dump(dp)) == before


# -- IFINDEX -------------------------------------------------------------------------------


def test_ifindex_only_for_internal_ports_and_only_the_host_vnics(c: Client, dp: int) -> None:
    host_ifindex = c.show("host")["ifindex"]
    vm1_ifindex = c.show("vm1")["ifindex"]
    expect_errno(errno.EOPNOTSUPP, c.vport_new, dp, "vm1", NETDEV, ifindex=vm1_ifindex)
    expect_errno(errno.EOPNOTSUPP, c.vport_new, dp, "vx", VXLAN, ifindex=host_ifindex)
    expect_errno(errno.EOPNOTSUPP, c.vport_new, dp, "host", INTERNAL, ifindex=host_ifindex + 50)
    expect_errno(errno.EOPNOTSUPP, c.vport_new, dp, "host", INTERNAL, ifindex=vm1_ifindex)
    assert names(c.vport_dump(dp)) == ["dp1"]
    reply = add(c, dp, "host", INTERNAL, ifindex=host_ifindex)
    assert reply.attrs["ifindex"] == host_ifindex and reply.attrs["port_no"] == 1


# -- DEL -----------------------------------------------------------------------------------


def test_del_replies_with_the_port_as_it_was_and_frees_the_switch_port(
    h: Harness, c: Client, dp: int
) -> None:
    c.dp_set("dp1", user_features=VPORT_PIDS)
    add(c, dp, "vm1", pids=[4, 5], port_no=9)
    before = c.vport_get(dp, "vm1")
    gone = c.vport_del(dp, "vm1")
    assert gone is not None and gone.cmd == VportCmd.DEL
    assert (gone.dp_ifindex, gone.attrs) == (dp, before.attrs)
    expect_errno(errno.ENODEV, c.vport_get, dp, "vm1")
    expect_errno(errno.ENODEV, c.vport_del, dp, "vm1")
    assert h.binding("vm1") is None
    assert "datapath" not in c.show("vm1")
    tables = h.tables("dp1")
    assert tables["by_switch_port"] == {} and tables["n_switch_backed"] == 0
    # free: it can be added again, here or to another datapath
    two = c.dp_new("dp2")
    assert two is not None
    assert add(c, two.dp_ifindex, "vm1").attrs["port_no"] == 1
    assert h.binding("vm1") == ("dp2", 1)
    c.vport_del(two.dp_ifindex, port_no=1, echo=False)
    assert add(c, dp, "vm1").attrs["port_no"] == 1
    # a tunnel's DEL reply carries its options
    vx = add(c, dp, "vx", VXLAN, options={"dst_port": 4790})
    gone = c.vport_del(dp, port_no=vx.attrs["port_no"])
    assert gone is not None and gone.attrs == vx.attrs
