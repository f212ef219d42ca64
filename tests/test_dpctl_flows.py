"""ovsdp-dpctl: flow commands, dump-flows formats and filters, batch files (in-process)."""

from __future__ import annotations

import re

import pytest
from datapath_support import Harness
from test_dpctl_support import (  # noqa: F401
    UDP_KEY,
    Dpctl,
    check_idle,
    check_odp_flow,
    dpctl_fixture,
    harness_fixture,
    inject,
    take,
    tcp_frame,
    udp_frame,
    vlan_frame,
)

from userspace.dpctl import format_flow_stats, parse_flow_line
from userspace.dpctl.flowfilter import FilterError, flow_view, parse_filter
from userspace.dpctl.flows import format_tcp_flags
from userspace.dpif import FlowStats
from userspace.odp import parse_key

UFID = "ufid:12345678-1234-1234-1234-123456789abc"
ETH12 = "eth(src=00:15:5d:00:00:01,dst=00:15:5d:00:00:02)"
TCP_KEY = (
    f"recirc_id(0),in_port(1),{ETH12},eth_type(0x0800),"
    "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=6,tos=0,ttl=64,frag=no),tcp(src=1000,dst=80),"
    "tcp_flags(0/0)"
)
TUNNEL_KEY = (
    "recirc_id(0),tunnel(tun_id=0x2a,src=192.0.2.1,dst=192.0.2.2,ttl=64,tp_dst=4789,flags(key)),"
    "in_port(4),eth(src=00:15:5d:00:00:09,dst=00:15:5d:00:00:01),eth_type(0x0800),ipv4(frag=no)"
)
VLAN_KEY = (
    f"recirc_id(0),in_port(1),{ETH12},eth_type(0x8100),vlan(vid=10,pcp=0),"
    "encap(eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
    "udp(src=1,dst=2))"
)
ENCAP_ACTIONS = "set(tunnel(tun_id=0x2a,dst=192.0.2.9,ttl=64,tp_dst=4789,flags(df|key))),4"
NO_STATS = "packets:0, bytes:0, used:never"


@pytest.fixture
def dp(dpctl: Dpctl) -> Dpctl:
    """dp0 with vm1, vm2, vm3 (ports 1-3) and a VXLAN port (4)."""
    dpctl.ok("add-dp", "dp0", "vm1", "vm2", "vm3", "vx,type=vxlan")
    return dpctl


def test_add_flow_and_dump(dp: Dpctl) -> None:
    dp.ok("add-flow", UDP_KEY, "2")
    (line,) = dp.flows()
    assert line == f"{UDP_KEY}, {NO_STATS}, actions:2"
    flow = check_odp_flow(line)
    assert flow.match["in_port"] == 1 and flow.match["udp"]["dst"] == 2000
    assert flow.actions == [{"output": {"port": 2}}]
    result = dp("add-flow", UDP_KEY, "3")
    assert (result.rc, result.out, result.err) == (
        1,
        "",
        "ovsdp-dpctl: updating flow table (File exists)\n",
    )
    assert dp("add-flow", "-s", "dp0", TCP_KEY, "drop").out == NO_STATS + "\n"
    assert len(dp.flows("dp0")) == len(dp.flows("system@dp0")) == 2


def test_verbose_names_and_ufid(dp: Dpctl) -> None:
    dp.ok("add-flow", f"{UFID},recirc_id(0),{UDP_KEY}", "2,3")
    key = "recirc_id(0)," + UDP_KEY
    assert dp.flows() == [f"{key}, {NO_STATS}, actions:2,3"]
    verbose_key = (
        f"recirc_id(0),dp_hash(0/0),skb_priority(0/0),in_port(vm1),skb_mark(0/0),{ETH12},"
        "eth_type(0x0800),ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
        "udp(src=1000,dst=2000)"
    )
    assert dp.flows("-m") == [f"{UFID}, {verbose_key}, {NO_STATS}, dp:ovs, actions:vm2,vm3"]
    # --names alone names output ports only (odp_flow_format names in_port when verbose)
    assert dp.flows("--names") == [f"{key}, {NO_STATS}, actions:vm2,vm3"]
    numbered = verbose_key.replace("in_port(vm1)", "in_port(1)")
    assert dp.flows("-m", "--no-names") == [f"{UFID}, {numbered}, {NO_STATS}, dp:ovs, actions:2,3"]
    flow = check_odp_flow(dp.flows("-m")[0])
    assert flow.info["dp"] == "ovs" and flow.match["in_port"] == "vm1"


