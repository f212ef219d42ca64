"""The emulated switch's management family ``ovsdp_vswitch`` (docs/vswitch.md section 1).

Every operation through a real connection to the service: its reply, its errnos, and that a
refused request changes nothing.  Also: the permission rule for an unprivileged client, and the
sans-I/O claim of the switch, ports and datapath packages.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from datapath_support import (
    DEFAULT_PORTS,
    REPO,
    Client,
    Harness,
    expect_errno,
    nobody_python,
    open_to_everyone,
    run_as_nobody,
)

from ovsdp.vswitch.family import VSwitchCmd
from ovsdp.vswitch.switch import PortType

MAC_A = bytes.fromhex("02aabbccdd01")
MAC_B = bytes.fromhex("02aabbccdd02")


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness


@pytest.fixture
def c(h: Harness) -> Client:
    return h.client()


# -- the embedded default switch and the dump -----------------------------------------------


def test_default_switch_has_vm1_vm2_vm3_ext_host(c: Client) -> None:
    ports = c.ports()
    assert [p["name"] for p in ports] == ["vm1", "vm2", "vm3", "ext", "host"]
    for port in ports:
        ptype, mac = DEFAULT_PORTS[port["name"]]
        assert port["port_type"] == int(ptype)
        assert port["mac"] == mac
        assert port["mtu"] == 1500
        assert (port["connected"], port["link_up"]) == (1, 1)
        assert port["backend"] == "memory"
        assert "datapath" not in port and "port_no" not in port
    assert [p["port_id"] for p in ports] == [1, 2, 3, 4, 5]
    assert len({p["ifindex"] for p in ports}) == 5


def test_get_port_by_name_and_enodev(c: Client) -> None:
    assert c.show("ext")["port_type"] == int(PortType.EXTERNAL)
    assert c.show("host")["port_type"] == int(PortType.INTERNAL)
    expect_errno(errno.ENODEV, c.show, "nope")


# -- ADD_PORT ------------------------------------------------------------------------------


def test_add_port_replies_with_the_new_port(c: Client) -> None:
    port = c.add_port("web.1", PortType.VM_EMULATED, mac=MAC_A, mtu=9000)
    assert port["name"] == "web.1"
    assert port["port_type"] == int(PortType.VM_EMULATED)
    assert port["port_id"] == 6
    assert port["mac"] == MAC_A and port["mtu"] == 9000
    assert (port["connected"], port["link_up"]) == (1, 1)  # connected unless told otherwise
    assert c.show("web.1") == port
    assert c.ports()[-1] == port
    # a port created disconnected
    cold = c.add_port("cold", PortType.EXTERNAL, connected=0)
    assert (cold["connected"], cold["link_up"]) == (0, 0)
    assert cold["port_id"] == 7 and cold["ifindex"] > port["ifindex"]


def test_add_port_default_mac_is_a_fresh_hyper_v_dynamic_mac(c: Client) -> None:
    macs = {p["mac"] for p in c.ports()}
    for i in range(3):
        mac = c.add_port(f"p{i}")["mac"]
        assert mac[:3] == bytes.fromhex("00155d")
        assert mac not in macs and not mac[0] & 1
        macs.add(mac)


def test_names_1_to_48_characters_of_the_allowed_set(c: Client) -> None:
    long_name = "a" * 48
    assert c.add_port(long_name)["name"] == long_name
    assert c.add_port("A9_.:@+-z")["name"] == "A9_.:@+-z"
    assert c.add_port("x")["name"] == "x"


@pytest.mark.parametrize(
    ("attrs", "code"),
    [
        ({"name": "vm1"}, errno.EEXIST),
        ({"name": "host", "port_type": int(PortType.INTERNAL)}, errno.EEXIST),
        ({"name": ""}, errno.ERANGE),
        ({"name": "new", "mtu": 67}, errno.ERANGE),
        ({"name": "new", "mtu": 65536}, errno.ERANGE),
        ({"name": "new", "mtu": 0}, errno.ERANGE),
        ({"name": "a b"}, errno.EINVAL),
        ({"name": "new/1"}, errno.EINVAL),
        ({"name": "-new"}, errno.EINVAL),
        ({"name": "new", "mac": bytes.fromhex("0100 5e00 0001")}, errno.EINVAL),
        ({"name": "new", "mac": bytes.fromhex("ffff ffff ffff")}, errno.EINVAL),
        ({"name": "new", "mac": bytes(6)}, errno.EINVAL),
        ({"name": "new", "port_type": 9}, errno.EINVAL),
        ({"name": "new", "port_type": 0}, errno.EINVAL),
    ],
)
def test_add_port_errors_change_nothing(
    h: Harness, c: Client, attrs: dict[str, Any], code: int
) -> None:
    before = c.ports()
    request = {"port_type": int(PortType.VM_SYNTHETIC), **attrs}
    expect_errno(code, c.vs, VSwitchCmd.ADD_PORT, **request)
    assert c.ports() == before
    # nothing was consumed either: the next port gets the id, ifindex and dynamic MAC it would
    # have got without the refused request
    fresh = Harness()
    with fresh:
        expected = fresh.client().add_port("probe")
    got = c.add_port("probe")
    assert (got["port_id"], got["ifindex"], got["mac"]) == (
        expected["port_id"],
        expected["ifindex"],
        expected["mac"],
    )


def test_add_port_needs_name_and_type(c: Client) -> None:
    expect_errno(errno.EINVAL, c.vs, VSwitchCmd.ADD_PORT, name="new")
    expect_errno(errno.EINVAL, c.vs, VSwitchCmd.ADD_PORT, port_type=3)


def test_name_longer_than_48_is_erange(c: Client) -> None:
    expect_errno(errno.ERANGE, c.add_port, "a" * 49)


# -- DEL_PORT ------------------------------------------------------------------------------


def test_del_port_replies_with_the_port_as_it_was_and_ids_are_never_reused(c: Client) -> None:
    before = c.show("vm2")
    assert c.del_port("vm2") == before
    assert [p["name"] for p in c.ports()] == ["vm1", "vm3", "ext", "host"]
    expect_errno(errno.ENODEV, c.show, "vm2")
    expect_errno(errno.ENODEV, c.del_port, "vm2")
    again = c.add_port("vm2")
    assert again["port_id"] == 6 and again["ifindex"] != before["ifindex"]


def test_del_port_of_a_disconnected_port(c: Client) -> None:
    c.disconnect("vm3")
    assert c.del_port("vm3")["connected"] == 0
    expect_errno(errno.ENODEV, c.show, "vm3")


# -- CONNECT / DISCONNECT / SET_LINK ------------------------------------------------------------


def test_connect_and_disconnect(c: Client) -> None:
    port = c.disconnect("vm1")
    assert (port["connected"], port["link_up"]) == (0, 0)
    expect_errno(errno.ENOTCONN, c.disconnect, "vm1")
    port = c.connect("vm1")
    assert (port["connected"], port["link_up"]) == (1, 1)  # the link comes up with the NIC
    expect_errno(errno.EALREADY, c.connect, "vm1")
    expect_errno(errno.ENODEV, c.connect, "nope")
    expect_errno(errno.ENODEV, c.disconnect, "nope")
    assert c.show("vm1") == port


def test_link_up_and_down(c: Client) -> None:
    assert c.link("vm2", False)["link_up"] == 0
    assert c.show("vm2")["connected"] == 1
    assert c.link("vm2", False)["link_up"] == 0  # no change is not an error
    assert c.link("vm2", True)["link_up"] == 1
    c.disconnect("vm2")
    expect_errno(errno.ENOTCONN, c.link, "vm2", True)
    expect_errno(errno.ENOTCONN, c.link, "vm2", False)
    assert (c.show("vm2")["connected"], c.show("vm2")["link_up"]) == (0, 0)
    expect_errno(errno.ENODEV, c.link, "nope", True)
    expect_errno(errno.EINVAL, c.vs, VSwitchCmd.SET_LINK, name="vm1", link_up=2)
    expect_errno(errno.EINVAL, c.vs, VSwitchCmd.SET_LINK, name="vm1")
    assert c.show("vm1")["link_up"] == 1


def test_disconnect_brings_the_link_down_and_reconnect_brings_it_up(c: Client) -> None:
    c.link("ext", False)
    c.disconnect("ext")
    port = c.connect("ext")
    assert (port["connected"], port["link_up"]) == (1, 1)


# -- SET_PORT ------------------------------------------------------------------------------


def test_set_mtu_mac_and_name(c: Client) -> None:
    before = c.show("vm1")
    port = c.set_port("vm1", mtu=9000)
    assert port["mtu"] == 9000
    port = c.set_port("vm1", mac=MAC_A)
    assert port["mac"] == MAC_A
    port = c.set_port("vm1", new_name="web")
    assert port["name"] == "web"
    assert (port["port_id"], port["ifindex"]) == (before["port_id"], before["ifindex"])
    expect_errno(errno.ENODEV, c.show, "vm1")
    assert c.show("web") == port
    # all three at once, and the port keeps its place in the dump
    port = c.set_port("web", mtu=68, mac=MAC_B, new_name="vm1")
    assert (port["name"], port["mtu"], port["mac"]) == ("vm1", 68, MAC_B)
    assert c.ports()[0]["name"] == "vm1"
    assert c.set_port("vm1", mtu=65535)["mtu"] == 65535
    # renaming to the same name, setting the same values: fine, nothing changes
    assert c.set_port("vm1", new_name="vm1", mtu=65535, mac=MAC_B) == c.show("vm1")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"mtu": 67}, errno.ERANGE),
        ({"mtu": 65536}, errno.ERANGE),
        ({"mac": bytes.fromhex("0300 0000 0001")}, errno.EINVAL),
        ({"mac": bytes(6)}, errno.EINVAL),
        ({"new_name": "vm2"}, errno.EEXIST),
        ({"new_name": ""}, errno.ERANGE),
        ({"new_name": "bad name"}, errno.EINVAL),
        ({}, errno.EINVAL),
        # a valid change with a refused one: nothing happens
        ({"mtu": 9000, "mac": bytes(6)}, errno.EINVAL),
        ({"mac": MAC_A, "mtu": 70000}, errno.ERANGE),
        ({"mtu": 9000, "mac": MAC_A, "new_name": "vm3"}, errno.EEXIST),
        ({"mtu": 9000, "new_name": "x y"}, errno.EINVAL),
    ],
)
def test_refused_set_changes_nothing(c: Client, changes: dict[str, Any], code: int) -> None:
    before = c.ports()
    expect_errno(code, c.set_port, "vm1", **changes)
    assert c.ports() == before


def test_set_port_of_an_unknown_port(c: Client) -> None:
    expect_errno(errno.ENODEV, c.set_port, "nope", mtu=1400)


# -- permissions: everything but GET_PORT needs privilege ---------------------------------------

NOBODY_SCRIPT = r"""
import json, sys
from userspace import vswitchctl
from userspace.netlink_socket import NetlinkSocket
from ovsdp.netlink.errors import NetlinkError

