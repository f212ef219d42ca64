"""``ovs_flow`` through real connections: NEW, SET, GET, DEL and dumps (docs/datapath.md section 2).

Every scenario ends with the completion invariant (nothing outstanding in the switch or the
extension), checked by the fixture.  Flow keys and actions are written as OVS text.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator

import pytest
from datapath_support import expect_errno
from flow_support import (
    FLOW,
    IPV4_ANY,
    MAC,
    Env,
    actions,
    flow_env,
    key,
    key_mask,
    l2_megaflow_text,
    tcp_frame,
    udp_frame,
    udp_key_text,
)

from ovsdp.flowtable.flow_key import attrs_to_key
from ovsdp.netlink.constants import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_ECHO,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    FlowCmd,
)
from ovsdp.netlink.structs import OvsFlowStats, OvsKeyIpv4
from userspace.netlink_socket import Request
from userspace.odp import exact_mask

UFID_A = bytes(range(16))
UFID_B = bytes(range(16, 32))
K1 = udp_key_text(sport=1000)  # the exact key of udp_frame(1000) from vm1
F1 = udp_frame(1000)


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def flat(attrs: dict) -> bytes:
    """A key's flat form (for comparing keys whatever the attribute spelling)."""
    return attrs_to_key(attrs, None)[0]


# -- NEW ---------------------------------------------------------------------------------------


def test_new_creates_and_echoes_the_flow(env: Env) -> None:
    (reply,) = env.flow(FlowCmd.NEW, {"key": key(K1), "actions": actions("2")})
    assert reply.cmd == FlowCmd.NEW and reply.dp_ifindex == env.ifindex
    attrs = reply.attrs
    # a key flow: the key as installed, its mask, its actions; no statistics yet
    assert list(attrs) == ["key", "mask", "actions"]
    assert flat(attrs["key"]) == flat(key(K1))
    assert attrs["actions"] == [("output", 2)]
    assert env.get(K1) == attrs
    assert env.stats().n_flows == 1
    env.inject("vm1", [F1])
    assert env.take("vm2") == [F1]
    env.no_upcalls()


def test_new_without_echo_answers_nothing_and_with_ack_only_the_ack(env: Env) -> None:
    assert env.put(K1, "2", flags=0) == {}
    assert env.put(udp_key_text(sport=2), "2", flags=NLM_F_ACK) == {}
    assert len(env.dump()) == 2


@pytest.mark.parametrize("flag", [NLM_F_CREATE, NLM_F_EXCL])
def test_new_with_create_on_an_existing_flow_is_eexist(env: Env, flag: int) -> None:
    env.put(K1, "2")
    expect_errno(errno.EEXIST, env.put, K1, "3", flags=flag | NLM_F_ECHO)
    # also when the request's key is only covered by the flow (a megaflow lookup finds it)
    env.put(l2_megaflow_text(dst="vm3"), "3", flags=NLM_F_CREATE | NLM_F_ECHO)
    expect_errno(errno.EEXIST, env.put, udp_key_text(dst="vm3"), "2", flags=flag)
    assert env.get(K1)["actions"] == [("output", 2)]  # nothing changed
    assert len(env.dump()) == 2


def test_new_without_create_replaces_the_actions_and_keeps_the_statistics(env: Env) -> None:
    env.put(K1, "2", flags=NLM_F_CREATE | NLM_F_ECHO)
    env.inject("vm1", [F1] * 3)
    assert len(env.take("vm2")) == 3
    # CLEAR is honoured only by SET: a NEW that modifies keeps the statistics
    reply = env.put(K1, "3", clear=True)
    assert reply["actions"] == [("output", 3)]
    assert reply["stats"] == OvsFlowStats(3, 3 * len(F1))
    env.inject("vm1", [F1])
    assert env.take("vm2") == [] and env.take("vm3") == [F1]
    assert env.get(K1)["stats"] == OvsFlowStats(4, 4 * len(F1))
    assert env.stats().n_flows == 1


def test_new_without_create_overlapping_a_different_match_is_enoent(env: Env) -> None:
    env.put(l2_megaflow_text(), "2")
    # an exact key the megaflow covers, with another match: neither the same nor found exactly
    expect_errno(errno.ENOENT, env.put, K1, "3")
    expect_errno(errno.ENOENT, env.put, K1, "3", ufid=UFID_A)
    assert len(env.dump()) == 1
    assert env.get(l2_megaflow_text())["actions"] == [("output", 2)]