def _odp_flow_error(line: str) -> Exception | None:
    """Why OVS's parser refuses a dump-flows line, or None if it reads it."""
    try:
        check_odp_flow(line)
    except Exception as exc:  # the ovs package raises its own ParseError and others
        return exc
    return None


def test_wildcarded_recirc_id_in_verbose_dumps(dp: Dpctl) -> None:
    """A flow put without recirc_id matches any: verbose dumps say ``recirc_id(0/0)``, as
    odp_flow_format prints a wildcarded u32 for the kernel's flows (C's ``%#x`` prints zero as
    ``0``).  OVS's Python parser reads recirc_id as a plain integer, so exactly those lines, and
    no others, fail to parse; without that field they parse."""
    dp.ok("add-flow", UDP_KEY, "2")
    dp.ok("add-flow", TCP_KEY, "3")  # carries recirc_id(0)
    dp.ok("add-flow", UDP_KEY.replace("in_port(1)", "in_port(3)"), "1")
    dp.ok("add-flow", f"{UFID},recirc_id(0),{UDP_KEY.replace('in_port(1)', 'in_port(2)')}", "1")
    lines = dp.ok("dump-flows", "-m").lines
    wildcarded = [line for line in lines if "recirc_id(0/0)," in line]
    assert len(lines) == 4 and len(wildcarded) == 2
    starts = (
        "recirc_id(0/0),dp_hash(0/0),",
        "recirc_id(0),dp_hash(0/0),",
        f"{UFID}, recirc_id(0),",
    )
    assert all(line.startswith(starts) for line in lines), lines
    refused = [line for line in lines if _odp_flow_error(line) is not None]
    assert refused == wildcarded
    for line in refused:
        assert "recirc_id" in str(_odp_flow_error(line))
        check_odp_flow(line.replace("recirc_id(0/0),", "", 1))
    # no other spelling of the wildcard would do: the parser takes no mask on recirc_id at all
    rest = refused[0].replace("recirc_id(0/0),", "", 1)
    for spelling in ("recirc_id(0/0x0)", "recirc_id(0x0/0x0)", "recirc_id(0/0xffffffff)"):
        assert _odp_flow_error(f"{spelling},{rest}") is not None, spelling
    # terse dumps leave wildcarded fields out: every line parses as printed
    for line in dp.flows():
        assert "recirc_id(0/0)" not in line


def test_tunnel_and_vlan_flows(h: Harness, dp: Dpctl) -> None:
    flows = [
        (TUNNEL_KEY, "1"),
        (VLAN_KEY, "pop_vlan,2"),
        (
            "recirc_id(0),in_port(2),eth(),eth_type(0x0800),ipv4(dst=192.0.2.9,frag=no)",
            ENCAP_ACTIONS,
        ),
        ("recirc_id(0),in_port(3),eth(),eth_type(0x0806),arp()", "push_vlan(vid=20,pcp=3),1"),
    ]
    for key, actions in flows:
        dp.ok("add-flow", key, actions)
    inject(h, "vm1", [vlan_frame(10)])
    lines = dp.flows()
    assert lines[0] == f"{TUNNEL_KEY}, {NO_STATS}, actions:1"
    assert re.fullmatch(re.escape(VLAN_KEY) + r", packets:1, bytes:46, used:\d+\.\d{3}s, "
                        r"actions:pop_vlan,2", lines[1])  # fmt: skip
    assert lines[2] == (
        "recirc_id(0),in_port(2),eth(),eth_type(0x0800),ipv4(dst=192.0.2.9,frag=no), "
        f"{NO_STATS}, actions:{ENCAP_ACTIONS}"
    )
    assert lines[3] == (
        f"recirc_id(0),in_port(3),eth(),eth_type(0x0806), {NO_STATS}, "
        "actions:push_vlan(vid=20,pcp=3),1"
    )
    tunnel = check_odp_flow(lines[0])
    assert tunnel.match["tunnel"]["tun_id"] == 0x2A
    assert str(tunnel.match["tunnel"]["dst"]) == "192.0.2.2/32"
    vlan = check_odp_flow(lines[1])
    assert vlan.match["vlan"]["vid"] == 10 and vlan.match["encap"]["udp"]["dst"] == 2
    assert vlan.actions[0] == {"pop_vlan": True}
    encap = check_odp_flow(lines[2])
    assert encap.actions[0]["set"]["tunnel"]["tun_id"] == 0x2A
    assert encap.actions[1] == {"output": {"port": 4}}
    push = check_odp_flow(lines[3])
    assert push.actions[0]["push_vlan"]["vid"] == 20
    for line in dp.flows("-m"):  # every verbose line too (names, masks, dp:ovs)
        assert "dp:ovs" in line
    assert "actions:pop_vlan,vm2" in dp.flows("-m")[1]
    assert len(take(h, "vm2")) == 1
    check_idle(h)


