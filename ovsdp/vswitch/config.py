"""The switch's configuration: the ports it has at start-up, from TOML.

::

    [switch]
    name = "ovsdp-switch"

    [[port]]
    name = "vm1"              # the FriendlyName ("OVS-port-name"), 1-48 characters
    type = "vm"               # vm | vm-emulated | external | internal
    mac = "00:15:5d:00:00:01" # optional (default: a Hyper-V dynamic MAC)
    mtu = 1500                # optional
    connected = true          # optional: connect the NIC at start (default true)
    backend = "memory"        # optional: memory (default) | tap | afpacket (docs/nic.md)
    device = "vm1"            # tap: the TAP device (default: the name cut to 15 characters);
                              # afpacket: the interface to attach to (required)
    ipv4 = "192.0.2.1/24"     # optional, one internal port only: the VTEP address (docs/tunnel.md)

    [tunnel]                  # optional: the VTEP's routes and limits
    gateway = "192.0.2.254"   # default route for tunnel destinations off the VTEP's subnet
    uplink = "ext"            # the external port tunnel packets use (default: the first one)
    reassembly_timeout = 30   # seconds a fragmented tunnel packet may take to complete
    reassembly_memory = 4194304   # bytes of fragments held at most
    reassembly_fragments = 64     # fragments per datagram at most

    [[neighbour]]             # optional, repeated: static ARP entries of the VTEP
    ip = "192.0.2.2"
    mac = "02:00:00:00:00:02"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..netlink.errors import NetlinkError
from ..tunnel.endpoint import TunnelSettings, endpoint_of, parse_interface, parse_ipv4
from .memory import MemoryBackend
from .switch import DEFAULT_MTU, PortType, VSwitch, parse_mac

DEFAULT_CONFIG = """
# ovsdp's embedded default switch: three VMs, the physical NIC, the host's vNIC.
[switch]
name = "ovsdp-switch"

[[port]]
name = "vm1"
type = "vm"
mac = "00:15:5d:00:00:01"

[[port]]
name = "vm2"
type = "vm"
mac = "00:15:5d:00:00:02"

[[port]]
name = "vm3"
type = "vm"
mac = "00:15:5d:00:00:03"

[[port]]
name = "ext"
type = "external"
mac = "00:15:5d:00:00:10"

[[port]]
name = "host"
type = "internal"
mac = "00:15:5d:00:00:20"
"""

BACKENDS = ("memory", "tap", "afpacket")
_IFNAME_RE = re.compile(r"[^/:\s]{1,15}")  # a Linux interface name (IFNAMSIZ - 1 bytes)


class ConfigError(ValueError):
    """The configuration file is not valid; the message says where."""


@dataclass
class PortConfig:
    """One ``[[port]]`` table."""

    name: str
    type: PortType
    mac: bytes | None = None
    mtu: int = DEFAULT_MTU
    connected: bool = True
    backend: str = "memory"
    ipv4: tuple[int, int] | None = None  # (address, prefix length): the VTEP's
    device: str | None = None  # tap / afpacket: the Linux interface (docs/nic.md)


@dataclass
class SwitchConfig:
    """The whole configuration."""

    name: str = "ovsdp-switch"
    ports: list[PortConfig] = field(default_factory=list)
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)


def parse_config(text: str, source: str = "<config>") -> SwitchConfig:
    """Parse and check a TOML configuration."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown = set(data) - {"switch", "port", "tunnel", "neighbour"}
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown)}")
    switch = data.get("switch", {})
    config = SwitchConfig(name=str(switch.get("name", "ovsdp-switch")))
    for i, raw in enumerate(data.get("port", [])):
        config.ports.append(_port(raw, f"{source}: port #{i + 1}"))
    names = [p.name for p in config.ports]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate port names {dupes}")
    config.tunnel = _tunnel(data, config.ports, source)
    return config


_TUNNEL_KEYS = {
    "gateway",
    "uplink",
    "reassembly_timeout",
    "reassembly_memory",
    "reassembly_fragments",
}