path = sys.argv[1]
out = {}
with NetlinkSocket(path) as sock:
    sock.family("ovsdp_vswitch", vswitchctl.CODEC)
    requests = {
        "ADD_PORT": (1, {"name": "evil", "port_type": 3}),
        "DEL_PORT": (2, {"name": "vm1"}),
        "CONNECT": (3, {"name": "vm1"}),
        "DISCONNECT": (4, {"name": "vm1"}),
        "SET_LINK": (5, {"name": "vm1", "link_up": 0}),
        "SET_PORT": (6, {"name": "vm1", "mtu": 9000}),
        "GET_PORT": (7, {"name": "vm1"}),
    }
    for name, (cmd, attrs) in requests.items():
        try:
            reply = sock.transact("ovsdp_vswitch", cmd, attrs, flags=0x08)
            out[name] = reply[0].attrs["name"]
        except NetlinkError as exc:
            out[name] = exc.errno
    out["dump"] = [m.attrs["name"] for m in sock.dump("ovsdp_vswitch", 7)]
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_unprivileged_client_gets_eperm_for_every_change() -> None:
    if nobody_python() is None:
        pytest.skip("no Python that uid 65534 can run with ovsdp importable")
    with Harness(mode=0o666) as h:
        open_to_everyone(h.path)
        c = h.client()
        before = c.ports()
        result = run_as_nobody("-c", NOBODY_SCRIPT, h.path)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        for name in ("ADD_PORT", "DEL_PORT", "CONNECT", "DISCONNECT", "SET_LINK", "SET_PORT"):
            assert out[name] == errno.EPERM, name
        assert out["GET_PORT"] == "vm1"
        assert out["dump"] == ["vm1", "vm2", "vm3", "ext", "host"]
        assert c.ports() == before


