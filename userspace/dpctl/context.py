"""What every ``ovsdp-dpctl`` command works with: options, output streams, the connection, and
opening datapaths the way ovs-dpctl names and finds them."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ovsdp.netlink.constants import DpCmd
from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import DP, Dpif
from userspace.netlink_socket import NetlinkSocket, default_socket_path

PROG = "ovsdp-dpctl"
"""The program's name when the command line gives no usable one (see :func:`program_name`)."""
DP_TYPE = "system"
"""The one datapath type ovsdp has: what dpif-netlink calls its kernel datapaths."""


def program_name(argv0: str) -> str:
    """The name errors are prefixed with: the basename of ``argv0``, as OVS's
    ``set_program_name`` takes it, so that the script installed as ``ovs-dpctl`` says
    ``ovs-dpctl: ...`` like the original.  Falls back to :data:`PROG` when ``argv0`` names no
    program: empty, an interpreter flag (``-c``) or a Python file (``python -m`` puts the
    module's path there, e.g. ``.../__main__.py``)."""
    base = argv0.rsplit("/", 1)[-1]
    if not base or base.startswith("-") or base.endswith(".py"):
        return PROG
    return base


class OutputError(Exception):
    """Standard output could not be written (``code`` is the errno).

    Deliberately not an OSError: commands catch OSError for their own files and the
    connection, and must not take a failed write to standard output for one of those."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Abort(Exception):
    """A command cannot go on; the error was printed already (``code`` is the errno, or EINVAL
    for errors that have none)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code or errno.EINVAL


@dataclass
class Params:
    """The command-line options (ovs-dpctl's ``struct dpctl_params``)."""

    verbosity: int = 0
    names: bool = False
    print_statistics: bool = False
    zero_statistics: bool = False
    may_create: bool = False
    read_only: bool = False
    socket: str = ""
    upcalls: bool = True


def strerror(code: int) -> str:
    """OVS's ``ovs_retval_to_string``: strerror, with EOF spelled out."""
    return "End of file" if code == -1 else os.strerror(code)


def parse_dp_name(arg: str) -> tuple[str, str]:
    """``type@name`` or ``name`` -> (name, type), as OVS's ``dp_parse_name``."""
    if "@" in arg:
        dp_type, _, name = arg.partition("@")
        return name, dp_type
    return arg, DP_TYPE


class Context:
    """One run of the program: its options, streams and (lazily) its connection."""

    def __init__(
        self,
        params: Params,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
        prog: str = PROG,
    ) -> None:
        self.params = params
        self.prog = prog
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._sock: NetlinkSocket | None = None
        self.before_error: list[Any] = []  # callables run before an error line (progress)

    # -- output --------------------------------------------------------------------------------

    def print(self, text: str) -> None:
        """One line on standard output."""
        self.write(text + "\n")

    def write(self, text: str) -> None:
        """Text on standard output; :class:`OutputError` if it cannot be written."""
        try:
            self.stdout.write(text)
        except OSError as exc:
            raise OutputError(exc.errno or errno.EIO) from None

    def flush(self) -> None:
        """Push standard output's buffer out; :class:`OutputError` if it cannot be written."""
        try:
            self.stdout.flush()
        except OSError as exc:
            raise OutputError(exc.errno or errno.EIO) from None

    def error(self, code: int, message: str) -> None:
        """``PROG: message (strerror)`` on standard error (no parenthesis for code 0)."""
        for hook in self.before_error:
            hook()
        suffix = f" ({strerror(code)})" if code else ""
        self.stderr.write(f"{self.prog}: {message}{suffix}\n")
        self.stderr.flush()

    def fail(self, code: int, message: str) -> Abort:
        """Print an error and return the :class:`Abort` to raise."""
        self.error(code, message)
        return Abort(code)

    # -- the service ---------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return self.params.socket or default_socket_path()

    @property
    def sock(self) -> NetlinkSocket:
        """The connection to the service, made on first use."""
        if self._sock is None:
            self._sock = NetlinkSocket(self.socket_path)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- datapaths -----------------------------------------------------------------------------

    def dp_names(self) -> list[str]:
        """The datapaths' names, in the service's order."""
        return Dpif.enumerate(self.sock)

    def open_dp(self, arg: str) -> Dpif:
        """Open a datapath by ``[system@]name`` without changing it (NetlinkError if it cannot).

        ovs-dpctl's dpif_open negotiates user features again on every open; this one only reads
        them (a GET), so inspecting a datapath never changes how its upcalls are dispatched."""
        name, dp_type = parse_dp_name(arg)
        if dp_type != DP_TYPE:
            raise NetlinkError(errno.EAFNOSUPPORT, f"unknown datapath type {dp_type!r}")
        reply = self.sock.transact(DP, DpCmd.GET, {"name": name})[0]
        features = reply.attrs.get("user_features", 0)
        return Dpif(self.sock, reply.attrs["name"], reply.dp_ifindex or 0, features)

    def open_or_fail(self, arg: str) -> Dpif:
        """:meth:`open_dp`, a failure printed as ovs-dpctl prints it ("opening datapath") and
        raised as :class:`Abort`."""
        try:
            return self.open_dp(arg)
        except NetlinkError as exc:
            raise self.fail(exc.errno, "opening datapath") from None

    def dp_exists(self, arg: str) -> bool:
        """Whether ``arg`` names an existing datapath (OVS's ``dp_exists``)."""
        name, dp_type = parse_dp_name(arg)
        return dp_type == DP_TYPE and name in self.dp_names()

    def one_dp(self) -> str | None:
        """``system@name`` of the only datapath; None (after saying why) if not exactly one."""
        names = self.dp_names()
        if not names:
            self.error(0, "no datapaths exist")
            return None
        if len(names) > 1:
            self.error(0, "multiple datapaths, specify one")
            return None
        return f"{DP_TYPE}@{names[0]}"

    def opt_open(self, argv: Sequence[str], max_args: int) -> Dpif:
        """Open the datapath a command's optional first argument names, else the only one
        (OVS's ``opt_dpif_open``: with ``max_args`` arguments the first must be a datapath)."""
        if len(argv) > 1 and self.dp_exists(argv[1]):
            dpname: str | None = argv[1]
        elif len(argv) != max_args:
            dpname = self.one_dp()
        else:
            dpname = None
        if dpname is None:
            raise self.fail(errno.EINVAL, "datapath not found")
        return self.open_or_fail(dpname)

    def port_names(self, dpif: Dpif) -> dict[str, int]:
        """Port name -> number, for parsing and printing names."""
        return {port.name: port.port_no for port in dpif.port_dump()}


def dpif_name(dpif: Dpif) -> str:
    """How OVS names an open datapath: ``system@name``."""
    return f"{DP_TYPE}@{dpif.name}"


def atoi(text: str) -> int:
    """C's atoi: an optional sign and leading digits, 0 if there are none."""
    text = text.lstrip(" \t\n\r\f\v")
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    digits = ""
    for ch in text:
        if ch not in "0123456789":
            break
        digits += ch
    return sign * int(digits) if digits else 0