def test_tcp_flags_and_used(h: Harness, dp: Dpctl) -> None:
    dp.ok("add-flow", TCP_KEY, "2")
    inject(h, "vm1", [tcp_frame("S"), tcp_frame("A")])
    (line,) = dp.flows()
    pattern = r", packets:2, bytes:(\d+), used:(\d+\.\d{3})s, flags:S\., actions:2"
    match = re.search(pattern, line)
    assert match is not None, line
    assert int(match.group(1)) == 2 * len(tcp_frame()) and float(match.group(2)) < 5
    assert line.startswith(TCP_KEY.replace(",tcp_flags(0/0)", "") + ", ")
    flow = check_odp_flow(line)
    assert flow.info["flags"] == "S." and flow.info["packets"] == 2
    check_idle(h)


def test_mod_flow(h: Harness, dp: Dpctl) -> None:
    result = dp("mod-flow", UDP_KEY, "3")
    assert (result.rc, result.err) == (
        1,
        "ovsdp-dpctl: updating flow table (No such file or directory)\n",
    )
    dp.ok("mod-flow", "--may-create", UDP_KEY, "3")
    assert dp.flows()[0].endswith(", actions:3")
    inject(h, "vm1", [udp_frame()] * 3)
    nbytes = 3 * len(udp_frame())
    # -s: the flow's statistics; --clear: zeroed
    out = dp.ok("mod-flow", "-s", UDP_KEY, "2").out
    assert re.fullmatch(rf"packets:3, bytes:{nbytes}, used:\d+\.\d{{3}}s\n", out), out
    dp.ok("mod-flow", "--clear", UDP_KEY, "2")
    assert dp.flows() == [f"{UDP_KEY}, {NO_STATS}, actions:2"]
    assert dp.ok("mod-flow", "-s", UDP_KEY, "1").out == NO_STATS + "\n"
    assert dp.ok("mod-flow", "--may-create", UDP_KEY, "drop").out == ""
    assert dp.flows()[0].endswith(", actions:drop")
    check_idle(h)


def test_del_flow(h: Harness, dp: Dpctl) -> None:
    dp.ok("add-flow", UDP_KEY, "2")
    inject(h, "vm1", [udp_frame()] * 2)
    out = dp.ok("del-flow", "-s", UDP_KEY).out
    assert re.fullmatch(rf"packets:2, bytes:{2 * len(udp_frame())}, used:\d+\.\d{{3}}s\n", out)
    result = dp("del-flow", UDP_KEY)
    assert (result.rc, result.out, result.err) == (
        1,
        "Perhaps you need to specify a UFID?\n",
        "ovsdp-dpctl: deleting flow (No such file or directory)\n",
    )
    dp.ok("add-flow", f"{UFID},{UDP_KEY}", "2")
    dp.ok("del-flow", UFID)
    result = dp("del-flow", UFID)
    enoent = "ovsdp-dpctl: deleting flow (No such file or directory)\n"
    assert (result.out, result.err) == ("", enoent)
    # port names work in keys; in actions ovs-dpctl does not take them either
    named = UDP_KEY.replace("in_port(1)", "in_port(vm1)")
    assert dp("add-flow", named, "vm2").err == "ovsdp-dpctl: parsing actions (Invalid argument)\n"
    dp.ok("add-flow", named, "2")
    dp.ok("del-flow", "dp0", UDP_KEY.replace("in_port(1)", "in_port(vm1)"))
    assert dp.flows() == []
    check_idle(h)


