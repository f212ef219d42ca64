"""``ovs_flow`` refusals and side effects: key and action validation errnos, ENODEV, EPERM, the
multicast group, the datapath's statistics, flows per datapath (docs/datapath.md sections 2, 3).

A refused request changes nothing; the completion invariant is checked after every scenario.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import expect_errno, nobody_python, open_to_everyone, run_as_nobody
from flow_support import (
    FLOW,
    MAC,
    Env,
    actions,
    flow_env,
    key,
    key_mask,
    l2_megaflow_text,
    udp_frame,
    udp_key_text,
)

from ovsdp.netlink.constants import NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, FlowCmd
from ovsdp.netlink.message import ErrorMessage, GenlMessage, NoopMessage, encode_genl
from ovsdp.netlink.structs import OvsKeyIpv4, OvsKeyNdExtensions, OvsKeyPorts

K1 = udp_key_text(sport=1000)
F1 = udp_frame(1000)
ARP = (
    f"in_port(1),eth(src={MAC['vm1']},dst={MAC['vm2']}),eth_type(0x0806),"
    f"arp(sip=10.0.0.1,tip=10.0.0.2,op=1,sha={MAC['vm1']},tha=00:00:00:00:00:00)"
)
TCP_NO_FLAGS = (
    f"in_port(1),eth(src={MAC['vm1']},dst={MAC['vm2']}),eth_type(0x0800),"
    "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0,ttl=64,frag=no),tcp(src=1,dst=2)"
)


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def new(env: Env, key_attrs: dict[str, Any], mask: dict[str, Any] | None = None, **kw: Any) -> Any:
    attrs: dict[str, Any] = {"key": key_attrs, "actions": kw.pop("acts", [])}
    if mask is not None:
        attrs["mask"] = mask
    if "ufid" in kw:
        attrs["ufid"] = kw.pop("ufid")
    return env.flow(FlowCmd.NEW, attrs, **kw)


def without(attrs: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in names}


# -- key validation ------------------------------------------------------------------------------


def _bad_keys() -> list[tuple[str, Any]]:
    k1 = key(K1)
    arp = key(ARP)
    return [
        ("ipv4 without eth_type", without(k1, "ethertype")),
        ("eth_type 0x0800 without ipv4", without(k1, "ipv4", "udp")),
        ("udp without ipv4 proto 17", {**k1, "udp": OvsKeyPorts(1, 2), "tcp": OvsKeyPorts(1, 2)}),
        ("tcp without tcp_flags", key(TCP_NO_FLAGS)),
        ("tcp under arp (not consumed)", {**arp, "tcp": OvsKeyPorts(1, 2)}),
        ("ipv4 under arp (not consumed)", {**arp, "ipv4": k1["ipv4"]}),
        ("eth_type below 0x0600", {**k1, "ethertype": 0x05FF}),
        ("in_port 65535", {**k1, "in_port": 65535}),
        ("ND_EXTENSIONS", {**k1, "nd_extensions": OvsKeyNdExtensions(0, 0)}),
        ("PACKET_TYPE", {**k1, "packet_type": 0}),
        ("NSH", {**k1, "nsh": {}}),
    ]


@pytest.mark.parametrize(("what", "bad"), _bad_keys(), ids=[w for w, _ in _bad_keys()])
def test_key_validation_is_einval(env: Env, what: str, bad: dict[str, Any]) -> None:
    expect_errno(errno.EINVAL, new, env, bad)
    expect_errno(errno.EINVAL, new, env, bad, ufid=bytes(16))
    assert env.dump() == []


@pytest.mark.parametrize(
    "extra",
    [
        "ct_state(+trk)",
        "ct_zone(5)",
        "ct_mark(3)",
        "tunnel(ipv6_src=::1,ipv6_dst=::2,ttl=64)",
        "tunnel(tun_id=1,dst=1.1.1.1,ttl=64,geneve({class=1,type=2,len=4,0x01020304}))",
    ],
)
def test_unsupported_key_attributes_are_einval(env: Env, extra: str) -> None:
    expect_errno(errno.EINVAL, env.put, f"{K1},{extra}", "2")
    assert env.dump() == []


def test_zero_conntrack_fields_are_accepted_and_ignored(env: Env) -> None:
    env.put(f"{K1},ct_state(0),ct_zone(0),ct_mark(0),ct_label(0)", "2")
    env.inject("vm1", [F1])  # every packet is untracked: the flow matches
    assert env.take("vm2") == [F1]


def test_mask_wider_than_the_key_is_einval(env: Env) -> None:
    k, m = key_mask(ARP)
    expect_errno(errno.EINVAL, new, env, k, {**m, "ipv4": OvsKeyIpv4(0xFFFFFFFF, 0, 0, 0, 0, 0)})
    expect_errno(errno.EINVAL, new, env, k, {**m, "tcp": OvsKeyPorts(0xFFFF, 0)})
    # an L4 mask needs the IP protocol matched exactly
    ku, mu = key_mask(K1)
    loose = mu["ipv4"]._replace(proto=0x0F)
    expect_errno(errno.EINVAL, new, env, ku, {**mu, "ipv4": loose})
    # an L3 mask needs the EtherType in the mask (a missing one is not matched)
    expect_errno(errno.EINVAL, new, env, ku, without(mu, "ethertype"))
    assert env.dump() == []


def test_missing_attributes_and_ufid_size(env: Env) -> None:
    expect_errno(errno.EINVAL, env.flow, FlowCmd.NEW, {"actions": []})
    expect_errno(errno.EINVAL, env.flow, FlowCmd.NEW, {"key": key(K1)})  # ACTIONS required
    expect_errno(errno.EINVAL, env.put, K1, "2", ufid=b"")
    expect_errno(errno.EINVAL, env.put, K1, "2", ufid=bytes(17))
    assert env.dump() == []


# -- action validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ct(commit)",
        "meter(1)",
        "push_eth(src=00:00:00:00:00:01,dst=00:00:00:00:00:02)",
        "add_mpls(label=1,tc=0,ttl=64,bos=1,eth_type=0x8847)",
        "psample(group=1)",
        "set(ct_mark(1))",
        "set(ct_label(1))",
        "push_nsh(flags=0,ttl=63,mdtype=1,np=3,spi=0x100,si=255)",
        "2,clone(ct(commit),2)",
    ],
)
def test_unimplemented_actions_are_eopnotsupp(env: Env, text: str) -> None:
    expect_errno(errno.EOPNOTSUPP, env.put, K1, text)
    expect_errno(errno.EOPNOTSUPP, env.execute, F1, "in_port(1)", text)
    assert env.dump() == []


def test_pop_eth_and_pop_nsh_are_eopnotsupp(env: Env) -> None:
    for name in ("pop_eth", "pop_nsh"):
        expect_errno(errno.EOPNOTSUPP, new, env, key(K1), acts=[(name, True)])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("drop,2", "drop is not last"),
        ("tnl_pop(1)", "userspace datapath only"),
        ("lb_output(1)", "userspace datapath only"),
        ("set(tcp(src=1))", "not TCP"),
        ("set(in_port(3))", "not settable"),
    ],
)
def test_invalid_actions_are_einval(env: Env, text: str, why: str) -> None:
    expect_errno(errno.EINVAL, env.put, K1, text)
    assert env.dump() == []


def test_actions_are_validated_against_the_masked_key(env: Env) -> None:
    # set(ipv4) needs eth_type 0x0800 in the flow: fine on an IPv4 megaflow ...
    env.put(l2_megaflow_text(), "set(ipv4(ttl=9)),2")
    # ... not on an ARP flow
    expect_errno(errno.EINVAL, env.put, ARP, "set(ipv4(src=1.2.3.4)),2")
    # set(udp) needs the IP protocol matched: wildcarded by the megaflow
    expect_errno(errno.EINVAL, env.put, l2_megaflow_text(dst="vm3"), "set(udp(src=1)),3")


def nest(depth: int, inner: list[Any] | None = None) -> list[Any]:
    acts: list[Any] = inner or [("output", 2)]
    for _ in range(depth):
        acts = [("clone", acts)]
    return acts


def test_action_nesting_deeper_than_16_is_eoverflow(env: Env) -> None:
    new(env, key(K1), acts=nest(16))
    env.inject("vm1", [F1])
    assert env.take("vm2") == [F1]
    env.delete(K1)
    for depth in (17, 20, 31):
        expect_errno(errno.EOVERFLOW, new, env, key(K1), acts=nest(depth))
    sample = [("sample", {"probability": 0xFFFFFFFF, "actions": nest(16)})]
    expect_errno(errno.EOVERFLOW, new, env, key(K1), acts=sample)
    expect_errno(errno.EOVERFLOW, env.execute, F1, "in_port(1)", nest(17))
    assert env.dump() == []


def test_action_nesting_deeper_than_the_codec_allows_is_eoverflow(env: Env) -> None:
    """Past the codec's own depth limit too: action spaces declare EOVERFLOW as their "nested
    too deep" errno, the kernel's answer for action lists nested too deep."""
    expect_errno(errno.EOVERFLOW, new, env, key(K1), acts=nest(40))


