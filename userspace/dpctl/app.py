"""The ``ovsdp-dpctl`` program: options (GNU getopt style, anywhere on the line), the command
table, and the error handling that turns every failure into ``PROG: what (strerror)`` on
standard error and exit status 1 (PROG: the name the program was run by, see
:func:`.context.program_name`)."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from ovsdp.netlink.errors import NetlinkError
from userspace.netlink_socket import ServiceGone
from userspace.odp import OdpParseError, format_actions, parse_actions

from . import dps, flows, monitor
from .context import PROG, Abort, Context, OutputError, Params, program_name

UNLIMITED = 1 << 30

Handler = Callable[[Context, Sequence[str]], int]


@dataclass(frozen=True)
class Command:
    """A command: its usage, argument counts (after the name), handler and whether it changes
    the datapath (refused with --read-only)."""

    name: str
    usage: str
    min_args: int
    max_args: int
    handler: Handler
    writes: bool = False


def cmd_help(ctx: Context, argv: Sequence[str]) -> int:
    """``help``: the usage text."""
    ctx.write(usage(ctx.prog))
    return 0


def cmd_list_commands(ctx: Context, argv: Sequence[str]) -> int:
    """``list-commands``: every command with its arguments."""
    ctx.print("The available commands are:")
    for command in COMMANDS:
        ctx.print(f"  {command.name:<23} {command.usage}")
    return 0


def cmd_parse_actions(ctx: Context, argv: Sequence[str]) -> int:
    """``parse-actions ACTIONS...``: each action list parsed and formatted again (testing)."""
    for text in argv[1:]:
        try:
            actions = parse_actions(text)
        except OdpParseError:
            ctx.error(errno.EINVAL, "odp_actions_from_string")
            return errno.EINVAL
        ctx.print(format_actions(actions))
    return 0


def cmd_monitor(ctx: Context, argv: Sequence[str]) -> int:
    """``monitor [DP]``: refused in read-only mode unless upcalls are left alone."""
    if ctx.params.read_only and ctx.params.upcalls:
        ctx.error(0, "'monitor' command does not work in read only mode without --no-upcalls")
        return errno.EINVAL
    return monitor.cmd_monitor(ctx, argv)


DUMP_FLOWS_USAGE = "[-m] [--names] [dp] [filter=..] [type=..] [pmd=..]"
COMMANDS: tuple[Command, ...] = (
    Command("add-dp", "dp [iface...]", 1, UNLIMITED, dps.cmd_add_dp, True),
    Command("del-dp", "dp", 1, 1, dps.cmd_del_dp, True),
    Command("add-if", "dp iface...", 2, UNLIMITED, dps.cmd_add_if, True),
    Command("del-if", "dp iface...", 2, UNLIMITED, dps.cmd_del_if, True),
    Command("set-if", "dp iface...", 2, UNLIMITED, dps.cmd_set_if, True),
    Command("dump-dps", "", 0, 0, dps.cmd_dump_dps),
    Command("show", "[-s] [dp...]", 0, UNLIMITED, dps.cmd_show),
    Command("dump-flows", DUMP_FLOWS_USAGE, 0, 6, flows.cmd_dump_flows),
    Command("add-flow", "[dp] flow actions", 2, 3, flows.cmd_add_flow, True),
    Command("mod-flow", "[dp] flow actions", 2, 3, flows.cmd_mod_flow, True),
    Command("get-flow", "[dp] ufid", 1, 2, flows.cmd_get_flow),
    Command("del-flow", "[dp] flow", 1, 2, flows.cmd_del_flow, True),
    Command("add-flows", "[dp] file", 1, 2, flows.cmd_process_flows, True),
    Command("mod-flows", "[dp] file", 1, 2, flows.cmd_process_flows, True),
    Command("del-flows", "[dp] [file]", 0, 2, flows.cmd_del_flows, True),
    Command("monitor", "[-m] [--names] [--no-upcalls] [dp]", 0, 1, cmd_monitor),
    Command("help", "", 0, UNLIMITED, cmd_help),
    Command("list-commands", "", 0, UNLIMITED, cmd_list_commands),
    Command("parse-actions", "actions", 1, UNLIMITED, cmd_parse_actions),
)
BY_NAME = {c.name: c for c in COMMANDS}


def usage(prog: str = PROG) -> str:
    """The --help text."""
    return f"""{prog}: ovsdp datapath management utility (the ovs-dpctl commands)