def test_new_without_create_finds_the_exact_flow_behind_an_overlap(env: Env) -> None:
    # M0 and M1 share a mask that goes first in the search; M2 is exact and overlapped by M1
    m1 = l2_megaflow_text(dst="vm2")
    m0 = l2_megaflow_text(dst="vm3")
    env.put(m0, "3")
    env.put(K1, "2")  # M2
    env.put(m1, "3")
    reply = env.put(K1, "1")  # the megaflow lookup may find M1; the exact lookup finds M2
    assert flat(reply["key"]) == flat(key(K1))
    assert reply["actions"] == [("output", 1)]
    assert env.get(m1)["actions"] == [("output", 3)]
    assert env.get(m0)["actions"] == [("output", 3)]


def test_ufid_flow_new_without_create(env: Env) -> None:
    megaflow = l2_megaflow_text()
    env.put(megaflow, "2", ufid=UFID_A)
    # the same UFID with another key that has the same masked key: the actions are replaced
    covered, _ = key_mask(udp_key_text(sport=7))
    _, mask = key_mask(megaflow)
    reply = env.flow(FlowCmd.NEW, {"key": covered, "mask": mask, "actions": [], "ufid": UFID_A})
    assert reply[0].attrs["ufid"] == UFID_A and reply[0].attrs["actions"] == []
    # the same UFID with a different match: ENOENT
    expect_errno(errno.ENOENT, env.put, l2_megaflow_text(dst="vm3"), "3", ufid=UFID_A)
    expect_errno(errno.ENOENT, env.put, K1, "3", ufid=UFID_A)
    # another UFID whose key the flow covers, same match: found by the megaflow lookup
    assert env.put(megaflow, "3", ufid=UFID_B)["ufid"] == UFID_A
    assert [f["ufid"] for f in env.dump()] == [UFID_A]
    assert env.get(ufid=UFID_A)["actions"] == [("output", 3)]


def test_ufid_flow_and_key_flow_identities(env: Env) -> None:
    megaflow = l2_megaflow_text()
    reply = env.put(megaflow, "2", ufid=UFID_A)
    # a UFID flow: UFID first, then the masked key, then the mask
    assert list(reply) == ["ufid", "key", "mask", "actions"]
    k, m = key_mask(megaflow)
    masked = bytes(a & b for a, b in zip(flat(k), attrs_to_key(k, m)[1], strict=True))
    assert flat(reply["key"]) == masked
    assert env.get(ufid=UFID_A) == reply
    # a UFID flow keeps no unmasked key: it is not found by key
    expect_errno(errno.ENOENT, env.get, megaflow)
    expect_errno(errno.ENOENT, env.set, megaflow, actions=[])
    expect_errno(errno.ENOENT, env.delete, megaflow)
    # a key flow is found by its key, not by a UFID
    env.put(udp_key_text(dst="vm3"), "3")
    expect_errno(errno.ENOENT, env.get, ufid=UFID_B)
    # UFIDs of 1 to 16 bytes
    env.put(udp_key_text(dst="vm1"), "1", ufid=b"\x01")
    assert env.get(ufid=b"\x01")["ufid"] == b"\x01"
    expect_errno(errno.EINVAL, env.put, udp_key_text(sport=9), "1", ufid=bytes(17))
    expect_errno(errno.EINVAL, env.get, ufid=bytes(17))


def test_no_mask_is_an_exact_match(env: Env) -> None:
    reply = env.put(K1, "2", mask=False)
    k = key(K1)
    exact = exact_mask(k)
    assert {name: reply["mask"][name] for name in k} == exact  # every field the key has
    assert [reply["mask"][n] for n in ("dp_hash", "priority", "skb_mark")] == [0] * 3
    env.inject("vm1", [F1, udp_frame(1000, ttl=63), udp_frame(1000, ip_src="10.0.0.9")])
    assert env.take("vm2") == [F1]
    assert [u.attrs["packet"] for u in env.upcalls(2)] == [
        udp_frame(1000, ttl=63),
        udp_frame(1000, ip_src="10.0.0.9"),
    ]


