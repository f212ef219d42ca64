"""Flow commands: dump-flows, add-flow, mod-flow, get-flow, del-flow, and the batch commands
add-flows, mod-flows, del-flows (a file of lines, or standard input)."""

from __future__ import annotations

import errno
import io
import os
import select
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from ovsdp.netlink.errors import NetlinkError
from userspace.dpif import DpFlow, Dpif, FlowDel, FlowPut, FlowStats, Op, OpResult
from userspace.odp import (
    OdpParseError,
    format_actions,
    format_key,
    format_ufid,
    parse_actions,
    parse_key,
    parse_ufid,
)

from .context import Context
from .flowfilter import FilterError, parse_filter

# TCP flag letters, in the order OVS prints them (packet_format_tcp_flags).
TCP_FLAG_LETTERS = (
    (0x002, "S"),
    (0x001, "F"),
    (0x008, "P"),
    (0x004, "R"),
    (0x020, "U"),
    (0x010, "."),
    (0x040, "E"),
    (0x080, "C"),
    (0x100, "N"),
    (0x200, "[200]"),
    (0x400, "[400]"),
    (0x800, "[800]"),
)

ADD, DEL, MOD = "add", "delete", "modify"
CHUNK = 512
"""Lines read before their requests go to the datapath (in records of :data:`BATCH`)."""
BATCH = 128
PROGRESS_MIN = 1000
"""Lines a batch command handles before it shows progress (on a terminal only)."""
PROGRESS_EVERY = 0.1


def monotonic_ms() -> int:
    """Milliseconds on CLOCK_MONOTONIC: what flow ``used`` times are measured on."""
    return time.monotonic_ns() // 1_000_000


def format_tcp_flags(flags: int) -> str:
    """TCP flags as OVS's letters (``S.`` for SYN+ACK; ``none`` for 0)."""
    if not flags:
        return "none"
    return "".join(letter for bit, letter in TCP_FLAG_LETTERS if flags & bit)


def format_flow_stats(stats: FlowStats, now_ms: int | None = None) -> str:
    """``packets:N, bytes:N, used:X.XXXs|never[, flags:...]`` (dpif_flow_stats_format)."""
    text = f"packets:{stats.n_packets}, bytes:{stats.n_bytes}, used:"
    if stats.used:
        now = monotonic_ms() if now_ms is None else now_ms
        text += f"{(now - stats.used) / 1000.0:.3f}s"
    else:
        text += "never"
    if stats.tcp_flags:
        text += ", flags:" + format_tcp_flags(stats.tcp_flags)
    return text


def format_dpif_flow(
    flow: DpFlow, names: dict[str, int] | None, verbosity: int, now_ms: int | None = None
) -> str:
    """One dump-flows line (dpctl.c's ``format_dpif_flow`` for a dpif-netlink flow).

    Port names, when given, name output ports in the actions and (verbose only, as
    ``odp_flow_format`` does) the in_port of the key."""
    parts = []
    if verbosity and flow.ufid is not None:
        parts.append(format_ufid(flow.ufid) + ", ")
    parts.append(format_key(flow.key or {}, flow.mask, verbosity > 0, names if verbosity else None))
    parts.append(", " + format_flow_stats(flow.stats, now_ms))
    if verbosity:
        parts.append(", dp:ovs")
    parts.append(", actions:" + format_actions(flow.actions or [], names))
    return "".join(parts)


def split_ufid(text: str) -> tuple[bytes | None, str]:
    """A leading ``ufid:<uuid>`` and the rest (OVS's ``odp_ufid_from_string``)."""
    if not text.startswith("ufid:"):
        return None, text
    return parse_ufid(text[5:41]), text[41:]


# -- dump-flows, get-flow ------------------------------------------------------------------------


