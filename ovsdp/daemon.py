"""The ovsdp service: the pseudo-device with every family registered, run under trio."""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from .datapath.dp_family import DatapathFamily
from .datapath.extension import OvsExtension
from .datapath.flow_family import FlowFamily
from .datapath.packet_family import PacketFamily
from .datapath.vport_family import VportFamily
from .nic import NicError, close_nics, open_nics, run_nics
from .pseudodev.device import Device
from .pseudodev.server import PseudoDevice, ServiceError, resolve_group
from .vswitch.config import DEFAULT_CONFIG, ConfigError, SwitchConfig, build_switch, parse_config
from .vswitch.family import VSwitchFamily
from .vswitch.switch import VSwitch

DEFAULT_SOCKET = "/run/ovsdp/ovsdp.sock"


GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the young generation every 10,000 allocations instead of CPython's 700.

    Each flow, port and connection is a few long-lived containers, and a flow setup allocates
    dozens of short-lived ones; at the default threshold the collector's passes over a table of
    tens of thousands of flows cost a tenth of flow-setup CPU (bench/flow_setup.py).  Nothing
    the service keeps relies on prompt cycle collection.
    """
    gc.set_threshold(GC_THRESHOLD, 10, 10)


def default_socket_path() -> str:
    """$OVSDP_SOCKET, else /run/ovsdp/ovsdp.sock."""
    return os.environ.get("OVSDP_SOCKET") or DEFAULT_SOCKET


@dataclass
class ServiceConfig:
    """How to run the service."""

    socket_path: str
    mode: int = 0o660
    owner: int | str | None = None
    group: int | str | None = None
    switch: SwitchConfig | None = None  # None: the embedded default


def load_switch_config(path: str | None) -> SwitchConfig:
    """The switch configuration from a TOML file, or the embedded default."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, "<embedded default>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse_config(text, path)


@dataclass
class Service:
    """Everything the service is made of, sans I/O."""

    device: Device
    switch: VSwitch
    extension: OvsExtension


def build_service(config: ServiceConfig) -> Service:
    """The switch, the extension and the device with every family registered.

    Registration order gives the families the ids of the Windows datapath: ovsdp_control 0x11,
    ovs_datapath 0x12, ovs_packet 0x13, ovs_vport 0x14, ovs_flow 0x15; the management family
    0x16 (where Windows had ovs_win_netdev).
    """
    device = Device(admin_gid=resolve_group(config.group))
    switch = build_switch(config.switch or load_switch_config(None))
    extension = OvsExtension(switch)
    DatapathFamily(extension).register(device)
    PacketFamily(extension, extension.pipeline).register(device)
    VportFamily(extension).register(device)
    FlowFamily(extension).register(device)
    VSwitchFamily(switch).register(device)
    return Service(device, switch, extension)


def build_device(config: ServiceConfig) -> Device:
    """A device with every family of the service registered."""
    return build_service(config).device


def real_nics(config: SwitchConfig) -> list[tuple[str, str, str]]:
    """(port, backend, device) of each port on a real NIC backend (tap, afpacket)."""
    return [
        (port.name, port.backend, port.device)
        for port in config.ports
        if port.backend != "memory" and port.device is not None
    ]


async def run_service(
    config: ServiceConfig,
    *,
    on_listening: Callable[[str], None] | None = None,
    service: Service | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection and remove the socket.

    The NIC backends of the configuration (TAP devices, AF_PACKET sockets) are opened before the
    socket listens (an error is a :class:`~ovsdp.nic.NicError`), read by tasks of the service's
    nursery, and closed when it stops.  ``service``: one built already (a test looks into it).
    """
    switch_config = config.switch or load_switch_config(None)
    if service is None:
        service = build_service(dataclasses.replace(config, switch=switch_config))
    nics = open_nics(service.switch, real_nics(switch_config))
    try:
        directory = os.path.dirname(config.socket_path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        pseudo = PseudoDevice(
            service.device,
            config.socket_path,
            mode=config.mode,
            owner=config.owner,
            group=config.group,
        )
        pseudo.open()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(pseudo.run)
                await nursery.start(run_nics, service.switch, nics)
                if on_listening is not None:
                    on_listening(config.socket_path)
                async for _signum in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        close_nics(nics)


def serve_main(config: ServiceConfig) -> int:
    """Run the service in the foreground; the exit status."""

    def listening(path: str) -> None:
        print(f"ovsdp: listening on {path} (pid {os.getpid()})", flush=True)

    tune_gc()
    try:
        trio.run(partial(run_service, config, on_listening=listening))
    except (ServiceError, ConfigError, NicError) as exc:
        print(f"ovsdp: {exc}", file=sys.stderr)
        return 1
    return 0
