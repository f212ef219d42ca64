"""ovsdp-handler end to end: the whole service (Harness) and a Handler in a thread, frames injected
on the switch's ports: flooding, learning, megaflow hits, MAC moves, port removal and
appearance, idle expiry, per-vport upcall PIDs, restart, vxlan ports; and the command line in a
subprocess (SIGINT/SIGTERM exit 0).  Once the handler has stopped, nothing may be outstanding in
the switch or the extension (``check_idle``, the completion invariant).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from datapath_support import REPO, Client, Harness, cli_env
from flow_support import MAC, check_idle

from ovsdp.netlink.constants import DpFeature
from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import DpFlow, Dpif
from userspace.handler import Handler, parse_config
from userspace.handler.config import DEFAULT_CONFIG
from userspace.handler.forwarder import PortSpec
from userspace.odp import format_actions, format_key, parse_key

warnings.filterwarnings("ignore", module="scapy")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

ALL = ("vm1", "vm2", "vm3", "ext", "host")


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.01)


def frame(src: str, dst: str, sport: int = 1000, ip_dst: str = "10.0.0.2") -> bytes:
    return bytes(
        Ether(src=MAC.get(src, src), dst=MAC.get(dst, dst))
        / IP(src="10.0.0.1", dst=ip_dst)
        / UDP(sport=sport, dport=2000)
    )


class Net:
    """A service with the default switch and a running handler; helpers to drive and look."""

    def __init__(self, h: Harness, handler: Handler) -> None:
        self.h = h
        self.handler = handler
        self.client: Client = h.client()
        dpif = handler.dpif
        self.dpif = Dpif(self.client, dpif.name, dpif.dp_ifindex, dpif.user_features)

    def inject(self, port: str, frames: list[bytes]) -> None:
        switch = self.h.switch
        self.h.call(switch.receive, switch.port(port), frames)

    def take(self, port: str) -> list[bytes]:
        frames: list[bytes] = self.h.call(lambda: self.h.switch.port(port).nic.backend.take())
        return frames

    def received(self, ports: tuple[str, ...] = ALL) -> dict[str, int]:
        """How many frames each port got since the last look."""
        present = self.h.call(lambda: set(self.h.switch.by_name))
        return {p: len(self.take(p)) for p in ports if p in present}

    def wait_received(self, expected: dict[str, int], ports: tuple[str, ...] = ALL) -> None:
        """Wait until the ports got what ``expected`` says (others: nothing)."""
        got = dict.fromkeys(ports, 0)

        def done() -> bool:
            for port, n in self.received(ports).items():
                got[port] += n
            return all(got[p] >= expected.get(p, 0) for p in ports)

        wait_until(done, what=f"frames {expected}")
        time.sleep(0.05)
        for port, n in self.received(ports).items():
            got[port] += n
        assert {p: n for p, n in got.items() if n} == {p: n for p, n in expected.items() if n}

    def port_no(self, name: str) -> int:
        return self.dpif.port_query_by_name(name).port_no

    def flows(self) -> list[DpFlow]:
        return list(self.dpif.flow_dump())

    def flow_texts(self) -> dict[str, str]:
        """Each flow as ``key/mask text -> actions text``."""
        out = {}
        for f in self.flows():
            assert f.key is not None and f.actions is not None
            out[format_key(f.key, f.mask)] = format_actions(f.actions) or "drop"
        return out

    def stats(self) -> Any:
        return self.dpif.get_stats()

    def settled(self) -> None:
        """Wait until the handler has handled every upcall the datapath sent."""

        def caught_up() -> bool:
            stats = self.stats()
            return self.handler.handled + stats.n_lost >= stats.n_missed

        wait_until(caught_up, what="the handler to catch up")


@contextlib.contextmanager
def running(h: Harness, config: str = DEFAULT_CONFIG, **kwargs: Any) -> Iterator[Handler]:
    """A Handler started on the harness's service, run in a thread, stopped at the end."""
    handler = Handler(parse_config(config, "<test>"), h.path, stats_interval=0, **kwargs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handler.run()
        except BaseException as exc:  # surfaced in the test
            errors.append(exc)

    handler.start()
    thread = threading.Thread(target=run, name="handler", daemon=True)
    thread.start()
    try:
        yield handler
    finally:
        handler.stop()
        thread.join(10)
        handler.close()
    assert not thread.is_alive()
    assert not errors, errors


@contextlib.contextmanager
def network(config: str = DEFAULT_CONFIG, **kwargs: Any) -> Iterator[Net]:
    """A service and a running handler; once the handler has stopped (no more traffic), the
    completion invariant is checked (nothing outstanding)."""
    with Harness() as h:
        with running(h, config, **kwargs) as handler:
            yield Net(h, handler)
        check_idle(h)


def l2_flow(in_port: int, src: str, dst: str) -> str:
    return (
        f"recirc_id(0),in_port({in_port}),eth(src={MAC.get(src, src)},dst={MAC.get(dst, dst)}),"
        "eth_type(0x0800)"
    )


FAST = """
[flows]
idle_timeout = 0.4
revalidate_interval = 0.1
"""


# -- forwarding --------------------------------------------------------------------------------


def test_flood_learn_unicast_then_megaflow_hits() -> None:
    with network() as net:
        handler = net.handler
        assert net.dpif.name == "ovs-system"
        ports = {name: net.port_no(name) for name in ALL}
        assert sorted(ports.values()) == [1, 2, 3, 4, 5]
        # unknown destination: flooded to every other port, host included
        net.inject("vm1", [frame("vm1", "vm2")])
        net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})
        # the reply: vm1 is known, unicast
        net.inject("vm2", [frame("vm2", "vm1")])
        net.wait_received({"vm1": 1})
        # vm2 is known now: the flood flow towards it was deleted, the next frame is unicast
        net.inject("vm1", [frame("vm1", "vm2")])
        net.wait_received({"vm2": 1})
        net.settled()
        p1, p2 = ports["vm1"], ports["vm2"]
        assert net.flow_texts() == {
            l2_flow(p1, "vm1", "vm2"): str(p2),
            l2_flow(p2, "vm2", "vm1"): str(p1),
        }
        assert {len(f.ufid or b"") for f in net.flows()} == {16}
        # from now on everything hits the megaflows, whatever the L3/L4 headers
        before = net.stats()
        upcalls = handler.fw.counters.upcalls
        net.inject("vm1", [frame("vm1", "vm2", sport=s, ip_dst=f"10.0.1.{s}") for s in range(50)])
        net.inject("vm2", [frame("vm2", "vm1", sport=s) for s in range(50)])
        net.wait_received({"vm1": 50, "vm2": 50})
        after = net.stats()
        assert after.n_hit - before.n_hit == 100
        assert after.n_missed == before.n_missed
        assert handler.fw.counters.upcalls == upcalls
        assert handler.stats()["put_errors"] == 0


