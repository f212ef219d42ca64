"""The ovsdp service (switch + datapath extension + families) for tests, and its clients.

:class:`Harness` builds the service of ``ovsdp serve`` (:func:`ovsdp.daemon.build_service`) and
runs its pseudo-device in a :class:`ServiceThread`; tests talk to it through real connections
(:class:`Client`, a ``NetlinkSocket`` with helpers for the ovs_datapath, ovs_vport and
ovsdp_vswitch families) and look at the switch, the extension and the vport tables in the
service's thread (:meth:`Harness.call`).  Also: the ``ovsdp`` command line in a subprocess, and a
Python an unprivileged user can run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from pseudodev_support import ServiceThread, socket_path

from ovsdp.daemon import ServiceConfig, build_service
from ovsdp.datapath.datapath import Datapath
from ovsdp.netlink.constants import NLM_F_ECHO, DpCmd, VportCmd, VportType
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import AnyMessage, GenlMessage
from ovsdp.vswitch.config import parse_config
from ovsdp.vswitch.family import VSWITCH_FAMILY, VSwitchCmd
from ovsdp.vswitch.switch import PortType
from userspace import vswitchctl
from userspace.netlink_socket import NetlinkSocket, ResolvedFamily

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DP = "ovs_datapath"
VPORT = "ovs_vport"
VSWITCH = VSWITCH_FAMILY
NETDEV = int(VportType.NETDEV)
INTERNAL = int(VportType.INTERNAL)
VXLAN = int(VportType.VXLAN)
GENEVE = int(VportType.GENEVE)
GRE = int(VportType.GRE)
OVSP_NONE = 65535

# The embedded default switch (docs/vswitch.md section 1, "Configuration").
DEFAULT_PORTS = {
    "vm1": (PortType.VM_SYNTHETIC, bytes.fromhex("00155d000001")),
    "vm2": (PortType.VM_SYNTHETIC, bytes.fromhex("00155d000002")),
    "vm3": (PortType.VM_SYNTHETIC, bytes.fromhex("00155d000003")),
    "ext": (PortType.EXTERNAL, bytes.fromhex("00155d000010")),
    "host": (PortType.INTERNAL, bytes.fromhex("00155d000020")),
}


def expect_errno(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> NetlinkError:
    """Call ``fn`` and check it fails with ``code``; the error, for more checks."""
    with pytest.raises(NetlinkError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, (
        f"expected {errno.errorcode[code]}, got {errno.errorcode.get(info.value.errno)}: "
        f"{info.value}"
    )
    return info.value


class Client(NetlinkSocket):
    """A connection to the service with helpers for its families (requests carry NLM_F_ECHO
    unless told otherwise, so the object comes back)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, timeout=20)
        self.family(VSWITCH, vswitchctl.CODEC)

    def __enter__(self) -> Client:
        return self

    # -- ovsdp_vswitch ------------------------------------------------------------------------

    def vs(self, cmd: int, **attrs: Any) -> dict[str, Any]:
        """A management request; the port as the reply shows it."""
        reply: dict[str, Any] = self.transact(VSWITCH, cmd, attrs, flags=NLM_F_ECHO)[0].attrs
        return reply

    def add_port(self, name: str, port_type: PortType = PortType.VM_SYNTHETIC, **attrs: Any) -> Any:
        return self.vs(VSwitchCmd.ADD_PORT, name=name, port_type=int(port_type), **attrs)

    def del_port(self, name: str) -> dict[str, Any]:
        return self.vs(VSwitchCmd.DEL_PORT, name=name)

    def connect(self, name: str) -> dict[str, Any]:
        return self.vs(VSwitchCmd.CONNECT, name=name)

    def disconnect(self, name: str) -> dict[str, Any]:
        return self.vs(VSwitchCmd.DISCONNECT, name=name)

    def link(self, name: str, up: bool) -> dict[str, Any]:
        return self.vs(VSwitchCmd.SET_LINK, name=name, link_up=int(up))

    def set_port(self, name: str, **changes: Any) -> dict[str, Any]:
        return self.vs(VSwitchCmd.SET_PORT, name=name, **changes)

    def show(self, name: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.transact(VSWITCH, VSwitchCmd.GET_PORT, {"name": name})[0].attrs
        return reply

    def ports(self) -> list[dict[str, Any]]:
        return [m.attrs for m in self.dump(VSWITCH, VSwitchCmd.GET_PORT)]

    # -- ovs_datapath -------------------------------------------------------------------------

    def dp_new(
        self,
        name: str,
        upcall_pid: int = 0,
        *,
        echo: bool = True,
        version: int | None = None,
        **attrs: Any,
    ) -> GenlMessage | None:
        """OVS_DP_CMD_NEW (with genl ``version`` if given); the reply when echoed."""
        request = {"name": name, "upcall_pid": upcall_pid, **attrs}
        with self.genl_version(DP, version):
            replies = self.transact(DP, DpCmd.NEW, request, flags=NLM_F_ECHO if echo else 0)
        return replies[0] if replies else None

    def dp_get(self, name: str | None = None, ifindex: int = 0) -> GenlMessage:
        attrs = {} if name is None else {"name": name}
        (reply,) = self.transact(DP, DpCmd.GET, attrs, dp_ifindex=ifindex)
        return reply

    def dp_set(
        self, name: str | None = None, ifindex: int = 0, *, echo: bool = True, **attrs: Any
    ) -> GenlMessage | None:
        if name is not None:
            attrs["name"] = name
        replies = self.transact(
            DP, DpCmd.SET, attrs, dp_ifindex=ifindex, flags=NLM_F_ECHO if echo else 0
        )
        return replies[0] if replies else None

    def dp_del(
        self, name: str | None = None, ifindex: int = 0, *, echo: bool = True
    ) -> GenlMessage | None:
        attrs = {} if name is None else {"name": name}
        replies = self.transact(
            DP, DpCmd.DEL, attrs, dp_ifindex=ifindex, flags=NLM_F_ECHO if echo else 0
        )
        return replies[0] if replies else None

    def dp_dump(self) -> list[GenlMessage]:
        return list(self.dump(DP, DpCmd.GET))

    # -- ovs_vport ----------------------------------------------------------------------------

    def vport_new(
        self,
        dp: int,
        name: str,
        vport_type: int = NETDEV,
        pids: Iterable[int] = (0,),
        *,
        echo: bool = True,
        **attrs: Any,
    ) -> GenlMessage | None:
        """OVS_VPORT_CMD_NEW in the datapath with ifindex ``dp``."""
        request = {"name": name, "type": vport_type, "upcall_pid": list(pids), **attrs}
        replies = self.transact(
            VPORT, VportCmd.NEW, request, dp_ifindex=dp, flags=NLM_F_ECHO if echo else 0
        )
        return replies[0] if replies else None

    def vport_get(self, dp: int = 0, name: str | None = None, **attrs: Any) -> GenlMessage:
        if name is not None:
            attrs["name"] = name
        (reply,) = self.transact(VPORT, VportCmd.GET, attrs, dp_ifindex=dp)
        return reply

    def vport_set(
        self, dp: int = 0, name: str | None = None, *, echo: bool = True, **attrs: Any
    ) -> GenlMessage | None:
        if name is not None:
            attrs["name"] = name
        replies = self.transact(
            VPORT, VportCmd.SET, attrs, dp_ifindex=dp, flags=NLM_F_ECHO if echo else 0
        )
        return replies[0] if replies else None

    def vport_del(
        self, dp: int = 0, name: str | None = None, *, echo: bool = True, **attrs: Any
    ) -> GenlMessage | None:
        if name is not None:
            attrs["name"] = name
        replies = self.transact(
            VPORT, VportCmd.DEL, attrs, dp_ifindex=dp, flags=NLM_F_ECHO if echo else 0
        )
        return replies[0] if replies else None

    def vport_dump(self, dp: int) -> list[GenlMessage]:
        return list(self.dump(VPORT, VportCmd.GET, dp_ifindex=dp))

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self, family: str = VPORT) -> Client:
        self.join(family, family)  # the OVS families' groups are named like the family
        return self

    def events(self) -> list[GenlMessage]:
        """Every unsolicited message the service queued for this socket so far.

        A request's answer is queued behind what was queued before it, so once this socket's
        own transaction is complete, everything earlier has been read (and stashed).  Raises
        NetlinkError(ENOBUFS) on an overrun, as ``recv`` does.
        """
        self.properties()
        out: list[GenlMessage] = []
        while True:
            batch = self.recv(timeout=0)
            if not batch:
                return out
            for msg in batch:
                assert isinstance(msg, GenlMessage), msg
                out.append(msg)

    # -- helpers ----------------------------------------------------------------------------

    def genl_version(self, family: str, version: int | None) -> _Version:
        return _Version(self, family, version)


