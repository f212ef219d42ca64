"""Driving the data path without root (docs/datapath.md section 6): ``ovsdp vswitch inject`` and
``received`` as a user runs them, and the INJECT / TAKE commands' errors.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator

import pytest
from datapath_support import (
    VSWITCH,
    expect_errno,
    nobody_python,
    open_to_everyone,
    run_as_nobody,
    vswitch_cli,
)
from flow_support import Env, flow_env, udp_frame, udp_key_text

from ovsdp.netlink.constants import NLM_F_ECHO
from ovsdp.vswitch.family import MAX_INJECT, MAX_TAKE, VSwitchCmd
from ovsdp.vswitch.memory import MemoryBackend

FRAME = udp_frame()


@pytest.fixture
def env() -> Iterator[Env]:
    with flow_env() as e:
        yield e


def inject(env: Env, name: str, frame: bytes, **attrs: int) -> dict:
    reply = env.c.transact(
        VSWITCH, VSwitchCmd.INJECT, {"name": name, "frame": frame, **attrs}, flags=NLM_F_ECHO
    )
    return reply[0].attrs


def take(env: Env, name: str, **attrs: int) -> list[bytes]:
    replies = env.c.transact(VSWITCH, VSwitchCmd.TAKE, {"name": name, **attrs})
    return [m.attrs["frame"] for m in replies]


# -- the command line ----------------------------------------------------------------------------


def test_cli_inject_and_received(env: Env) -> None:
    env.put(udp_key_text(), "2,3")
    done = vswitch_cli(env.h.path, "inject", "vm1", FRAME.hex(), "--count", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    got = vswitch_cli(env.h.path, "received", "vm2", "--count", "2")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == [FRAME.hex()] * 2
    # colons, spaces and 0x are accepted in the frame
    spaced = "0x" + ":".join(f"{b:02x}" for b in FRAME)
    assert vswitch_cli(env.h.path, "inject", "vm1", spaced).returncode == 0
    rest = vswitch_cli(env.h.path, "received", "vm2")
    assert rest.stdout.split() == [FRAME.hex()] * 2  # what was left, then the new one
    assert vswitch_cli(env.h.path, "received", "vm2").stdout == ""
    assert len(env.take("vm3")) == 4
    assert env.get(udp_key_text())["stats"].n_packets == 4


def test_cli_errors(env: Env) -> None:
    env.c.link("vm1", False)
    down = vswitch_cli(env.h.path, "inject", "vm1", FRAME.hex())
    assert down.returncode == 1
    assert "inject failed" in down.stderr and os.strerror(errno.ENETDOWN) in down.stderr
    short = vswitch_cli(env.h.path, "inject", "vm2", "00" * 13)
    assert short.returncode == 1 and os.strerror(errno.EINVAL) in short.stderr
    bad = vswitch_cli(env.h.path, "inject", "vm2", "zz")
    assert bad.returncode == 1 and "not a frame in hex" in bad.stderr
    nope = vswitch_cli(env.h.path, "received", "nope")
    assert nope.returncode == 1 and os.strerror(errno.ENODEV) in nope.stderr
    assert env.stats().n_missed == 0


# -- INJECT ------------------------------------------------------------------------------------


def test_inject_runs_the_packet_path_and_replies_with_the_port(env: Env) -> None:
    env.put(udp_key_text(), "2")
    port = inject(env, "vm1", FRAME, count=5)
    assert port["name"] == "vm1" and port["rx_frames"] == 5
    assert port["datapath"] == "dp0" and port["port_no"] == 1
    assert take(env, "vm2") == [FRAME] * 5
    assert take(env, "vm2") == []
    # a miss through INJECT is an upcall like any other
    inject(env, "vm1", udp_frame(9))
    assert env.upcalls(1)[0].attrs["packet"] == udp_frame(9)


def test_inject_to_a_port_no_datapath_holds(env: Env) -> None:
    inject(env, "ext", FRAME, count=2)
    assert env.counters()["unbound_rx"] == 2
    assert take(env, "ext") == []


def test_inject_errors(env: Env) -> None:
    expect_errno(errno.EINVAL, inject, env, "vm1", FRAME, count=0)
    expect_errno(errno.EINVAL, inject, env, "vm1", FRAME, count=MAX_INJECT + 1)
    expect_errno(errno.EINVAL, inject, env, "vm1", FRAME[:13])
    expect_errno(errno.EINVAL, inject, env, "vm1", b"")
    expect_errno(errno.ENODEV, inject, env, "nope", FRAME)
    expect_errno(errno.EINVAL, env.c.transact, VSWITCH, VSwitchCmd.INJECT, {"name": "vm1"})
    env.c.link("vm1", False)
    expect_errno(errno.ENETDOWN, inject, env, "vm1", FRAME)
    env.c.disconnect("vm2")
    expect_errno(errno.ENETDOWN, inject, env, "vm2", FRAME)
    assert env.c.show("vm1")["rx_frames"] == 0
    assert env.stats().n_missed == 0
    inject(env, "vm3", FRAME[:14])  # an Ethernet header is enough
    assert len(env.upcalls(1)) == 1


def test_inject_many_copies_in_one_batch(env: Env) -> None:
    env.put(udp_key_text(), "2,3")
    inject(env, "vm1", FRAME, count=2000)
    assert len(take(env, "vm2", count=MAX_TAKE)) == MAX_TAKE
    assert len(take(env, "vm2")) == 2000 - MAX_TAKE
    assert len(env.take("vm3")) == 2000
    counters = env.counters()
    assert counters["created"] == counters["released"] == 4000


# -- TAKE ------------------------------------------------------------------------------------------


def test_take_errors(env: Env) -> None:
    expect_errno(errno.EINVAL, take, env, "vm2", count=0)
    expect_errno(errno.EINVAL, take, env, "vm2", count=MAX_TAKE + 1)
    expect_errno(errno.ENODEV, take, env, "nope")

    class Elsewhere:
        def transmit(self, frames: object) -> None:
            pass

    env.h.call(env.switch.set_backend, "vm3", Elsewhere())
    expect_errno(errno.EOPNOTSUPP, take, env, "vm3")
    # INJECT does not care where the port's own frames go
    env.put(udp_key_text(), "3")
    inject(env, "vm1", FRAME)
    env.h.call(env.switch.set_backend, "vm3", MemoryBackend())
    assert take(env, "vm3") == []


NOBODY_SCRIPT = r"""
import json, sys
from userspace import vswitchctl
from userspace.netlink_socket import NetlinkSocket
from ovsdp.netlink.errors import NetlinkError

path, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
out = {}
with NetlinkSocket(path) as sock:
    sock.family("ovsdp_vswitch", vswitchctl.CODEC)
    for name, cmd, attrs in [
        ("INJECT", 8, {"name": "vm1", "frame": frame}),
        ("TAKE", 9, {"name": "vm2"}),
    ]:
        try:
            out[name] = len(sock.transact("ovsdp_vswitch", cmd, attrs))
        except NetlinkError as exc:
            out[name] = exc.errno
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as uid 65534")
def test_an_unprivileged_client_can_neither_inject_nor_take() -> None:
    if nobody_python() is None:
        pytest.skip("no Python that uid 65534 can run with ovsdp importable")
    with flow_env(mode=0o666) as env:
        open_to_everyone(env.h.path)
        env.put(udp_key_text(), "2")
        inject(env, "vm1", FRAME)
        result = run_as_nobody("-c", NOBODY_SCRIPT, env.h.path, FRAME.hex())
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"INJECT": errno.EPERM, "TAKE": errno.EPERM}
        assert take(env, "vm2") == [FRAME]  # still there
        assert env.get(udp_key_text())["stats"].n_packets == 1
        cli = run_as_nobody("-m", "ovsdp", "vswitch", "--socket", env.h.path, "received", "vm2")
        assert cli.returncode == 1 and os.strerror(errno.EPERM) in cli.stderr