def test_get_flow(h: Harness, dp: Dpctl) -> None:
    dp.ok("add-flow", f"{UFID},recirc_id(0),{UDP_KEY}", "2")
    line = dp.ok("get-flow", UFID).out
    assert line == f"recirc_id(0),{UDP_KEY}, {NO_STATS}, actions:2\n"
    verbose = dp.ok("get-flow", "-m", "dp0", UFID).out
    assert verbose == dp.ok("dump-flows", "-m").out
    check_odp_flow(verbose.strip())
    cases = {
        ("xyz",): "ovsdp-dpctl: parsing flow ufid\n",
        ("ufid:1234",): "ovsdp-dpctl: parsing flow ufid (Invalid argument)\n",
        ("ufid:12345678-1234-1234-1234-000000000000",): (
            "ovsdp-dpctl: getting flow (No such file or directory)\n"
        ),
        ("nosuch", UFID): "ovsdp-dpctl: datapath not found (Invalid argument)\n",
    }
    for args, err in cases.items():
        result = dp("get-flow", *args)
        assert (result.rc, result.out, result.err) == (1, "", err), args


def test_parse_errors(dp: Dpctl) -> None:
    result = dp("add-flow", "in_port(1),eth(", "2")
    assert result.rc == 1
    assert result.err.startswith("ovsdp-dpctl: parsing flow key (")
    assert result.err.endswith(") (Invalid argument)\n")
    bad_actions = dp("add-flow", UDP_KEY, "frob").err
    assert bad_actions == "ovsdp-dpctl: parsing actions (Invalid argument)\n"
    assert dp("add-flow", "ufid:xyz,in_port(1)", "2").err == (
        "ovsdp-dpctl: parsing flow ufid (Invalid argument)\n"
    )
    result = dp("del-flow", "in_port(nope)")
    assert result.err.startswith("ovsdp-dpctl: unknown port name 'nope'")
    assert result.err.endswith(" (Invalid argument)\n")
    # the datapath's own validation (an IPv4 attribute under no ethertype)
    result = dp("add-flow", "in_port(1),ipv4(src=1.2.3.4)", "2")
    assert result.err == "ovsdp-dpctl: updating flow table (Invalid argument)\n"
    # the optional datapath argument: with all arguments given, the first must be one
    result = dp("add-flow", "nosuch", UDP_KEY, "2")
    assert result.err == "ovsdp-dpctl: datapath not found (Invalid argument)\n"
    assert dp.flows() == []


def test_dump_flows_filter(h: Harness, dp: Dpctl) -> None:
    udp = "recirc_id(0)," + UDP_KEY
    flows = {
        "udp": (udp, "2"),
        "tcp": (TCP_KEY, "2"),
        "arp": ("recirc_id(0),in_port(2),eth(),eth_type(0x0806),arp()", "1"),
        "any_ip": ("recirc_id(0),in_port(3),eth(),eth_type(0x0800),ipv4()", "1"),
        "vlan": (VLAN_KEY, "pop_vlan,2"),
        "tunnel": (TUNNEL_KEY, "1"),
    }
    line_of: dict[str, str] = {}
    for name, (key, actions) in flows.items():
        dp.ok("add-flow", key, actions)
        (line_of[name],) = [line for line in dp.flows() if line not in line_of.values()]
    cases = {
        "in_port=1": {"udp", "tcp", "vlan"},
        "in_port=vm2": {"arp"},
        "arp": {"arp"},
        "ip": {"udp", "tcp", "any_ip", "vlan", "tunnel"},
        "tcp": {"tcp", "any_ip", "tunnel"},  # these two wildcard nw_proto
        "tcp,tp_dst=80": {"tcp", "any_ip", "tunnel"},
        "tcp,tcp_dst=81": {"any_ip", "tunnel"},
        "ip,nw_src=10.0.0.1": {"udp", "tcp", "any_ip", "vlan", "tunnel"},
        "ip,nw_src=10.9.9.9": {"any_ip", "tunnel"},
        "udp udp_dst=2000": {"udp", "any_ip", "tunnel"},
        "dl_vlan=10": {"vlan"},
        "dl_vlan=11": set(),
        "dl_dst=00:15:5d:00:00:02": {"udp", "tcp", "arp", "any_ip", "vlan"},
        "tun_id=0x2a": set(flows),  # flows without a tunnel key do not match on it
        "tun_id=7,in_port=4": set(),
        "ip,nw_ttl=64": {"udp", "tcp", "any_ip", "vlan", "tunnel"},
        "recirc_id=0": set(flows),
    }
    for text, expected in cases.items():
        got = dp.flows(f"filter={text}")
        assert sorted(got) == sorted(line_of[name] for name in expected), text
    errors = {
        "foo=1": "foo=1: unknown field foo",
        "nw_src=1.1.1.1": "nw_src=1.1.1.1: prerequisites not met for setting nw_src",
        "in_port": "in_port: field in_port missing value",
        "ip,ip": "ip,ip: Ethernet type set multiple times",
        "tcp,ip_proto=6": "tcp,ip_proto=6: field ip_proto set multiple times",
        "in_port=nope": "nope: invalid value for field in_port",
        "ip,nw_src=1.2.3": "1.2.3: invalid value for field nw_src",
        "dl_vlan_pcp=8": "8: value too large for field dl_vlan_pcp",
    }
    for text, reason in errors.items():
        result = dp("dump-flows", f"filter={text}")
        assert (result.rc, result.out, result.err) == (
            1,
            "",
            f"ovsdp-dpctl: Failed to parse filter ({reason})\n",
        ), text


