"""ovsdp-dpctl: datapath and port commands, options, errors (run in-process on a Harness)."""

from __future__ import annotations

import errno
import io
import re

import pytest
from datapath_support import Harness
from test_dpctl_support import (  # noqa: F401
    Dpctl,
    TtyText,
    check_idle,
    dp_attrs,
    dpctl_fixture,
    harness_fixture,
    inject,
    udp_frame,
)

from userspace.dpctl import COMMANDS, parse_options, program_name, run
from userspace.dpctl.dps import port_stats_lines, stats_lines
from userspace.dpctl.monitor import _Claim
from userspace.dpif import Dpif, PortInfo
from userspace.netlink_socket import NetlinkSocket

SHOW_DP0 = """\
system@dp0:
  lookups: hit:0 missed:0 lost:0
  flows: 0
  masks: hit:0 total:0 hit/pkt:0.00
  caches:
    masks-cache: size:256
  port 0: dp0 (internal)
  port 1: vm1
  port 2: vxlan_sys_4789 (vxlan: dst_port=4789)
  port 3: host (internal)
  port 7: vm2
"""


def test_no_datapaths(dpctl: Dpctl) -> None:
    assert dpctl("show") == dpctl("dump-dps") == type(dpctl("show"))(0, "", "")
    for args in (("dump-flows",), ("del-flows",), ("add-flow", "in_port(1)", "1")):
        result = dpctl(*args)
        assert result.rc == 1 and result.out == ""
        assert result.err == (
            "ovsdp-dpctl: no datapaths exist\novsdp-dpctl: datapath not found (Invalid argument)\n"
        )


