"""The handler's configuration: the datapath, its ports, flow and MAC-table timers, from TOML.

::

    [datapath]
    name = "ovs-system"          # created if missing (default ovs-system)

    [flows]
    idle_timeout = 10.0          # s without a packet before a flow is deleted (ovs max-idle)
    revalidate_interval = 1.0    # s between flow dumps (idle expiry, MAC refresh)

    [mac]
    aging_time = 300.0           # s a learned address lives without traffic (mac-aging-time)
    table_size = 65536           # addresses at most; the least recently seen goes first

    [[port]]
    name = "vm1"                 # the switch port's name (vport names: 1-15 characters)
    type = "netdev"              # netdev (alias system) | internal | vxlan

    [[port]]
    name = "vxlan0"
    type = "vxlan"
    options = { dst_port = 4789, remote_ip = "192.0.2.2", key = 5 }
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from dataclasses import dataclass, field
from typing import Any

DEFAULT_DATAPATH = "ovs-system"
DEFAULT_IDLE_TIMEOUT = 10.0
DEFAULT_REVALIDATE_INTERVAL = 1.0
DEFAULT_MAC_AGING = 300.0
DEFAULT_MAC_TABLE_SIZE = 65536
DEFAULT_VXLAN_PORT = 4789
DEFAULT_TUNNEL_TTL = 64
MAX_VPORT_NAME = 15

DEFAULT_CONFIG = """
# ovsdp-handler's embedded default: the ports of ovsdp's embedded default switch.
[datapath]
name = "ovs-system"

[[port]]
name = "vm1"
type = "netdev"

[[port]]
name = "vm2"
type = "netdev"

[[port]]
name = "vm3"
type = "netdev"

[[port]]
name = "ext"
type = "netdev"

[[port]]
name = "host"
type = "internal"
"""

PORT_TYPES = {"netdev": "netdev", "system": "netdev", "internal": "internal", "vxlan": "vxlan"}
VXLAN_OPTIONS = {"dst_port", "remote_ip", "local_ip", "key", "ttl"}


class ConfigError(ValueError):
    """The configuration is not valid; the message says where."""


@dataclass(frozen=True)
class TunnelConfig:
    """Where a vxlan port sends: the tunnel key set before each output to it."""

    remote_ip: int
    local_ip: int = 0
    key: int = 0
    ttl: int = DEFAULT_TUNNEL_TTL
    dst_port: int = DEFAULT_VXLAN_PORT


@dataclass(frozen=True)
class PortConfig:
    """One ``[[port]]``."""

    name: str
    type: str = "netdev"  # netdev | internal | vxlan
    dst_port: int | None = None  # vxlan: the datapath option (OVS_TUNNEL_ATTR_DST_PORT)
    tunnel: TunnelConfig | None = None  # vxlan with a remote_ip

    @property
    def dp_options(self) -> dict[str, Any] | None:
        """The vport's OPTIONS for OVS_VPORT_CMD_NEW (tunnels only)."""
        if self.type != "vxlan":
            return None
        return {"dst_port": self.dst_port or DEFAULT_VXLAN_PORT}


@dataclass
class HandlerConfig:
    """The whole configuration (times in seconds)."""

    datapath: str = DEFAULT_DATAPATH
    ports: list[PortConfig] = field(default_factory=list)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    revalidate_interval: float = DEFAULT_REVALIDATE_INTERVAL
    mac_aging: float = DEFAULT_MAC_AGING
    mac_table_size: int = DEFAULT_MAC_TABLE_SIZE

    def port(self, name: str) -> PortConfig | None:
        """The configured port of that name, if any."""
        for port in self.ports:
            if port.name == name:
                return port
        return None


def _table(data: dict[str, Any], name: str, keys: set[str], where: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"{where}: [{name}]: unknown keys {sorted(unknown)}")
    return table


