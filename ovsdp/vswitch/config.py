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
    backend = "memory"        # optional: memory (default)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from ..netlink.errors import NetlinkError
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

BACKENDS = ("memory",)


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


@dataclass
class SwitchConfig:
    """The whole configuration."""

    name: str = "ovsdp-switch"
    ports: list[PortConfig] = field(default_factory=list)


def parse_config(text: str, source: str = "<config>") -> SwitchConfig:
    """Parse and check a TOML configuration."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    unknown = set(data) - {"switch", "port"}
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
    return config


def _port(raw: dict[str, Any], where: str) -> PortConfig:
    unknown = set(raw) - {"name", "type", "mac", "mtu", "connected", "backend"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        name = raw["name"]
        ptype = PortType.parse(str(raw.get("type", "vm")))
        mac = parse_mac(raw["mac"]) if "mac" in raw else None
    except KeyError:
        raise ConfigError(f"{where}: needs a name") from None
    except NetlinkError as exc:
        raise ConfigError(f"{where}: {exc.reason}") from None
    backend = str(raw.get("backend", "memory"))
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: unknown backend {backend!r} (one of {BACKENDS})")
    mtu = raw.get("mtu", DEFAULT_MTU)
    if not isinstance(mtu, int):
        raise ConfigError(f"{where}: mtu must be a number")
    return PortConfig(str(name), ptype, mac, mtu, bool(raw.get("connected", True)), backend)


def build_switch(config: SwitchConfig) -> VSwitch:
    """A switch with the configured ports (their NICs on memory backends)."""
    switch = VSwitch(config.name)
    for port in config.ports:
        try:
            switch.add_port(
                port.name,
                port.type,
                mac=port.mac,
                mtu=port.mtu,
                connect=port.connected,
                backend=MemoryBackend(),
            )
        except NetlinkError as exc:
            raise ConfigError(f"port {port.name}: {exc.reason}") from None
    return switch
