"""Datapath and port commands: add-dp, del-dp, dump-dps, show, add-if, set-if, del-if."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

from ovsdp.netlink.constants import DpCmd, VportCmd
from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import DP, TYPE_NAMES, VPORT, Dpif, PortInfo

from .context import DP_TYPE, Abort, Context, atoi, dpif_name, parse_dp_name

TUNNEL_TYPES = {"vxlan", "geneve", "gre"}
DPIF_PORT_PREFIX = {"vxlan": "vxlan_sys", "geneve": "genev_sys", "gre": "gre_sys"}
"""How dpif-netlink names a tunnel's datapath port: ``vxlan_sys_4789``, ``genev_sys_6081``,
``gre_sys`` (the netdev's own name is not the port's)."""
DEFAULT_DST_PORT = {"vxlan": 4789, "geneve": 6081}
TUNNEL_NETDEV_OPTIONS = {
    "remote_ip",
    "local_ip",
    "key",
    "in_key",
    "out_key",
    "tos",
    "ttl",
    "df_default",
    "csum",
    "packet_type",
    "egress_pkt_mark",
    "dst_port",
}
"""Tunnel options OVS's netdev layer takes.  Only ``dst_port`` reaches the datapath; the rest
configure the netdev that ovs-vswitchd keeps (flow-based tunnels get them from
``set(tunnel(...))``), so they are accepted and have no effect here, as with ovs-dpctl."""

UINT64_MAX = (1 << 64) - 1


# -- add-dp, del-dp, dump-dps --------------------------------------------------------------------


def cmd_add_dp(ctx: Context, argv: Sequence[str]) -> int:
    """``add-dp DP [IFACE...]``: create a datapath (and add ports)."""
    name, dp_type = parse_dp_name(argv[1])
    try:
        if dp_type != DP_TYPE:
            raise NetlinkError(errno.EAFNOSUPPORT, f"unknown datapath type {dp_type!r}")
        if name in ctx.dp_names():
            raise NetlinkError(errno.EEXIST, f"datapath {name} exists")
        Dpif.open(name, create=True, sock=ctx.sock)
    except NetlinkError as exc:
        code = exc.errno
        if code == errno.ENODEV:
            # Dpif.open falls back to opening when NEW says EEXIST; ENODEV from that fallback
            # means the name belongs to something that is not a datapath (a port).
            code = errno.EEXIST
        ctx.error(code, "add_dp")
        return code
    if len(argv) > 2:
        return cmd_add_if(ctx, argv)
    return 0


def cmd_del_dp(ctx: Context, argv: Sequence[str]) -> int:
    """``del-dp DP``: delete a datapath with its ports and flows."""
    dpif = ctx.open_or_fail(argv[1])
    try:
        dpif.delete()
    except NetlinkError as exc:
        ctx.error(exc.errno, "del_dp")
        return exc.errno
    return 0


def for_each_dp(ctx: Context, fn: Any) -> int:
    """Run ``fn(dpif)`` on every datapath (OVS's ``dps_for_each``)."""
    error = 0
    for name in ctx.dp_names():
        try:
            dpif = ctx.open_dp(name)
        except NetlinkError as exc:
            ctx.error(exc.errno, f"opening datapath {name} failed")
            error = exc.errno
            continue
        fn(dpif)
    return error


def cmd_dump_dps(ctx: Context, argv: Sequence[str]) -> int:
    """``dump-dps``: one ``system@name`` line per datapath."""
    return for_each_dp(ctx, lambda dpif: ctx.print(dpif_name(dpif)))


# -- show ----------------------------------------------------------------------------------------


def cmd_show(ctx: Context, argv: Sequence[str]) -> int:
    """``show [DP...]``: counters and ports of the named datapaths, or of all."""
    if len(argv) == 1:
        return for_each_dp(ctx, lambda dpif: show_dpif(ctx, dpif))
    error = 0
    for arg in argv[1:]:
        try:
            dpif = ctx.open_dp(arg)
        except NetlinkError as exc:
            ctx.error(exc.errno, f"opening datapath {arg} failed")
            error = exc.errno
            continue
        show_dpif(ctx, dpif)
    return error


def show_dpif(ctx: Context, dpif: Dpif) -> None:
    """The lines of ``show`` for one datapath (dpctl.c's ``show_dpif`` over dpif-netlink)."""
    ctx.print(f"{dpif_name(dpif)}:")
    try:
        attrs = dpif.sock.transact(DP, DpCmd.GET, {"name": dpif.name})[0].attrs
    except NetlinkError:
        attrs = None
    if attrs is not None:
        for line in stats_lines(attrs):
            ctx.print(line)
    ports = sorted(dpif.port_dump(), key=lambda p: p.port_no)
    for port in ports:
        ctx.print(port_line(port))
        if ctx.params.print_statistics:
            for line in port_stats_lines(port.stats):
                ctx.print(line)


def stats_lines(attrs: dict[str, Any]) -> list[str]:
    """The counter lines of ``show`` from a datapath reply's attributes.

    As dpif-netlink reads them: a zero cache-hit counter means "not supported" (old kernels
    report 0), so the ``cache:`` line appears only once the cache has hit; ``caches:`` appears
    when the datapath reports its masks-cache size."""
    s = attrs["stats"]
    lines = [
        f"  lookups: hit:{s.n_hit} missed:{s.n_missed} lost:{s.n_lost}",
        f"  flows: {s.n_flows}",
    ]
    m = attrs.get("megaflow_stats")
    if m is not None:
        n_pkts = s.n_hit + s.n_missed
        avg = m.n_mask_hit / n_pkts if n_pkts else 0.0
        lines.append(f"  masks: hit:{m.n_mask_hit} total:{m.n_masks} hit/pkt:{avg:.2f}")
        if m.n_cache_hit:
            rate = m.n_cache_hit / n_pkts * 100 if n_pkts else 0.0
            lines.append(f"  cache: hit:{m.n_cache_hit} hit-rate:{rate:.2f}%")
    size = attrs.get("masks_cache_size")
    if size is not None:
        lines.append("  caches:")
        lines.append(f"    masks-cache: size:{size}")
    return lines


def port_config(port: PortInfo) -> dict[str, str]:
    """A port's configuration as OVS shows it (``key=value``), from the vport's options."""
    config: dict[str, str] = {}
    for key, value in port.options.items():
        if key == "extension":
            exts = sorted(k for k, v in dict(value).items() if v)
            if exts:
                config["exts"] = ",".join(exts)
        else:
            config[str(key)] = str(value)
    return config


def port_line(port: PortInfo) -> str:
    """``  port N: name`` with ``(type: key=value, ...)`` for non-system ports."""
    line = f"  port {port.port_no}: {port.name}"
    if port.type_name != "system":
        line += f" ({port.type_name}"
        for i, (key, value) in enumerate(sorted(port_config(port).items())):
            line += f"{', ' if i else ': '}{key}={value}"
        line += ")"
    return line


def _stat(leader: str, value: int | None) -> str:
    return leader + ("?" if value is None or value == UINT64_MAX else str(value))


def _human(value: int | None) -> str:
    if value is None or value == UINT64_MAX:
        return ""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if value >= 1 << shift:
            return f" ({value / (1 << shift):.1f} {unit})"
    return ""


def port_stats_lines(stats: Any) -> list[str]:
    """``show -s`` lines of a port: what the vport counts, ``?`` for what it does not."""
    get = (lambda name: getattr(stats, name, None)) if stats is not None else (lambda name: None)
    return [
        _stat("    RX packets:", get("rx_packets"))
        + _stat(" errors:", get("rx_errors"))
        + _stat(" dropped:", get("rx_dropped"))
        + _stat(" overruns:", None)
        + _stat(" frame:", None),
        _stat("    TX packets:", get("tx_packets"))
        + _stat(" errors:", get("tx_errors"))
        + _stat(" dropped:", get("tx_dropped"))
        + _stat(" aborted:", None)
        + _stat(" carrier:", None),
        _stat("    collisions:", None),
        _stat("    RX bytes:", get("rx_bytes"))
        + _human(get("rx_bytes"))
        + _stat("  TX bytes:", get("tx_bytes"))
        + _human(get("tx_bytes")),
    ]


# -- add-if, set-if, del-if ----------------------------------------------------------------------


def _split_iface(spec: str) -> tuple[str | None, list[tuple[str, str]]]:
    """``name,key=value,...`` split as strtok does (empty pieces skipped)."""
    pieces = [p for p in spec.split(",") if p]
    if not pieces:
        return None, []
    options = []
    for piece in pieces[1:]:
        key, _, value = piece.lstrip("=").partition("=")
        options.append((key, value))
    return pieces[0], options


def _tunnel_options(
    ctx: Context, name: str, vtype: str, args: dict[str, str]
) -> dict[str, Any] | None:
    """The datapath options of a tunnel netdev's arguments; None (after the error) if bad."""
    options: dict[str, Any] = {}
    for key, value in args.items():
        if key not in TUNNEL_NETDEV_OPTIONS or (key == "dst_port" and vtype == "gre"):
            ctx.error(errno.EINVAL, f"{name}: unknown {vtype} argument '{key}'")
            return None
        if key == "dst_port":
            options["dst_port"] = atoi(value)
    if vtype in DEFAULT_DST_PORT:
        options.setdefault("dst_port", DEFAULT_DST_PORT[vtype])
    return options


def _dpif_port_name(name: str, vtype: str, options: dict[str, Any]) -> str:
    prefix = DPIF_PORT_PREFIX.get(vtype)
    if prefix is None:
        return name
    if "dst_port" in options:
        return f"{prefix}_{options['dst_port']}"
    return prefix


def cmd_add_if(ctx: Context, argv: Sequence[str]) -> int:
    """``add-if DP IFACE[,type=T][,port_no=N][,key=value]...``: add ports."""
    dpif = ctx.open_or_fail(argv[1])
    lasterror = 0
    for spec in argv[2:]:
        error = _add_one(ctx, dpif, argv[1], spec)
        if error:
            lasterror = error
    return lasterror


def _add_one(ctx: Context, dpif: Dpif, dp_arg: str, spec: str) -> int:
    name, options = _split_iface(spec)
    if name is None:
        ctx.error(0, f"{spec} is not a valid network device name")
        return errno.EINVAL
    vtype = "system"
    port_no: int | None = None
    args: dict[str, str] = {}
    for key, value in options:
        if key == "type":
            vtype = value
        elif key == "port_no":
            port_no = atoi(value)
        elif key in args:
            ctx.error(0, f'duplicate "{key}" option')
        else:
            args[key] = value
    if not vtype:
        # ``type=`` (or a bare ``type``) asks for the default: netdev_open only uses a type that
        # is not empty, so ovs-dpctl opens a system device
        vtype = "system"
    if vtype not in TYPE_NAMES:
        ctx.error(errno.EAFNOSUPPORT, f"{name}: failed to open network device")
        return errno.EAFNOSUPPORT
    dp_options: dict[str, Any] = {}
    if vtype in TUNNEL_TYPES:
        checked = _tunnel_options(ctx, name, vtype, args)
        if checked is None:
            return errno.EINVAL
        dp_options = checked
    elif args:
        ctx.error(0, f"{name}: arguments provided to device that is not configurable")
    try:
        dpif.port_add(
            _dpif_port_name(name, vtype, dp_options),
            vtype,
            port_no=port_no,
            options=dp_options or None,
        )
    except NetlinkError as exc:
        ctx.error(exc.errno, f"adding {name} to {dp_arg} failed")
        return exc.errno
    return 0


def cmd_set_if(ctx: Context, argv: Sequence[str]) -> int:
    """``set-if DP IFACE[,key=value]...``: change ports (what the datapath lets change)."""
    dpif = ctx.open_or_fail(argv[1])
    lasterror = 0
    for spec in argv[2:]:
        try:
            _set_one(ctx, dpif, argv[1], spec)
        except Abort as abort:
            lasterror = abort.code
    return lasterror


def _set_one(ctx: Context, dpif: Dpif, dp_arg: str, spec: str) -> None:
    name, options = _split_iface(spec)
    if name is None:
        ctx.error(0, f"{spec} is not a valid network device name")
        return  # as ovs-dpctl: not counted as a failure
    try:
        port = dpif.port_query_by_name(name)
    except NetlinkError as exc:
        raise ctx.fail(exc.errno, f"{name}: failed to query port in {dp_arg}") from None
    vtype = port.type_name
    current = port_config(port)
    config = dict(current)
    for key, value in options:
        if key == "type":
            if value != vtype:
                raise ctx.fail(0, f"{name}: can't change type from {vtype} to {value}")
        elif key == "port_no":
            if atoi(value) != port.port_no:
                raise ctx.fail(
                    0, f"{name}: can't change port number from {port.port_no} to {atoi(value)}"
                )
        elif value == "":
            config.pop(key, None)
        else:
            config[key] = value
    if config == current:
        return
    if vtype not in TUNNEL_TYPES:
        ctx.error(0, f"{name}: arguments provided to device that is not configurable")
        return
    dp_options = _tunnel_options(ctx, name, vtype, config)
    if dp_options is None:
        raise Abort(errno.EINVAL)
    if dp_options == dict(port.options):
        return
    try:
        dpif.sock.transact(
            VPORT,
            VportCmd.SET,
            {"port_no": port.port_no, "options": dp_options},
            dp_ifindex=dpif.dp_ifindex,
        )
    except NetlinkError as exc:
        raise ctx.fail(exc.errno, "Error updating configuration") from None


def cmd_del_if(ctx: Context, argv: Sequence[str]) -> int:
    """``del-if DP IFACE...``: delete ports by name or number."""
    dpif = ctx.open_or_fail(argv[1])
    lasterror = 0
    for name in argv[2:]:
        if all(ch in "0123456789" for ch in name):
            port_no = atoi(name)
        else:
            try:
                port_no = dpif.port_query_by_name(name).port_no
            except NetlinkError:
                ctx.error(0, f"no port named {name}")
                lasterror = errno.ENOENT
                continue
        try:
            dpif.port_del(port_no)
        except NetlinkError as exc:
            ctx.error(exc.errno, f"deleting port {name} from {argv[1]} failed")
            lasterror = exc.errno
    return lasterror
