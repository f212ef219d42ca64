"""``ovsdp vswitch`` and ``ovsdp serve --config`` as a user runs them.

docs/vswitch.md section 1: the management commands print the port(s), errors print
``ovsdp vswitch: CMD failed: why (strerror)`` on stderr with exit status 1, and a refused change
changes nothing; the service's switch comes from a TOML file or is the embedded default.

Every kind of command runs as a real subprocess (``python -m ovsdp ...``); the long error
matrices run the same ``ovsdp.cli.main`` in this process (:func:`cli_main`), as a subprocess
costs a third of a second.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest
from datapath_support import (
    DEFAULT_PORTS,
    NETDEV,
    REPO,
    Client,
    Harness,
    cli_env,
    list_rows,
    nobody_python,
    open_to_everyone,
    run_as_nobody,
    vswitch_cli,
)
from pseudodev_support import socket_path

from ovsdp import cli
from ovsdp.netlink.constants import VportType
from ovsdp.vswitch.switch import format_mac


@pytest.fixture
def h() -> Iterator[Harness]:
    with Harness() as harness:
        yield harness


Completed = subprocess.CompletedProcess[str]


def cli_many(path: str, commands: Sequence[Sequence[str]]) -> list[Completed]:
    """Several ``ovsdp vswitch`` commands at once (they must not depend on each other)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ovsdp", "vswitch", "--socket", path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(),
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return results


def remove_socket_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def strerror_of(code: int) -> str:
    return os.strerror(code)


