"""``ovsdp vswitch``: manage the emulated Hyper-V switch through the pseudo-device.

    ovsdp vswitch [--socket PATH] add-port NAME --type vm|vm-emulated|external|internal
                                  [--mac MAC] [--mtu N] [--disconnected]
    ovsdp vswitch del-port NAME
    ovsdp vswitch connect NAME | disconnect NAME
    ovsdp vswitch link NAME up|down
    ovsdp vswitch set NAME mtu=N | mac=MAC | name=NEW  (one or more)
    ovsdp vswitch list | show NAME
    ovsdp vswitch inject NAME FRAME_HEX [--count N]
    ovsdp vswitch received NAME [--count N]    (prints and removes what a memory port received)

The host's tunnel endpoint (the VTEP, docs/tunnel.md):

    ovsdp vswitch set-vtep NAME ADDRESS/LEN|none    (the internal port's address: the VTEP's)
    ovsdp vswitch set-gateway ADDRESS|none
    ovsdp vswitch set-uplink NAME|default
    ovsdp vswitch add-neighbour ADDRESS MAC | del-neighbour ADDRESS | neighbours
    ovsdp vswitch tunnel          (the endpoint and its counters)
    ovsdp vswitch tunnel-stats    (the counters only, one per line)

Errors print ``ovsdp vswitch: what (strerror)`` on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlFamily
from ovsdp.tunnel.endpoint import STAT_NAMES, format_ipv4, parse_interface, parse_ipv4
from ovsdp.vswitch.family import (
    TUNNEL_FAMILY,
    TUNNEL_VERSION,
    VSWITCH_FAMILY,
    VSWITCH_VERSION,
    TunnelCmd,
    VSwitchCmd,
)
from ovsdp.vswitch.switch import PortType, check_mtu, check_name, format_mac, parse_mac

from .netlink_socket import NetlinkSocket, ServiceGone

CODEC = GenlFamily(VSWITCH_FAMILY, VSWITCH_VERSION, 0, "ovsdp_vswitch")
TUNNEL_CODEC = GenlFamily(TUNNEL_FAMILY, TUNNEL_VERSION, 0, TUNNEL_FAMILY)
PROG = "ovsdp vswitch"


class UsageError(Exception):
    """A command line that cannot be acted on."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``ovsdp vswitch``."""
    sub = parser.add_subparsers(dest="vswitch_command", required=True)
    add = sub.add_parser("add-port", help="create a port and connect its NIC")
    add.add_argument("name")
    add.add_argument("--type", required=True, choices=["vm", "vm-emulated", "external", "internal"])
    add.add_argument("--mac")
    add.add_argument("--mtu", type=int, default=1500)
    add.add_argument("--disconnected", action="store_true", help="create without connecting")
    for name, text in (
        ("del-port", "delete a port"),
        ("connect", "connect a port's NIC"),
        ("disconnect", "disconnect a port's NIC"),
        ("show", "show one port"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name")
    link = sub.add_parser("link", help="link up or down")
    link.add_argument("name")
    link.add_argument("state", choices=["up", "down"])
    setp = sub.add_parser("set", help="change mtu=N, mac=MAC or name=NEW")
    setp.add_argument("name")
    setp.add_argument("changes", nargs="+", metavar="KEY=VALUE")
    sub.add_parser("list", help="list the switch's ports")
    inject = sub.add_parser("inject", help="a frame, as if the port's NIC received it")
    inject.add_argument("name")
    inject.add_argument("frame", metavar="FRAME_HEX")
    inject.add_argument("--count", type=int, default=1, help="copies, in one batch")
    received = sub.add_parser("received", help="print (and remove) what a memory port got")
    received.add_argument("name")
    received.add_argument("--count", type=int, default=1024)
    vtep = sub.add_parser("set-vtep", help="the VTEP address (on the internal port)")
    vtep.add_argument("name")
    vtep.add_argument("address", metavar="ADDRESS/LEN|none")
    gateway = sub.add_parser("set-gateway", help="the VTEP's default gateway")
    gateway.add_argument("address", metavar="ADDRESS|none")
    uplink = sub.add_parser("set-uplink", help="the external port tunnel packets use")
    uplink.add_argument("name", metavar="NAME|default")
    add_nb = sub.add_parser("add-neighbour", help="a static ARP entry of the VTEP")
    add_nb.add_argument("address")
    add_nb.add_argument("mac")
    del_nb = sub.add_parser("del-neighbour", help="forget a neighbour of the VTEP")
    del_nb.add_argument("address")
    sub.add_parser("neighbours", help="the VTEP's neighbour table")
    sub.add_parser("tunnel", help="the tunnel endpoint and its counters")
    sub.add_parser("tunnel-stats", help="the tunnel endpoint's counters")


def _set_changes(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r} is not KEY=VALUE")
        if key == "mtu":
            out["mtu"] = _mtu(value)
        elif key == "mac":
            out["mac"] = parse_mac(value)
        elif key == "name":
            check_name(value)
            out["new_name"] = value
        elif key == "ipv4":
            out.update(_vtep_attrs(value))
        else:
            raise UsageError(f"cannot set {key!r} (mtu, mac, name)")  # (and ipv4, set-vtep's)
    return out


def _mtu(value: str | int) -> int:
    """An MTU from the command line, refused as the switch would refuse it (ERANGE with the
    switch's own message) even where the attribute could not carry it (a negative one)."""
    try:
        mtu = int(value)
    except ValueError:
        raise UsageError(f"mtu {value!r} is not a number") from None
    check_mtu(mtu)
    return mtu


def _vtep_attrs(text: str) -> dict[str, Any]:
    if text == "none":
        return {"ipv4_address": 0}
    try:
        address, prefix = parse_interface(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return {"ipv4_address": address, "ipv4_prefix": prefix}


def _address(text: str, none_ok: bool = False) -> int:
    if none_ok and text == "none":
        return 0
    try:
        return parse_ipv4(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an IPv4 address") from None


def _neighbour_row(attrs: dict[str, Any]) -> str:
    mac = format_mac(attrs["mac"]) if "mac" in attrs else "-"
    age = f"{attrs['age_ms'] / 1000:.1f}s" if "age_ms" in attrs else "-"
    return f"{format_ipv4(attrs['ipv4_address']):<16} {mac:<17} {attrs['state']:<10} {age}"


NEIGHBOUR_HEADER = f"{'ADDRESS':<16} {'MAC':<17} {'STATE':<10} AGE"


def _tunnel_lines(attrs: dict[str, Any]) -> list[str]:
    address = (
        f"{format_ipv4(attrs['ipv4_address'])}/{attrs['ipv4_prefix']}"
        if "ipv4_address" in attrs
        else "none"
    )
    gateway = format_ipv4(attrs["gateway"]) if attrs.get("gateway") else "none"
    lines = [
        f"vtep: {attrs.get('port', '-')} {address} mac "
        f"{format_mac(attrs['mac']) if 'mac' in attrs else '-'}",
        f"gateway: {gateway}",
        f"uplink: {attrs.get('uplink', 'none')}",
        "counters:",
    ]
    stats = attrs.get("stats", {})
    lines += [f"  {name}: {stats.get(name, 0)}" for name in STAT_NAMES]
    return lines


def _frame(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned.startswith(("0x", "0X")):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError(f"{text[:40]!r} is not a frame in hex") from None


NAME_WIDTH = 16  # the name column's least width; longer names widen it


def _row(attrs: dict[str, Any], width: int = NAME_WIDTH) -> str:
    nic = "connected" if attrs.get("connected") else "disconnected"
    link = "up" if attrs.get("link_up") else "down"
    where = f"{attrs['datapath']}:{attrs['port_no']}" if "datapath" in attrs else "-"
    return (
        f"{attrs['name']:<{width}} {PortType(attrs['port_type']).label:<11} "
        f"{attrs['port_id']:>4} {format_mac(attrs['mac'])} {attrs['mtu']:>5} {nic:<12} {link:<4} "
        f"{where}"
    )


def _header(width: int = NAME_WIDTH) -> str:
    return (
        f"{'NAME':<{width}} {'TYPE':<11} {'ID':>4} {'MAC':<17} {'MTU':>5} {'NIC':<12} LINK DATAPATH"
    )


def _table(ports: list[dict[str, Any]]) -> list[str]:
    """The header and one row per port, the name column as wide as the longest name."""
    width = max([NAME_WIDTH, *(len(p["name"]) for p in ports)])
    return [_header(width), *(_row(p, width) for p in ports)]


def _execute(sock: NetlinkSocket, args: argparse.Namespace) -> list[str]:
    sock.family(VSWITCH_FAMILY, CODEC)
    cmd = args.vswitch_command
    echo = 0x08

    def call(command: int, attrs: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = sock.transact(VSWITCH_FAMILY, command, attrs, flags=echo)[0].attrs
        return reply

    if cmd == "list":
        return _table([m.attrs for m in sock.dump(VSWITCH_FAMILY, VSwitchCmd.GET_PORT)])
    if cmd == "show":
        return _table([call(VSwitchCmd.GET_PORT, {"name": args.name})])
    if cmd == "add-port":
        attrs: dict[str, Any] = {
            "name": args.name,
            "port_type": int(PortType.parse(args.type)),
            "mtu": _mtu(args.mtu),
            "connected": int(not args.disconnected),
        }
        if args.mac:
            attrs["mac"] = parse_mac(args.mac)
        return [_row(call(VSwitchCmd.ADD_PORT, attrs))]
    if cmd == "del-port":
        call(VSwitchCmd.DEL_PORT, {"name": args.name})
        return []
    if cmd == "connect":
        return [_row(call(VSwitchCmd.CONNECT, {"name": args.name}))]
    if cmd == "disconnect":
        return [_row(call(VSwitchCmd.DISCONNECT, {"name": args.name}))]
    if cmd == "link":
        up = int(args.state == "up")
        return [_row(call(VSwitchCmd.SET_LINK, {"name": args.name, "link_up": up}))]
    if cmd == "set":
        changes = _set_changes(args.changes)
        return [_row(call(VSwitchCmd.SET_PORT, {"name": args.name, **changes}))]
    if cmd == "inject":
        frame = _frame(args.frame)
        sock.transact(
            VSWITCH_FAMILY,
            VSwitchCmd.INJECT,
            {"name": args.name, "frame": frame, "count": args.count},
        )
        return []
    if cmd == "received":
        replies = sock.transact(
            VSWITCH_FAMILY, VSwitchCmd.TAKE, {"name": args.name, "count": args.count}
        )
        return [m.attrs["frame"].hex() for m in replies]
    tunnel_lines = _execute_tunnel(sock, args)
    if tunnel_lines is not None:
        return tunnel_lines
    raise UsageError(f"unknown command {cmd}")


def _execute_tunnel(sock: NetlinkSocket, args: argparse.Namespace) -> list[str] | None:
    """The tunnel endpoint's commands; None for another command."""
    cmd = args.vswitch_command
    echo = 0x08

    def call(command: int, attrs: dict[str, Any]) -> dict[str, Any]:
        sock.family(TUNNEL_FAMILY, TUNNEL_CODEC)
        reply: dict[str, Any] = sock.transact(TUNNEL_FAMILY, command, attrs, flags=echo)[0].attrs
        return reply

    if cmd == "set-vtep":
        attrs = {"name": args.name, **_vtep_attrs(args.address)}
        sock.transact(VSWITCH_FAMILY, VSwitchCmd.SET_PORT, attrs, flags=echo)
        return _tunnel_lines(call(TunnelCmd.GET, {}))[:1]
    if cmd == "set-gateway":
        return _tunnel_lines(call(TunnelCmd.SET, {"gateway": _address(args.address, True)}))[1:2]
    if cmd == "set-uplink":
        name = "" if args.name == "default" else args.name
        return _tunnel_lines(call(TunnelCmd.SET, {"uplink": name}))[2:3]
    if cmd == "add-neighbour":
        attrs = {"ipv4_address": _address(args.address), "mac": parse_mac(args.mac)}
        return [_neighbour_row(call(TunnelCmd.ADD_NEIGHBOUR, attrs))]
    if cmd == "del-neighbour":
        call(TunnelCmd.DEL_NEIGHBOUR, {"ipv4_address": _address(args.address)})
        return []
    if cmd == "neighbours":
        sock.family(TUNNEL_FAMILY, TUNNEL_CODEC)
        rows = [_neighbour_row(m.attrs) for m in sock.dump(TUNNEL_FAMILY, TunnelCmd.GET_NEIGHBOUR)]
        return [NEIGHBOUR_HEADER, *rows]
    if cmd == "tunnel":
        return _tunnel_lines(call(TunnelCmd.GET, {}))
    if cmd == "tunnel-stats":
        stats = call(TunnelCmd.GET, {}).get("stats", {})
        return [f"{name} {stats.get(name, 0)}" for name in STAT_NAMES]
    return None


def run(args: argparse.Namespace) -> int:
    """Run one ``ovsdp vswitch`` command; the exit status."""
    try:
        with NetlinkSocket(args.socket) as sock:
            lines = _execute(sock, args)
    except NetlinkError as exc:
        print(
            f"{PROG}: {args.vswitch_command} failed: {exc.reason} ({os.strerror(exc.errno)})",
            file=sys.stderr,
        )
        return 1
    except ServiceGone as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"{PROG}: {args.socket}: {exc.strerror}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0