def test_an_all_zero_mask_attribute_counts_as_absent(env: Env) -> None:
    text = f"in_port(1),eth(src={MAC['vm1']},dst={MAC['vm2']}),eth_type(0x0800),{IPV4_ANY}"
    k, m = key_mask(text)
    assert m["ipv4"] == OvsKeyIpv4(0, 0, 0, 0, 0, 0)
    with_zero = env.flow(FlowCmd.NEW, {"key": k, "mask": m, "actions": actions("2")})[0].attrs
    env.flow(FlowCmd.DEL, {"key": k})
    without = {name: value for name, value in m.items() if name != "ipv4"}
    absent = env.flow(FlowCmd.NEW, {"key": k, "mask": without, "actions": actions("2")})[0].attrs
    assert with_zero == absent
    # any IPv4 packet between the two MACs matches
    frames = [F1, udp_frame(5, ttl=1, ip_src="1.2.3.4"), tcp_frame()]
    env.inject("vm1", frames)
    assert env.take("vm2") == frames
    # a zero IPv4 mask is no IPv4 mask: a UDP mask under it is EINVAL (proto not exact)
    ku, mu = key_mask(udp_key_text(dst="vm3"))
    mu["ipv4"] = OvsKeyIpv4(0, 0, 0, 0, 0, 0)
    expect_errno(
        errno.EINVAL, env.flow, FlowCmd.NEW, {"key": ku, "mask": mu, "actions": actions("3")}
    )


def test_in_port_and_eth_type_are_always_exact(env: Env) -> None:
    k, m = key_mask(l2_megaflow_text())
    m["in_port"] = 0x1
    m["ethertype"] = 0x00FF
    reply = env.flow(FlowCmd.NEW, {"key": k, "mask": m, "actions": actions("3")})[0].attrs
    assert reply["mask"]["in_port"] == 0xFFFFFFFF
    assert reply["mask"]["ethertype"] == 0xFFFF
    env.inject("vm2", [udp_frame(src="vm2")])  # another in_port: a miss
    env.inject("vm1", [bytes.fromhex("00155d000002 00155d000001 86dd") + bytes(40)])  # IPv6
    assert env.take("vm3") == []
    assert len(env.upcalls(2)) == 2


def test_probe_changes_nothing_in_the_behaviour(env: Env) -> None:
    reply = env.put(K1, "2", probe=True)
    assert reply["actions"] == [("output", 2)]
    assert env.get(K1) == reply


# -- SET ---------------------------------------------------------------------------------------


def test_set_replaces_actions_and_clear_zeroes_the_statistics(env: Env) -> None:
    env.put(K1, "2")
    env.inject("vm1", [F1, F1])
    env.take("vm2")
    reply = env.set(K1, actions=actions("3"))
    assert reply["actions"] == [("output", 3)]
    assert reply["stats"] == OvsFlowStats(2, 2 * len(F1))
    env.inject("vm1", [F1])
    assert env.take("vm3") == [F1]
    # no ACTIONS: kept; CLEAR: packets, bytes, used and TCP flags zeroed -- after the reply
    # is built, as the kernel's ovs_flow_cmd_set does: the reply shows the old statistics
    cleared = env.set(K1, clear=True)
    assert cleared["actions"] == [("output", 3)]
    assert cleared["stats"] == OvsFlowStats(3, 3 * len(F1)) and cleared["used"]
    after = env.get(K1)
    assert "stats" not in after and "used" not in after and "tcp_flags" not in after
    assert list(after) == ["key", "mask", "actions"]


def set_with_mask(key_text: str, **extra: object) -> dict:
    """SET attributes with KEY and MASK from ``key_text`` (as dpif-netlink sends a modify)."""
    k, m = key_mask(key_text)
    return {"key": k, "mask": m, **extra}


def test_set_by_ufid_and_the_errnos(env: Env) -> None:
    megaflow = l2_megaflow_text()
    env.put(megaflow, "2", ufid=UFID_A)
    # named by the UFID, with the KEY the actions are validated against (dpif-netlink's modify)
    (reply,) = env.flow(FlowCmd.SET, set_with_mask(megaflow, ufid=UFID_A, actions=[]))
    assert reply.attrs["actions"] == []
    env.inject("vm1", [F1])
    assert env.take("vm2") == []  # dropped now
    # no KEY: nothing to validate ACTIONS against, EINVAL (the kernel's ovs_flow_cmd_set),
    # checked before the flow is looked for, and nothing changes
    for ufid in (UFID_A, UFID_B):
        expect_errno(errno.EINVAL, env.set, ufid=ufid, actions=actions("3"))
    assert env.get(ufid=UFID_A)["actions"] == []
    # a UFID alone is enough for the rest: CLEAR
    cleared = env.set(ufid=UFID_A, clear=True)
    assert cleared["stats"].n_packets == 1 and "stats" not in env.get(ufid=UFID_A)
    expect_errno(errno.ENOENT, env.flow, FlowCmd.SET, set_with_mask(megaflow, ufid=UFID_B))
    expect_errno(errno.ENOENT, env.set, K1, actions=[])
    expect_errno(errno.EINVAL, env.set, actions=[])  # neither KEY nor UFID
    expect_errno(errno.EINVAL, env.set, clear=True)
    # the new actions are validated against the KEY and MASK: set(tcp) on a match not TCP
    bad = set_with_mask(megaflow, ufid=UFID_A, actions=actions("set(tcp(src=1,dst=2))"))
    expect_errno(errno.EINVAL, env.flow, FlowCmd.SET, bad)
    # the KEY is parsed even when the UFID names the flow: a malformed one is EINVAL
    expect_errno(
        errno.EINVAL, env.flow, FlowCmd.SET, {"ufid": UFID_A, "key": key("ipv4(src=1.2.3.4)")}
    )
    assert env.get(ufid=UFID_A)["actions"] == []


