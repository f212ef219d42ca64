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

Errors print ``ovsdp vswitch: what (strerror)`` on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlFamily
from ovsdp.vswitch.family import VSWITCH_FAMILY, VSWITCH_VERSION, VSwitchCmd
from ovsdp.vswitch.switch import PortType, check_name, format_mac, parse_mac

from .netlink_socket import NetlinkSocket, ServiceGone

CODEC = GenlFamily(VSWITCH_FAMILY, VSWITCH_VERSION, 0, "ovsdp_vswitch")
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


def _set_changes(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r} is not KEY=VALUE")
        if key == "mtu":
            try:
                out["mtu"] = int(value)
            except ValueError:
                raise UsageError(f"mtu {value!r} is not a number") from None
        elif key == "mac":
            out["mac"] = parse_mac(value)
        elif key == "name":
            check_name(value)
            out["new_name"] = value
        else:
            raise UsageError(f"cannot set {key!r} (mtu, mac, name)")
    return out


def _frame(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned.startswith(("0x", "0X")):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise UsageError(f"{text[:40]!r} is not a frame in hex") from None


def _row(attrs: dict[str, Any]) -> str:
    nic = "connected" if attrs.get("connected") else "disconnected"
    link = "up" if attrs.get("link_up") else "down"
    where = f"{attrs['datapath']}:{attrs['port_no']}" if "datapath" in attrs else "-"
    return (
        f"{attrs['name']:<16} {PortType(attrs['port_type']).label:<11} {attrs['port_id']:>4} "
        f"{format_mac(attrs['mac'])} {attrs['mtu']:>5} {nic:<12} {link:<4} {where}"
    )


HEADER = f"{'NAME':<16} {'TYPE':<11} {'ID':>4} {'MAC':<17} {'MTU':>5} {'NIC':<12} LINK DATAPATH"


def _execute(sock: NetlinkSocket, args: argparse.Namespace) -> list[str]:
    sock.family(VSWITCH_FAMILY, CODEC)
    cmd = args.vswitch_command
    echo = 0x08

    def call(command: int, attrs: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = sock.transact(VSWITCH_FAMILY, command, attrs, flags=echo)[0].attrs
        return reply

    if cmd == "list":
        return [HEADER] + [_row(m.attrs) for m in sock.dump(VSWITCH_FAMILY, VSwitchCmd.GET_PORT)]
    if cmd == "show":
        return [HEADER, _row(call(VSwitchCmd.GET_PORT, {"name": args.name}))]
    if cmd == "add-port":
        attrs: dict[str, Any] = {
            "name": args.name,
            "port_type": int(PortType.parse(args.type)),
            "mtu": args.mtu,
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
    raise UsageError(f"unknown command {cmd}")


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
