"""ovsdp-dpctl as users run it: the installed console script in a subprocess (environment
variable, exit status, a terminal for progress, a pipe for streamed batches, ``monitor`` until a
signal)."""

from __future__ import annotations

import os
import pathlib
import pty
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from datapath_support import Harness
from test_dpctl_support import (  # noqa: F401
    OVS_SCRIPT,
    SCRIPT,
    UDP_KEY,
    Dpctl,
    check_idle,
    check_odp_flow,
    dp_attrs,
    dpctl_fixture,
    harness_fixture,
    inject,
    udp_frame,
)

from userspace.odp import parse_key

pytestmark = pytest.mark.skipif(not os.path.exists(SCRIPT), reason="ovsdp-dpctl not installed")


def script(h: Harness, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """The installed ``ovsdp-dpctl`` with OVSDP_SOCKET pointing at the harness."""
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env=env, timeout=30, check=False, **kwargs
    )


class LineReader:
    """Complete lines from a pipe, with a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def line(self, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"no line in {timeout} s (have {self.buffer!r})")
            data = os.read(self.fd, 4096)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def test_installed_script(h: Harness, dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    dpctl.ok("add-flow", UDP_KEY, "2")
    result = script(h, "dump-flows")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{UDP_KEY}, packets:0, bytes:0, used:never, actions:2\n"
    check_odp_flow(result.stdout.strip())
    result = script(h, "add-flow", UDP_KEY, "2")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "ovsdp-dpctl: updating flow table (File exists)\n",
    )
    result = script(h, "--socket=/nonexistent/ovsdp.sock", "show")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "ovsdp-dpctl: no ovsdp service on /nonexistent/ovsdp.sock (No such file or directory)\n",
    )


def _flows(n: int, start: int = 0) -> str:
    return "".join(
        f"in_port(1),eth(src=00:15:5d:00:00:01,dst=00:15:5d:00:00:02),eth_type(0x0800),"
        f"ipv4(src=10.{i >> 8 & 255}.{i & 255}.7,dst=10.0.0.2,proto=17,tos=0,ttl=64,frag=no),"
        f"udp(src=1,dst=2) 2\n"
        for i in range(start, start + n)
    )


def test_progress_on_a_terminal(h: Harness, dpctl: Dpctl, tmp_path: pathlib.Path) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    path = tmp_path / "flows.txt"
    path.write_text(_flows(1500))
    master, slave = pty.openpty()
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    proc = subprocess.Popen(
        [SCRIPT, "add-flows", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not data:
                break
            seen += data
    finally:
        os.close(master)
    assert proc.stdout is not None
    assert proc.wait(30) == 0 and proc.stdout.read() == b""
    proc.stdout.close()
    text = seen.decode()
    assert "\rovsdp-dpctl: add-flows: 1500 lines, 1500 done, 0 failed\r\n" in text, repr(text)
    assert text.endswith("\r\n")
    assert len(dpctl.flows(every=500)) == 1500
    # the same without a terminal: not a word
    dpctl.ok("del-flows")
    result = script(h, "add-flows", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_batch_streamed_from_a_pipe(h: Harness, dpctl: Dpctl) -> None:
    """Lines read from a pipe are carried out as they come, not only at the end."""
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    proc = subprocess.Popen(
        [SCRIPT, "add-flows", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(_flows(10).encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 15
        while len(dpctl.ok("dump-flows").lines) < 10:
            assert time.monotonic() < deadline, "the first lines were not carried out"
            time.sleep(0.05)
        proc.stdin.write(_flows(990, start=10).encode())
        proc.stdin.write(("delete " + _flows(1).split(" ")[0] + "\n").encode())
    finally:
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert (proc.wait(30), stdout, stderr) == (0, b"", b"")
    assert len(dpctl.flows(every=250)) == 999


def _monitor(h: Harness, *args: str) -> tuple[subprocess.Popen[bytes], LineReader, LineReader]:
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    proc = subprocess.Popen(
        [SCRIPT, "monitor", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    return proc, LineReader(proc.stdout.fileno()), LineReader(proc.stderr.fileno())


def test_monitor_port_events_and_upcalls(h: Harness, dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    before = dp_attrs(h).get("per_cpu_pids")
    proc, out, err = _monitor(h, "dp0")
    try:
        notice = err.line()
        assert notice == (
            "ovsdp-dpctl: monitoring system@dp0: port events and upcalls; interrupt to stop"
        )
        assert dp_attrs(h).get("per_cpu_pids") not in (None, before)  # claimed
        dpctl.ok("add-if", "dp0", "vm3")
        assert out.line() == "port 3: vm3 added"
        frame = udp_frame()
        inject(h, "vm1", [frame])
        line = out.line()
        dpctl.ok("del-if", "dp0", "vm3")
        assert out.line() == "port 3: vm3 deleted"
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=15)
    assert (proc.returncode, stdout, stderr) == (0, b"", b"")
    assert line.startswith("upcall miss: ")
    key_text, len_part, hash_part = line[len("upcall miss: ") :].rsplit(", ", 2)
    assert len_part == f"len:{len(frame)}" and hash_part.startswith("hash:0x")
    key, _ = parse_key(key_text)
    assert key["in_port"] == 1 and key["udp"].dst == 2000 and key["recirc_id"] == 0
    assert dp_attrs(h).get("per_cpu_pids") == before  # given back
    shown = dpctl.ok("show").lines
    assert shown[1] == "  lookups: hit:0 missed:1 lost:0"
    check_idle(h)


def test_monitor_without_upcalls(h: Harness, dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1")
    before = dp_attrs(h).get("per_cpu_pids")
    proc, out, err = _monitor(h, "--no-upcalls", "-m")
    try:
        assert err.line().endswith(": port events; interrupt to stop")
        assert dp_attrs(h).get("per_cpu_pids") == before  # left alone
        inject(h, "vm1", [udp_frame()])  # nobody takes it: lost, not printed
        dpctl.ok("add-if", "dp0", "vm2")
        assert out.line() == "port 2: vm2 added"
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    assert (proc.returncode, stdout, stderr) == (0, b"", b"")
    assert dpctl.ok("show").lines[1] == "  lookups: hit:0 missed:1 lost:1"
    check_idle(h)


# -- output errors ------------------------------------------------------------------------------

ENOSPC_LINE = "writing to standard output failed (No space left on device)\n"


def to_dev_full(h: Harness, program: str, *args: str) -> tuple[int, str]:
    """``program ARGS > /dev/full``: (exit status, standard error)."""
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [program, *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    return result.returncode, result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_output_errors_end_in_one_error_line(h: Harness, dpctl: Dpctl) -> None:
    """A full device on standard output: one error line, exit status 1, no traceback, whether
    the write fails at once or only when the buffer is flushed at the end."""
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    dpctl.ok("add-flow", UDP_KEY, "2")
    many = _flows(2000, start=1)  # a dump far bigger than the output buffer
    dpctl.ok("add-flows", "-", stdin=many)
    commands = [
        ("dump-dps",),
        ("show",),
        ("show", "-s"),
        ("dump-flows",),
        ("dump-flows", "-m"),
        ("mod-flow", "-s", UDP_KEY, "2"),
        ("--help",),
        ("--version",),
    ]
    for args in commands:
        assert to_dev_full(h, SCRIPT, *args) == (1, "ovsdp-dpctl: " + ENOSPC_LINE), args
    assert len(dpctl.flows(every=1000)) == 2001  # nothing else went wrong


def test_closed_pipe_stays_quiet(h: Harness, dpctl: Dpctl) -> None:
    """``dump-flows | head -1``: the reader going away ends the program without a word."""
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    dpctl.ok("add-flows", "-", stdin=_flows(3000))
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    proc = subprocess.Popen(
        [SCRIPT, "dump-flows"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"in_port(1),")
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert (proc.wait(30), stderr) == (1, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_monitor_output_error_gives_upcalls_back(h: Harness, dpctl: Dpctl) -> None:
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    before = dp_attrs(h).get("per_cpu_pids")
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    with open("/dev/full", "w") as full:
        proc = subprocess.Popen(
            [SCRIPT, "monitor"], stdout=full, stderr=subprocess.PIPE, env=env, text=True
        )
    assert proc.stderr is not None
    try:
        assert proc.stderr.readline().startswith("ovsdp-dpctl: monitoring system@dp0: ")
        dpctl.ok("add-if", "dp0", "vm3")  # the event's line cannot be written
        assert proc.wait(15) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr.read() == "ovsdp-dpctl: " + ENOSPC_LINE
    proc.stderr.close()
    assert dp_attrs(h).get("per_cpu_pids") == before  # given back on the way out


# -- the program's name -------------------------------------------------------------------------


def _python(h: Harness, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OVSDP_SOCKET=h.path)
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, env=env, timeout=30, check=False
    )


ALIAS = "import sys; sys.argv[0] = 'ovs-dpctl'; from userspace.dpctl import main; sys.exit(main())"


@pytest.mark.skipif(not os.path.exists(OVS_SCRIPT), reason="ovs-dpctl not installed")
def test_installed_as_ovs_dpctl(h: Harness, dpctl: Dpctl) -> None:
    """Run as ``ovs-dpctl`` (the console script of that name, or any argv[0] of that name),
    the program says ``ovs-dpctl:`` like the original, so scripts written for it run unchanged;
    ``python -m`` gives no program name and it says ``ovsdp-dpctl:``."""
    dpctl.ok("add-dp", "dp0", "vm1", "vm2")
    dpctl.ok("add-flow", UDP_KEY, "2")
    env = dict(os.environ, OVSDP_SOCKET=h.path)

    def ovs_script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [OVS_SCRIPT, *args], capture_output=True, text=True, env=env, timeout=30, check=False
        )

    exists = "updating flow table (File exists)\n"
    runs = {
        "ovs-dpctl": ovs_script("add-flow", UDP_KEY, "2"),
        "ovs-dpctl (python -c)": _python(h, "-c", ALIAS, "add-flow", UDP_KEY, "2"),
        "ovsdp-dpctl": script(h, "add-flow", UDP_KEY, "2"),
        "ovsdp-dpctl (python -m)": _python(h, "-m", "userspace.dpctl", "add-flow", UDP_KEY, "2"),
    }
    for how, result in runs.items():
        prog = how.split()[0]
        assert (result.returncode, result.stdout, result.stderr) == (1, "", f"{prog}: {exists}")
    result = ovs_script("dump-flows")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == script(h, "dump-flows").stdout != ""
    assert ovs_script("--help").stdout.startswith("ovs-dpctl: ovsdp datapath management utility")
    assert ovs_script("-V").stdout.startswith("ovs-dpctl (ovsdp) ")
    assert ovs_script("--bogus").stderr == "ovs-dpctl: unrecognized option '--bogus'\n"
    if os.path.exists("/dev/full"):
        assert to_dev_full(h, OVS_SCRIPT, "dump-dps") == (1, "ovs-dpctl: " + ENOSPC_LINE)
