"""The VTEP's configuration: the switch configuration (the internal port's ipv4, [tunnel],
[[neighbour]]), the management families (ovsdp_vswitch SET_PORT/GET_PORT with ipv4_address,
ovsdp_tunnel GET/SET and the neighbour commands) and the ``ovsdp vswitch`` commands.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import Client, Harness, expect_errno, vswitch_cli

from ovsdp.tunnel.endpoint import STAT_NAMES, endpoint_of
from ovsdp.vswitch.config import ConfigError, build_switch, parse_config
from ovsdp.vswitch.family import TUNNEL_FAMILY, TunnelCmd
from userspace import vswitchctl

PORTS = """
[[port]]
name = "vm1"
type = "vm"
[[port]]
name = "ext"
type = "external"
[[port]]
name = "ext2"
type = "external"
[[port]]
name = "host"
type = "internal"
mac = "00:15:5d:00:00:20"
"""


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# -- the configuration file -------------------------------------------------------------------


def test_a_full_tunnel_configuration() -> None:
    text = (
        PORTS.replace(
            'mac = "00:15:5d:00:00:20"', 'mac = "00:15:5d:00:00:20"\nipv4 = "192.0.2.1/24"'
        )
        + """
[tunnel]
gateway = "192.0.2.254"
uplink = "ext2"
reassembly_timeout = 5.5
reassembly_memory = 65536
reassembly_fragments = 16