class _Version:
    """Send a family's requests with another genl version for a while (an old client)."""

    def __init__(self, sock: Client, family: str, version: int | None) -> None:
        self.sock = sock
        self.family = family
        self.version = version
        self.saved: ResolvedFamily | None = None

    def __enter__(self) -> None:
        if self.version is None:
            return
        fam = self.sock.family(self.family)
        self.saved = fam
        codec = dataclasses.replace(fam.codec, version=self.version)
        self.sock._families[self.family] = ResolvedFamily(fam.id, codec, fam.groups)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            self.sock._families[self.family] = self.saved


class Harness:
    """The whole service (``build_service``) on a fresh socket, served in a thread."""

    def __init__(self, config: str | None = None, **service_kwargs: Any) -> None:
        self.path = socket_path()
        switch = parse_config(config, "<test>") if config is not None else None
        self.service = build_service(ServiceConfig(self.path, switch=switch))
        self.thread = ServiceThread(self.service.device, self.path, **service_kwargs)
        self.clients: list[Client] = []

    @property
    def switch(self) -> Any:
        return self.service.switch

    @property
    def extension(self) -> Any:
        return self.service.extension

    def __enter__(self) -> Harness:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        self.thread.stop()
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(self.path))  # the service removed its socket

    def client(self) -> Client:
        client = Client(self.path)
        self.clients.append(client)
        return client

    def subscriber(self, family: str = VPORT) -> Client:
        return self.client().subscribe(family)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the service's thread (the switch and the datapaths live there)."""
        return self.thread.call(fn, *args)

    def datapath(self, name: str) -> Datapath:
        dp: Datapath = self.call(lambda: self.extension.datapaths[name])
        return dp

    def tables(self, dp_name: str) -> dict[str, Any]:
        """A snapshot of a datapath's vport table: the two hashes (by name) and the counters."""

        def snap() -> dict[str, Any]:
            table = self.extension.datapaths[dp_name].vports
            return {
                "by_switch_port": {
                    self.switch.ports[sp_id].name if sp_id in self.switch.ports else sp_id: v.name
                    for sp_id, v in table.by_switch_port.items()
                },
                "by_tunnel": {key: v.name for key, v in table.by_tunnel.items()},
                "n_switch_backed": table.n_switch_backed,
                "n_tunnel": table.n_tunnel,
                "by_no": {no: v.name for no, v in table.by_no.items()},
                "by_name": {name: v.port_no for name, v in table.by_name.items()},
                "states": {v.name: v.state.value for v in table.by_no.values()},
            }

        result: dict[str, Any] = self.call(snap)
        return result

    def binding(self, port: str) -> tuple[str, int] | None:
        """(datapath name, port number) the switch port is bound to, or None."""

        def get() -> tuple[str, int] | None:
            b = self.switch.by_name[port].binding
            return None if b is None else (b[0].name, b[1].port_no)

        result: tuple[str, int] | None = self.call(get)
        return result