def test_set_tcp_flags_used_and_stats_only_when_non_zero(env: Env) -> None:
    text = (
        f"in_port(1),eth(src={MAC['vm1']},dst={MAC['vm2']}),eth_type(0x0800),"
        "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0/0,ttl=0/0,frag=no),"
        "tcp(src=1000/0,dst=80),tcp_flags(0/0)"
    )
    reply = env.put(text, "2")
    assert "stats" not in reply and "used" not in reply and "tcp_flags" not in reply
    env.inject("vm1", [tcp_frame(flags="")])  # no flags: still no TCP_FLAGS
    reply = env.get(text)
    assert "tcp_flags" not in reply and reply["stats"].n_packets == 1
    assert abs(reply["used"] - now_ms()) < 5000  # CLOCK_MONOTONIC milliseconds
    env.inject("vm1", [tcp_frame(flags="S")])
    env.inject("vm1", [tcp_frame(sport=1001, flags="A"), tcp_frame(flags="PA")])
    reply = env.get(text)
    assert reply["tcp_flags"] == 0x02 | 0x10 | 0x08
    assert reply["stats"].n_packets == 4
    assert list(reply) == ["key", "mask", "used", "stats", "tcp_flags", "actions"]
    assert len(env.take("vm2")) == 4


# -- GET and DEL -------------------------------------------------------------------------------


def test_get_and_del_by_key_and_by_ufid(env: Env) -> None:
    env.put(K1, "2")
    env.put(l2_megaflow_text(dst="vm3"), "3", ufid=UFID_A)
    assert env.get(K1)["actions"] == [("output", 2)]
    assert env.get(ufid=UFID_A)["actions"] == [("output", 3)]
    # a GET with a MASK still finds the flow by its exact key (the mask is not used to find)
    assert env.get(K1, mask=key_mask(K1)[1])["actions"] == [("output", 2)]
    expect_errno(errno.ENOENT, env.get, udp_key_text(sport=1001))
    expect_errno(errno.EINVAL, env.get)

    env.inject("vm1", [F1, F1, udp_frame(dst="vm3")])
    assert len(env.take("vm2")) == 2 and len(env.take("vm3")) == 1
    final = env.delete(K1)  # the final statistics
    assert final["stats"] == OvsFlowStats(2, 2 * len(F1))
    assert final["actions"] == [("output", 2)]
    final = env.delete(ufid=UFID_A)
    assert final["ufid"] == UFID_A and final["stats"].n_packets == 1
    expect_errno(errno.ENOENT, env.delete, K1)
    expect_errno(errno.ENOENT, env.delete, ufid=UFID_A)
    expect_errno(errno.ENOENT, env.get, K1)
    assert env.dump() == [] and env.stats().n_flows == 0
    env.inject("vm1", [F1])  # gone from the packet path too (and from the exact-match cache)
    assert env.take("vm2") == []
    assert env.upcalls(1)[0].attrs["packet"] == F1


def test_del_without_echo_and_del_with_neither_flushes(env: Env) -> None:
    sub = env.h.subscriber(FLOW)
    for sport in range(10):
        env.put(udp_key_text(sport=sport), "2", flags=0)
    env.put(l2_megaflow_text(dst="vm3"), "3", ufid=UFID_A, flags=0)
    assert len(sub.events()) == 11
    assert env.flow(FlowCmd.DEL, {"key": key(udp_key_text(sport=0))}, flags=0) == []
    assert len(sub.events()) == 1
    assert env.flow(FlowCmd.DEL, {}) == []  # flush
    assert sub.events() == []  # no per-flow notifications
    assert env.dump() == [] and env.stats().n_flows == 0
    assert env.dp_attrs()["megaflow_stats"].n_masks == 0
    env.inject("vm1", [udp_frame(sport=3), udp_frame(dst="vm3")])
    assert env.take("vm2") == [] and env.take("vm3") == []
    assert len(env.upcalls(2)) == 2
    # the flushed table takes new flows
    env.put(udp_key_text(sport=3), "2", flags=NLM_F_CREATE)
    env.inject("vm1", [udp_frame(sport=3)])
    assert env.take("vm2") == [udp_frame(sport=3)]