def test_actions_over_32_kib_are_emsgsize(env: Env) -> None:
    expect_errno(errno.EMSGSIZE, new, env, key(K1), acts=[("output", 2)] * 4200)
    new(env, key(K1), acts=[("output", 2)] * 4000)  # 32000 bytes: fine
    env.inject("vm1", [F1])
    assert len(env.take("vm2")) == 4000


def test_unknown_action_type_is_einval(env: Env) -> None:
    # hand-made: an attribute type the codec does not name (29)
    fam = env.c.family(FLOW)
    msg = GenlMessage(fam.id, 0x1 | NLM_F_ECHO, 4242, env.c.pid, FlowCmd.NEW, fam.version,
                      env.ifindex, {"key": key(K1), "actions": [("output", 2)]})  # fmt: skip
    raw = bytearray(encode_genl(msg, fam.codec))
    # the output action is the last attribute: type 1 -> 29
    at = raw.rfind(bytes([8, 0, 1, 0, 2, 0, 0, 0]))
    assert at > 0
    raw[at + 2] = 29
    env.c.sock.sendall(bytes(raw))
    error = None
    done = False
    while not done:
        for reply in env.c._read_record(5):
            if isinstance(reply, ErrorMessage) and reply.seq == 4242:
                error = -reply.error
            done = done or (isinstance(reply, NoopMessage) and reply.seq == 4242)
    assert error == errno.EINVAL
    assert env.dump() == []