def cli_main(*args: str) -> subprocess.CompletedProcess[str]:
    """``ovsdp ARGS`` in this process (the same ``main`` as the subprocess runs): most of the
    matrix runs here, a representative part in subprocesses, to keep the suite fast."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(args))
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def vswitch_main(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli_main("vswitch", "--socket", path, *args)
    result.args = list(args)
    return result


def check_failure(result: subprocess.CompletedProcess[str], command: str, code: int) -> None:
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith(f"ovsdp vswitch: {command} failed: "), line
    assert line.endswith(f"({strerror_of(code)})"), line


# -- list, show, and every change ----------------------------------------------------------


def test_list_shows_the_default_switch(h: Harness) -> None:
    result = vswitch_cli(h.path, "list")
    assert result.returncode == 0 and result.stderr == ""
    rows = list_rows(result.stdout)
    assert list(rows) == ["vm1", "vm2", "vm3", "ext", "host"]
    for name, row in rows.items():
        ptype, mac = DEFAULT_PORTS[name]
        assert row == [name, ptype.label, row[2], format_mac(mac), "1500", "connected", "up", "-"]
    assert [rows[n][2] for n in rows] == ["1", "2", "3", "4", "5"]


def test_every_command_prints_the_port_it_changed(h: Harness) -> None:
    c = h.client()
    path = h.path
    mac = "02:00:00:00:00:07"
    add = vswitch_cli(
        path, "add-port", "web", "--type", "vm-emulated", "--mac", mac, "--mtu", "9000"
    )
    assert add.returncode == 0 and add.stderr == ""
    (line,) = add.stdout.splitlines()
    assert line.split() == ["web", "vm-emulated", "6", mac, "9000", "connected", "up", "-"]
    assert c.show("web")["mtu"] == 9000

    show = vswitch_cli(path, "show", "web")
    assert show.returncode == 0
    assert list_rows(show.stdout)["web"] == line.split()

    cold = vswitch_main(path, "add-port", "cold", "--type", "external", "--disconnected")
    assert cold.stdout.split()[1:2] == ["external"]
    assert cold.stdout.split()[5:7] == ["disconnected", "down"]

    steps = [
        (("connect", "cold"), ["connected", "up"]),
        (("link", "cold", "down"), ["connected", "down"]),
        (("link", "cold", "up"), ["connected", "up"]),
        (("disconnect", "cold"), ["disconnected", "down"]),
    ]
    for args, state in steps:
        result = vswitch_main(path, *args)
        assert result.returncode == 0 and result.stderr == "", (args, result.stderr)
        assert result.stdout.split()[5:7] == state, args

    result = vswitch_cli(path, "set", "web", "mtu=1400", "mac=02-00-00-00-00-08", "name=web2")
    assert result.returncode == 0
    assert result.stdout.split()[:5] == ["web2", "vm-emulated", "6", "02:00:00:00:00:08", "1400"]
    assert c.show("web2")["mac"] == bytes.fromhex("020000000008")

    result = vswitch_cli(path, "del-port", "web2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert [p["name"] for p in c.ports()] == ["vm1", "vm2", "vm3", "ext", "host", "cold"]

    result = vswitch_main(path, "add-port", "host2", "--type", "internal")
    assert result.stdout.split()[1] == "internal"


def test_list_shows_the_datapath_and_port_number_a_port_is_bound_to(h: Harness) -> None:
    c = h.client()
    dp = c.dp_new("dp1")
    assert dp is not None
    c.vport_new(dp.dp_ifindex, "vm2", NETDEV, port_no=7)
    rows = list_rows(vswitch_main(h.path, "list").stdout)
    assert rows["vm2"][7] == "dp1:7"
    assert rows["vm1"][7] == "-"
    assert list_rows(vswitch_main(h.path, "show", "vm2").stdout)["vm2"][7] == "dp1:7"


# -- errors --------------------------------------------------------------------------------


def test_errors_print_the_reason_and_strerror_and_change_nothing(h: Harness) -> None:
    c = h.client()
    c.disconnect("vm3")
    before = c.ports()
    cases = [
        (("add-port", "vm1", "--type", "vm"), "add-port", errno.EEXIST),
        (("add-port", "a b", "--type", "vm"), "add-port", errno.EINVAL),
        (("add-port", "x" * 49, "--type", "vm"), "add-port", errno.ERANGE),
        (("add-port", "new", "--type", "vm", "--mtu", "20"), "add-port", errno.ERANGE),
        (("add-port", "new", "--type", "vm", "--mac", "01:00:5e:0:0:1"), "add-port", errno.EINVAL),
        (("add-port", "new", "--type", "vm", "--mac", "00:00:00:0:0:0"), "add-port", errno.EINVAL),
        (("add-port", "new", "--type", "vm", "--mac", "nonsense"), "add-port", errno.EINVAL),
        (("del-port", "nope"), "del-port", errno.ENODEV),
        (("show", "nope"), "show", errno.ENODEV),
        (("connect", "vm1"), "connect", errno.EALREADY),
        (("connect", "nope"), "connect", errno.ENODEV),
        (("disconnect", "vm3"), "disconnect", errno.ENOTCONN),
        (("link", "vm3", "up"), "link", errno.ENOTCONN),
        (("link", "nope", "down"), "link", errno.ENODEV),
        (("set", "vm1", "mtu=67"), "set", errno.ERANGE),
        (("set", "vm1", "mtu=65536"), "set", errno.ERANGE),
        (("set", "vm1", "mtu=-5"), "set", errno.ERANGE),  # the attribute cannot even carry it
        (("add-port", "new", "--type", "vm", "--mtu", "-1"), "add-port", errno.ERANGE),
        (("set", "vm1", "mac=ff:ff:ff:ff:ff:ff"), "set", errno.EINVAL),
        (("set", "vm1", "name=vm2"), "set", errno.EEXIST),
        (("set", "vm1", "name=bad!"), "set", errno.EINVAL),
        (("set", "vm1", "mtu=9000", "mac=00:00:00:00:00:00"), "set", errno.EINVAL),
        (("set", "vm1", "mtu=9000", "name=vm2"), "set", errno.EEXIST),
        (("set", "nope", "mtu=9000"), "set", errno.ENODEV),
    ]
    for args, command, code in cases:
        check_failure(vswitch_main(h.path, *args), command, code)
    assert c.ports() == before
    # the same through the real command: exit status 1, the message on stderr
    first, last = cli_many(h.path, [cases[0][0], cases[-1][0]])
    check_failure(first, "add-port", errno.EEXIST)
    check_failure(last, "set", errno.ENODEV)
    assert c.ports() == before


def test_out_of_range_mtus_are_one_error_whatever_the_value(h: Harness) -> None:
    """Negative (which the u32 attribute cannot carry) or too big: the switch's ERANGE and
    message either way, from the real command too."""
    c = h.client()
    before = c.ports()
    for value in ("-5", "0", "67", "65536", "70000", str(1 << 40)):
        result = vswitch_main(h.path, "set", "vm1", f"mtu={value}")
        check_failure(result, "set", errno.ERANGE)
        assert f"MTU {value} is outside 68..65535" in result.stderr
    negative, big = cli_many(h.path, [("set", "vm1", "mtu=-5"), ("set", "vm1", "mtu=70000")])
    for result, value in ((negative, "-5"), (big, "70000")):
        check_failure(result, "set", errno.ERANGE)
        assert f"MTU {value} is outside 68..65535" in result.stderr
    assert c.ports() == before


def test_a_port_named_like_a_datapath_or_tunnel_is_refused_by_the_extension(h: Harness) -> None:
    """The extension's veto (docs/vswitch.md section 1) in the CLI's error form."""
    c = h.client()
    dp = c.dp_new("dp1")
    assert dp is not None
    c.vport_new(dp.dp_ifindex, "vx0", int(VportType.VXLAN))
    before = c.ports()
    add_dp, add_vx, rename = cli_many(
        h.path,
        [
            ("add-port", "dp1", "--type", "vm"),
            ("add-port", "vx0", "--type", "internal"),
            ("set", "vm1", "mtu=9000", "name=dp1"),
        ],
    )
    check_failure(add_dp, "add-port", errno.EEXIST)
    assert "dp1 is the name of a datapath" in add_dp.stderr
    check_failure(add_vx, "add-port", errno.EEXIST)
    assert "vx0 is the name of vxlan port 1 of datapath dp1" in add_vx.stderr
    check_failure(rename, "set", errno.EEXIST)
    assert c.ports() == before  # not even the MTU changed


def test_list_widens_the_name_column_for_long_names(h: Harness) -> None:
    long = "a-port-with-a-name-of-thirty-two"
    h.client().add_port(long)
    lines = vswitch_main(h.path, "list").stdout.splitlines()
    width = len(long)
    assert lines[0].startswith("NAME".ljust(width) + " TYPE")
    # every column starts at the same place on every line
    starts = {line[width + 1 :].split()[0] for line in lines[1:]}
    assert starts == {"vm", "external", "internal"}
    assert {line.index(" ", width) for line in lines} == {width}
    assert list_rows("\n".join(lines))[long][:2] == [long, "vm"]
    shown = vswitch_main(h.path, "show", long).stdout.splitlines()
    assert shown[0].startswith("NAME".ljust(width) + " TYPE")
    # short names only: the usual 16 characters
    assert vswitch_main(h.path, "show", "vm1").stdout.startswith("NAME".ljust(16) + " TYPE")


def test_usage_errors_exit_1(h: Harness) -> None:
    before = h.client().ports()
    cases = [
        (("set", "vm1", "foo=1"), "ovsdp vswitch: cannot set 'foo' (mtu, mac, name)"),
        (("set", "vm1", "mtu=big"), "ovsdp vswitch: mtu 'big' is not a number"),
        (("set", "vm1", "mtu"), "ovsdp vswitch: 'mtu' is not KEY=VALUE"),
    ]
    for args, message in cases:
        result = vswitch_main(h.path, *args)
        assert (result.returncode, result.stdout, result.stderr.strip()) == (1, "", message)
    (result,) = cli_many(h.path, [cases[0][0]])
    assert (result.returncode, result.stdout, result.stderr.strip()) == (1, "", cases[0][1])
    assert h.client().ports() == before


def test_no_service_is_a_clear_error() -> None:
    path = socket_path()
    result = vswitch_cli(path, "list")
    remove_socket_dir(path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"ovsdp vswitch: no ovsdp service on {path} ({os.strerror(errno.ENOENT)})"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_unprivileged_cli_gets_eperm_but_can_list() -> None:
    if nobody_python() is None:
        pytest.skip("no Python that uid 65534 can run with ovsdp importable")
    with Harness(mode=0o666) as h:
        open_to_everyone(h.path)
        before = h.client().ports()
        # (every command of the family is checked in test_vswitch_family.py)
        for args, command in (
            (("add-port", "evil", "--type", "vm"), "add-port"),
            (("set", "vm1", "mtu=9000"), "set"),
        ):
            result = run_as_nobody("-m", "ovsdp", "vswitch", "--socket", h.path, *args)
            check_failure(result, command, errno.EPERM)
        listed = run_as_nobody("-m", "ovsdp", "vswitch", "--socket", h.path, "list")
        assert listed.returncode == 0, listed.stderr
        assert list(list_rows(listed.stdout)) == ["vm1", "vm2", "vm3", "ext", "host"]
        assert h.client().ports() == before


# -- ovsdp serve --config --------------------------------------------------------------------


class Served:
    """``ovsdp serve`` in a subprocess, until it says it is listening."""

    def __init__(self, *args: str) -> None:
        self.path = socket_path()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ovsdp", "serve", "--socket", self.path, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(),
        )

    def wait_listening(self, timeout: float = 30) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                assert line, f"ovsdp serve exited: {self.proc.wait()} {self.proc.stderr}"
                return line
        raise AssertionError("ovsdp serve did not start listening")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        remove_socket_dir(self.path)


CONFIG = """
[switch]
name = "lab"