def _tunnel(data: dict[str, Any], ports: list[PortConfig], source: str) -> TunnelSettings:
    """The VTEP: the internal port's ``ipv4``, ``[tunnel]`` and ``[[neighbour]]``."""
    settings = TunnelSettings()
    vteps = [p for p in ports if p.ipv4 is not None]
    if len(vteps) > 1:
        raise ConfigError(f"{source}: more than one port has an ipv4 address (the VTEP's)")
    if vteps:
        settings.vtep_port = vteps[0].name
        settings.address, settings.prefix = vteps[0].ipv4 or (0, 24)
    raw = data.get("tunnel", {})
    where = f"{source}: [tunnel]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _TUNNEL_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        if "gateway" in raw:
            settings.gateway = parse_ipv4(str(raw["gateway"]))
        if "uplink" in raw:
            settings.uplink = str(raw["uplink"])
            named = {p.name: p for p in ports}.get(settings.uplink)
            if named is None or named.type is not PortType.EXTERNAL:
                raise ValueError(f"uplink {settings.uplink!r} is not an external port")
        for key, kind, low in (
            ("reassembly_timeout", (int, float), 0.001),
            ("reassembly_memory", (int,), 4096),
            ("reassembly_fragments", (int,), 2),
        ):
            if key in raw:
                value = raw[key]
                if not isinstance(value, kind) or isinstance(value, bool) or value < low:
                    raise ValueError(f"{key} must be a number of at least {low}")
                setattr(settings, key, value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for i, entry in enumerate(data.get("neighbour", [])):
        here = f"{source}: neighbour #{i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"ip", "mac"}:
            raise ConfigError(f"{here}: needs exactly ip and mac")
        try:
            ip = parse_ipv4(str(entry["ip"]))
            mac = parse_mac(str(entry["mac"]))
        except (ValueError, NetlinkError) as exc:
            reason = exc.reason if isinstance(exc, NetlinkError) else str(exc)
            raise ConfigError(f"{here}: {reason}") from None
        settings.neighbours[ip] = mac
    return settings


def _port(raw: dict[str, Any], where: str) -> PortConfig:
    unknown = set(raw) - {"name", "type", "mac", "mtu", "connected", "backend", "ipv4", "device"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    if "name" not in raw:
        raise ConfigError(f"{where}: needs a name")
    name = raw["name"]
    if not isinstance(name, str):
        raise ConfigError(f'{where}: name must be a string (name = "vm1"), not {name!r}')
    try:
        ptype = PortType.parse(str(raw.get("type", "vm")))
        mac = parse_mac(raw["mac"]) if "mac" in raw else None
    except NetlinkError as exc:
        raise ConfigError(f"{where}: {exc.reason}") from None
    backend = str(raw.get("backend", "memory"))
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: unknown backend {backend!r} (one of {BACKENDS})")
    mtu = raw.get("mtu", DEFAULT_MTU)
    if not isinstance(mtu, int) or isinstance(mtu, bool):
        raise ConfigError(f"{where}: mtu must be a number")
    # TOML has booleans: a string such as "no" would otherwise count as true
    connected = raw.get("connected", True)
    if not isinstance(connected, bool):
        raise ConfigError(f"{where}: connected must be true or false, not {connected!r}")
    ipv4 = None
    if "ipv4" in raw:
        if ptype is not PortType.INTERNAL:
            raise ConfigError(f"{where}: only the internal port (the VTEP) takes an ipv4 address")
        try:
            ipv4 = parse_interface(str(raw["ipv4"]))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    device = _device(raw, name, backend, where)
    return PortConfig(name, ptype, mac, mtu, connected, backend, ipv4, device)


def _device(raw: dict[str, Any], name: str, backend: str, where: str) -> str | None:
    """The Linux interface of a tap or afpacket port (docs/nic.md)."""
    if backend == "memory":
        if "device" in raw:
            raise ConfigError(f"{where}: a memory backend takes no device")
        return None
    if "device" not in raw:
        if backend == "afpacket":
            raise ConfigError(f'{where}: an afpacket backend needs device = "INTERFACE"')
        device: Any = name[:15]  # tap: the port's name
    else:
        device = raw["device"]
    ok = isinstance(device, str) and device not in (".", "..") and _IFNAME_RE.fullmatch(device)
    if not ok or len(device.encode()) > 15:
        raise ConfigError(f"{where}: device {device!r} is not an interface name (1-15 characters)")
    return str(device)


def build_switch(config: SwitchConfig) -> VSwitch:
    """A switch with the configured ports: their NICs on memory backends, or on none yet for
    tap and afpacket ports (the daemon opens those: ovsdp.nic.open_nics)."""
    switch = VSwitch(config.name)
    for port in config.ports:
        try:
            switch.add_port(
                port.name,
                port.type,
                mac=port.mac,
                mtu=port.mtu,
                connect=port.connected,
                backend=MemoryBackend() if port.backend == "memory" else None,
            )
        except NetlinkError as exc:
            raise ConfigError(f"port {port.name}: {exc.reason}") from None
    try:
        endpoint_of(switch).configure(config.tunnel)
    except ValueError as exc:
        raise ConfigError(f"tunnel: {exc}") from None
    return switch
