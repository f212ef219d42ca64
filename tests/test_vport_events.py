"""Port events on the ``ovs_vport`` group (docs/vswitch.md section 5).

For every switch operation and every netlink NEW/DEL/SET: the exact messages a subscriber
receives, in order, with their content; several subscribers see the same sequence; a slow
subscriber overflows (ENOBUFS) without holding the datapath or the others back.
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
    VPORT,
    VXLAN,
    Client,
    Harness,
    check_event,
    expect_errno,
    summary,
)

from ovsdp.netlink.constants import DpFeature, VportCmd
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlMessage
from ovsdp.vswitch.family import VSwitchCmd
from ovsdp.vswitch.switch import PortType
from userspace.netlink_socket import Request

MAC = bytes.fromhex("02aabbccddee")


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


@pytest.fixture
def sub(h: Harness, dp: int) -> Client:
    return h.subscriber()


def add(c: Client, dp: int, name: str, vport_type: int = NETDEV, **kw: Any) -> dict[str, Any]:
    reply = c.vport_new(dp, name, vport_type, **kw)
    assert reply is not None
    attrs: dict[str, Any] = reply.attrs
    return attrs


def events(sub: Client, dp: int) -> list[GenlMessage]:
    """The subscriber's events so far, each checked for seq 0 and the datapath's ifindex."""
    return [check_event(m, dp) for m in sub.events()]


# -- switch operations on a bound port -------------------------------------------------------


def test_link_down_up_give_del_new_and_a_no_op_gives_nothing(
    c: Client, dp: int, sub: Client
) -> None:
    attrs = add(c, dp, "vm1", pids=[7])
    sub.events()
    c.link("vm1", False)
    c.link("vm1", False)  # no change: no event
    c.link("vm1", True)
    c.link("vm1", True)  # no change: no event
    got = events(sub, dp)
    assert summary(got) == [("DEL", "vm1", 1), ("NEW", "vm1", 1)]
    for msg in got:
        assert msg.attrs == attrs  # the same attributes as a GET reply
        assert msg.type == sub.family(VPORT).id and msg.pid == 0


def test_disconnect_and_connect_give_del_and_new(c: Client, dp: int, sub: Client) -> None:
    attrs = add(c, dp, "host", INTERNAL)
    sub.events()
    c.disconnect("host")
    c.connect("host")
    got = events(sub, dp)
    assert summary(got) == [("DEL", "host", 1), ("NEW", "host", 1)]
    assert all(m.attrs == attrs for m in got)
    # a link change on a disconnected NIC is refused: no event
    c.disconnect("host")
    expect_errno(errno.ENOTCONN, c.link, "host", True)
    assert summary(events(sub, dp)) == [("DEL", "host", 1)]


def test_mac_and_mtu_changes_give_set(c: Client, dp: int, sub: Client) -> None:
    attrs = add(c, dp, "vm1")
    sub.events()
    c.set_port("vm1", mtu=9000)
    c.set_port("vm1", mac=MAC)
    c.set_port("vm1", mtu=1400, mac=bytes.fromhex("02aabbccddef"))  # one change, one SET
    c.set_port("vm1", mtu=1400, mac=bytes.fromhex("02aabbccddef"))  # no change, no event
    expect_errno(errno.ERANGE, c.set_port, "vm1", mtu=1)  # refused, no event
    got = events(sub, dp)
    assert summary(got) == [("SET", "vm1", 1)] * 3
    assert all(m.attrs == attrs for m in got)
    # the event says which port changed; the switch's GET_PORT says to what (docs/vswitch.md 5)
    port = c.show("vm1")
    assert (port["mtu"], port["mac"], port["port_no"]) == (1400, bytes.fromhex("02aabbccddef"), 1)
    # while the link is down too: the change is still reported
    c.link("vm1", False)
    c.set_port("vm1", mtu=1500)
    assert summary(events(sub, dp)) == [("DEL", "vm1", 1), ("SET", "vm1", 1)]


def test_deleting_a_connected_port_gives_two_dels(c: Client, dp: int, sub: Client) -> None:
    attrs = add(c, dp, "vm1")
    add(c, dp, "vm2")
    c.disconnect("vm2")
    sub.events()
    c.del_port("vm1")
    got = events(sub, dp)
    assert summary(got) == [("DEL", "vm1", 1), ("DEL", "vm1", 1)]  # disconnect's, deletion's
    assert all(m.attrs == attrs for m in got)
    c.del_port("vm2")  # already disconnected: only the deletion's
    assert summary(events(sub, dp)) == [("DEL", "vm2", 2)]


def test_rename_with_changes(c: Client, dp: int, sub: Client) -> None:
    add(c, dp, "vm1")
    sub.events()
    port = c.set_port("vm1", mtu=9000, new_name="web")
    got = events(sub, dp)
    assert summary(got) == [("SET", "vm1", 1), ("DEL", "vm1", 1), ("NEW", "web", OVSP_NONE)]
    assert got[2].attrs == {
        "port_no": OVSP_NONE,
        "type": NETDEV,
        "name": "web",
        "upcall_pid": (0,),
        "ifindex": port["ifindex"],
    }


def test_operations_on_unbound_ports_give_no_events(c: Client, dp: int, sub: Client) -> None:
    c.link("vm1", False)
    c.link("vm1", True)
    c.disconnect("vm1")
    c.connect("vm1")
    c.set_port("vm1", mtu=9000, mac=MAC)
    c.del_port("vm1")
    c.del_port("vm2")
    assert events(sub, dp) == []


# -- a switch port appearing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("port_type", "vport_type"),
    [
        (PortType.VM_SYNTHETIC, NETDEV),
        (PortType.VM_EMULATED, NETDEV),
        (PortType.EXTERNAL, NETDEV),
        (PortType.INTERNAL, INTERNAL),
    ],
)
def test_a_new_switch_port_gives_new_with_port_65535(
    c: Client, dp: int, sub: Client, port_type: PortType, vport_type: int
) -> None:
    port = c.add_port("fresh", port_type, connected=0)
    c.connect("fresh")  # not bound: its NIC connecting says nothing
    (msg,) = events(sub, dp)
    assert msg.cmd == VportCmd.NEW
    assert msg.attrs == {
        "port_no": OVSP_NONE,
        "type": vport_type,
        "name": "fresh",
        "upcall_pid": (0,),
        "ifindex": port["ifindex"],
    }


def test_the_appearance_event_cuts_the_name_to_15_characters(
    h: Harness, c: Client, dp: int, sub: Client
) -> None:
    two = c.dp_new("dp2")
    assert two is not None
    name = "a-very-long-friendly-name-of-48-characters-xxxxx"
    assert len(name) == 48
    c.add_port(name)
    got = sub.events()
    assert [m.dp_ifindex for m in got] == [dp, two.dp_ifindex]
    for msg in got:
        check_event(msg, msg.dp_ifindex)
        assert msg.attrs["name"] == name[:15]
        assert msg.attrs["port_no"] == OVSP_NONE


def test_no_datapath_no_appearance_events(h: Harness, c: Client) -> None:
    sub = h.subscriber()
    c.add_port("vm9")
    assert sub.events() == []


# -- netlink NEW / DEL / SET ----------------------------------------------------------------


def test_netlink_changes_are_multicast_except_to_an_echo_requester(
    h: Harness, c: Client, dp: int, sub: Client
) -> None:
    c.subscribe()  # the requester is a member too
    new = c.vport_new(dp, "vm1", NETDEV, [5])
    new_quiet = c.vport_new(dp, "vx", VXLAN, [6], echo=False)
    set_reply = c.vport_set(dp, "vm1", upcall_pid=[8])
    c.vport_set(dp, "vx", echo=False, upcall_pid=[9])
    del_reply = c.vport_del(dp, "vm1")
    c.vport_del(dp, "vx", echo=False)
    assert new is not None and set_reply is not None and del_reply is not None
    assert new_quiet is None
    # refused requests: no events
    expect_errno(errno.ENODEV, c.vport_new, dp, "nope", NETDEV)
    expect_errno(errno.EINVAL, c.vport_set, dp, "dp1", type=NETDEV)
    expect_errno(errno.EINVAL, c.vport_del, dp, port_no=0)
    got = events(sub, dp)
    assert summary(got) == [
        ("NEW", "vm1", 1),
        ("NEW", "vx", 2),
        ("SET", "vm1", 1),
        ("SET", "vx", 2),
        ("DEL", "vm1", 1),
        ("DEL", "vx", 2),
    ]
    assert got[0].attrs == new.attrs
    assert got[2].attrs == set_reply.attrs
    assert got[4].attrs == del_reply.attrs  # the port as it was
    assert got[1].attrs["options"] == {"dst_port": 4789}
    assert tuple(got[3].attrs["upcall_pid"]) == (9,)
    # the requester got the reply instead of the event when it asked for ECHO
    assert summary(events(c, dp)) == [("NEW", "vx", 2), ("SET", "vx", 2), ("DEL", "vx", 2)]


def test_events_carry_the_datapath_and_its_pid_mode(
    h: Harness, c: Client, dp: int, sub: Client
) -> None:
    two = c.dp_new("dp2", user_features=int(DpFeature.VPORT_PIDS))
    assert two is not None
    add(c, dp, "vm1", pids=[1, 2, 3])
    add(c, two.dp_ifindex, "vm2", pids=[4, 5])
    c.link("vm1", False)
    c.link("vm2", False)
    got = sub.events()
    assert [(m.dp_ifindex, *s) for m, s in zip(got, summary(got), strict=True)] == [
        (dp, "NEW", "vm1", 1),
        (two.dp_ifindex, "NEW", "vm2", 1),
        (dp, "DEL", "vm1", 1),
        (two.dp_ifindex, "DEL", "vm2", 1),
    ]
    pids = [tuple(m.attrs["upcall_pid"]) for m in got]
    assert pids == [(1,), (4, 5), (1,), (4, 5)]


# -- order, several subscribers --------------------------------------------------------------


def test_several_subscribers_see_the_same_sequence(h: Harness, c: Client, dp: int) -> None:
    subs = [h.subscriber() for _ in range(3)]
    add(c, dp, "vm1")  # NEW
    c.link("vm1", False)  # DEL
    add(c, dp, "host", INTERNAL)  # NEW
    c.set_port("host", mtu=9000)  # SET
    c.vport_set(dp, "host", upcall_pid=[3])  # SET
    c.add_port("vm9")  # NEW 65535
    c.link("vm1", True)  # NEW
    c.del_port("host")  # DEL, DEL
    c.add_port("host", PortType.INTERNAL)  # NEW (bound again, connected)
    c.vport_del(dp, "vm1")  # DEL
    expected = [
        ("NEW", "vm1", 1),
        ("DEL", "vm1", 1),
        ("NEW", "host", 2),
        ("SET", "host", 2),
        ("SET", "host", 2),
        ("NEW", "vm9", OVSP_NONE),
        ("NEW", "vm1", 1),
        ("DEL", "host", 2),
        ("DEL", "host", 2),
        ("NEW", "host", 2),
        ("DEL", "vm1", 1),
    ]
    seen = [events(s, dp) for s in subs]
    assert summary(seen[0]) == expected
    assert [m.attrs for m in seen[0]] == [m.attrs for m in seen[1]] == [m.attrs for m in seen[2]]
    # one that leaves the group hears nothing more
    subs[0].leave(VPORT, VPORT)
    c.link("vm2", False)
    add(c, dp, "vm2")
    assert events(subs[0], dp) == []
    assert summary(events(subs[1], dp)) == [("NEW", "vm2", 1)]


def test_a_batch_of_requests_gives_events_in_request_order(
    h: Harness, c: Client, dp: int, sub: Client
) -> None:
    results = c.transact_many(
        [
            Request(VPORT, VportCmd.NEW, {"name": "vm1", "type": NETDEV, "upcall_pid": [0]}, 0, dp),
            Request("ovsdp_vswitch", VSwitchCmd.SET_LINK, {"name": "vm1", "link_up": 0}),
            Request(
                VPORT, VportCmd.NEW, {"name": "nope", "type": NETDEV, "upcall_pid": [0]}, 0, dp
            ),
            Request("ovsdp_vswitch", VSwitchCmd.SET_PORT, {"name": "vm1", "mac": MAC}),
            Request("ovsdp_vswitch", VSwitchCmd.SET_LINK, {"name": "vm1", "link_up": 1}),
            Request(VPORT, VportCmd.DEL, {"name": "vm1"}, 0, dp),
        ]
    )
    assert [r.error.errno if r.error else 0 for r in results] == [0, 0, errno.ENODEV, 0, 0, 0]
    assert summary(events(sub, dp)) == [
        ("NEW", "vm1", 1),
        ("DEL", "vm1", 1),
        ("SET", "vm1", 1),
        ("NEW", "vm1", 1),
        ("DEL", "vm1", 1),
    ]


# -- a slow subscriber -------------------------------------------------------------------------


def test_a_slow_subscriber_overflows_without_holding_anyone_back(
    h: Harness, c: Client, dp: int
) -> None:
    slow = h.subscriber()
    fast = h.subscriber()
    assert slow.properties(rxq_limit=4096)["rxq_limit"] == 4096
    add(c, dp, "vm1")
    fast.events()
    rounds = 100
    # one record: 200 link changes, 200 events queued at once for each subscriber
    batch = [
        Request("ovsdp_vswitch", VSwitchCmd.SET_LINK, {"name": "vm1", "link_up": up})
        for _ in range(rounds)
        for up in (0, 1)
    ]
    results = c.transact_many(batch)
    assert all(r.error is None for r in results)  # the switch was never held up
    # the datapath still works, and answers at once
    assert c.vport_get(dp, "vm1").attrs["port_no"] == 1
    assert add(c, dp, "vm2")["port_no"] == 2
    # the fast subscriber got everything, in order
    expected = [("DEL", "vm1", 1), ("NEW", "vm1", 1)] * rounds + [("NEW", "vm2", 2)]
    assert summary(events(fast, dp)) == expected
    # the slow one got a prefix (from the vport NEW on), then one ENOBUFS
    offered = [("NEW", "vm1", 1), *expected]
    received: list[Any] = []
    with pytest.raises(NetlinkError) as info:
        while True:
            batch_in = slow.recv(timeout=5)
            assert batch_in, "no ENOBUFS came"
            received.extend(batch_in)
    assert info.value.errno == errno.ENOBUFS
    assert 0 < len(received) < len(offered)
    assert summary(received) == offered[: len(received)]
    # what came after the overrun, in order, and what was dropped, add up
    later = summary(slow.events())
    rest = iter(offered[len(received) :])
    assert all(event in rest for event in later)  # an ordered subsequence
    props = slow.properties()
    assert props["rxq_dropped"] == len(offered) - len(received) - len(later) > 0
    # after resynchronising it hears later events again
    c.link("vm2", False)
    assert summary(events(slow, dp)) == [("DEL", "vm2", 2)]
    assert summary(events(fast, dp)) == [("DEL", "vm2", 2)]