# -- ENODEV and EPERM ------------------------------------------------------------------------------


@pytest.mark.parametrize("ifindex", [0, 9999])
def test_no_such_datapath_is_enodev(env: Env, ifindex: int) -> None:
    for cmd, attrs in [
        (FlowCmd.NEW, {"key": key(K1), "actions": []}),
        (FlowCmd.SET, {"key": key(K1)}),
        (FlowCmd.GET, {"key": key(K1)}),
        (FlowCmd.DEL, {"key": key(K1)}),
        (FlowCmd.DEL, {}),
    ]:
        expect_errno(errno.ENODEV, env.flow, cmd, attrs, dp_ifindex=ifindex)
    expect_errno(errno.ENODEV, env.dump, dp_ifindex=ifindex)
    expect_errno(errno.ENODEV, env.execute, F1, "in_port(1)", "2", dp_ifindex=ifindex)


def test_a_deleted_datapath_is_enodev_and_takes_its_flows(env: Env) -> None:
    env.put(K1, "2")
    old = env.ifindex
    env.c.dp_del("dp0")
    expect_errno(errno.ENODEV, env.get, K1)
    expect_errno(errno.ENODEV, env.dump)
    reply = env.c.dp_new("dp0", env.handler.pid)
    assert reply is not None and reply.dp_ifindex is not None
    env.ifindex = reply.dp_ifindex
    assert env.ifindex != old
    env.add_port("vm1")
    env.add_port("vm2")
    assert env.dump() == [] and env.stats().n_flows == 0


