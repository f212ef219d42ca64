"""The NIC part of the switch configuration (``backend``, ``device``) and of the daemon, without
root: parsing, errors, which ports get which backend, all-or-nothing opening."""

from __future__ import annotations

import pytest

from ovsdp.daemon import real_nics
from ovsdp.nic import NicError, open_nics
from ovsdp.vswitch.config import ConfigError, build_switch, parse_config
from ovsdp.vswitch.memory import MemoryBackend


def port(**keys: object) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return f"[[port]]\n{body}"


def test_backends_and_devices() -> None:
    config = parse_config(
        port(name="vm1", backend="tap")
        + port(name="a-very-long-port-name", backend="tap")
        + port(name="vm2", backend="tap", device="tap7")
        + port(name="ext", type="external", backend="afpacket", device="eth1")
        + port(name="host", type="internal")
    )
    got = [(p.name, p.backend, p.device) for p in config.ports]
    assert got == [
        ("vm1", "tap", "vm1"),
        ("a-very-long-port-name", "tap", "a-very-long-por"),  # cut to 15 characters
        ("vm2", "tap", "tap7"),
        ("ext", "afpacket", "eth1"),
        ("host", "memory", None),
    ]
    assert real_nics(config) == [
        ("vm1", "tap", "vm1"),
        ("a-very-long-port-name", "tap", "a-very-long-por"),
        ("vm2", "tap", "tap7"),
        ("ext", "afpacket", "eth1"),
    ]
    switch = build_switch(config)
    # real backends are plugged in by the daemon; until then frames to them are dropped
    assert [p.nic.backend for p in switch.ports_sorted()[:4]] == [None] * 4
    assert isinstance(switch.port("host").nic.backend, MemoryBackend)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"backend": "afpacket"}, 'an afpacket backend needs device = "INTERFACE"'),
        ({"device": "eth0"}, "a memory backend takes no device"),
        ({"backend": "tap", "device": "x" * 16}, "is not an interface name"),
        ({"backend": "tap", "device": "a/b"}, "is not an interface name"),
        ({"backend": "tap", "device": "a b"}, "is not an interface name"),
        ({"backend": "tap", "device": ".."}, "is not an interface name"),
        ({"backend": "tap", "device": 5}, "is not an interface name"),
        ({"backend": "vhost"}, "unknown backend 'vhost' (one of ('memory', 'tap', 'afpacket'))"),
    ],
)
def test_errors(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(port(name="vm1", **keys), "f.toml")
    assert str(info.value).startswith("f.toml: port #1: ")
    assert message in str(info.value)


def test_a_tap_default_name_must_be_an_interface_name() -> None:
    with pytest.raises(ConfigError, match="is not an interface name"):
        parse_config(port(name="vm:1", backend="tap"))
    parse_config(port(name="vm:1", backend="tap", device="vm1"))


def test_two_ports_on_one_interface() -> None:
    config = parse_config(
        port(name="vm1", backend="tap", device="t0") + port(name="vm2", backend="tap", device="t0")
    )
    switch = build_switch(config)
    with pytest.raises(NicError, match="more than one port on interface 't0'"):
        open_nics(switch, real_nics(config))
    assert all(p.nic.backend is None for p in switch.ports_sorted())


def test_unknown_kind() -> None:
    switch = build_switch(parse_config(port(name="vm1")))
    with pytest.raises(NicError, match="port vm1: unknown NIC backend 'memory'"):
        open_nics(switch, [("vm1", "memory", "x")])