def summary(messages: Iterable[AnyMessage]) -> list[tuple[str, str, int]]:
    """(command, port name, port number) of each vport event, for order checks."""
    out = []
    for msg in messages:
        assert isinstance(msg, GenlMessage), msg
        out.append((VportCmd(msg.cmd).name, msg.attrs["name"], msg.attrs["port_no"]))
    return out


def check_event(msg: AnyMessage, dp_ifindex: int) -> GenlMessage:
    """An event as docs/vswitch.md section 5 says: seq 0, the datapath's ifindex."""
    assert isinstance(msg, GenlMessage), msg
    assert msg.seq == 0
    assert msg.dp_ifindex == dp_ifindex
    assert msg.flags == 0
    return msg


# -- the command line in a subprocess -----------------------------------------------------------


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("OVSDP_SOCKET", None)
    return env


def run_ovsdp(*args: str, timeout: float = 30, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``ovsdp ARGS`` (``python -m ovsdp``) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "ovsdp", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=cli_env(),
        check=False,
        **kwargs,
    )


def vswitch_cli(path: str, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``ovsdp vswitch --socket PATH ARGS``."""
    return run_ovsdp("vswitch", "--socket", path, *args, **kwargs)


def list_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of ``ovsdp vswitch list``/``show`` by port name (after the header)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "ID", "MAC", "MTU", "NIC", "LINK", "DATAPATH"]
    return {line.split()[0]: line.split() for line in lines[1:]}


NOBODY = 65534


@functools.cache
def nobody_python() -> tuple[list[str], dict[str, str]] | None:
    """A Python command (and environment) uid 65534 can run with ovsdp importable, if any."""
    if os.geteuid() != 0:
        return None
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([REPO, *site])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}"):
        if not os.path.exists(exe):
            continue
        try:
            probe = subprocess.run(
                [exe, "-c", "import ovsdp.cli, userspace.vswitchctl"],
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
                capture_output=True,
                cwd="/",
                env=env,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return [exe], env
    return None


def run_as_nobody(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as uid/gid 65534 without supplementary groups."""
    found = nobody_python()
    assert found is not None
    cmd, env = found
    return subprocess.run(
        [*cmd, *args],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=timeout,
        check=False,
    )


def open_to_everyone(path: str) -> None:
    """Let any user reach the socket file (its directory is 0700 from mkdtemp)."""
    os.chmod(os.path.dirname(path), 0o755)


def content(messages: Iterable[GenlMessage]) -> list[tuple[int, Any]]:
    """What replies say (dp_ifindex and attributes), without their sequence numbers."""
    return [(m.dp_ifindex, m.attrs) for m in messages]


def names(messages: Iterator[GenlMessage] | list[GenlMessage]) -> list[str]:
    return [m.attrs["name"] for m in messages]