# -- dumps ---------------------------------------------------------------------------------------


def test_dump_reports_every_flow_once_with_stats_only_when_hit(env: Env) -> None:
    for sport in range(40):
        env.put(udp_key_text(sport=sport), "2", flags=0)
    for i in range(40):
        env.put(udp_key_text(sport=sport, dport=i), "3", ufid=bytes([i]) * 16, flags=0)
    env.inject("vm1", [udp_frame(5), udp_frame(39, 7)])
    flows = env.dump()
    assert len(flows) == 80
    by_key = [flat(f["key"]) for f in flows if "ufid" not in f]
    assert len(set(by_key)) == 40
    assert sorted(f["ufid"] for f in flows if "ufid" in f) == [bytes([i]) * 16 for i in range(40)]
    hit = [f for f in flows if "stats" in f]
    assert len(hit) == 2 and all("used" in f for f in hit)
    assert all("used" not in f and "tcp_flags" not in f for f in flows if "stats" not in f)
    for f in flows:
        assert next(iter(f)) == ("ufid" if "ufid" in f else "key")
        assert "mask" in f and "actions" in f
    env.take_all()


@pytest.mark.parametrize(
    ("flags", "ufid_fields", "key_fields"),
    [
        (1, ["ufid", "mask", "actions"], ["key", "mask", "actions"]),
        (2, ["ufid", "key", "actions"], ["key", "actions"]),
        (4, ["ufid", "key", "mask"], ["key", "mask"]),
        (7, ["ufid"], ["key"]),
    ],
)
def test_ufid_flags_trim_dumps_and_replies(
    env: Env, flags: int, ufid_fields: list[str], key_fields: list[str]
) -> None:
    env.put(l2_megaflow_text(dst="vm3"), "3", ufid=UFID_A)
    env.put(K1, "2")
    flows = env.dump(ufid_flags=flags)
    assert sorted(list(f) for f in flows) == sorted([ufid_fields, key_fields])
    # GET, SET and DEL replies honour UFID_FLAGS too
    assert list(env.get(ufid=UFID_A, ufid_flags=flags)) == ufid_fields
    assert list(env.set(K1, ufid_flags=flags)) == key_fields
    # a terse dump still carries the statistics of flows that were hit
    env.inject("vm1", [udp_frame(dst="vm3")])
    (hit,) = [f for f in env.dump(ufid_flags=7) if "ufid" in f]
    assert list(hit) == ["ufid", "used", "stats"]
    assert len(env.take("vm3")) == 1


def test_a_flow_present_for_the_whole_dump_is_reported_once(env: Env) -> None:
    # small dump records and many flows: the dump outruns the socket buffer, so the table
    # changes while it runs (flows added, flows behind and ahead of it deleted)
    env.h.call(setattr, env.h.service.device, "dump_record_bytes", 2048)
    requests = [
        Request(
            FLOW,
            FlowCmd.NEW,
            {"key": key(udp_key_text(sport=s)), "actions": actions("2")},
            NLM_F_REQUEST,
            env.ifindex,
        )
        for s in range(1000)
    ]
    for i in range(0, 1000, 250):
        assert all(r.error is None for r in env.c.transact_many(requests[i : i + 250]))
    other = env.h.client()
    deleted: set[int] = set()
    seen: list[int] = []
    added = 0
    for i, msg in enumerate(env.c.dump(FLOW, FlowCmd.GET, {}, dp_ifindex=env.ifindex)):
        seen.append(msg.attrs["key"]["udp"].src)
        if i % 10 == 0:
            new = {"key": key(udp_key_text(sport=5000 + i)), "actions": []}
            other.transact(FLOW, FlowCmd.NEW, new, dp_ifindex=env.ifindex)
            added += 1
            for sport in (i // 2, 999 - i // 10):
                if sport not in deleted:
                    deleted.add(sport)
                    gone = {"key": key(udp_key_text(sport=sport))}
                    other.transact(FLOW, FlowCmd.DEL, gone, dp_ifindex=env.ifindex)
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(range(1000)) - deleted <= set(seen)  # every flow present all along
    assert len(env.dump()) == 1000 - len(deleted) + added
