"""``ovs_datapath`` over the service (docs/vswitch.md section 2; reference ovs-netlink.md 2.1, 6.1).

Several datapaths by name, each with a dp_ifindex from the ports' counter and a local port 0;
NEW/DEL/GET/SET/dump with the kernel's errnos; feature negotiation as dpif-netlink runs it; the
multicast of NEW/DEL/SET to the ovs_datapath group.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import (
    DP,
    INTERNAL,
    NETDEV,
    VXLAN,
    Client,
    Harness,
    content,
    expect_errno,
    names,
    nobody_python,
    open_to_everyone,
    run_as_nobody,
)

from ovsdp.netlink.constants import OVS_DP_F_UNSUPPORTED, DpCmd, DpFeature
from ovsdp.netlink.message import GenlMessage
from ovsdp.netlink.structs import OvsDpMegaflowStats, OvsDpStats

UNALIGNED = int(DpFeature.UNALIGNED)
VPORT_PIDS = int(DpFeature.VPORT_PIDS)
TC_RECIRC = int(DpFeature.TC_RECIRC_SHARING)
PER_CPU = int(DpFeature.DISPATCH_UPCALL_PER_CPU)
BIT31 = OVS_DP_F_UNSUPPORTED


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness


@pytest.fixture
def c(h: Harness) -> Client:
    return h.client()


def new_dp(c: Client, name: str = "dp1", **attrs: Any) -> GenlMessage:
    reply = c.dp_new(name, **attrs)
    assert reply is not None
    return reply


# -- NEW, GET, dump ------------------------------------------------------------------------


def test_new_replies_with_the_datapath(h: Harness, c: Client) -> None:
    reply = new_dp(c, "dp1", upcall_pid=c.pid)
    assert reply.cmd == DpCmd.NEW
    attrs = reply.attrs
    assert attrs["name"] == "dp1"
    assert attrs["stats"] == OvsDpStats(0, 0, 0, 0)
    assert attrs["megaflow_stats"] == OvsDpMegaflowStats(0, 0, 0)
    assert attrs["user_features"] == 0
    assert attrs["masks_cache_size"] == 256
    assert "per_cpu_pids" not in attrs
    # dp_ifindex comes from the same counter as the switch ports' ifindexes
    port_ifindexes = [p["ifindex"] for p in c.ports()]
    assert reply.dp_ifindex == max(port_ifindexes) + 1
    got = c.dp_get("dp1")
    assert (got.cmd, got.dp_ifindex, got.attrs) == (DpCmd.GET, reply.dp_ifindex, attrs)
    # the next port created on the switch gets the next number
    assert c.add_port("late")["ifindex"] == reply.dp_ifindex + 1


def test_new_without_echo_answers_nothing(c: Client) -> None:
    assert c.dp_new("dp1", echo=False) is None
    assert c.dp_get("dp1").attrs["name"] == "dp1"


def test_several_datapaths_by_name_and_by_ifindex(c: Client) -> None:
    one = new_dp(c, "dp1")
    two = new_dp(c, "dp2", user_features=UNALIGNED)
    three = new_dp(c, "ovs-system", masks_cache_size=0)
    assert len({one.dp_ifindex, two.dp_ifindex, three.dp_ifindex}) == 3
    for reply in (one, two, three):
        by_name = c.dp_get(reply.attrs["name"])
        by_ifindex = c.dp_get(ifindex=reply.dp_ifindex)
        assert by_name.attrs == by_ifindex.attrs == reply.attrs
        assert by_name.dp_ifindex == by_ifindex.dp_ifindex == reply.dp_ifindex
    dump = c.dp_dump()
    assert names(dump) == ["dp1", "dp2", "ovs-system"]
    assert [m.dp_ifindex for m in dump] == [one.dp_ifindex, two.dp_ifindex, three.dp_ifindex]
    assert [m.attrs["user_features"] for m in dump] == [0, UNALIGNED, 0]
    assert dump[2].attrs["masks_cache_size"] == 0
    # the name wins over dp_ifindex (the kernel's lookup)
    assert c.dp_get("dp1", ifindex=two.dp_ifindex).attrs["name"] == "dp1"


def test_get_errors(c: Client) -> None:
    dp = new_dp(c)
    expect_errno(errno.ENODEV, c.dp_get, "nope")
    expect_errno(errno.ENODEV, c.dp_get, ifindex=dp.dp_ifindex + 100)
    expect_errno(errno.ENODEV, c.dp_get, ifindex=c.show("vm1")["ifindex"])  # a port's ifindex
    expect_errno(errno.ENODEV, c.dp_get, "nope", ifindex=dp.dp_ifindex)
    expect_errno(errno.ENODEV, c.dp_get)  # neither a name nor a dp_ifindex: get_dp() finds none
    expect_errno(errno.ENODEV, c.dp_del)
    expect_errno(errno.ENODEV, c.dp_set)


def test_new_checks_features_before_the_name(c: Client) -> None:
    """The kernel applies the features before it makes the local port: EOPNOTSUPP, not
    EEXIST, for an existing name with an unknown feature bit; the datapath is unchanged."""
    new_dp(c, user_features=UNALIGNED)
    expect_errno(errno.EOPNOTSUPP, c.dp_new, "dp1", user_features=BIT31)
    assert c.dp_get("dp1").attrs["user_features"] == UNALIGNED


def test_empty_dump(c: Client) -> None:
    assert c.dp_dump() == []


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ({"name": "dp1"}, errno.EEXIST),
        ({"name": "vm1"}, errno.EEXIST),  # one namespace with the switch's ports
        ({"name": "host"}, errno.EEXIST),
        ({"name": "vx0"}, errno.EEXIST),  # ... and with vport names
        ({"name": "new", "user_features": BIT31}, errno.EOPNOTSUPP),
        ({"name": "new", "user_features": UNALIGNED | VPORT_PIDS | BIT31}, errno.EOPNOTSUPP),
        ({"name": "new", "user_features": TC_RECIRC}, errno.EOPNOTSUPP),
        ({"name": "new", "user_features": UNALIGNED | TC_RECIRC}, errno.EOPNOTSUPP),
        ({"name": "new", "user_features": 1 << 4}, errno.EOPNOTSUPP),
        ({"name": "new", "masks_cache_size": 3}, errno.EINVAL),
        ({"name": "new", "masks_cache_size": 4095}, errno.EINVAL),
        ({"name": "new", "masks_cache_size": 8192}, errno.ERANGE),  # past the kernel's 4096
        ({"name": "new", "masks_cache_size": 4097}, errno.ERANGE),
        # the kernel's order: the attribute policy, the features, the masks cache, the name
        ({"name": "new", "masks_cache_size": 8192, "user_features": BIT31}, errno.ERANGE),
        ({"name": "new", "masks_cache_size": 3, "user_features": BIT31}, errno.EOPNOTSUPP),
        ({"name": "dp1", "masks_cache_size": 3}, errno.EINVAL),
        ({"name": "dp1", "masks_cache_size": 8192}, errno.ERANGE),
        ({"name": ""}, errno.EINVAL),  # the local port's net device needs a valid name
        ({"name": "."}, errno.EINVAL),
        ({"name": ".."}, errno.EINVAL),
        ({"name": "a/b"}, errno.EINVAL),
        ({"name": "a:b"}, errno.EINVAL),
        ({"name": "a b"}, errno.EINVAL),
        ({"name": "tab\t"}, errno.EINVAL),
        ({"name": "\u00e0"}, errno.EINVAL),  # UTF-8 c3 a0: 0xa0 is white space to the kernel
        ({"name": "", "user_features": BIT31}, errno.EOPNOTSUPP),
    ],
)
def test_new_errors_create_nothing(c: Client, attrs: dict[str, object], code: int) -> None:
    first = new_dp(c, "dp1", user_features=UNALIGNED)
    c.vport_new(first.dp_ifindex, "vx0", VXLAN)
    before = content(c.dp_dump())
    request = {"upcall_pid": 0, **attrs}
    expect_errno(code, c.transact, DP, DpCmd.NEW, request)
    assert content(c.dp_dump()) == before
    # nothing was consumed: the next datapath gets the next ifindex
    assert new_dp(c, "dp9").dp_ifindex == first.dp_ifindex + 1


def test_new_needs_name_and_upcall_pid(c: Client) -> None:
    expect_errno(errno.EINVAL, c.transact, DP, DpCmd.NEW, {"name": "dp1"})
    expect_errno(errno.EINVAL, c.transact, DP, DpCmd.NEW, {"upcall_pid": 0})
    assert c.dp_dump() == []


def test_new_name_longer_than_15_is_erange(c: Client) -> None:
    expect_errno(errno.ERANGE, c.dp_new, "a" * 16)


def test_names_the_kernel_accepts(c: Client) -> None:
    accepted = ["a", "x" * 15, "ovs-system", "dp_1.2@x+y", "\u00e9t\u00e9"]
    for name in accepted:
        assert new_dp(c, name).attrs["name"] == name
    assert names(c.dp_dump()) == accepted


def test_an_old_client_creating_an_existing_datapath_clears_its_features(c: Client) -> None:
    new_dp(c, "dp1", user_features=UNALIGNED | VPORT_PIDS)
    # a current client (version 2) gets EEXIST and changes nothing
    expect_errno(errno.EEXIST, c.dp_new, "dp1", user_features=UNALIGNED)
    assert c.dp_get("dp1").attrs["user_features"] == UNALIGNED | VPORT_PIDS
    # an old one (version 1) gets EEXIST too, and the features are forgotten
    expect_errno(errno.EEXIST, c.dp_new, "dp1", version=1)
    assert c.dp_get("dp1").attrs["user_features"] == 0
    # a version-1 NEW of a new datapath is a normal NEW
    assert new_dp(c, "dp2", version=1, user_features=UNALIGNED).attrs["user_features"] == UNALIGNED


def test_new_with_per_cpu_pids(c: Client) -> None:
    reply = new_dp(c, "dp1", user_features=UNALIGNED | PER_CPU, per_cpu_pids=[7, 8, 9])
    assert reply.attrs["user_features"] == UNALIGNED | PER_CPU
    assert tuple(reply.attrs["per_cpu_pids"]) == (7, 8, 9)
    assert tuple(c.dp_get("dp1").attrs["per_cpu_pids"]) == (7, 8, 9)
    # without DISPATCH_UPCALL_PER_CPU the PIDs are not reported
    other = new_dp(c, "dp2", user_features=UNALIGNED, per_cpu_pids=[1])
    assert "per_cpu_pids" not in other.attrs


def test_per_cpu_pids_are_ignored_without_per_cpu_dispatch(h: Harness, c: Client) -> None:
    """As ovs_dp_change: PER_CPU_PIDS is taken only when the request's features have
    DISPATCH_UPCALL_PER_CPU; otherwise it is ignored and the PIDs held are kept."""
    new_dp(c, "dp2", user_features=UNALIGNED, per_cpu_pids=[1, 2])
    assert h.datapath("dp2").per_cpu_pids == ()  # not stored by NEW
    reply = c.dp_set("dp2", user_features=UNALIGNED | PER_CPU)
    assert reply is not None and tuple(reply.attrs.get("per_cpu_pids", ())) == ()
    c.dp_set("dp2", user_features=PER_CPU, per_cpu_pids=[7, 8])
    # per-CPU dispatch turned off: the PIDs sent with it are ignored, the held ones kept
    reply = c.dp_set("dp2", user_features=VPORT_PIDS, per_cpu_pids=[9])
    assert reply is not None and "per_cpu_pids" not in reply.attrs
    assert h.datapath("dp2").per_cpu_pids == (7, 8)
    c.dp_set("dp2", user_features=UNALIGNED, per_cpu_pids=[10])
    assert h.datapath("dp2").per_cpu_pids == (7, 8)
    # and back on without PIDs: the held ones are in force again (the kernel keeps them too)
    reply = c.dp_set("dp2", user_features=PER_CPU)
    assert reply is not None and tuple(reply.attrs["per_cpu_pids"]) == (7, 8)


# -- the local port ------------------------------------------------------------------------


def test_each_datapath_has_its_local_port_0(c: Client) -> None:
    dp = new_dp(c, "dp1", upcall_pid=4242)
    local = c.vport_get(dp.dp_ifindex, port_no=0)
    assert local.dp_ifindex == dp.dp_ifindex
    assert local.attrs["port_no"] == 0
    assert local.attrs["name"] == "dp1"
    assert local.attrs["type"] == INTERNAL
    assert local.attrs["ifindex"] == dp.dp_ifindex
    assert tuple(local.attrs["upcall_pid"]) == (4242,)
    assert "options" not in local.attrs
    assert c.vport_get(0, "dp1").attrs == local.attrs
    assert c.vport_get(dp.dp_ifindex, "dp1").attrs == local.attrs
    assert names(c.vport_dump(dp.dp_ifindex)) == ["dp1"]
    # not a switch port
    expect_errno(errno.ENODEV, c.show, "dp1")
    assert [p["name"] for p in c.ports()] == ["vm1", "vm2", "vm3", "ext", "host"]
    # another datapath, another local port
    dp2 = new_dp(c, "dp2")
    assert c.vport_get(dp2.dp_ifindex, port_no=0).attrs["name"] == "dp2"


# -- DEL -----------------------------------------------------------------------------------


def test_del_by_name_and_by_ifindex(c: Client) -> None:
    one = new_dp(c, "dp1")
    two = new_dp(c, "dp2")
    gone = c.dp_del("dp1")
    assert gone is not None and gone.cmd == DpCmd.DEL
    assert gone.attrs == one.attrs and gone.dp_ifindex == one.dp_ifindex
    expect_errno(errno.ENODEV, c.dp_get, "dp1")
    expect_errno(errno.ENODEV, c.dp_get, ifindex=one.dp_ifindex)
    expect_errno(errno.ENODEV, c.dp_del, "dp1")
    assert c.dp_del(ifindex=two.dp_ifindex, echo=False) is None
    expect_errno(errno.ENODEV, c.dp_del, ifindex=two.dp_ifindex)
    assert c.dp_dump() == []
    # the name can be used again; the ifindex is new
    again = new_dp(c, "dp1")
    assert again.dp_ifindex > two.dp_ifindex


def test_del_removes_the_vports_and_frees_the_switch_ports(h: Harness, c: Client) -> None:
    dp = new_dp(c, "dp1")
    c.vport_new(dp.dp_ifindex, "vm1", NETDEV)
    c.vport_new(dp.dp_ifindex, "host", INTERNAL)
    c.vport_new(dp.dp_ifindex, "vx", VXLAN)
    assert c.show("vm1")["datapath"] == "dp1"
    c.dp_del("dp1")
    for name in ("vm1", "host", "vx", "dp1"):
        expect_errno(errno.ENODEV, c.vport_get, 0, name)
    for name in ("vm1", "host"):
        port = c.show(name)
        assert "datapath" not in port and "port_no" not in port
        assert h.binding(name) is None
    # ready to be added again, to another datapath, and the vxlan name is free
    dp2 = new_dp(c, "dp2")
    assert c.vport_new(dp2.dp_ifindex, "vm1", NETDEV) is not None
    assert c.vport_new(dp2.dp_ifindex, "host", INTERNAL) is not None
    assert c.vport_new(dp2.dp_ifindex, "vx", VXLAN) is not None
    assert h.binding("vm1") == ("dp2", 1)
    assert h.tables("dp2")["n_switch_backed"] == 2
    # the vports of a deleted datapath cannot be reached by its ifindex any more
    expect_errno(errno.ENODEV, c.vport_get, dp.dp_ifindex, port_no=1)


# -- SET and feature negotiation -----------------------------------------------------------


def test_set_replaces_the_features_absent_means_0(c: Client) -> None:
    new_dp(c, "dp1", user_features=UNALIGNED | VPORT_PIDS)
    reply = c.dp_set("dp1", user_features=UNALIGNED)
    assert reply is not None and reply.cmd == DpCmd.SET
    assert reply.attrs["user_features"] == UNALIGNED
    reply = c.dp_set("dp1")
    assert reply is not None and reply.attrs["user_features"] == 0
    assert c.dp_get("dp1").attrs["user_features"] == 0
    assert c.dp_set("dp1", echo=False, user_features=VPORT_PIDS) is None
    assert c.dp_get("dp1").attrs["user_features"] == VPORT_PIDS


def test_set_by_ifindex_and_enodev(c: Client) -> None:
    dp = new_dp(c, "dp1")
    reply = c.dp_set(ifindex=dp.dp_ifindex, user_features=UNALIGNED)
    assert reply is not None and reply.attrs["name"] == "dp1"
    expect_errno(errno.ENODEV, c.dp_set, "nope", user_features=UNALIGNED)
    expect_errno(errno.ENODEV, c.dp_set, ifindex=dp.dp_ifindex + 50)


def test_feature_negotiation_when_creating(c: Client) -> None:
    """dpif_netlink_open(create): bit 31 first, then per-CPU dispatch, then tc sharing."""
    expect_errno(
        errno.EOPNOTSUPP, c.dp_new, "ovs-system", user_features=UNALIGNED | VPORT_PIDS | BIT31
    )
    expect_errno(errno.ENODEV, c.dp_get, "ovs-system")  # the probe created nothing
    reply = new_dp(c, "ovs-system", user_features=UNALIGNED | PER_CPU)
    assert reply.attrs["user_features"] == UNALIGNED | PER_CPU
    assert tuple(reply.attrs.get("per_cpu_pids", ())) == ()
    # handlers: PER_CPU_PIDS round-robin over the handler sockets
    pids = [11, 12, 11, 12]
    handlers = c.dp_set("ovs-system", user_features=UNALIGNED | PER_CPU, per_cpu_pids=pids)
    assert handlers is not None
    assert handlers.attrs["user_features"] & PER_CPU  # success is judged by the bit in the reply
    assert tuple(handlers.attrs["per_cpu_pids"]) == (11, 12, 11, 12)
    # then tc recirculation sharing: refused, nothing changes
    expect_errno(
        errno.EOPNOTSUPP, c.dp_set, "ovs-system", user_features=UNALIGNED | PER_CPU | TC_RECIRC
    )
    after = c.dp_get("ovs-system").attrs
    assert after["user_features"] == UNALIGNED | PER_CPU
    assert tuple(after["per_cpu_pids"]) == (11, 12, 11, 12)


def test_feature_negotiation_when_opening(c: Client) -> None:
    """dpif_netlink_open(open): GET, then SET existing | UNALIGNED | VPORT_PIDS | bit 31, ..."""
    new_dp(c, "ovs-system")
    existing = c.dp_get("ovs-system").attrs["user_features"]
    expect_errno(
        errno.EOPNOTSUPP,
        c.dp_set,
        "ovs-system",
        user_features=existing | UNALIGNED | VPORT_PIDS | BIT31,
    )
    assert c.dp_get("ovs-system").attrs["user_features"] == existing
    reply = c.dp_set("ovs-system", user_features=UNALIGNED | PER_CPU)
    assert reply is not None and reply.attrs["user_features"] == UNALIGNED | PER_CPU
    # falling back to per-vport PIDs is accepted too
    reply = c.dp_set("ovs-system", user_features=UNALIGNED | VPORT_PIDS)
    assert reply is not None and reply.attrs["user_features"] == UNALIGNED | VPORT_PIDS
    assert "per_cpu_pids" not in reply.attrs
    # a SET without USER_FEATURES (an old client) clears them
    reply = c.dp_set("ovs-system")
    assert reply is not None and reply.attrs["user_features"] == 0


@pytest.mark.parametrize("size", [0, 1, 2, 64, 1024, 4096])
def test_masks_cache_size_accepted(c: Client, size: int) -> None:
    new_dp(c, "dp1")
    reply = c.dp_set("dp1", masks_cache_size=size)
    assert reply is not None and reply.attrs["masks_cache_size"] == size
    assert c.dp_get("dp1").attrs["masks_cache_size"] == size
    # absent: unchanged
    reply = c.dp_set("dp1", user_features=UNALIGNED)
    assert reply is not None and reply.attrs["masks_cache_size"] == size


@pytest.mark.parametrize(
    ("size", "code"),
    [
        # 0..4096 (the kernel's policy: PCPU_MIN_UNIT_SIZE / 8-byte entries), else ERANGE;
        # within it, not a power of two: EINVAL (the kernel's resize)
        (3, errno.EINVAL),
        (100, errno.EINVAL),
        (4095, errno.EINVAL),
        (4097, errno.ERANGE),
        (8192, errno.ERANGE),
        (65536, errno.ERANGE),
        (65537, errno.ERANGE),
        (1 << 31, errno.ERANGE),
    ],
)
def test_masks_cache_size_refused_and_nothing_changes(c: Client, size: int, code: int) -> None:
    new_dp(c, "dp1", user_features=UNALIGNED, masks_cache_size=16)
    expect_errno(code, c.dp_set, "dp1", masks_cache_size=size, user_features=VPORT_PIDS)
    after = c.dp_get("dp1").attrs
    assert (after["masks_cache_size"], after["user_features"]) == (16, UNALIGNED)


def test_masks_cache_size_out_of_range_is_erange_for_every_command(c: Client) -> None:
    """The kernel checks the attribute against the family's policy before any handler: an
    out-of-range size fails GET and DEL too (and before the features in SET)."""
    new_dp(c, "dp1", user_features=UNALIGNED)
    before = content(c.dp_dump())
    for cmd in (DpCmd.GET, DpCmd.DEL):
        request = {"name": "dp1", "masks_cache_size": 5000}
        expect_errno(errno.ERANGE, c.transact, DP, cmd, request)
    expect_errno(errno.ERANGE, c.dp_set, "dp1", masks_cache_size=5000, user_features=BIT31)
    expect_errno(errno.EOPNOTSUPP, c.dp_set, "dp1", masks_cache_size=3, user_features=BIT31)
    assert content(c.dp_dump()) == before


# -- multicast to the ovs_datapath group -----------------------------------------------------


def test_new_set_del_are_multicast_to_the_datapath_group(h: Harness, c: Client) -> None:
    sub = h.subscriber(DP)
    other = h.subscriber(DP)
    # the requester is a member too: with ECHO it gets the reply instead of the event
    c.subscribe(DP)
    created = new_dp(c, "dp1")
    c.dp_set("dp1", echo=False, user_features=UNALIGNED)
    expect_errno(errno.EOPNOTSUPP, c.dp_set, "dp1", user_features=BIT31)  # no event
    expect_errno(errno.EEXIST, c.dp_new, "dp1")  # no event
    deleted = c.dp_del("dp1")
    assert deleted is not None
    for listener in (sub, other):
        events = listener.events()
        assert [m.cmd for m in events] == [DpCmd.NEW, DpCmd.SET, DpCmd.DEL]
        for msg in events:
            assert isinstance(msg, GenlMessage)
            assert msg.seq == 0 and msg.dp_ifindex == created.dp_ifindex
            assert msg.attrs["name"] == "dp1"
        assert events[0].attrs == created.attrs
        assert events[1].attrs["user_features"] == UNALIGNED
        assert events[2].attrs == deleted.attrs
    # the requester got only the one it did not ask to be echoed: the SET
    mine = c.events()
    assert [m.cmd for m in mine] == [DpCmd.SET]


# -- permissions -----------------------------------------------------------------------------

NOBODY_SCRIPT = r"""
import json, sys
from userspace.netlink_socket import NetlinkSocket
from ovsdp.netlink.errors import NetlinkError