def test_add_dp_with_ports_and_show(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2,port_no=7", "vx0,type=vxlan", "host,type=internal")
    assert dpctl.ok("show").out == SHOW_DP0
    assert dpctl.ok("show", "dp0").out == SHOW_DP0
    assert dpctl.ok("show", "system@dp0").out == SHOW_DP0
    assert dpctl.ok("dump-dps").out == "system@dp0\n"


def test_add_dp_errors(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0")
    assert dpctl("add-dp", "dp0").err == "ovsdp-dpctl: add_dp (File exists)\n"
    # a switch port's name is taken too (datapaths, vports and switch ports share names)
    assert dpctl("add-dp", "vm3").err == "ovsdp-dpctl: add_dp (File exists)\n"
    result = dpctl("add-dp", "netdev@dp9")
    assert (result.rc, result.err) == (
        1,
        "ovsdp-dpctl: add_dp (Address family not supported by protocol)\n",
    )
    assert dpctl.ok("dump-dps").out == "system@dp0\n"


def test_several_datapaths(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0")
    dpctl.ok("add-dp", "system@dp1")
    assert dpctl.ok("dump-dps").out == "system@dp0\nsystem@dp1\n"
    shown = dpctl.ok("show").out
    assert shown.count("system@dp") == 2 and "  port 0: dp1 (internal)\n" in shown
    result = dpctl("dump-flows")
    assert result.rc == 1
    assert result.err.startswith("ovsdp-dpctl: multiple datapaths, specify one\n")
    assert dpctl.ok("dump-flows", "dp1").out == ""
    result = dpctl("show", "dp0", "nosuch")
    assert result.rc == 1 and result.out.startswith("system@dp0:\n")
    assert result.err == "ovsdp-dpctl: opening datapath nosuch failed (No such device)\n"


def test_del_dp(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1")
    result = dpctl("del-dp", "nosuch")
    assert (result.rc, result.err) == (1, "ovsdp-dpctl: opening datapath (No such device)\n")
    dpctl.ok("del-dp", "dp0")
    assert dpctl.ok("dump-dps").out == ""
    dpctl.ok("add-dp", "dp0", "vm1")  # the switch port was let go


def test_add_if_errors(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1")
    cases = {
        "nope": "ovsdp-dpctl: adding nope to dp0 failed (No such device)\n",
        "vm2,port_no=1": "ovsdp-dpctl: adding vm2 to dp0 failed (Device or resource busy)\n",
        "vm1": "ovsdp-dpctl: adding vm1 to dp0 failed (Device or resource busy)\n",
        "x,type=weird": (
            "ovsdp-dpctl: x: failed to open network device "
            "(Address family not supported by protocol)\n"
        ),
        "vx,type=vxlan,foo=1": "ovsdp-dpctl: vx: unknown vxlan argument 'foo' (Invalid argument)\n",
        "g,type=geneve": "ovsdp-dpctl: adding g to dp0 failed (Address family not supported "
        "by protocol)\n",
        ",": "ovsdp-dpctl: , is not a valid network device name\n",
    }
    for spec, err in cases.items():
        result = dpctl("add-if", "dp0", spec)
        assert (result.rc, result.out, result.err) == (1, "", err), spec
    # a bad one does not stop the others; the status is the last failure's
    result = dpctl("add-if", "dp0", "nope", "vm2", "vm3,port_no=9,port_no=9,foo=1,foo=2")
    assert result.rc == 1
    assert result.err == (
        "ovsdp-dpctl: adding nope to dp0 failed (No such device)\n"
        'ovsdp-dpctl: duplicate "foo" option\n'
        "ovsdp-dpctl: vm3: arguments provided to device that is not configurable\n"
    )
    ports = dpctl.ok("show").lines[-3:]
    assert ports == ["  port 1: vm1", "  port 2: vm2", "  port 9: vm3"]
    result = dpctl("add-if", "nosuch", "vm2")
    assert result.err == "ovsdp-dpctl: opening datapath (No such device)\n"


def test_add_if_empty_type_is_system(dpctl: Dpctl) -> None:
    """``type=`` and a bare ``type`` mean the default: netdev_open takes a type only when it
    is not empty, so ovs-dpctl opens a system device (the last ``type`` given counts)."""
    dpctl.ok("add-dp", "dp0", "vm1,type=")
    dpctl.ok("add-if", "dp0", "vm2,type", "vm3,type=vxlan,type=")
    assert dpctl.ok("show").lines[-3:] == ["  port 1: vm1", "  port 2: vm2", "  port 3: vm3"]
    result = dpctl("add-if", "dp0", "nope,type=")
    assert (result.rc, result.err) == (
        1,
        "ovsdp-dpctl: adding nope to dp0 failed (No such device)\n",
    )
    result = dpctl("add-if", "dp0", "ext,type=,mtu=9000")  # options: the system device's warning
    assert (result.rc, result.err) == (
        0,
        "ovsdp-dpctl: ext: arguments provided to device that is not configurable\n",
    )


def test_tunnel_ports(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vx,type=vxlan,dst_port=4790,remote_ip=192.0.2.1,key=flow")
    assert dpctl.ok("show").lines[-1] == "  port 1: vxlan_sys_4790 (vxlan: dst_port=4790)"
    result = dpctl("add-if", "dp0", "vy,type=vxlan,dst_port=4790")
    assert result.err == "ovsdp-dpctl: adding vy to dp0 failed (File exists)\n"
    dpctl.ok("add-if", "dp0", "vy,type=vxlan")
    assert dpctl.ok("show").lines[-1] == "  port 2: vxlan_sys_4789 (vxlan: dst_port=4789)"


def test_set_if(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vx,type=vxlan")
    # nothing to change: fine
    dpctl.ok("set-if", "dp0", "vxlan_sys_4789,type=vxlan,port_no=2,dst_port=4789,remote_ip=1.2.3.4")
    dpctl.ok("set-if", "dp0", "vm1,type=system")
    cases = {
        "vxlan_sys_4789,type=gre": "ovsdp-dpctl: vxlan_sys_4789: can't change type from vxlan "
        "to gre\n",
        "vm1,port_no=5": "ovsdp-dpctl: vm1: can't change port number from 1 to 5\n",
        "vxlan_sys_4789,dst_port=4790": "ovsdp-dpctl: Error updating configuration "
        "(Operation not supported)\n",
        "vxlan_sys_4789,bad=1": "ovsdp-dpctl: vxlan_sys_4789: unknown vxlan argument 'bad' "
        "(Invalid argument)\n",
        "nope": "ovsdp-dpctl: nope: failed to query port in dp0 (No such device)\n",
    }
    for spec, err in cases.items():
        result = dpctl("set-if", "dp0", spec)
        assert (result.rc, result.err) == (1, err), spec
    result = dpctl("set-if", "dp0", "vm1,mtu=9000")  # a warning, as ovs-dpctl's netdev gives
    assert (result.rc, result.err) == (
        0,
        "ovsdp-dpctl: vm1: arguments provided to device that is not configurable\n",
    )


def test_del_if(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2", "vm3")
    dpctl.ok("del-if", "dp0", "vm1", "3")
    assert dpctl.ok("show").lines[-2:] == ["  port 0: dp0 (internal)", "  port 2: vm2"]
    result = dpctl("del-if", "dp0", "nope", "99", "0", "vm2")
    assert result.rc == 1
    assert result.err == (
        "ovsdp-dpctl: no port named nope\n"
        "ovsdp-dpctl: deleting port 99 from dp0 failed (No such device)\n"
        "ovsdp-dpctl: deleting port 0 from dp0 failed (Invalid argument)\n"
    )
    assert dpctl.ok("show").lines[-1] == "  port 0: dp0 (internal)"
    dpctl.ok("add-if", "dp0", "vm1")  # deleted ports can come back


def test_show_statistics_after_traffic(h: Harness, dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    frame = udp_frame(payload=b"x" * 60)
    dpctl.ok(
        "add-flow",
        "in_port(1),eth(src=00:15:5d:00:00:01,dst=00:15:5d:00:00:02),eth_type(0x0800),"
        "ipv4(src=10.0.0.1,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
        "udp(src=1000,dst=2000)",
        "2",
    )
    for _ in range(4):
        inject(h, "vm1", [frame] * 5)
    inject(h, "vm1", [udp_frame(sport=9)])  # a miss (no handler: lost)
    lines = dpctl.ok("show", "-s").lines
    attrs = dp_attrs(h)
    mask_hits = attrs["megaflow_stats"].n_mask_hit  # counted per group of frames, not per frame
    assert lines[:4] == [
        "system@dp0:",
        "  lookups: hit:20 missed:1 lost:1",
        "  flows: 1",
        f"  masks: hit:{mask_hits} total:1 hit/pkt:{mask_hits / 21:.2f}",
    ]
    rest = lines[4:]
    cache_hits = attrs["megaflow_stats"].n_cache_hit
    if cache_hits:
        assert rest.pop(0) == f"  cache: hit:{cache_hits} hit-rate:{cache_hits / 21 * 100:.2f}%"
    assert rest[:2] == ["  caches:", "    masks-cache: size:256"]
    rx = 20 * len(frame) + len(udp_frame(sport=9))
    assert rest[2:] == [
        "  port 0: dp0 (internal)",
        "    RX packets:0 errors:0 dropped:0 overruns:? frame:?",
        "    TX packets:0 errors:0 dropped:0 aborted:? carrier:?",
        "    collisions:?",
        "    RX bytes:0  TX bytes:0",
        "  port 1: vm1",
        "    RX packets:21 errors:0 dropped:0 overruns:? frame:?",
        "    TX packets:0 errors:0 dropped:0 aborted:? carrier:?",
        "    collisions:?",
        f"    RX bytes:{rx} ({rx / 1024:.1f} KiB)  TX bytes:0",
        "  port 2: vm2",
        "    RX packets:0 errors:0 dropped:0 overruns:? frame:?",
        "    TX packets:20 errors:0 dropped:0 aborted:? carrier:?",
        "    collisions:?",
        f"    RX bytes:0  TX bytes:{20 * len(frame)} ({20 * len(frame) / 1024:.1f} KiB)",
    ]
    check_idle(h)


def test_stats_line_formats() -> None:
    class S:
        n_hit, n_missed, n_lost, n_flows = 39, 3, 0, 2

    class M:
        n_mask_hit, n_masks, n_cache_hit = 44, 2, 26

    # the numbers of a real `ovs-dpctl show` (OVS 3.x on Linux)
    assert stats_lines({"stats": S, "megaflow_stats": M, "masks_cache_size": 256}) == [
        "  lookups: hit:39 missed:3 lost:0",
        "  flows: 2",
        "  masks: hit:44 total:2 hit/pkt:1.05",
        "  cache: hit:26 hit-rate:61.90%",
        "  caches:",
        "    masks-cache: size:256",
    ]
    M.n_cache_hit = 0  # 0 means "not supported" to dpif-netlink: no cache line
    assert stats_lines({"stats": S, "megaflow_stats": M}) == [
        "  lookups: hit:39 missed:3 lost:0",
        "  flows: 2",
        "  masks: hit:44 total:2 hit/pkt:1.05",
    ]

    class Big:
        rx_packets, tx_packets, rx_errors, tx_errors, rx_dropped, tx_dropped = 1, 2, 3, 4, 5, 6
        rx_bytes, tx_bytes = 3 * 1024**4 + 1, 1536 * 1024**2

    assert port_stats_lines(Big)[3] == (
        "    RX bytes:3298534883329 (3.0 TiB)  TX bytes:1610612736 (1.5 GiB)"
    )
    assert port_stats_lines(None)[0] == "    RX packets:? errors:? dropped:? overruns:? frame:?"


def test_port_line_config() -> None:
    from userspace.dpctl.dps import port_line

    vx = PortInfo(4, "vxlan_sys_4789", 4, (0,), options={"dst_port": 4789})
    assert port_line(vx) == "  port 4: vxlan_sys_4789 (vxlan: dst_port=4789)"
    gbp = PortInfo(5, "vxlan_sys_1", 4, (0,), options={"dst_port": 1, "extension": {"gbp": True}})
    assert port_line(gbp) == "  port 5: vxlan_sys_1 (vxlan: dst_port=1, exts=gbp)"
    assert port_line(PortInfo(6, "x", 99, (0,))) == "  port 6: x (type99)"


def test_service_not_running(dpctl: Dpctl) -> None:
    result = dpctl("--socket", "/nonexistent/ovsdp.sock", "show")
    assert (result.rc, result.out) == (1, "")
    assert result.err == (
        "ovsdp-dpctl: no ovsdp service on /nonexistent/ovsdp.sock (No such file or directory)\n"
    )


def test_command_line_errors(dpctl: Dpctl) -> None:
    cases = {
        (): "ovsdp-dpctl: missing command name; use --help for help\n",
        ("bogus",): "ovsdp-dpctl: unknown command 'bogus'; use --help for help\n",
        ("add-if", "dp0"): "ovsdp-dpctl: 'add-if' command requires at least 2 arguments\n",
        ("del-dp", "a", "b"): "ovsdp-dpctl: 'del-dp' command takes at most 1 arguments\n",
        ("dump-dps", "x"): "ovsdp-dpctl: 'dump-dps' command takes at most 0 arguments\n",
        ("--bogus", "show"): "ovsdp-dpctl: unrecognized option '--bogus'\n",
        ("-x", "show"): "ovsdp-dpctl: invalid option -- 'x'\n",
        ("--n", "show"): "ovsdp-dpctl: option '--n' is ambiguous; possibilities: '--names' "
        "'--no-names' '--no-upcalls'\n",
        ("-t", "0", "show"): "ovsdp-dpctl: value 0 on -t or --timeout is not at least 1\n",
        ("--socket",): "ovsdp-dpctl: option '--socket' requires an argument\n",
        ("--read-only", "del-flows"): "ovsdp-dpctl: 'del-flows' command does not work in read "
        "only mode\n",
        ("--read-only", "monitor"): "ovsdp-dpctl: 'monitor' command does not work in read only "
        "mode without --no-upcalls\n",
    }
    for args, err in cases.items():
        result = dpctl(*args)
        assert (result.rc, result.out, result.err) == (1, "", err), args


class FailingOutput(io.StringIO):
    """Standard output whose writes (or only its flushes) fail with ``code``."""

    def __init__(self, code: int, on_flush: bool = False) -> None:
        super().__init__()
        self.code = code
        self.on_flush = on_flush

    def _fail(self) -> None:
        exc_type = {errno.EPIPE: BrokenPipeError, errno.EACCES: PermissionError}.get(
            self.code, OSError
        )
        raise exc_type(self.code, "failed")

    def write(self, text: str) -> int:
        if not self.on_flush:
            self._fail()
        return super().write(text)

    def flush(self) -> None:
        self._fail()


def test_output_errors(h: Harness, dpctl: Dpctl) -> None:
    """Standard output failing: one error line and status 1; quiet for a closed pipe.  The
    failure is never taken for the service's (EACCES is not "cannot connect")."""
    dpctl.ok("add-dp", "dp0", "vm1")
    dpctl.ok("add-flow", "in_port(1),eth(),eth_type(0x0806),arp()", "drop")
    cases = {
        errno.ENOSPC: "No space left on device",
        errno.EIO: "Input/output error",
        errno.EACCES: "Permission denied",
    }
    for args in (("dump-dps",), ("show", "-s"), ("dump-flows", "-m"), ("--help",)):
        for code, text in cases.items():
            for on_flush in (False, True):
                err = io.StringIO()
                out = FailingOutput(code, on_flush)
                assert run(["--socket", h.path, *args], stdout=out, stderr=err) == 1
                line = f"ovsdp-dpctl: writing to standard output failed ({text})\n"
                assert err.getvalue() == line, (args, code, on_flush)
            err = io.StringIO()
            out = FailingOutput(errno.EPIPE)
            assert run(["--socket", h.path, *args], stdout=out, stderr=err) == 1
            assert err.getvalue() == ""
    err = io.StringIO()
    out = FailingOutput(errno.ENOSPC)
    assert run(["--socket", h.path, "dump-dps"], stdout=out, stderr=err, prog="ovs-dpctl") == 1
    assert err.getvalue().startswith("ovs-dpctl: writing to standard output failed (")


def test_program_name() -> None:
    """OVS's set_program_name (the basename of argv[0]), unless argv[0] names no program."""
    assert program_name("/usr/bin/ovs-dpctl") == "ovs-dpctl"
    assert program_name("ovs-dpctl") == "ovs-dpctl"
    assert program_name("/work/.venv/bin/ovsdp-dpctl") == "ovsdp-dpctl"
    for unusable in ("", "-c", "-m", "/work/userspace/dpctl/__main__.py", "/x/app.py", "/x/"):
        assert program_name(unusable) == "ovsdp-dpctl", unusable


def test_program_name_in_every_message(h: Harness) -> None:
    """``prog`` prefixes errors, the help text and the progress line alike."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--socket", h.path, "add-dp", "dp0", "vm1,type=bogus"]
    assert run(argv, stdout=out, stderr=err, prog="ovs-dpctl") == 1
    assert err.getvalue() == (
        "ovs-dpctl: vm1: failed to open network device (Address family not supported by protocol)\n"
    )
    assert run(["--help"], stdout=out, stderr=err, prog="ovs-dpctl") == 0
    assert out.getvalue().startswith("ovs-dpctl: ovsdp datapath management utility")
    assert "usage: ovs-dpctl [OPTIONS]" in out.getvalue()
    flows = "".join(
        f"in_port(1),eth(),eth_type(0x0800),ipv4(src=10.0.{i >> 8}.{i & 255},frag=no) 1\n"
        for i in range(1000)
    )
    err = TtyText()
    argv = ["--socket", h.path, "add-flows", "-"]
    assert run(argv, stdin=io.StringIO(flows), stdout=out, stderr=err, prog="ovs-dpctl") == 0
    assert err.getvalue().endswith("\rovs-dpctl: add-flows: 1000 lines, 1000 done, 0 failed\n")


def test_help_version_list_commands(dpctl: Dpctl) -> None:
    assert dpctl.ok("--help").out.startswith("ovsdp-dpctl: ovsdp datapath management utility")
    assert re.fullmatch(r"ovsdp-dpctl \(ovsdp\) \S+\n", dpctl.ok("-V").out)
    lines = dpctl.ok("list-commands").lines
    assert lines[0] == "The available commands are:"
    assert lines[1] == "  add-dp                  dp [iface...]"
    assert len(lines) == 1 + len(COMMANDS)
    assert dpctl.ok("parse-actions", "1,push_vlan(vid=5,pcp=0)", "drop").lines == [
        "1,push_vlan(vid=5,pcp=0)",
        "drop",
    ]
    assert dpctl("parse-actions", "frob").err == (
        "ovsdp-dpctl: odp_actions_from_string (Invalid argument)\n"
    )


def test_options_anywhere() -> None:
    opts = parse_options(["dump-flows", "-m", "dp0", "--names", "-st", "5", "--", "-x"])
    assert opts.operands == ["dump-flows", "dp0", "-x"]
    params = opts.params
    assert (params.verbosity, params.names, params.print_statistics) == (1, True, True)
    assert opts.timeout == 5
    assert parse_options(["-mm", "show"]).params.names is True  # names follow -m by default
    assert parse_options(["-m", "--no-names"]).params.names is False
    assert parse_options(["--stat", "--sock=/x", "add-flows", "-"]).operands == ["add-flows", "-"]
    assert parse_options(["--sock=/x"]).params.socket == "/x"


def test_socket_from_environment(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVSDP_SOCKET", h.path)
    out, err = io.StringIO(), io.StringIO()
    assert run(["add-dp", "dp0"], stdout=out, stderr=err) == 0
    assert run(["dump-dps"], stdout=out, stderr=err) == 0
    assert (out.getvalue(), err.getvalue()) == ("system@dp0\n", "")


def test_timeout(dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0")
    result = dpctl("-t", "1", "monitor")
    assert result.rc == 1
    assert result.err.endswith("ovsdp-dpctl: time limit of 1 seconds exceeded\n")


def test_monitor_claims_and_gives_back_vport_pids(h: Harness) -> None:
    """A datapath in per-vport mode: monitor points every port at itself, then back."""
    client = h.client()
    reply = client.dp_new("dpv", 0, user_features=0x1 | 0x2)  # UNALIGNED | VPORT_PIDS
    assert reply is not None
    client.vport_new(reply.dp_ifindex, "vm1", pids=[4242])
    client.vport_new(reply.dp_ifindex, "vm2", pids=[0])
    with NetlinkSocket(h.path) as sock, NetlinkSocket(h.path) as mine:
        dpif = Dpif(sock, "dpv", reply.dp_ifindex, 0x3)
        claim = _Claim(dpif, mine.pid)
        assert {p.name: p.upcall_pids for p in dpif.port_dump()} == {
            "dpv": (mine.pid,),
            "vm1": (mine.pid,),
            "vm2": (mine.pid,),
        }
        claim.release()
        assert {p.name: p.upcall_pids for p in dpif.port_dump()} == {
            "dpv": (0,),
            "vm1": (4242,),
            "vm2": (0,),
        }