usage: {prog} [OPTIONS] COMMAND [ARG...]
  add-dp DP [IFACE...]       create datapath DP (and add the IFACEs to it)
  del-dp DP                  delete datapath DP
  add-if DP IFACE...         add each IFACE as a port of DP
  set-if DP IFACE...         reconfigure each IFACE of DP
  del-if DP IFACE...         delete each IFACE (name or port number) from DP
  dump-dps                   print the names of all datapaths
  show                       show counters and ports of all datapaths
  show DP...                 show counters and ports of each DP
  dump-flows [DP]            print the flows of DP
  add-flow [DP] FLOW ACTIONS add FLOW with ACTIONS to DP
  add-flows [DP] FILE        add the flows of FILE ('-': standard input)
  mod-flow [DP] FLOW ACTIONS change the actions of FLOW in DP to ACTIONS
  mod-flows [DP] FILE        change the flows of FILE
  get-flow [DP] ufid:UFID    print the flow with that UFID
  del-flow [DP] FLOW         delete FLOW from DP
  del-flows [DP] [FILE]      delete every flow, or the flows of FILE
  monitor [DP]               print port events and upcalls as they arrive
Each IFACE of add-dp, add-if and set-if may be followed by comma-separated
options: type=system|internal|vxlan, port_no=N, dst_port=N (tunnels).
DP is optional when there is only one datapath (not for add-dp, del-dp,
add-if, set-if and del-if).
Options:
  -s, --statistics       print statistics (show: of ports; flow commands: of flows)
  -m, --more             verbose output (UFIDs, full masks, dp:ovs)
  --names, --no-names    port names in flows (default: with -m only)
  --clear                mod-flow: reset the flow's statistics
  --may-create           mod-flow: create the flow if it does not exist
  --read-only            refuse commands that change a datapath
  --no-upcalls           monitor: port events only (leave the upcalls to their handler)
  --socket=PATH          the ovsdp service (default: $OVSDP_SOCKET or /run/ovsdp/ovsdp.sock)
  -t, --timeout=SECS     give up after SECS seconds
  -h, --help             print this help
  -V, --version          print the version
"""


# -- options -------------------------------------------------------------------------------------


class UsageError(Exception):
    """A command line getopt would refuse."""


# long option -> (short letter or None, takes an argument)
LONG_OPTIONS: dict[str, tuple[str | None, bool]] = {
    "statistics": ("s", False),
    "clear": (None, False),
    "may-create": (None, False),
    "read-only": (None, False),
    "more": ("m", False),
    "names": (None, False),
    "no-names": (None, False),
    "no-upcalls": (None, False),
    "socket": (None, True),
    "timeout": ("t", True),
    "help": ("h", False),
    "version": ("V", False),
}
SHORT_OPTIONS = {short: long for long, (short, _) in LONG_OPTIONS.items() if short}


@dataclass
class Options:
    """What the options say: the parameters, the operands, and any early action."""

    params: Params
    operands: list[str]
    action: str | None = None  # help, version
    timeout: int = 0


def _apply(opts: Options, name: str, value: str | None, names_set: list[bool]) -> None:
    p = opts.params
    if name == "statistics":
        p.print_statistics = True
    elif name == "clear":
        p.zero_statistics = True
    elif name == "may-create":
        p.may_create = True
    elif name == "read-only":
        p.read_only = True
    elif name == "more":
        p.verbosity += 1
    elif name in ("names", "no-names"):
        p.names = name == "names"
        names_set.append(True)
    elif name == "no-upcalls":
        p.upcalls = False
    elif name == "socket":
        p.socket = value or ""
    elif name == "timeout":
        digits = ""
        for ch in (value or "").lstrip():
            if ch not in "0123456789":
                break
            digits += ch
        if not digits or int(digits) <= 0:
            raise UsageError(f"value {value} on -t or --timeout is not at least 1")
        opts.timeout = int(digits)
    elif name in ("help", "version"):
        opts.action = opts.action or name


def parse_options(argv: Sequence[str]) -> Options:
    """Options anywhere on the line, as GNU getopt_long permutes them (``--`` ends them);
    long options may be abbreviated."""
    opts = Options(Params(), [])
    names_set: list[bool] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            opts.operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            found = [n for n in LONG_OPTIONS if n == name] or [
                n for n in LONG_OPTIONS if n.startswith(name)
            ]
            if not found:
                raise UsageError(f"unrecognized option '{arg}'")
            if len(found) > 1:
                choices = " ".join(f"'--{n}'" for n in found)
                raise UsageError(f"option '{arg}' is ambiguous; possibilities: {choices}")
            name = found[0]
            takes = LONG_OPTIONS[name][1]
            if takes and not eq:
                if i >= len(argv):
                    raise UsageError(f"option '--{name}' requires an argument")
                value = argv[i]
                i += 1
            elif not takes and eq:
                raise UsageError(f"option '--{name}' doesn't allow an argument")
            _apply(opts, name, value if takes else None, names_set)
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                long = SHORT_OPTIONS.get(letter)
                if long is None:
                    raise UsageError(f"invalid option -- '{letter}'")
                if LONG_OPTIONS[long][1]:
                    value = arg[j + 1 :]
                    if not value:
                        if i >= len(argv):
                            raise UsageError(f"option requires an argument -- '{letter}'")
                        value = argv[i]
                        i += 1
                    _apply(opts, long, value, names_set)
                    break
                _apply(opts, long, None, names_set)
                j += 1
        else:
            opts.operands.append(arg)
    if not names_set:
        opts.params.names = opts.params.verbosity > 0
    return opts


# -- running -------------------------------------------------------------------------------------


def run_command(ctx: Context, argv: Sequence[str]) -> int:
    """Run one command line (after the options); its error code (0: success)."""
    if not argv:
        ctx.error(0, "missing command name; use --help for help")
        return errno.EINVAL
    command = BY_NAME.get(argv[0])
    if command is None:
        ctx.error(0, f"unknown command '{argv[0]}'; use --help for help")
        return errno.EINVAL
    n_args = len(argv) - 1
    if n_args < command.min_args:
        ctx.error(0, f"'{command.name}' command requires at least {command.min_args} arguments")
        return errno.EINVAL
    if n_args > command.max_args:
        ctx.error(0, f"'{command.name}' command takes at most {command.max_args} arguments")
        return errno.EINVAL
    if command.writes and ctx.params.read_only:
        ctx.error(0, f"'{command.name}' command does not work in read only mode")
        return errno.EINVAL
    return command.handler(ctx, argv)


class _TimedOut(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _TimedOut


def run(
    argv: Sequence[str],
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    prog: str = PROG,
) -> int:
    """Run the program with ``argv`` (without the program name); the exit status.  ``prog``
    prefixes its messages."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        opts = parse_options(argv)
    except UsageError as exc:
        err.write(f"{prog}: {exc}\n")
        return 1
    ctx = Context(opts.params, stdin if stdin is not None else sys.stdin, out, err, prog)
    try:
        if opts.action == "help":
            ctx.write(usage(prog))
            code = 0
        elif opts.action == "version":
            ctx.write(f"{prog} (ovsdp) {_version()}\n")
            code = 0
        else:
            code = _run_command(ctx, opts)
        ctx.flush()
    except OutputError as exc:
        if exc.code != errno.EPIPE:
            # the reader going away (``| head``) is normal and stays quiet, as with ovs-dpctl;
            # anything else (a full disk, EIO) is a failure the user has to hear about
            ctx.error(exc.code, "writing to standard output failed")
        if out is sys.stdout:
            _discard_stdout()
        return 1
    return 1 if code else 0


