"""When the switch and userspace disagree (docs/vswitch.md section 4), row by row.

Each test drives one side through its real interface (the ovsdp_vswitch family for the switch,
ovs_vport for userspace), then looks at what the other side sees: GET and dump replies, the
switch's port list, the events, and the vport tables inside the service.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import (
    INTERNAL,
    NETDEV,
    OVSP_NONE,
    VXLAN,
    Client,
    Harness,
    expect_errno,
    names,
    summary,
)

from ovsdp.vswitch.switch import PortType


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness


@pytest.fixture
def c(h: Harness) -> Client:
    return h.client()


@pytest.fixture
def dp(c: Client) -> int:
    reply = c.dp_new("dp1")
    assert reply is not None
    ifindex: int = reply.dp_ifindex
    return ifindex


def add(c: Client, dp: int, name: str, vport_type: int = NETDEV, **kw: Any) -> dict[str, Any]:
    reply = c.vport_new(dp, name, vport_type, **kw)
    assert reply is not None
    attrs: dict[str, Any] = reply.attrs
    return attrs


# -- a switch port userspace never added -------------------------------------------------------


def test_a_port_userspace_never_added_is_announced_to_every_datapath(
    h: Harness, c: Client, dp: int
) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    sub = h.subscriber()
    port = c.add_port("vm9")
    events = sub.events()
    assert [(m.dp_ifindex, *s) for m, s in zip(events, summary(events), strict=True)] == [
        (dp, "NEW", "vm9", OVSP_NONE),
        (two.dp_ifindex, "NEW", "vm9", OVSP_NONE),
    ]
    # it is in no datapath: GET, dumps and the tables do not know it
    expect_errno(errno.ENODEV, c.vport_get, 0, "vm9")
    assert names(c.vport_dump(dp)) == ["dp1"]
    assert h.tables("dp1")["by_switch_port"] == {}
    assert h.binding("vm9") is None
    # its traffic goes nowhere and leaves nothing outstanding in the switch
    frame = bytes(60)

    def send() -> tuple[int, int]:
        switch = h.switch
        switch.receive(switch.by_name["vm9"], [frame] * 3)
        return switch.by_name["vm9"].rx_frames, switch.outstanding

    assert h.call(send) == (3, 0)
    assert all(p["tx_frames"] == 0 for p in c.ports())
    # userspace adds it on seeing the event
    attrs = add(c, dp, "vm9")
    assert attrs["port_no"] == 1 and attrs["ifindex"] == port["ifindex"]


def test_userspace_adds_a_port_the_switch_does_not_have_yet(h: Harness, c: Client, dp: int) -> None:
    sub = h.subscriber()
    expect_errno(errno.ENODEV, c.vport_new, dp, "vm9", NETDEV)
    expect_errno(errno.ENODEV, c.vport_new, dp, "hostnic", INTERNAL)
    assert sub.events() == []
    c.add_port("vm9")
    c.add_port("hostnic", PortType.INTERNAL)
    events = sub.events()
    assert summary(events) == [("NEW", "vm9", OVSP_NONE), ("NEW", "hostnic", OVSP_NONE)]
    assert [m.attrs["type"] for m in events] == [NETDEV, INTERNAL]
    # the retry the event calls for succeeds
    assert add(c, dp, "vm9")["port_no"] == 1
    assert add(c, dp, "hostnic", INTERNAL)["port_no"] == 2
    assert h.binding("hostnic") == ("dp1", 2)


# -- the switch deletes a bound port, and a port with that name comes back --------------------


def test_switch_deletes_a_bound_port_the_vport_stays_absent(h: Harness, c: Client, dp: int) -> None:
    add(c, dp, "vm1", pids=[3])
    add(c, dp, "vm2")
    before = c.vport_get(dp, "vm1").attrs
    c.del_port("vm1")
    expect_errno(errno.ENODEV, c.show, "vm1")
    # still there for userspace: same number, name and everything
    assert c.vport_get(dp, "vm1").attrs == before
    assert c.vport_get(dp, port_no=1).attrs == before
    assert names(c.vport_dump(dp)) == ["dp1", "vm1", "vm2"]
    tables = h.tables("dp1")
    assert tables["states"] == {"dp1": "bound", "vm1": "absent", "vm2": "bound"}
    assert tables["by_switch_port"] == {"vm2": "vm2"}  # out of the switch-port hash ...
    assert tables["n_switch_backed"] == 2  # ... still counted
    assert tables["by_name"] == {"dp1": 0, "vm1": 1, "vm2": 2}
    # its name is still taken; its number too
    expect_errno(errno.EEXIST, c.vport_new, dp, "vm1", VXLAN)
    c.add_port("vm5")
    expect_errno(errno.EBUSY, c.vport_new, dp, "vm5", NETDEV, port_no=1)
    # userspace may delete it: then it is gone from every table
    gone = c.vport_del(dp, "vm1")
    assert gone is not None and gone.attrs == before
    tables = h.tables("dp1")
    assert tables["n_switch_backed"] == 1 and "vm1" not in tables["by_name"]


def test_userspace_tells_an_absent_vport_through_the_switch(c: Client, dp: int) -> None:
    """ovs_vport shows an ABSENT vport as it was (so dpif-netlink keeps it); the switch's
    GET_PORT of its name says whether it is bound (docs/vswitch.md section 4)."""
    add(c, dp, "vm1")
    add(c, dp, "vm2")
    bound = c.show("vm1")
    assert (bound["datapath"], bound["port_no"]) == ("dp1", 1)  # bound: names this vport
    c.del_port("vm1")
    expect_errno(errno.ENODEV, c.show, "vm1")  # absent: no switch port of that name
    c.set_port("vm2", new_name="web")
    expect_errno(errno.ENODEV, c.show, "vm2")  # renamed away: the same
    assert "datapath" not in c.show("web")
    assert [c.vport_get(dp, n).attrs["port_no"] for n in ("vm1", "vm2")] == [1, 2]


def test_a_port_with_that_name_comes_back_and_binds_in_place(
    h: Harness, c: Client, dp: int
) -> None:
    add(c, dp, "vm2")
    add(c, dp, "vm1", pids=[3])
    old = c.vport_get(dp, "vm1").attrs
    c.del_port("vm1")
    sub = h.subscriber()
    # back, as another kind of VM NIC (still a netdev), created disconnected
    port = c.add_port("vm1", PortType.VM_EMULATED, connected=0)
    assert port["port_id"] != 1 and port["ifindex"] != old["ifindex"]
    assert sub.events() == []  # bound again, but no NEW until its NIC connects
    assert h.binding("vm1") == ("dp1", 2)
    assert (port := c.show("vm1"))["datapath"] == "dp1" and port["port_no"] == 2
    now = c.vport_get(dp, "vm1").attrs
    assert now == {**old, "ifindex": port["ifindex"]}  # number kept, the new port's ifindex
    tables = h.tables("dp1")
    assert tables["states"]["vm1"] == "bound"
    assert tables["by_switch_port"] == {"vm2": "vm2", "vm1": "vm1"}
    assert tables["n_switch_backed"] == 2
    c.connect("vm1")
    events = sub.events()
    assert summary(events) == [("NEW", "vm1", 2)]
    assert events[0].attrs == now


def test_a_connected_port_coming_back_gives_one_new(h: Harness, c: Client, dp: int) -> None:
    add(c, dp, "ext")
    c.del_port("ext")
    sub = h.subscriber()
    c.add_port("ext", PortType.EXTERNAL)
    assert summary(sub.events()) == [("NEW", "ext", 1)]
    assert h.binding("ext") == ("dp1", 1)


def test_an_incompatible_port_with_that_name_is_vetoed_until_the_vport_goes(
    h: Harness, c: Client, dp: int
) -> None:
    """Windows refused a port coming back with another type; so does ovsdp, with the reason,
    instead of announcing a port no datapath could add while the ABSENT vport holds its name."""
    add(c, dp, "host", INTERNAL)
    c.del_port("host")
    sub = h.subscriber()
    before = (c.ports(), c.vport_get(dp, "host").attrs, h.tables("dp1"))
    error = expect_errno(errno.EEXIST, c.add_port, "host", PortType.VM_SYNTHETIC)
    assert "dp1" in error.reason and "internal" in error.reason
    expect_errno(errno.EEXIST, c.add_port, "host", PortType.EXTERNAL)
    expect_errno(errno.EEXIST, c.set_port, "vm1", new_name="host")  # a rename, the same
    assert (c.ports(), c.vport_get(dp, "host").attrs, h.tables("dp1")) == before
    assert sub.events() == []
    # userspace deletes the absent vport: the name is free, the port is created and announced
    c.vport_del(dp, "host")
    assert summary(sub.events()) == [("DEL", "host", 1)]
    c.add_port("host", PortType.VM_SYNTHETIC)
    events = sub.events()
    assert summary(events) == [("NEW", "host", OVSP_NONE)]
    assert events[0].attrs["type"] == NETDEV
    # and the add the announcement invites succeeds
    assert add(c, dp, "host", NETDEV)["port_no"] == 1
    assert h.binding("host") == ("dp1", 1)


def test_the_announcement_after_a_type_change_reaches_every_datapath(
    h: Harness, c: Client, dp: int
) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    add(c, dp, "vm1")
    c.del_port("vm1")
    expect_errno(errno.EEXIST, c.add_port, "vm1", PortType.INTERNAL)
    c.vport_del(dp, "vm1")
    sub = h.subscriber()
    c.add_port("vm1", PortType.INTERNAL)
    events = sub.events()
    assert sorted(m.dp_ifindex for m in events) == sorted([dp, two.dp_ifindex])
    assert summary(events) == [("NEW", "vm1", OVSP_NONE)] * 2
    assert {m.attrs["type"] for m in events} == {INTERNAL}
    # any datapath can take it
    assert add(c, two.dp_ifindex, "vm1", INTERNAL)["port_no"] == 1
    assert h.binding("vm1") == ("dp2", 1)


def test_a_compatible_port_is_never_vetoed(h: Harness, c: Client, dp: int) -> None:
    add(c, dp, "vm1")
    c.del_port("vm1")
    c.add_port("vm1", PortType.EXTERNAL)  # still a netdev: bound again in place
    assert h.binding("vm1") == ("dp1", 1)
    add(c, dp, "vm2")
    c.del_port("vm2")
    c.set_port("vm3", new_name="vm2")  # a rename onto the absent vport binds it
    assert h.binding("vm2") == ("dp1", 2)


# -- names are one namespace: the switch's side --------------------------------------------


def test_the_extension_vetoes_a_switch_port_named_like_a_datapath_or_tunnel(
    h: Harness, c: Client, dp: int
) -> None:
    """As a Hyper-V extension fails OID_SWITCH_PORT_CREATE/UPDATED: EEXIST with the reason,
    nothing changes (no port, no ifindex, no MAC used up, no event), the NIC untouched."""
    add(c, dp, "vx0", VXLAN)
    sub = h.subscriber()
    before = (c.ports(), c.vport_dump(dp), h.tables("dp1"))
    for name, port_type in (
        ("dp1", PortType.VM_SYNTHETIC),
        ("dp1", PortType.INTERNAL),  # the local port is internal: still the datapath's name
        ("vx0", PortType.VM_SYNTHETIC),
        ("vx0", PortType.EXTERNAL),
    ):
        error = expect_errno(errno.EEXIST, c.add_port, name, port_type)
        assert name in error.reason
    error = expect_errno(errno.EEXIST, c.set_port, "vm1", new_name="dp1")
    assert "datapath" in error.reason
    expect_errno(errno.EEXIST, c.set_port, "vm1", new_name="vx0", mtu=9000, mac=bytes(5) + b"\2")
    after = (c.ports(), c.vport_dump(dp), h.tables("dp1"))
    assert (after[0], [m.attrs for m in after[1]], after[2]) == (
        before[0],
        [m.attrs for m in before[1]],
        before[2],
    )
    assert sub.events() == []
    # nothing was used up: the next port gets the next id, ifindex and default MAC
    port = c.add_port("vm4")
    assert (port["port_id"], port["ifindex"]) == (6, dp + 1)
    assert port["mac"] == bytes.fromhex("00155d000004")
    # a name freed on the datapath side is free for the switch
    c.vport_del(dp, "vx0")
    c.dp_del("dp1")
    assert c.add_port("dp1")["name"] == "dp1"
    assert c.set_port("vm1", new_name="vx0")["name"] == "vx0"


# -- the switch renames a port -----------------------------------------------------------------


def test_switch_renames_a_bound_port(h: Harness, c: Client, dp: int) -> None:
    add(c, dp, "vm1")
    before = c.vport_get(dp, "vm1").attrs
    sub = h.subscriber()
    c.set_port("vm1", new_name="web")
    events = sub.events()
    assert summary(events) == [("DEL", "vm1", 1), ("NEW", "web", OVSP_NONE)]
    assert events[0].attrs == before
    # the vport stays, absent, under the old name; the port is free under the new one
    assert c.vport_get(dp, "vm1").attrs == before
    assert h.tables("dp1")["states"]["vm1"] == "absent"
    assert h.binding("web") is None
    assert add(c, dp, "web")["port_no"] == 2
    # renamed back: the vport "vm1" is absent, the port "web" is bound: it moves
    c.vport_del(dp, "web")
    sub.events()
    c.set_port("web", new_name="vm1")
    assert summary(sub.events()) == [("NEW", "vm1", 1)]  # bound again, and its NIC is up
    assert h.binding("vm1") == ("dp1", 1)
    assert h.tables("dp1")["states"]["vm1"] == "bound"


def test_a_renamed_port_binds_an_absent_vport_of_its_new_name(
    h: Harness, c: Client, dp: int
) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    add(c, two.dp_ifindex, "vm1", port_no=5)
    c.del_port("vm1")  # vport vm1 of dp2: absent
    add(c, dp, "vm2")
    sub = h.subscriber()
    c.link("vm2", False)
    sub.events()
    c.set_port("vm2", new_name="vm1")
    # vm2's vport loses its port; vm1's (in dp2) gets it; the link is down, so no NEW yet
    events = sub.events()
    assert [(m.dp_ifindex, *s) for m, s in zip(events, summary(events), strict=True)] == [
        (dp, "DEL", "vm2", 1),
    ]
    assert h.binding("vm1") == ("dp2", 5)
    assert h.tables("dp1")["states"]["vm2"] == "absent"
    c.link("vm1", True)
    assert summary(sub.events()) == [("NEW", "vm1", 5)]


def test_renaming_an_unbound_port_announces_the_new_name(h: Harness, c: Client, dp: int) -> None:
    sub = h.subscriber()
    c.set_port("vm3", new_name="vm33")
    assert summary(sub.events()) == [("NEW", "vm33", OVSP_NONE)]


# -- userspace deletes a vport --------------------------------------------------------------


def test_userspace_deletes_a_vport_the_switch_port_stays_free(
    h: Harness, c: Client, dp: int
) -> None:
    add(c, dp, "vm1")
    c.vport_del(dp, "vm1")
    port = c.show("vm1")
    assert (port["connected"], port["link_up"]) == (1, 1)
    assert "datapath" not in port
    assert h.binding("vm1") is None
    # switch operations on it now concern no vport
    sub = h.subscriber()
    c.link("vm1", False)
    c.set_port("vm1", mtu=9000)
    c.disconnect("vm1")
    c.connect("vm1")
    assert sub.events() == []
    # it can be added again, to any datapath
    two = c.dp_new("dp2")
    assert two is not None
    assert add(c, two.dp_ifindex, "vm1")["port_no"] == 1
    assert h.binding("vm1") == ("dp2", 1)


# -- NIC disconnect --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "vport_type"), [("vm1", NETDEV), ("ext", NETDEV), ("host", INTERNAL)]
)
def test_nic_disconnect_keeps_the_binding(
    h: Harness, c: Client, dp: int, name: str, vport_type: int
) -> None:
    add(c, dp, name, vport_type)
    before = c.vport_get(dp, name).attrs
    tables = h.tables("dp1")
    sub = h.subscriber()
    c.disconnect(name)
    events = sub.events()
    assert summary(events) == [("DEL", name, 1)]
    assert events[0].attrs == before
    assert c.vport_get(dp, name).attrs == before
    assert h.binding(name) == ("dp1", 1)
    assert h.tables("dp1") == tables
    c.connect(name)
    assert summary(sub.events()) == [("NEW", name, 1)]


def test_datapath_deleted_while_its_port_was_absent(h: Harness, c: Client, dp: int) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    add(c, dp, "vm1")
    c.del_port("vm1")
    c.dp_del("dp1")
    sub = h.subscriber()
    c.add_port("vm1")
    events = sub.events()
    assert summary(events) == [("NEW", "vm1", OVSP_NONE)]
    assert events[0].dp_ifindex == two.dp_ifindex
    assert h.binding("vm1") is None