def test_mac_move_relearns() -> None:
    with network() as net:
        net.inject("vm1", [frame("vm1", "vm2")])
        net.inject("vm2", [frame("vm2", "vm1")])
        net.wait_received({"vm1": 1, "vm2": 1, "vm3": 1, "ext": 1, "host": 1})
        net.settled()
        p2, p3 = net.port_no("vm2"), net.port_no("vm3")
        # vm1's address now speaks from vm3
        net.inject("vm3", [frame("vm1", "vm2")])
        net.wait_received({"vm2": 1})
        net.settled()
        assert net.handler.fw.macs.moves == 1
        net.inject("vm2", [frame("vm2", "vm1")])
        net.wait_received({"vm3": 1})
        net.settled()
        texts = net.flow_texts()
        assert texts[l2_flow(p2, "vm2", "vm1")] == str(p3)
        assert not any(f"in_port({net.port_no('vm1')})" in t for t in texts)


def test_removed_port_takes_its_flows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovsdp.handler")
    with network() as net:
        net.inject("vm3", [frame("vm3", "ff:ff:ff:ff:ff:ff")])  # floods, learns vm3
        net.inject("vm1", [frame("vm1", "vm3")])  # unicast towards vm3
        net.inject("vm3", [frame("vm3", "vm1")])  # unicast from vm3
        net.inject("vm2", [frame("vm2", "ff:ff:ff:ff:ff:ff")])  # floods, through vm3 too
        net.wait_received({"vm1": 3, "vm2": 1, "vm3": 2, "ext": 2, "host": 2})
        net.settled()
        p3 = net.port_no("vm3")
        assert any(f"in_port({p3})" in t for t in net.flow_texts())
        net.client.del_port("vm3")  # the switch deletes it: the vport stays, ABSENT

        def clean() -> bool:
            texts = net.flow_texts()
            return not any(
                f"in_port({p3})" in k or str(p3) in v.split(",") for k, v in texts.items()
            )

        wait_until(clean, what="vm3's flows to go")
        assert p3 not in net.handler.fw.ports
        net.inject("vm2", [frame("vm2", "ff:ff:ff:ff:ff:ff")])
        net.wait_received({"vm1": 1, "ext": 1, "host": 1}, ports=("vm1", "vm2", "ext", "host"))
    assert "port vm3: down or removed (port 3)" in caplog.text