def _seconds(table: dict[str, Any], key: str, default: float, where: str, *, zero: bool) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {key} must be a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{where}: {key} must be {'>= 0' if zero else '> 0'}, not {value}")
    return float(value)


def _ipv4(value: Any, where: str) -> int:
    try:
        return int(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise ConfigError(f"{where}: not an IPv4 address: {value!r}") from None


def _int(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{where}: must be an integer from {low} to {high}, not {value!r}")
    return value


def _port(raw: Any, where: str) -> PortConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(raw) - {"name", "type", "options"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_VPORT_NAME:
        raise ConfigError(f"{where}: needs a name of 1-{MAX_VPORT_NAME} characters")
    ptype = PORT_TYPES.get(str(raw.get("type", "netdev")))
    if ptype is None:
        raise ConfigError(f"{where}: type must be one of {sorted(PORT_TYPES)}")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options must be a table")
    if ptype != "vxlan":
        if options:
            raise ConfigError(f"{where}: only vxlan ports take options")
        return PortConfig(name, ptype)
    unknown = set(options) - VXLAN_OPTIONS
    if unknown:
        raise ConfigError(f"{where}: unknown vxlan options {sorted(unknown)}")
    dst_port = _int(options.get("dst_port", DEFAULT_VXLAN_PORT), 1, 65535, f"{where}: dst_port")
    tunnel = None
    if "remote_ip" in options:
        tunnel = TunnelConfig(
            _ipv4(options["remote_ip"], f"{where}: remote_ip"),
            _ipv4(options["local_ip"], f"{where}: local_ip") if "local_ip" in options else 0,
            _int(options.get("key", 0), 0, (1 << 24) - 1, f"{where}: key"),
            _int(options.get("ttl", DEFAULT_TUNNEL_TTL), 1, 255, f"{where}: ttl"),
            dst_port,
        )
    elif set(options) - {"dst_port"}:
        raise ConfigError(f"{where}: vxlan options need remote_ip")
    return PortConfig(name, ptype, dst_port, tunnel)


def parse_config(text: str, source: str = "<config>") -> HandlerConfig:
    """Parse and check a TOML configuration."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown = set(data) - {"datapath", "flows", "mac", "port"}
    if unknown:
        raise ConfigError(f"{source}: unknown sections {sorted(unknown)}")
    dp = _table(data, "datapath", {"name"}, source)
    flows = _table(data, "flows", {"idle_timeout", "revalidate_interval"}, source)
    mac = _table(data, "mac", {"aging_time", "table_size"}, source)
    name = dp.get("name", DEFAULT_DATAPATH)
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_VPORT_NAME:
        raise ConfigError(f"{source}: [datapath] name must be 1-{MAX_VPORT_NAME} characters")
    config = HandlerConfig(
        datapath=name,
        idle_timeout=_seconds(flows, "idle_timeout", DEFAULT_IDLE_TIMEOUT, source, zero=False),
        revalidate_interval=_seconds(
            flows, "revalidate_interval", DEFAULT_REVALIDATE_INTERVAL, source, zero=False
        ),
        mac_aging=_seconds(mac, "aging_time", DEFAULT_MAC_AGING, source, zero=False),
        mac_table_size=_int(
            mac.get("table_size", DEFAULT_MAC_TABLE_SIZE), 1, 1 << 24, f"{source}: table_size"
        ),
    )
    ports = data.get("port", [])
    if not isinstance(ports, list):
        raise ConfigError(f"{source}: port must be an array of tables ([[port]])")
    for i, raw in enumerate(ports):
        config.ports.append(_port(raw, f"{source}: port #{i + 1}"))
    names = [p.name for p in config.ports]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate port names {dupes}")
    if name in names:
        raise ConfigError(f"{source}: port {name} has the datapath's name (its local port)")
    return config


def load_config(path: str | None) -> HandlerConfig:
    """The configuration from a TOML file, or the embedded default."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, "<embedded default>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse_config(text, path)