def test_filter_view_of_keys() -> None:
    key, mask = parse_key("in_port(1),eth(),eth_type(0x0806),arp(sip=1.2.3.4,op=2)")
    view = flow_view(key, mask)
    assert view["nw_src"] == (0x01020304, 0xFFFFFFFF)
    assert view["nw_proto"] == (2, 0xFF) and view["nw_dst"] == (0, 0)
    assert view["vlan_tci"] == (0, 0xFFFF) and view["dl_type"] == (0x0806, 0xFFFF)
    assert parse_filter("arp,arp_op=2,arp_spa=1.2.3.4").matches(key, mask)
    assert not parse_filter("arp,arp_op=1").matches(key, mask)
    assert parse_filter("arp,arp_op=1").matches(key, None) is False
    key, mask = parse_key(
        "in_port(1),eth_type(0x86dd),ipv6(src=::1,proto=58),icmpv6(type=135,code=0)"
    )
    assert parse_filter("icmp6,icmpv6_type=135,ipv6_src=::1").matches(key, mask)
    assert not parse_filter("icmp6,icmpv6_type=136").matches(key, mask)
    assert parse_filter("dl_vlan_pcp=3,dl_vlan=0x0ffff").conditions[-1] == ("vlan_tci", 0, 0x1FFF)
    with pytest.raises(FilterError):
        parse_filter("icmp_type=3")


def test_dump_flows_pmd_and_type(dp: Dpctl) -> None:
    dp.ok("add-flow", UDP_KEY, "2")
    assert dp.ok("dump-flows", "pmd=3").out == ""  # no PMD threads here: no flow is on one
    assert dp("dump-flows", "pmd=x") == type(dp("dump-flows", "pmd=x"))(1, "", "")
    result = dp("dump-flows", "dp0", "type=ovs")
    assert result.err == (
        "ovsdp-dpctl: Invalid argument 'type'. Use 'ovs-appctl dpctl/dump-flows' instead.\n"
    )


def test_del_flows_flush(dp: Dpctl) -> None:
    dp.ok("add-flow", UDP_KEY, "2")
    dp.ok("add-flow", TCP_KEY, "2")
    dp.ok("del-flows")
    assert dp.flows() == []
    dp.ok("add-flow", UDP_KEY, "2")
    dp.ok("del-flows", "dp0")
    assert dp.flows() == []
    result = dp("del-flows", "nosuch")  # not a datapath: a file to read
    assert result.err == 'ovsdp-dpctl: Opening file "nosuch" failed (No such file or directory)\n'


# -- batch files ---------------------------------------------------------------------------------


def udp_key(i: int, in_port: int = 1) -> str:
    return (
        f"recirc_id(0),in_port({in_port}),{ETH12},eth_type(0x0800),"
        f"ipv4(src=10.{i >> 8 & 255}.{i & 255}.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
        "udp(src=1000,dst=2000)"
    )


N = 2500