def test_a_configured_port_deleted_from_the_datapath_comes_back() -> None:
    with network() as net:
        ifindex = net.dpif.dp_ifindex
        net.client.vport_del(ifindex, "vm3")  # ovs-dpctl del-if: the switch port stays

        def back() -> bool:
            try:
                return net.port_no("vm3") in net.handler.fw.ports
            except NetlinkError:
                return False

        wait_until(back, what="vm3 to be added again")
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff")])
        net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})


def test_a_deleted_datapath_is_created_again(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovsdp.handler")
    with network(DEFAULT_CONFIG + FAST) as net:
        net.inject("vm1", [frame("vm1", "vm2")])
        net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})
        old = net.dpif.dp_ifindex
        net.client.dp_del("ovs-system")  # ovs-dpctl del-dp
        reply = wait_until(lambda: _dp_get(net.client), what="the datapath to come back")
        assert reply.dp_ifindex != old
        net.dpif.dp_ifindex = reply.dp_ifindex
        wait_until(lambda: len(list(net.dpif.port_dump())) == 6, what="the ports")
        wait_until(lambda: len(net.handler.fw.ports) == 5, what="the ports to forward")
        net.inject("vm2", [frame("vm2", "vm1")])  # vm1 is unknown again: flooded
        net.wait_received({"vm1": 1, "vm3": 1, "ext": 1, "host": 1})
    assert "datapath ovs-system is gone: creating it again" in caplog.text


def _dp_get(client: Client) -> Any:
    try:
        return client.dp_get("ovs-system")
    except NetlinkError:
        return None


def test_overruns_are_counted_and_survived() -> None:
    with network(upcall_rxq=4096) as net:
        frames = [frame(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "vm1") for i in range(300)]
        net.inject("vm2", frames)  # far more upcalls than 4 KiB of queue holds
        wait_until(lambda: net.handler.fw.counters.overruns, what="an overrun")
        assert net.stats().n_lost > 0
        for _ in range(20):  # what was lost misses again
            net.settled()
            if len(net.flows()) == 300:
                break
            net.inject("vm2", frames)
        assert len(net.flows()) == 300


def test_idle_flows_expire() -> None:
    with network(DEFAULT_CONFIG + FAST) as net:
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff")])
        net.inject("vm2", [frame("vm2", "ff:ff:ff:ff:ff:ff")])
        net.settled()
        assert len(net.flows()) == 2
        p2 = net.port_no("vm2")
        # keep vm2's flow busy while vm1's idles out
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            net.inject("vm2", [frame("vm2", "ff:ff:ff:ff:ff:ff")])
            time.sleep(0.05)
        (busy,) = wait_until(lambda: len(net.flows()) == 1 and net.flows(), what="expiry")
        assert busy.key is not None and busy.key["in_port"] == p2
        wait_until(lambda: not net.flows(), what="the last flow to expire")
        assert net.handler.fw.counters.flows_expired == 2
        assert net.handler.fw.n_flows == 0


def test_flows_deleted_by_someone_else_come_back() -> None:
    with network() as net:
        net.handler.fw.reput_ms = 100
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff")])
        net.settled()
        assert len(net.flows()) == 1
        net.dpif.flow_flush()  # ovs-dpctl del-flows
        time.sleep(0.15)
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff", sport=2)])
        net.wait_received({"vm2": 2, "vm3": 2, "ext": 2, "host": 2})
        net.settled()
        wait_until(lambda: len(net.flows()) == 1, what="the flow to be put again")
        assert net.handler.fw.counters.reinstalled == 1