def cmd_dump_flows(ctx: Context, argv: Sequence[str]) -> int:
    """``dump-flows [DP] [filter=...] [pmd=N]``: every flow, one line each."""
    args = list(argv)
    filter_text: str | None = None
    pmd_filter = False
    last = 0
    while len(args) > 1 and last != len(args):
        last = len(args)
        tail = args[-1]
        if tail.startswith("filter=") and filter_text is None:
            filter_text = args.pop()[7:]
        elif tail.startswith("type="):
            ctx.error(0, "Invalid argument 'type'. Use 'ovs-appctl dpctl/dump-flows' instead.")
            return errno.EINVAL
        elif tail.startswith("pmd="):
            args.pop()
            if not _scan_int(tail[4:]):
                return errno.EINVAL
            pmd_filter = True
    dpif = ctx.opt_open(args, 2)
    names = ctx.port_names(dpif) if ctx.params.names or filter_text is not None else None
    flt = None
    if filter_text is not None:
        try:
            flt = parse_filter(filter_text, names)
        except FilterError as exc:
            ctx.error(0, f"Failed to parse filter ({exc})")
            return errno.EINVAL
    shown = names if ctx.params.names else None
    now = monotonic_ms()
    try:
        for flow in dpif.flow_dump():
            if flt is not None and not flt.matches(flow.key, flow.mask):
                continue
            if pmd_filter:
                continue  # a kernel-style datapath has no PMD threads: no flow is on that one
            ctx.print(format_dpif_flow(flow, shown, ctx.params.verbosity, now))
    except NetlinkError as exc:
        ctx.error(exc.errno, "Failed to dump flows from datapath")
        return exc.errno
    return 0


def _scan_int(text: str) -> bool:
    """Whether scanf's ``%d`` reads a number at the start of ``text``."""
    stripped = text.lstrip(" \t\n\r\f\v")
    if stripped[:1] in ("+", "-"):
        stripped = stripped[1:]
    return bool(stripped) and stripped[0] in "0123456789"


def cmd_get_flow(ctx: Context, argv: Sequence[str]) -> int:
    """``get-flow [DP] ufid:UFID``: the flow with that UFID."""
    dpif = ctx.opt_open(argv, 3)
    names = ctx.port_names(dpif) if ctx.params.names else None
    text = argv[-1]
    if not text.startswith("ufid:"):
        ctx.error(0, "parsing flow ufid")
        return errno.EINVAL
    try:
        ufid, _ = split_ufid(text)
    except OdpParseError:
        ctx.error(errno.EINVAL, "parsing flow ufid")
        return errno.EINVAL
    try:
        flow = dpif.flow_get(ufid=ufid)
    except NetlinkError as exc:
        ctx.error(exc.errno, "getting flow")
        return exc.errno
    ctx.print(format_dpif_flow(flow, names, ctx.params.verbosity))
    return 0


# -- one flow operation: prepared from text, sent (alone or in a batch), reported -----------------


@dataclass
class Prepared:
    """A flow operation ready to send, or the errors that stopped it before the datapath."""

    kind: str
    op: Op | None = None
    ufid_present: bool = False
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def code(self) -> int:
        return (self.errors[-1][0] or errno.EINVAL) if self.errors else 0


def prepare_put(
    ctx: Context,
    ports: dict[str, int],
    key_text: str,
    actions_text: str,
    *,
    create: bool,
    modify: bool,
    zero_stats: bool = False,
) -> Prepared:
    """A flow put from text (dpctl.c's ``dpctl_put_flow_dpif`` up to the request)."""
    prep = Prepared(ADD)
    try:
        ufid, key_text = split_ufid(key_text)
    except OdpParseError:
        prep.errors.append((errno.EINVAL, "parsing flow ufid"))
        return prep
    try:
        key, mask = parse_key(key_text, ports)
    except OdpParseError as exc:
        prep.errors.append((errno.EINVAL, f"parsing flow key ({exc})"))
        return prep
    try:
        actions = parse_actions(actions_text)
    except OdpParseError:
        prep.errors.append((errno.EINVAL, "parsing actions"))
        return prep
    prep.ufid_present = ufid is not None
    prep.op = FlowPut(
        key,
        mask or None,
        actions,
        ufid,
        create=create,
        modify=modify,
        zero_stats=zero_stats,
        want_stats=ctx.params.print_statistics,
    )
    return prep