path, dp = sys.argv[1], int(sys.argv[2])
out = {}
def attempt(key, family, cmd, attrs, dp_ifindex=0):
    try:
        replies = sock.transact(family, cmd, attrs, dp_ifindex=dp_ifindex, flags=0x08)
        out[key] = replies[0].attrs["name"]
    except NetlinkError as exc:
        out[key] = exc.errno
with NetlinkSocket(path) as sock:
    attempt("dp NEW", "ovs_datapath", 1, {"name": "evil", "upcall_pid": 0})
    attempt("dp DEL", "ovs_datapath", 2, {"name": "dp1"})
    attempt("dp GET", "ovs_datapath", 3, {"name": "dp1"})
    attempt("dp SET", "ovs_datapath", 4, {"name": "dp1", "user_features": 1})
    attempt("vport NEW", "ovs_vport", 1, {"name": "vm2", "type": 1, "upcall_pid": [0]}, dp)
    attempt("vport DEL", "ovs_vport", 2, {"name": "vm1"}, dp)
    attempt("vport GET", "ovs_vport", 3, {"name": "vm1"}, dp)
    attempt("vport SET", "ovs_vport", 4, {"name": "vm1", "upcall_pid": [9]}, dp)
    out["dp dump"] = [m.attrs["name"] for m in sock.dump("ovs_datapath", 3)]
    out["vport dump"] = [m.attrs["name"] for m in sock.dump("ovs_vport", 3, dp_ifindex=dp)]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_unprivileged_client_can_read_but_not_change() -> None:
    if nobody_python() is None:
        pytest.skip("no Python that uid 65534 can run with ovsdp importable")
    with Harness(mode=0o666) as h:
        open_to_everyone(h.path)
        c = h.client()
        dp = new_dp(c, "dp1")
        c.vport_new(dp.dp_ifindex, "vm1", NETDEV, [5])
        before = (content(c.dp_dump()), content(c.vport_dump(dp.dp_ifindex)))
        result = run_as_nobody("-c", NOBODY_SCRIPT, h.path, str(dp.dp_ifindex))
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out == {
            "dp NEW": errno.EPERM,
            "dp DEL": errno.EPERM,
            "dp GET": "dp1",
            "dp SET": errno.EPERM,
            "vport NEW": errno.EPERM,
            "vport DEL": errno.EPERM,
            "vport GET": "vm1",
            "vport SET": errno.EPERM,
            "dp dump": ["dp1"],
            "vport dump": ["dp1", "vm1"],
        }
        assert (content(c.dp_dump()), content(c.vport_dump(dp.dp_ifindex))) == before
