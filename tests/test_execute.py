"""``OVS_PACKET_CMD_EXECUTE`` (docs/datapath.md section 5): actions on a given packet with the
key's metadata, no flow installed, probes that send nothing, the errnos, an unknown or absent
in_port kept in the key (the local port is the input vport), UPCALL_PID; and the completion of
the extension's own packets.
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Iterator

import pytest
from datapath_support import expect_errno
from flow_support import (
    MAC,
    PACKET,
    Env,
    actions,
    flow_env,
    in_kernel_order,
    key,
    udp_frame,
    udp_key_text,
)

from ovsdp.flowtable.flow_key import attrs_to_key, extract_key, metadata_prefix
from ovsdp.flowtable.key_netlink import metadata_from_attrs
from ovsdp.netlink.constants import OVS_PACKET_HASH_SW_BIT, PacketCmd

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import ARP, Dot1Q, Ether  # noqa: E402

FRAME = udp_frame()


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def test_execute_outputs_and_installs_nothing(env: Env) -> None:
    before = env.stats()
    assert env.execute(FRAME, "in_port(1)", "2,3") == []
    assert env.take("vm2") == [FRAME] and env.take("vm3") == [FRAME]
    assert env.take("vm1") == []
    assert env.dump() == []
    after = env.stats()
    assert (after.n_hit, after.n_missed, after.n_lost, after.n_flows) == (
        before.n_hit, before.n_missed, before.n_lost, 0,
    )  # fmt: skip
    assert env.vport("vm2")["stats"].tx_packets == 1
    env.no_upcalls()


def test_execute_runs_modifications_parsed_by_scapy(env: Env) -> None:
    env.execute(FRAME, "in_port(1)", "push_vlan(vid=7,pcp=3),2,pop_vlan,set(ipv4(ttl=5)),3")
    (tagged,) = env.take("vm2")
    (changed,) = env.take("vm3")
    t = Ether(tagged)
    assert t[Dot1Q].vlan == 7 and t[Dot1Q].prio == 3 and t[IP].ttl == 64
    c = Ether(changed)
    assert Dot1Q not in c and c[IP].ttl == 5
    assert IP(bytes(c[IP])).chksum == c[IP].chksum  # checksum kept right
    recomputed = c.copy()
    del recomputed[IP].chksum
    assert Ether(bytes(recomputed))[IP].chksum == c[IP].chksum


def test_only_the_keys_metadata_is_used(env: Env) -> None:
    # the key claims another packet entirely; only in_port, priority and skb_mark count
    claimed = udp_key_text(in_port=2, src="vm3", dst="vm1", ip_src="9.9.9.9", sport=1)
    text = f"skb_priority(5),skb_mark(7),{claimed}"
    env.execute(FRAME, text, f"userspace(pid={env.handler.pid})")
    (msg,) = env.upcalls(1)
    assert msg.cmd == PacketCmd.ACTION and msg.attrs["packet"] == FRAME
    k = msg.attrs["key"]
    assert (k["in_port"], k["priority"], k["skb_mark"]) == (2, 5, 7)
    meta = metadata_from_attrs(key(text))
    assert attrs_to_key(k, None)[0] == extract_key(FRAME, metadata_prefix(meta))
    assert k["ethernet"].src == bytes.fromhex(MAC["vm1"].replace(":", ""))  # the packet's


def test_actions_are_validated_against_the_packet_not_the_key(env: Env) -> None:
    arp = bytes(Ether(src=MAC["vm1"], dst=MAC["vm2"]) / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    # the key says IPv4/UDP, the packet is ARP: setting IPv4 fields is EINVAL
    expect_errno(errno.EINVAL, env.execute, arp, udp_key_text(), "set(ipv4(ttl=1)),2")
    expect_errno(errno.EINVAL, env.execute, FRAME, "in_port(1)", "set(tcp(src=1)),2")
    expect_errno(errno.EINVAL, env.execute, FRAME, "in_port(1)", "drop,2")
    assert env.take("vm2") == []
    # the other way round: a key saying nothing, a UDP packet
    env.execute(FRAME, "in_port(1)", "set(udp(src=7)),2")
    assert Ether(env.take("vm2")[0])[UDP].sport == 7


def test_probe_validates_and_sends_nothing(env: Env) -> None:
    assert env.execute(FRAME, "in_port(1)", "2,3", probe=True) == []
    text = f"userspace(pid={env.handler.pid}),recirc(1)"
    assert env.execute(FRAME, "in_port(1)", text, probe=True) == []
    assert env.take_all() == {p: [] for p in ("vm1", "vm2", "vm3", "ext", "host")}
    env.no_upcalls()
    assert env.vport("vm2")["stats"].tx_packets == 0
    assert env.stats().n_missed == 0
    # a probe still validates
    expect_errno(errno.EINVAL, env.execute, FRAME, "in_port(1)", "set(tcp(src=1))", probe=True)
    expect_errno(errno.EOPNOTSUPP, env.execute, FRAME, "in_port(1)", "ct(commit)", probe=True)


def test_missing_attributes_and_runts_are_einval(env: Env) -> None:
    full = {"packet": FRAME, "key": key("in_port(1)"), "actions": actions("2")}
    for missing in ("packet", "key", "actions"):
        attrs = {k: v for k, v in full.items() if k != missing}
        expect_errno(
            errno.EINVAL,
            env.c.transact,
            PACKET,
            PacketCmd.EXECUTE,
            attrs,
            dp_ifindex=env.ifindex,
        )
    expect_errno(errno.EINVAL, env.execute, FRAME[:13], "in_port(1)", "2")
    expect_errno(errno.EINVAL, env.execute, b"", "in_port(1)", "2")
    env.execute(FRAME[:14], "in_port(1)", "2")  # an Ethernet header is enough
    assert env.take("vm2") == [FRAME[:14]]


def upcall_stats(env: Env, name: str) -> tuple[int, int]:
    stats = env.c.vport_get(env.ifindex, name).attrs["upcall_stats"]
    return stats["success"], stats["fail"]


def test_an_unknown_or_absent_in_port_is_kept_and_the_local_port_is_the_input(env: Env) -> None:
    # As the kernel: the key keeps in_port as given (absent: DP_MAX_PORTS, which reported keys
    # omit); only the input vport, whose upcall statistics count, falls back to the local port.
    pid = env.handler.pid
    env.execute(FRAME, "in_port(77)", f"userspace(pid={pid})")
    env.execute(FRAME, "skb_mark(1)", f"userspace(pid={pid})")
    env.execute(FRAME, "in_port(3)", f"userspace(pid={pid})")
    keys = [m.attrs["key"] for m in env.upcalls(3)]
    assert [k.get("in_port") for k in keys] == [77, None, 3]
    assert keys[1]["skb_mark"] == 1
    for k in keys:
        assert in_kernel_order(k)
    assert upcall_stats(env, "dp0") == (2, 0)
    assert upcall_stats(env, "vm3") == (1, 0)
    # the key an upcall reports is the packet's key under the execute's metadata
    for text, k in zip(("in_port(77)", "skb_mark(1)", "in_port(3)"), keys, strict=True):
        meta = metadata_from_attrs(key(text))
        assert attrs_to_key(k, None)[0] == extract_key(FRAME, metadata_prefix(meta))


def test_a_recirculation_miss_of_an_execute_without_in_port(env: Env) -> None:
    # the miss reports the key without in_port and goes to the local port's PID (the handler),
    # counted there
    env.execute(FRAME, "skb_mark(2)", "recirc(4)")
    env.execute(FRAME, "in_port(77)", "recirc(4)")
    first, second = env.upcalls(2)
    assert first.cmd == second.cmd == PacketCmd.MISS
    assert "in_port" not in first.attrs["key"] and first.attrs["key"]["recirc_id"] == 4
    assert second.attrs["key"]["in_port"] == 77
    assert upcall_stats(env, "dp0") == (2, 0)
    assert env.stats().n_missed == 2
    # a flow put from that miss's key (no in_port: wildcarded) matches the next execute
    env.put(udp_key_text(recirc_id=4).replace("in_port(1),", ""), "2", mask=False)
    env.execute(FRAME, "skb_mark(2)", "recirc(4)")
    assert env.take("vm2") == [FRAME]
    (flow,) = env.dump()
    assert "in_port" not in flow["key"] and flow["stats"].n_packets == 1
    env.no_upcalls()


def test_upcall_pid_overrides_the_actions_pid(env: Env) -> None:
    other = env.h.client()
    env.execute(FRAME, "in_port(1)", f"userspace(pid={env.handler.pid})", upcall_pid=other.pid)
    (msg,) = env.upcalls(1, client=other)
    assert msg.cmd == PacketCmd.ACTION
    env.no_upcalls()
    # a miss after a recirculation goes there too
    env.execute(FRAME, "in_port(1)", "recirc(9)", upcall_pid=other.pid)
    (miss,) = env.upcalls(1, client=other)
    assert miss.cmd == PacketCmd.MISS and miss.attrs["key"]["recirc_id"] == 9
    assert miss.attrs["key"]["in_port"] == 1
    env.no_upcalls()
    assert env.stats().n_missed == 1


def test_mru_and_hash_are_honoured(env: Env) -> None:
    env.execute(FRAME, "in_port(1)", f"userspace(pid={env.handler.pid})", mru=1400, hash=0x1234ABCD)
    (msg,) = env.upcalls(1)
    assert list(msg.attrs) == ["key", "userdata", "mru", "hash", "packet"]
    assert msg.attrs["mru"] == 1400
    assert msg.attrs["hash"] == 0x1234ABCD | OVS_PACKET_HASH_SW_BIT


def test_recirculation_from_an_execute_uses_the_flow_table(env: Env) -> None:
    env.put(udp_key_text(recirc_id=3), "2")
    env.execute(FRAME, "in_port(1)", "recirc(3)")
    assert env.take("vm2") == [FRAME]
    assert env.stats().n_hit == 1
    assert env.get(udp_key_text(recirc_id=3))["stats"].n_packets == 1


def test_execute_to_the_local_port_a_down_port_and_no_port(env: Env) -> None:
    env.c.link("vm3", False)
    env.execute(FRAME, "in_port(1)", "0,3,99,2")
    assert env.take("vm2") == [FRAME] and env.take("vm3") == []
    assert env.c.vport_get(env.ifindex, "dp0").attrs["stats"].tx_packets == 1  # local port
    assert env.vport("vm3")["stats"].tx_dropped == 1
    assert env.counters()["output_no_port"] == 1


def test_execute_on_a_tagged_frame_with_the_wrong_key(env: Env) -> None:
    tagged = bytes(
        Ether(src=MAC["vm1"], dst=MAC["vm2"]) / Dot1Q(vlan=5) / IP() / UDP(sport=1, dport=2)
    )
    # pop_vlan validates against the packet's own key (tagged), whatever the key says
    env.execute(tagged, "in_port(1)", "pop_vlan,2")
    (got,) = env.take("vm2")
    assert Dot1Q not in Ether(got) and Ether(got)[UDP].dport == 2


def test_execute_packets_complete(env: Env) -> None:
    acts = "2,clone(set(ipv4(ttl=3)),3),sample(sample=100%,actions(1))"
    for _ in range(20):
        env.execute(FRAME, "in_port(1)", acts)
    assert [len(env.take(p)) for p in ("vm1", "vm2", "vm3")] == [20, 20, 20]
    counters = env.counters()
    assert counters["created"] == counters["released"] == 60