[[port]]
name = "web"
type = "vm"
mac = "02:00:00:00:01:01"

[[port]]
name = "db"
type = "vm-emulated"
mtu = 9000

[[port]]
name = "uplink"
type = "external"
connected = false

[[port]]
name = "mgmt"
type = "internal"
backend = "memory"
"""


def write_config(text: str) -> str:
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="ovsdp-config-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_serve_with_a_config_file_has_exactly_its_ports() -> None:
    config = write_config(CONFIG)
    with Served("--config", config) as served:
        line = served.wait_listening()
        assert line.startswith(f"ovsdp: listening on {served.path} (pid ")
        result = vswitch_cli(served.path, "list")
        assert result.returncode == 0, result.stderr
        rows = list_rows(result.stdout)
        assert list(rows) == ["web", "db", "uplink", "mgmt"]
        assert rows["web"][1:7] == ["vm", "1", "02:00:00:00:01:01", "1500", "connected", "up"]
        assert rows["db"][1] == "vm-emulated" and rows["db"][4] == "9000"
        assert rows["uplink"][1] == "external" and rows["uplink"][5:7] == ["disconnected", "down"]
        assert rows["mgmt"][1] == "internal"
        with Client(served.path) as c:  # the datapath families are there too
            assert c.dp_dump() == []
        assert served.stop() == 0
    assert not os.path.exists(served.path)
    os.unlink(config)


def test_serve_without_config_has_the_embedded_default() -> None:
    with Served() as served:
        served.wait_listening()
        rows = list_rows(vswitch_cli(served.path, "list").stdout)
        assert list(rows) == list(DEFAULT_PORTS)
        for name, (ptype, mac) in DEFAULT_PORTS.items():
            assert rows[name][1] == ptype.label and rows[name][3] == format_mac(mac)
        assert served.stop() == 0


BAD_CONFIGS = [
    ('[[port]]\nname = "a"\ntype = ', "<syntax>"),
    ('[[port]]\nname = "a"\ncolour = "red"\n', "port #1: unknown keys ['colour']"),
    ('[[port]]\ntype = "vm"\n', "port #1: needs a name"),
    ('[[port]]\nname = "a"\ntype = "router"\n', "port #1: unknown port type 'router'"),
    ('[[port]]\nname = "a"\nmac = "00:11"\n', "port #1: not a MAC address: '00:11'"),
    ('[[port]]\nname = "a"\nmtu = "big"\n', "port #1: mtu must be a number"),
    ('[[port]]\nname = "a"\nbackend = "vhost"\n', "port #1: unknown backend 'vhost'"),
    ('[[port]]\nname = "a"\n[[port]]\nname = "a"\n', "duplicate port names ['a']"),
    ('[bridge]\nname = "x"\n', "unknown sections ['bridge']"),
    ('[[port]]\nname = "a"\nmtu = 10\n', "port a: MTU 10 is outside 68..65535"),
    ('[[port]]\nname = "a b"\n', "port a b: port name 'a b' has characters"),
    ('[[port]]\nname = "a"\nmac = "01:00:00:00:00:01"\n', "port a: '01:00:00:00:00:01' is not a"),
    # TOML has booleans and strings: "no" is not false, 5 is not a name
    ('[[port]]\nname = "a"\nconnected = "no"\n', "port #1: connected must be true or false"),
    ('[[port]]\nname = "a"\nconnected = 0\n', "port #1: connected must be true or false"),
    ("[[port]]\nname = 5\n", "port #1: name must be a string"),
    ("[[port]]\nname = true\n", "port #1: name must be a string"),
    ('[[port]]\nname = "a"\nmtu = true\n', "port #1: mtu must be a number"),
]


def check_config_error(path: str, message: str, status: int, out: str, err: str) -> None:
    assert status == 1, (path, out, err)
    assert "listening" not in out
    line = err.strip()
    assert "\n" not in line and "Traceback" not in err, err
    if message == "<syntax>":
        assert line.startswith(f"ovsdp: {path}: "), line
    elif message.startswith("port ") and not message.startswith("port #"):
        assert line.startswith(f"ovsdp: {message}"), line  # found while building the switch
    else:
        assert line.startswith(f"ovsdp: {path}: {message}"), line


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_a_bad_config_is_refused_with_a_clear_message(text: str, message: str) -> None:
    config = write_config(text)
    sock = socket_path()
    try:
        result = cli_main("serve", "--socket", sock, "--config", config)
        check_config_error(config, message, result.returncode, result.stdout, result.stderr)
        assert not os.path.exists(sock)
    finally:
        os.unlink(config)
        remove_socket_dir(sock)


def test_ovsdp_serve_with_a_bad_config_exits_1() -> None:
    """The real command: a file it cannot parse, a file it cannot build, no file."""
    syntax, mtu = BAD_CONFIGS[0], BAD_CONFIGS[9]
    files = [write_config(syntax[0]), write_config(mtu[0])]
    missing = os.path.join(tempfile.mkdtemp(), "missing.toml")
    runs = []
    for path in [*files, missing]:
        sock = socket_path()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovsdp", "serve", "--socket", sock, "--config", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=cli_env(),
        )
        runs.append((path, sock, proc))
    try:
        messages = [syntax[1], mtu[1], "No such file or directory"]
        for (path, sock, proc), message in zip(runs, messages, strict=True):
            out, err = proc.communicate(timeout=60)
            check_config_error(path, message, proc.returncode, out, err)
            assert not os.path.exists(sock)
    finally:
        for path in files:
            os.unlink(path)
        os.rmdir(os.path.dirname(missing))
        for _, sock, _ in runs:
            remove_socket_dir(sock)