def test_add_mod_del_flows_from_file_and_stdin(tmp_path: object, dp: Dpctl) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    lines = ["# thousands of flows", ""]
    for i in range(N):
        lines.append(f"add {udp_key(i)} 2" if i % 2 else f"  {udp_key(i)}\t2  # default: add")
    lines += [
        "bogus line here",  # line N+3: the "flow" bogus does not parse
        f"{udp_key(0)} 3",  # exists already
        f"add {udp_key(N)}",  # no actions
        "   ",
    ]
    path = tmp_path / "flows.txt"
    path.write_text("\n".join(lines) + "\n")
    result = dp("add-flows", str(path))
    assert result.rc == 1 and result.out == ""
    errors = result.err.splitlines()
    assert errors[0].startswith("ovsdp-dpctl: parsing flow key (")
    assert errors[1:] == [
        "ovsdp-dpctl: updating flow table (File exists)",
        f"ovsdp-dpctl: Failed parsing line number {N + 5}, skipped!",
    ]
    dumped = dp.flows(every=97)
    assert len(dumped) == N and all(line.endswith(", actions:2") for line in dumped)
    # mod-flows from standard input: plain lines modify; "add" and "delete" lines too
    stdin = "".join(f"{udp_key(i)} 3\n" for i in range(N - 2))
    stdin += f"a {udp_key(N)} 1\nd {udp_key(N - 1)}\nm {udp_key(N - 2)} drop\n"
    dp.ok("mod-flows", "-", stdin=stdin)
    dumped = dp.flows(every=97)
    actions = sorted(line.rsplit("actions:", 1)[1] for line in dumped)
    assert actions == ["1"] + ["3"] * (N - 2) + ["drop"]
    # del-flows FILE: keys only (a line with actions is an error for delete)
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"{udp_key(i)}\n" for i in range(0, N, 2)) + f"{udp_key(1)} 2\n")
    result = dp("del-flows", "-s", "dp0", str(keys))
    assert result.rc == 1 and result.out.count("packets:0, bytes:0, used:never\n") == N // 2
    assert result.err == f"ovsdp-dpctl: Failed parsing line number {N // 2 + 1}, skipped!\n"
    assert len(dp.flows(every=97)) == N - N // 2


def test_progress_only_on_a_terminal(tmp_path: object, dp: Dpctl) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    path = tmp_path / "flows.txt"
    path.write_text("".join(f"{udp_key(i)} 2\n" for i in range(1200)) + "oops\n")
    quiet = dp("add-flows", str(path))
    assert quiet.err == "ovsdp-dpctl: Failed parsing line number 1201, skipped!\n"
    dp.ok("del-flows")
    shown = dp("add-flows", str(path), tty=True)
    assert shown.rc == 1
    final = "\rovsdp-dpctl: add-flows: 1201 lines, 1200 done, 1 failed\n"
    assert shown.err.endswith(final), repr(shown.err[-200:])
    assert "\rovsdp-dpctl: add-flows: 1024 lines, 1024 done, 0 failed" in shown.err
    # the progress line is wiped before an error line, and comes back after
    error = "ovsdp-dpctl: Failed parsing line number 1201, skipped!\n"
    before = shown.err[: shown.err.index(error)]
    assert before.endswith("\r" + " " * len(final.strip("\r\n")) + "\r")


# -- units ---------------------------------------------------------------------------------------


def test_parse_flow_line() -> None:
    cases = {
        "in_port(1) 2": ("add", "in_port(1)", "2"),
        "  add in_port(1)  set(tunnel(tun_id=0x1)),2  ": (
            "add",
            "in_port(1)",
            "set(tunnel(tun_id=0x1)),2  ",
        ),
        "modify in_port(1) 2": ("modify", "in_port(1)", "2"),
        "m in_port(1) 2": ("modify", "in_port(1)", "2"),
        "del in_port(1)": ("delete", "in_port(1)", None),
        "ad,in_port(1)": ("add", ",in_port(1)", None),
        "adder in_port(1)": ("add", "adder", "in_port(1)"),
        "delete": ("delete", None, None),
    }
    for line, expected in cases.items():
        assert parse_flow_line("add", line) == expected, line
    assert parse_flow_line("delete", "in_port(1)") == ("delete", "in_port(1)", None)


def test_flow_stats_format() -> None:
    assert format_flow_stats(FlowStats()) == NO_STATS
    stats = FlowStats(7, 420, used=1000, tcp_flags=0x1FF)
    assert format_flow_stats(stats, now_ms=3500) == (
        "packets:7, bytes:420, used:2.500s, flags:SFPRU.ECN"
    )
    assert format_tcp_flags(0) == "none"
    assert format_tcp_flags(0x012) == "S."
    assert format_tcp_flags(0xE00) == "[200][400][800]"