NOBODY_SCRIPT = r"""
import json, sys
from userspace.netlink_socket import NetlinkSocket
from userspace.odp import parse_key
from ovsdp.netlink.errors import NetlinkError

path, ifindex, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
key = parse_key(text)[0]
frame = bytes.fromhex(sys.argv[4])
out = {}
with NetlinkSocket(path) as sock:
    requests = {
        "NEW": ("ovs_flow", 1, {"key": key, "actions": []}),
        "DEL": ("ovs_flow", 2, {"key": key}),
        "FLUSH": ("ovs_flow", 2, {}),
        "SET": ("ovs_flow", 4, {"key": key, "clear": True}),
        "GET": ("ovs_flow", 3, {"key": key}),
        "EXECUTE": ("ovs_packet", 3, {"packet": frame, "key": key, "actions": [("output", 2)]}),
    }
    for name, (family, cmd, attrs) in requests.items():
        try:
            reply = sock.transact(family, cmd, attrs, flags=0x08, dp_ifindex=ifindex)
            out[name] = [list(m.attrs) for m in reply]
        except NetlinkError as exc:
            out[name] = exc.errno
    out["dump"] = len(list(sock.dump("ovs_flow", 3, {}, dp_ifindex=ifindex)))
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_an_unprivileged_client_reads_flows_but_changes_nothing() -> None:
    if nobody_python() is None:
        pytest.skip("no Python that uid 65534 can run with ovsdp importable")
    with flow_env(mode=0o666) as env:
        open_to_everyone(env.h.path)
        env.put(K1, "2")
        env.inject("vm1", [F1])
        env.take("vm2")
        before = env.dump()
        result = run_as_nobody("-c", NOBODY_SCRIPT, env.h.path, str(env.ifindex), K1, F1.hex())
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        for name in ("NEW", "DEL", "FLUSH", "SET", "EXECUTE"):
            assert out[name] == errno.EPERM, name
        assert out["GET"] == [["key", "mask", "used", "stats", "actions"]]
        assert out["dump"] == 1
        assert env.dump() == before
        assert env.take("vm2") == []  # the refused execute sent nothing


# -- the ovs_flow multicast group ---------------------------------------------------------------


def test_new_set_del_are_multicast_to_the_flow_group(env: Env) -> None:
    sub = env.h.subscriber(FLOW)
    quiet = env.h.subscriber("ovs_vport")  # another group: hears nothing of flows
    echoed = env.put(K1, "2", ufid=bytes(16))
    env.set(K1, ufid=bytes(16), actions=actions("3"))  # ACTIONS need the KEY
    env.get(ufid=bytes(16))
    env.dump()
    deleted = env.delete(ufid=bytes(16))
    events = sub.events()
    assert [e.cmd for e in events] == [FlowCmd.NEW, FlowCmd.SET, FlowCmd.DEL]
    for event in events:
        assert event.seq == 0 and event.pid == 0 and event.dp_ifindex == env.ifindex
    assert events[0].attrs == echoed
    assert events[1].attrs["actions"] == [("output", 3)]
    assert events[2].attrs == deleted
    assert quiet.events() == []


def test_the_requester_gets_one_copy(env: Env) -> None:
    sub = env.h.subscriber(FLOW)
    # with NLM_F_ECHO the reply is its copy: no second one through the group
    replies = env.flow(FlowCmd.NEW, {"key": key(K1), "actions": []}, client=sub)
    assert len(replies) == 1 and sub.events() == []
    # without it, the requester hears the event like every member
    env.flow(FlowCmd.DEL, {"key": key(K1)}, client=sub, flags=NLM_F_ACK)
    assert [e.cmd for e in sub.events()] == [FlowCmd.DEL]


def test_refused_requests_and_flushes_notify_nobody(env: Env) -> None:
    env.put(K1, "2")
    sub = env.h.subscriber(FLOW)
    expect_errno(errno.EEXIST, env.put, K1, "2", flags=NLM_F_CREATE)
    expect_errno(errno.ENOENT, env.delete, udp_key_text(sport=1))
    expect_errno(errno.EINVAL, env.put, udp_key_text(sport=1), "set(tcp(src=1))")
    env.flow(FlowCmd.DEL, {})
    assert sub.events() == []


# -- the datapath's statistics -----------------------------------------------------------------


def test_datapath_stats_count_hits_misses_losses_and_flows(env: Env) -> None:
    env.put(K1, "2")
    env.put(l2_megaflow_text(dst="vm3"), "3")
    attrs = env.dp_attrs()
    assert attrs["stats"].n_flows == 2
    assert attrs["megaflow_stats"].n_masks == 2
    env.inject("vm1", [F1, F1, udp_frame(dst="vm3"), udp_frame(1)])
    env.inject("vm1", [F1])  # again: the exact-match cache answers
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed, stats.n_lost) == (4, 1, 0)
    mega = env.dp_attrs()["megaflow_stats"]
    assert mega.n_cache_hit >= 2  # a repeated key in a batch, then a later batch
    assert mega.n_mask_hit >= 2  # the first packet of each flow went through the masks
    # a cache hit counts one mask hit (the kernel's mask cache does), so hits per packet never
    # fall below 1, which ovs-dpctl's "hit/pkt" shows
    assert mega.n_mask_hit >= stats.n_hit
    assert len(env.upcalls(1)) == 1
    # a miss with nowhere to go is lost
    env.c.vport_set(env.ifindex, "vm1", upcall_pid=[0])
    env.inject("vm1", [udp_frame(2)])
    stats = env.stats()
    assert (stats.n_hit, stats.n_missed, stats.n_lost) == (4, 2, 1)
    env.take_all()


def test_masks_are_shared_and_counted(env: Env) -> None:
    for dst in ("vm2", "vm3", "vm1"):
        env.put(l2_megaflow_text(dst=dst), "2")
    env.put(udp_key_text(dst="02:00:00:00:00:09"), "2")
    assert env.dp_attrs()["megaflow_stats"].n_masks == 2
    env.delete(l2_megaflow_text(dst="vm2"))
    assert env.dp_attrs()["megaflow_stats"].n_masks == 2
    env.delete(l2_megaflow_text(dst="vm3"))
    env.delete(l2_megaflow_text(dst="vm1"))
    assert env.dp_attrs()["megaflow_stats"].n_masks == 1


def test_no_exact_match_cache_no_cache_hits(env: Env) -> None:
    env.c.dp_set("dp0", masks_cache_size=0)
    env.put(l2_megaflow_text(), "2")
    env.inject("vm1", [F1] * 3)
    env.inject("vm1", [F1])
    assert env.stats().n_hit == 4
    mega = env.dp_attrs()["megaflow_stats"]
    assert mega.n_cache_hit == 0 and mega.n_mask_hit >= 4
    assert len(env.take("vm2")) == 4


def test_a_full_table_refuses_new_flows_with_enospc(env: Env) -> None:
    # the limit (2,000,000 by default) lowered in the service's thread; the requests are real
    dp = env.h.datapath("dp0")
    env.h.call(setattr, dp.flows, "limit", 2)
    env.put(K1, "2")
    env.put(l2_megaflow_text(dst="vm3"), "3", ufid=bytes(16))
    before = (env.dump(), env.dp_attrs())
    sub = env.h.subscriber(FLOW)
    # a third flow, with a mask the table does not have yet: ENOSPC with a reason
    error = expect_errno(errno.ENOSPC, env.put, udp_key_text(sport=7), "2", flags=NLM_F_CREATE)
    assert "full" in error.reason and "2 flows" in error.reason
    expect_errno(errno.ENOSPC, env.put, udp_key_text(sport=8), "2", ufid=bytes(range(16)))
    # nothing changed: flows, statistics, masks, nobody notified, the refused flow not matched
    assert (env.dump(), env.dp_attrs()) == before
    assert sub.events() == []
    env.inject("vm1", [udp_frame(7)])
    assert len(env.upcalls(1)) == 1 and env.take("vm2") == []
    # a full table still changes the flows it has, and takes a new one once there is room
    assert env.put(K1, "3")["actions"] == [("output", 3)]
    env.delete(K1)
    env.put(udp_key_text(sport=7), "2")
    assert env.stats().n_flows == 2


# -- flows belong to their datapath --------------------------------------------------------------


def test_flows_are_per_datapath(env: Env) -> None:
    env.c.vport_del(env.ifindex, "vm3")
    reply = env.c.dp_new("dp1", env.handler.pid)
    assert reply is not None and reply.dp_ifindex is not None
    dp1 = reply.dp_ifindex
    vport = env.c.vport_new(dp1, "vm3", pids=[env.handler.pid])
    assert vport is not None and vport.attrs["port_no"] == 1
    env.put(K1, "2")
    # the same key in the other datapath is another flow
    expect_errno(errno.ENOENT, env.flow, FlowCmd.GET, {"key": key(K1)}, dp_ifindex=dp1)
    env.flow(FlowCmd.NEW, {"key": key(K1), "actions": []}, flags=NLM_F_CREATE, dp_ifindex=dp1)
    assert len(env.dump()) == 1 and len(env.dump(dp_ifindex=dp1)) == 1
    # vm3 is port 1 of dp1: its traffic follows dp1's flow (drop), vm1's follows dp0's
    env.inject("vm3", [udp_frame(1000, src="vm1")])
    env.inject("vm1", [F1])
    assert env.take("vm2") == [F1]
    assert env.c.dp_get("dp1").attrs["stats"].n_hit == 1
    assert env.stats().n_hit == 1
    env.flow(FlowCmd.DEL, {})  # flushing dp0 leaves dp1 alone
    assert env.dump() == [] and len(env.dump(dp_ifindex=dp1)) == 1
    env.c.dp_del("dp1")
