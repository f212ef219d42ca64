"""``ovsdp serve``: the service as a process (docs/pseudodev.md section 1, the issue's service
requirements): the listening line, SIGTERM/SIGINT, stale and live socket files, mode/owner/group.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from pseudodev_support import socket_path
from test_pseudodev_tools import (
    C_GET_PID,
    CONTROL_CODEC,
    RECV_BUFFER,
    REPO,
    encode,
    nlctrl_request,
)

from ovsdp.daemon import ServiceConfig, build_device
from ovsdp.netlink.families import NLCTRL
from ovsdp.netlink.message import GenlMessage, decode_record
from userspace.netlink_socket import NetlinkSocket

CONTROL_ID = 0x11


class Daemon:
    """``python -m ovsdp serve ...`` in a child process."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ovsdp", "serve", *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def first_line(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the service printed nothing"
        return self.proc.stdout.readline()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, str, str]:
        """Send ``signum``; the exit status and what is left of stdout and stderr."""
        self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


def start(daemons: list[Daemon], *args: str, env: dict[str, str] | None = None) -> Daemon:
    daemon = Daemon(*args, env=env)
    daemons.append(daemon)
    return daemon


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def get_pid(sock: socket.socket) -> int:
    sock.send(encode(CONTROL_CODEC, CONTROL_ID, C_GET_PID, seq=1))
    (reply,) = decode_record(sock.recv(RECV_BUFFER), {CONTROL_ID: CONTROL_CODEC})
    assert isinstance(reply, GenlMessage)
    return int(reply.attrs["sock_pid"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_one_line_and_stops_cleanly(daemons: list[Daemon], signum: int) -> None:
    path = socket_path()
    daemon = start(daemons, "--socket", path)
    line = daemon.first_line()
    assert line == f"ovsdp: listening on {path} (pid {daemon.proc.pid})\n"
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    clients = [connect(path) for _ in range(3)]
    assert sorted(get_pid(c) for c in clients) == [1, 2, 3]
    clients[0].send(nlctrl_request({"family_name": "ovsdp_control"}, seq=2))
    (family,) = decode_record(clients[0].recv(RECV_BUFFER), {0x10: NLCTRL})
    assert isinstance(family, GenlMessage) and family.attrs["family_id"] == CONTROL_ID
    status, out, err = daemon.stop(signum)
    assert status == 0, err
    assert out == "" and err == ""  # one line in all, no traceback
    assert not os.path.exists(path)
    for client in clients:
        assert client.recv(100) == b""  # the service closed the connection
        client.close()


def test_serve_replaces_a_stale_socket(daemons: list[Daemon]) -> None:
    path = socket_path()
    crashed = start(daemons, "--socket", path)
    crashed.first_line()
    crashed.proc.kill()  # a crash: SIGKILL leaves the socket file behind
    crashed.proc.communicate()
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    with pytest.raises(ConnectionRefusedError):
        connect(path)
    daemon = start(daemons, "--socket", path)
    assert daemon.first_line() == f"ovsdp: listening on {path} (pid {daemon.proc.pid})\n"
    with connect(path) as client:
        assert get_pid(client) == 1
    status, _out, err = daemon.stop()
    assert status == 0, err
    assert not os.path.exists(path)


def test_serve_refuses_a_live_socket(daemons: list[Daemon]) -> None:
    path = socket_path()
    first = start(daemons, "--socket", path)
    first.first_line()
    inode = os.lstat(path).st_ino
    with connect(path) as early:
        assert get_pid(early) == 1
        second = start(daemons, "--socket", path)
        _out, err = second.proc.communicate(timeout=30)
        assert second.proc.returncode != 0
        assert f"another service is listening on {path}" in err
        assert "Traceback" not in err
        # the first service is untouched: same file, still answering, old connection alive
        assert os.lstat(path).st_ino == inode
        assert get_pid(early) == 1
    with connect(path) as client:
        assert get_pid(client) >= 2
    status, _out, err = first.stop()
    assert status == 0, err


def test_serve_refuses_a_path_that_is_not_a_socket(daemons: list[Daemon]) -> None:
    path = socket_path()
    with open(path, "w") as f:
        f.write("precious")
    daemon = start(daemons, "--socket", path)
    _out, err = daemon.proc.communicate(timeout=30)
    assert daemon.proc.returncode != 0 and "not a socket" in err
    with open(path) as f:
        assert f.read() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown of the socket file needs root")
def test_serve_mode_owner_and_group(daemons: list[Daemon]) -> None:
    user = pwd.getpwuid(65534).pw_name
    group = grp.getgrgid(65534).gr_name
    for args, mode, uid, gid in (
        ((), 0o660, 0, 0),
        (("--mode", "600", "--owner", user, "--group", group), 0o600, 65534, 65534),
        (("--mode", "0666", "--owner", "65534", "--group", "4242"), 0o666, 65534, 4242),
    ):
        path = socket_path()
        daemon = start(daemons, "--socket", path, *args)
        daemon.first_line()
        st = os.lstat(path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid), args
        status, _out, err = daemon.stop()
        assert status == 0, err
        assert not os.path.exists(path)


def test_serve_bad_owner_or_group_is_an_error(daemons: list[Daemon]) -> None:
    path = socket_path()
    daemon = start(daemons, "--socket", path, "--group", "no-such-group-ovsdp")
    _out, err = daemon.proc.communicate(timeout=30)
    assert daemon.proc.returncode != 0 and "no-such-group-ovsdp" in err
    assert not os.path.exists(path)


def test_the_group_option_is_the_admin_group() -> None:
    assert build_device(ServiceConfig("/x", group="4242")).admin_gid == 4242
    assert build_device(ServiceConfig("/x", group=grp.getgrgid(0).gr_name)).admin_gid == 0
    assert build_device(ServiceConfig("/x")).admin_gid is None


def test_ovsdp_socket_environment_variable(
    daemons: list[Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = socket_path()
    daemon = start(daemons, env={"OVSDP_SOCKET": path})
    assert daemon.first_line() == f"ovsdp: listening on {path} (pid {daemon.proc.pid})\n"
    monkeypatch.setenv("OVSDP_SOCKET", path)
    deadline = time.monotonic() + 10
    with NetlinkSocket() as sock:  # clients look at $OVSDP_SOCKET first
        assert sock.path == path and sock.pid == 1
        assert sock.properties()["sock_proto"] == 16
    assert time.monotonic() < deadline
    status, _out, err = daemon.stop()
    assert status == 0, err