def test_a_port_the_switch_does_not_have_yet_is_added_when_it_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ovsdp.handler")
    config = DEFAULT_CONFIG + '\n[[port]]\nname = "vm4"\ntype = "netdev"\n'
    with network(config) as net:
        assert net.handler.pending == {"vm4"}
        net.client.add_port("vm4")
        wait_until(lambda: not net.handler.pending, what="vm4 to be added")
        p4 = net.port_no("vm4")
        wait_until(lambda: p4 in net.handler.fw.ports, what="vm4 to forward")
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff")])
        net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1, "vm4": 1}, ports=(*ALL, "vm4"))
    assert "port vm4: not on the switch yet, waiting for it" in caplog.text
    assert "port vm4: appeared on the switch" in caplog.text
    assert f"port vm4: added as port {p4} (netdev)" in caplog.text


def test_per_vport_upcall_pids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A datapath without per-CPU dispatch: every port's upcall PID is the handler's, also
    for a port someone else adds."""
    with Harness() as h:
        c = h.client()
        features = int(DpFeature.UNALIGNED | DpFeature.VPORT_PIDS)
        reply = c.dp_new("ovs-system", 0, user_features=features)
        assert reply is not None
        ifindex = reply.dp_ifindex

        def open_as_is(cls: type[Dpif], name: str, **kwargs: Any) -> Dpif:
            return Dpif(kwargs["sock"], name, ifindex, features)  # no negotiation

        monkeypatch.setattr(Dpif, "open", classmethod(open_as_is))
        config = DEFAULT_CONFIG.replace('name = "vm3"\ntype = "netdev"', 'name = "vmx"')
        with running(h, config) as handler:
            net = Net(h, handler)
            assert not handler.dpif.per_cpu
            pid = handler.upcall_pid
            for port in net.dpif.port_dump():
                if port.port_no:
                    assert port.upcall_pids == (pid,), port
            # vm3 added by someone else with PID 0: the handler takes its upcalls over
            c.vport_new(ifindex, "vm3", pids=[0])
            p3 = net.port_no("vm3")
            wait_until(lambda: net.dpif.port_query_by_number(p3).upcall_pids == (pid,))
            wait_until(lambda: p3 in handler.fw.ports)
            net.inject("vm3", [frame("vm3", "vm1")])
            net.wait_received({"vm1": 1, "vm2": 1, "ext": 1, "host": 1})
        check_idle(h)


def test_restart_starts_clean_and_keeps_ports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovsdp.handler")
    with Harness() as h:
        with running(h) as handler:
            net = Net(h, handler)
            net.inject("vm1", [frame("vm1", "vm2")])
            net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})
            net.settled()
            assert len(net.flows()) == 1
            before = {p.name: p.port_no for p in net.dpif.port_dump()}
        caplog.clear()
        with running(h) as handler:
            net = Net(h, handler)
            assert net.flows() == []  # flushed: no state for them
            assert {p.name: p.port_no for p in net.dpif.port_dump()} == before
            net.inject("vm1", [frame("vm1", "vm2")])
            net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})
        check_idle(h)
    assert "port vm1: already in the datapath as port 1" in caplog.text


def test_vxlan_port_and_tunnel_megaflows() -> None:
    config = DEFAULT_CONFIG + (
        '\n[[port]]\nname = "vx0"\ntype = "vxlan"\n'
        'options = { dst_port = 4790, remote_ip = "192.0.2.2", key = 5 }\n'
    )
    with network(config) as net:
        vx = net.dpif.port_query_by_name("vx0")
        assert vx.type_name == "vxlan" and vx.options == {"dst_port": 4790}
        net.inject("vm1", [frame("vm1", "ff:ff:ff:ff:ff:ff")])
        net.wait_received({"vm2": 1, "vm3": 1, "ext": 1, "host": 1})
        net.settled()
        (actions,) = net.flow_texts().values()
        assert "set(tunnel(tun_id=0x5,dst=192.0.2.2,ttl=64,tp_dst=4790" in actions
        assert actions.endswith(f",{vx.port_no}")
        # the megaflow a frame from the tunnel gets is one the datapath takes
        fw = net.handler.fw
        key = parse_key(
            "recirc_id(0),tunnel(tun_id=0x5,src=192.0.2.2,dst=192.0.2.1,ttl=64,tp_dst=4790,"
            f"flags(+key)),in_port({vx.port_no}),eth(src=00:15:5d:00:00:99,"
            "dst=00:15:5d:00:00:01),eth_type(0x0800),"
            "ipv4(src=1.1.1.1,dst=2.2.2.2,proto=17,tos=0,ttl=64,frag=no),udp(src=1,dst=2)"
        )[0]
        spec = PortSpec.make(vx.port_no, "vx0", net.handler.config.ports[-1].tunnel)
        assert fw.ports[vx.port_no] == spec
        from userspace.handler.forwarder import Forwarder

        scratch = Forwarder()
        scratch.port_up(vx.port_no, spec)
        scratch.port_up(1, PortSpec.make(1, "vm1"))
        flow = scratch.miss(key, b"", 0)
        assert flow is not None and flow.kind == "flood"
        net.dpif.flow_put(flow.key, flow.mask, flow.actions, ufid=flow.ufid)
        got = net.dpif.flow_get(ufid=flow.ufid)
        assert got.mask is not None and got.mask["tunnel"]["id"] == (1 << 64) - 1


def test_verbose_logs_every_flow(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ovsdp.handler")
    with network(verbose=True) as net:
        net.inject("vm1", [frame("vm1", "vm2")])
        net.settled()
        net.inject("vm2", [frame("vm2", "vm1")])
        net.settled()
        net.handler.summary()
    text = caplog.text
    assert f"flood: {l2_flow(1, 'vm1', 'vm2')} actions:2,3,4,5" in text
    assert f"output: {l2_flow(2, 'vm2', 'vm1')} actions:1" in text
    assert " deleted" in text
    assert "upcalls 2 (overruns 0), flows 1 (new 2, deleted 1" in text


# -- the command line --------------------------------------------------------------------------


def handler_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "ovsdp-handler")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "userspace.handler.cli"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_line_runs_until_a_signal(tmp_path: Any, signum: int) -> None:
    config = tmp_path / "handler.toml"
    config.write_text(DEFAULT_CONFIG + FAST)
    with Harness() as h:
        proc = subprocess.Popen(
            [*handler_command(), "--socket", h.path, "--config", str(config), "-v"],
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(),
        )
        try:
            assert proc.stderr is not None
            lines = []
            for line in proc.stderr:
                lines.append(line)
                if line.strip() == "ovsdp-handler: ready":
                    break
            c: Client = h.client()
            ifindex = c.dp_get("ovs-system").dp_ifindex
            dpif = Dpif(c, "ovs-system", ifindex, 0)
            switch = h.switch
            h.call(switch.receive, switch.port("vm1"), [frame("vm1", "vm2")])
            wait_until(lambda: h.call(lambda: switch.port("vm2").nic.backend.transmitted))
            wait_until(lambda: list(dpif.flow_dump()), what="a flow")
            proc.send_signal(signum)
            _, out = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        check_idle(h)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    for name, no in [("vm1", 1), ("vm2", 2), ("vm3", 3), ("ext", 4)]:
        assert f"ovsdp-handler: port {name}: added as port {no} (netdev)" in text
    assert "ovsdp-handler: port host: added as port 5 (internal)" in text
    assert "ovsdp-handler: datapath ovs-system (dp_ifindex" in text
    assert "flood: recirc_id(0),in_port(1)" in text
    assert text.rstrip().endswith("ovsdp-handler: stopped")


def test_command_line_errors(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[flows]\nidle_timeout = -1\n")
    run = subprocess.run(
        [*handler_command(), "--config", str(bad)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert run.returncode == 1 and "idle_timeout must be > 0" in run.stderr
    run = subprocess.run(
        [*handler_command(), "--socket", str(tmp_path / "nothing.sock")],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert run.returncode == 1 and "no ovsdp service" in run.stderr


def test_netlink_errors_are_not_swallowed() -> None:
    """A datapath name the service refuses: start() raises (the CLI exits 1)."""
    with Harness() as h:
        handler = Handler(parse_config('[datapath]\nname = "vm1"\n'), h.path)
        try:
            with pytest.raises(NetlinkError):
                handler.start()
        finally:
            handler.close()