[[neighbour]]
ip = "192.0.2.2"
mac = "02:00:00:00:00:02"
[[neighbour]]
ip = "192.0.2.254"
mac = "02:00:00:00:00:fe"
"""
    )
    config = parse_config(text)
    t = config.tunnel
    assert (t.address, t.prefix, t.vtep_port) == (ip4("192.0.2.1"), 24, "host")
    assert (t.gateway, t.uplink) == (ip4("192.0.2.254"), "ext2")
    assert (t.reassembly_timeout, t.reassembly_memory, t.reassembly_fragments) == (5.5, 65536, 16)
    assert t.neighbours == {
        ip4("192.0.2.2"): mac("02:00:00:00:00:02"),
        ip4("192.0.2.254"): mac("02:00:00:00:00:fe"),
    }
    switch = build_switch(config)
    endpoint = endpoint_of(switch)
    assert endpoint.routes.address == ip4("192.0.2.1") and endpoint.routes.prefix == 24
    assert endpoint.vtep_port() is switch.port("host")
    assert endpoint.uplink() is switch.port("ext2")
    assert endpoint.reassembly.timeout == 5.5 and endpoint.reassembly.max_bytes == 65536
    assert endpoint.neighbours.lookup(ip4("192.0.2.2"), 0.0) == mac("02:00:00:00:00:02")
    assert endpoint.is_uplink(switch.port("ext2")) and not endpoint.is_uplink(switch.port("ext"))


def test_without_an_address_there_is_no_vtep() -> None:
    switch = build_switch(parse_config(PORTS))
    endpoint = endpoint_of(switch)
    assert endpoint.routes.address == 0
    assert endpoint.uplink() is switch.port("ext")  # the first external port
    assert not endpoint.is_uplink(switch.port("ext"))  # nothing to check without an address


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('type = "vm"', 'type = "vm"\nipv4 = "192.0.2.1/24"'), "only the internal port"),
        (('mac = "00:15:5d:00:00:20"', 'ipv4 = "192.0.2.1"'), "needs a prefix length"),
        (('mac = "00:15:5d:00:00:20"', 'ipv4 = "192.0.2.300/24"'), "not an IPv4"),
        (('mac = "00:15:5d:00:00:20"', 'ipv4 = "224.0.0.1/24"'), "cannot be a VTEP"),
    ],
)
def test_bad_vtep_addresses(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(PORTS.replace(*change, 1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[tunnel]\ngateway = "nope"\n', "tunnel"),
        ('[tunnel]\nuplink = "vm1"\n', "not an external port"),
        ('[tunnel]\nuplink = "missing"\n', "not an external port"),
        ("[tunnel]\nspeed = 3\n", "unknown keys"),
        ("[tunnel]\nreassembly_memory = 10\n", "reassembly_memory"),
        ('[tunnel]\nreassembly_timeout = "x"\n', "reassembly_timeout"),
        ('[[neighbour]]\nip = "192.0.2.2"\n', "needs exactly ip and mac"),
        ('[[neighbour]]\nip = "192.0.2.2"\nmac = "zz"\n', "not a MAC"),
        ('[[neighbour]]\nip = "300.1.1.1"\nmac = "02:00:00:00:00:01"\n', "neighbour"),
        ("[elsewhere]\n", "unknown sections"),
    ],
)
def test_bad_tunnel_sections(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(PORTS + extra)


def test_two_vteps_and_bad_neighbours_are_refused() -> None:
    two = PORTS + '\n[[port]]\nname = "host2"\ntype = "internal"\nipv4 = "192.0.2.9/24"\n'
    two = two.replace('mac = "00:15:5d:00:00:20"', 'ipv4 = "192.0.2.1/24"')
    with pytest.raises(ConfigError, match="more than one port"):
        parse_config(two)
    multicast = PORTS + '[[neighbour]]\nip = "192.0.2.2"\nmac = "01:00:5e:00:00:01"\n'
    with pytest.raises(ConfigError, match="unicast MAC"):
        build_switch(parse_config(multicast))


# -- the management families --------------------------------------------------------------------

CONFIG = PORTS.replace(
    'mac = "00:15:5d:00:00:20"', 'mac = "00:15:5d:00:00:20"\nipv4 = "192.0.2.1/24"'
)


@pytest.fixture
def c() -> Iterator[Client]:
    with Harness(CONFIG) as h:
        client = h.client()
        client.family(TUNNEL_FAMILY, vswitchctl.TUNNEL_CODEC)
        yield client


def tunnel(c: Client, cmd: int, **attrs: Any) -> dict[str, Any]:
    reply: dict[str, Any] = c.transact(TUNNEL_FAMILY, cmd, attrs, flags=0x08)[0].attrs
    return reply


def test_the_vtep_address_is_the_internal_ports(c: Client) -> None:
    host = c.show("host")
    assert (host["ipv4_address"], host["ipv4_prefix"]) == (ip4("192.0.2.1"), 24)
    assert "ipv4_address" not in c.show("vm1")
    reply = c.set_port("host", ipv4_address=ip4("198.51.100.5"), ipv4_prefix=28)
    assert (reply["ipv4_address"], reply["ipv4_prefix"]) == (ip4("198.51.100.5"), 28)
    got = tunnel(c, TunnelCmd.GET)
    assert (got["ipv4_address"], got["ipv4_prefix"], got["port"]) == (
        ip4("198.51.100.5"),
        28,
        "host",
    )
    # address and other changes in one request
    reply = c.set_port("host", ipv4_address=ip4("198.51.100.6"), ipv4_prefix=28, mtu=9000)
    assert reply["mtu"] == 9000 and reply["ipv4_address"] == ip4("198.51.100.6")
    # 0 removes it
    assert "ipv4_address" not in c.set_port("host", ipv4_address=0)
    assert "ipv4_address" not in tunnel(c, TunnelCmd.GET)


def test_vtep_address_errors(c: Client) -> None:
    expect_errno(errno.EINVAL, c.set_port, "vm1", ipv4_address=ip4("192.0.2.7"), ipv4_prefix=24)
    expect_errno(errno.EINVAL, c.set_port, "host", ipv4_address=ip4("192.0.2.7"))
    expect_errno(errno.EINVAL, c.set_port, "host", ipv4_address=ip4("192.0.2.7"), ipv4_prefix=33)
    expect_errno(errno.EINVAL, c.set_port, "host", ipv4_address=ip4("239.1.1.1"), ipv4_prefix=8)
    # checked before anything changed: the MTU is as it was
    expect_errno(
        errno.EINVAL, c.set_port, "host", ipv4_address=ip4("239.1.1.1"), ipv4_prefix=8, mtu=9000
    )
    assert c.show("host")["mtu"] == 1500
    expect_errno(errno.ENODEV, c.set_port, "nope", ipv4_address=ip4("192.0.2.7"), ipv4_prefix=24)


def test_get_and_set_the_endpoint(c: Client) -> None:
    got = tunnel(c, TunnelCmd.GET)
    assert got["port"] == "host" and got["mac"] == mac("00:15:5d:00:00:20")
    assert got["uplink"] == "ext" and got["gateway"] == 0
    assert list(got["stats"]) == list(STAT_NAMES) and not any(got["stats"].values())
    got = tunnel(c, TunnelCmd.SET, gateway=ip4("192.0.2.254"), uplink="ext2")
    assert got["gateway"] == ip4("192.0.2.254") and got["uplink"] == "ext2"
    got = tunnel(c, TunnelCmd.SET, uplink="", gateway=0)
    assert got["uplink"] == "ext" and got["gateway"] == 0
    expect_errno(errno.EINVAL, tunnel, c, TunnelCmd.SET)
    expect_errno(errno.EINVAL, tunnel, c, TunnelCmd.SET, uplink="vm1")
    expect_errno(errno.ENODEV, tunnel, c, TunnelCmd.SET, uplink="nope")
    expect_errno(errno.EINVAL, tunnel, c, TunnelCmd.SET, gateway=ip4("224.0.0.9"))


def test_neighbour_commands(c: Client) -> None:
    added = tunnel(
        c, TunnelCmd.ADD_NEIGHBOUR, ipv4_address=ip4("192.0.2.2"), mac=mac("02:00:00:00:00:02")
    )
    assert added == {
        "ipv4_address": ip4("192.0.2.2"),
        "state": "static",
        "mac": mac("02:00:00:00:00:02"),
    }
    tunnel(c, TunnelCmd.ADD_NEIGHBOUR, ipv4_address=ip4("192.0.2.3"), mac=mac("02:00:00:00:00:03"))
    dump = [m.attrs for m in c.dump(TUNNEL_FAMILY, TunnelCmd.GET_NEIGHBOUR)]
    assert [d["ipv4_address"] for d in dump] == [ip4("192.0.2.2"), ip4("192.0.2.3")]
    got = c.transact(TUNNEL_FAMILY, TunnelCmd.GET_NEIGHBOUR, {"ipv4_address": ip4("192.0.2.3")})
    assert got[0].attrs["mac"] == mac("02:00:00:00:00:03")
    deleted = tunnel(c, TunnelCmd.DEL_NEIGHBOUR, ipv4_address=ip4("192.0.2.2"))
    assert deleted["state"] == "static"
    expect_errno(errno.ENOENT, tunnel, c, TunnelCmd.DEL_NEIGHBOUR, ipv4_address=ip4("192.0.2.2"))
    expect_errno(
        errno.ENOENT, c.transact, TUNNEL_FAMILY, TunnelCmd.GET_NEIGHBOUR, {"ipv4_address": 5}
    )
    expect_errno(
        errno.EINVAL,
        tunnel,
        c,
        TunnelCmd.ADD_NEIGHBOUR,
        ipv4_address=ip4("192.0.2.4"),
        mac=mac("01:00:00:00:00:01"),
    )
    expect_errno(
        errno.EINVAL,
        tunnel,
        c,
        TunnelCmd.ADD_NEIGHBOUR,
        ipv4_address=0,
        mac=mac("02:00:00:00:00:01"),
    )
    expect_errno(errno.EINVAL, tunnel, c, TunnelCmd.ADD_NEIGHBOUR, ipv4_address=ip4("192.0.2.4"))


def test_the_vswitch_command_line() -> None:
    with Harness(PORTS) as h:
        path = h.path

        def run(*args: str) -> str:
            result = vswitch_cli(path, *args)
            assert result.returncode == 0, result.stderr
            return result.stdout

        assert (
            run("set-vtep", "host", "192.0.2.1/24").strip()
            == "vtep: host 192.0.2.1/24 mac 00:15:5d:00:00:20"
        )
        assert run("set-gateway", "192.0.2.254").strip() == "gateway: 192.0.2.254"
        assert run("set-uplink", "ext2").strip() == "uplink: ext2"
        assert run("add-neighbour", "192.0.2.2", "02:00:00:00:00:02").split() == [
            "192.0.2.2",
            "02:00:00:00:00:02",
            "static",
            "-",
        ]
        lines = run("neighbours").splitlines()
        assert lines[0].split() == ["ADDRESS", "MAC", "STATE", "AGE"] and len(lines) == 2
        shown = run("tunnel").splitlines()
        assert shown[:3] == [
            "vtep: host 192.0.2.1/24 mac 00:15:5d:00:00:20",
            "gateway: 192.0.2.254",
            "uplink: ext2",
        ]
        stats = dict(line.split() for line in run("tunnel-stats").splitlines())
        assert list(stats) == list(STAT_NAMES) and set(stats.values()) == {"0"}
        run("del-neighbour", "192.0.2.2")
        assert len(run("neighbours").splitlines()) == 1
        run("set", "host", "ipv4=none")
        assert run("tunnel").splitlines()[0] == "vtep: host none mac 00:15:5d:00:00:20"
        bad = vswitch_cli(path, "set-vtep", "host", "192.0.2.1")
        assert bad.returncode == 1 and "prefix length" in bad.stderr
        bad = vswitch_cli(path, "del-neighbour", "192.0.2.77")
        assert bad.returncode == 1 and "no neighbour 192.0.2.77" in bad.stderr
        assert h.call(lambda: h.switch.port("host").mtu) == 1500