def prepare_del(ctx: Context, ports: dict[str, int], key_text: str) -> Prepared:
    """A flow delete from text (dpctl.c's ``dpctl_del_flow_dpif`` up to the request)."""
    prep = Prepared(DEL)
    try:
        ufid, key_text = split_ufid(key_text)
    except OdpParseError:
        prep.errors.append((errno.EINVAL, "parsing flow ufid"))
        return prep
    try:
        key, _mask = parse_key(key_text, ports)
    except OdpParseError as exc:
        prep.errors.append((errno.EINVAL, str(exc)))
        return prep
    prep.ufid_present = ufid is not None
    prep.op = FlowDel(key, ufid, want_stats=ctx.params.print_statistics)
    return prep


def report(ctx: Context, prep: Prepared, result: OpResult | None) -> int:
    """Print what became of an operation; its error code (0: done)."""
    if result is None:
        for code, message in prep.errors:
            ctx.error(code, message)
        return prep.code
    if result.error is not None:
        code = result.error.errno
        if prep.kind == DEL:
            ctx.error(code, "deleting flow")
            if code == errno.ENOENT and not prep.ufid_present:
                ctx.print("Perhaps you need to specify a UFID?")
        else:
            ctx.error(code, "updating flow table")
        return code
    if ctx.params.print_statistics:
        ctx.print(format_flow_stats(result.stats or FlowStats()))
    return 0


def run_one(ctx: Context, dpif: Dpif, prep: Prepared) -> int:
    """Send one prepared operation and report it."""
    if prep.op is None:
        return report(ctx, prep, None)
    return report(ctx, prep, dpif.operate([prep.op])[0])


def cmd_add_flow(ctx: Context, argv: Sequence[str]) -> int:
    """``add-flow [DP] FLOW ACTIONS``: install a flow (EEXIST if it is there)."""
    dpif = ctx.opt_open(argv, 4)
    prep = prepare_put(ctx, ctx.port_names(dpif), argv[-2], argv[-1], create=True, modify=False)
    return run_one(ctx, dpif, prep)


def cmd_mod_flow(ctx: Context, argv: Sequence[str]) -> int:
    """``mod-flow [DP] FLOW ACTIONS``: change a flow's actions (--may-create, --clear)."""
    dpif = ctx.opt_open(argv, 4)
    prep = prepare_put(
        ctx,
        ctx.port_names(dpif),
        argv[-2],
        argv[-1],
        create=ctx.params.may_create,
        modify=True,
        zero_stats=ctx.params.zero_statistics,
    )
    return run_one(ctx, dpif, prep)


def cmd_del_flow(ctx: Context, argv: Sequence[str]) -> int:
    """``del-flow [DP] FLOW``: delete one flow (by key, or by the UFID it starts with)."""
    dpif = ctx.opt_open(argv, 3)
    return run_one(ctx, dpif, prepare_del(ctx, ctx.port_names(dpif), argv[-1]))


def cmd_del_flows(ctx: Context, argv: Sequence[str]) -> int:
    """``del-flows [DP] [FILE]``: delete every flow, or the flows a file lists."""
    if (len(argv) == 2 and not ctx.dp_exists(argv[1])) or len(argv) > 2:
        return cmd_process_flows(ctx, argv)
    dpif = ctx.opt_open(argv, 2)
    try:
        dpif.flow_flush()
    except NetlinkError as exc:
        ctx.error(exc.errno, "deleting all flows")
        return exc.errno
    return 0


# -- add-flows, mod-flows, del-flows FILE ---------------------------------------------------------


def parse_flow_line(default: str, line: str) -> tuple[str, str | None, str | None]:
    """(command, flow, actions) of a batch line: ``[add|modify|delete] FLOW [ACTIONS]``.

    As dpctl.c reads it: a first word that is a prefix of add, delete or modify names the
    command (else the command's default applies); the flow runs to the next blank; the actions
    are the rest of the line."""
    blanks = " \t\r\n"
    text = line.lstrip(blanks)
    end = 0
    while end < len(text) and text[end] not in ", " + blanks:
        end += 1
    word = text[:end]
    if ADD.startswith(word):
        command = ADD
    elif DEL.startswith(word):
        command = DEL
    elif MOD.startswith(word):
        command = MOD
    else:
        command, end = default, 0
    text = text[end:].lstrip(blanks)
    end = 0
    while end < len(text) and text[end] not in blanks:
        end += 1
    if end == 0:
        return command, None, None
    rest = text[end:].lstrip(blanks)
    return command, text[:end], rest or None