# -- sans I/O --------------------------------------------------------------------------------

SANS_IO_SCRIPT = r"""
import importlib, json, pkgutil, sys
sys.modules["trio"] = None
sys.modules["socket"] = None
out = {}
for pkg in ("ovsdp.vswitch", "ovsdp.ports", "ovsdp.datapath"):
    module = importlib.import_module(pkg)
    for info in pkgutil.iter_modules(module.__path__):
        name = f"{pkg}.{info.name}"
        try:
            importlib.import_module(name)
        except ImportError as exc:
            blocked = (exc.name or "").split(".")[0] in ("trio", "socket")
            out[name] = ("blocked: " if blocked else "error: ") + str(exc)
        else:
            out[name] = "ok"
print(json.dumps(out))
"""

SANS_IO_MODULES = [
    "ovsdp.vswitch.switch",
    "ovsdp.vswitch.config",
    "ovsdp.vswitch.family",
    "ovsdp.vswitch.memory",
    "ovsdp.ports.table",
    "ovsdp.ports.vport",
    "ovsdp.datapath.extension",
    "ovsdp.datapath.datapath",
    "ovsdp.datapath.dp_family",
    "ovsdp.datapath.vport_family",
]


def test_switch_ports_and_datapath_import_without_trio_or_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SANS_IO_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    for module in SANS_IO_MODULES:
        assert imported.get(module) == "ok", (module, imported.get(module))
    # every module of the three packages: none needs trio or socket (a module another change
    # has not finished yet may fail to import for other reasons; that is not this test's claim)
    blocked = {name: why for name, why in imported.items() if why.startswith("blocked")}
    assert blocked == {}