def _run_command(ctx: Context, opts: Options) -> int:
    """The command, with every failure turned into an error line; its error code."""
    old_alarm: Any = None
    timed = opts.timeout > 0 and threading.current_thread() is threading.main_thread()
    if timed:
        old_alarm = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(opts.timeout)
    try:
        return run_command(ctx, opts.operands)
    except Abort as abort:
        return abort.code
    except ServiceGone as exc:
        ctx.error(0, str(exc))
        return errno.ECONNREFUSED
    except PermissionError as exc:
        ctx.error(exc.errno or errno.EACCES, f"cannot connect to {ctx.socket_path}")
        return errno.EACCES
    except TimeoutError:
        ctx.error(errno.ETIMEDOUT, f"no answer from the ovsdp service on {ctx.socket_path}")
        return errno.ETIMEDOUT
    except _TimedOut:
        ctx.error(0, f"time limit of {opts.timeout} seconds exceeded")
        return errno.ETIMEDOUT
    except NetlinkError as exc:
        ctx.error(exc.errno, exc.reason)
        return exc.errno
    finally:
        if timed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old_alarm)
        ctx.close()


def _discard_stdout() -> None:
    """Point file descriptor 1 at /dev/null after a failed write, so that the interpreter's
    final flush of what is still buffered succeeds instead of printing a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # no descriptor to redirect (a replaced sys.stdout): nothing will be flushed


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ovsdp")
    except Exception:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ovsdp-dpctl`` and ``ovs-dpctl`` console scripts.

    Without ``argv`` the command line is ``sys.argv`` and messages carry the name the program
    was run by, as OVS's tools do; with ``argv`` (a caller's own list) they say ``ovsdp-dpctl``."""
    try:
        if argv is None:
            return run(sys.argv[1:], prog=program_name(sys.argv[0] if sys.argv else ""))
        return run(argv)
    except BrokenPipeError:
        # a closed pipe met outside the guarded writes (standard error): stop quietly
        _discard_stdout()
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