def _input_lines(stream: TextIO) -> Iterator[str | None]:
    """The lines of a stream; None whenever reading on would wait (a pipe or terminal with
    nothing more yet), so that what was read can be carried out first."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        yield from stream
        return
    if stat.S_ISREG(mode):
        yield from stream
        return
    buffered = b""
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            yield line.decode("utf-8", "replace") + "\n"
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            yield None
        data = os.read(fd, 1 << 16)
        if not data:
            break
        buffered += data
    if buffered:
        yield buffered.decode("utf-8", "replace")


class Progress:
    """``PROG: add-flows: N lines, N done, N failed`` on a terminal's standard error,
    rewritten in place; shown once a command has handled :data:`PROGRESS_MIN` lines."""

    def __init__(self, ctx: Context, command: str) -> None:
        isatty = getattr(ctx.stderr, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self.ctx = ctx
        self.command = command
        self.shown = 0  # width of the line on screen
        self.last = 0.0
        self.lines = self.done = self.failed = 0
        ctx.before_error.append(self.clear)

    def _text(self) -> str:
        counts = f"{self.lines} lines, {self.done} done, {self.failed} failed"
        return f"{self.ctx.prog}: {self.command}: {counts}"

    def update(self, final: bool = False) -> None:
        if not self.enabled or (self.lines < PROGRESS_MIN and not self.shown):
            return
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        text = self._text()
        self.ctx.stderr.write("\r" + text.ljust(self.shown) + ("\n" if final else ""))
        self.ctx.stderr.flush()
        self.shown = 0 if final else len(text)

    def clear(self) -> None:
        """Take the progress line off the screen (before an error line)."""
        if self.shown:
            self.ctx.stderr.write("\r" + " " * self.shown + "\r")
            self.shown = 0


def cmd_process_flows(ctx: Context, argv: Sequence[str]) -> int:
    """``add-flows|mod-flows|del-flows [DP] FILE`` (``-`` for standard input)."""
    command = argv[0]
    default = MOD if "mod-flows" in command else DEL if "del-flows" in command else ADD
    file_name = argv[-1]
    dpif = ctx.opt_open(argv, 4)
    ports = ctx.port_names(dpif)
    if file_name == "-":
        stream = ctx.stdin
    else:
        try:
            stream = open(file_name, encoding="utf-8", errors="replace")
        except OSError as exc:
            ctx.error(exc.errno or errno.EIO, f'Opening file "{file_name}" failed')
            return exc.errno or errno.EIO
    progress = Progress(ctx, command)
    pending: list[Prepared] = []
    lasterror = 0

    def flush() -> None:
        nonlocal lasterror
        if not pending:
            return
        ops = [p.op for p in pending if p.op is not None]
        results = iter(dpif.operate(ops, batch=BATCH) if ops else [])
        for prep in pending:
            code = report(ctx, prep, next(results) if prep.op is not None else None)
            if code:
                progress.failed += 1
                lasterror = code
            else:
                progress.done += 1
        pending.clear()
        ctx.flush()
        progress.update()

    line_number = 0
    try:
        for raw in _input_lines(stream):
            if raw is None:
                flush()
                continue
            line_number += 1
            line = raw[:-1] if raw.endswith("\n") else raw
            line = line.split("#", 1)[0]
            if not line.strip(" \t\n"):
                continue
            progress.lines += 1
            pending.append(_prepare_line(ctx, ports, default, line, line_number))
            if len(pending) >= CHUNK:
                flush()
        flush()
    finally:
        if stream is not ctx.stdin:
            stream.close()
        progress.update(final=True)
    return lasterror


def _prepare_line(
    ctx: Context, ports: dict[str, int], default: str, line: str, line_number: int
) -> Prepared:
    command, flow, actions = parse_flow_line(default, line)
    if (
        (flow is None and actions is None)
        or (command in (ADD, MOD) and actions is None)
        or (command == DEL and actions is not None)
    ):
        message = f"Failed parsing line number {line_number}, skipped!"
        return Prepared(command, errors=[(0, message)])
    assert flow is not None
    if command == DEL:
        return prepare_del(ctx, ports, flow)
    assert actions is not None
    return prepare_put(
        ctx, ports, flow, actions.rstrip(" \t\r\n"), create=command == ADD, modify=command == MOD
    )
