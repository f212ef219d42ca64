"""The TAP backend against the kernel, and the service starting and stopping real NICs.

A TAP port whose device ovsdp creates, then moved into a namespace and configured there (the
VM), talks to a namespace behind an afpacket port; a persistent TAP device is attached to and
left in place; a device that is down drops and counts; ``ovsdp serve --config`` opens the NICs
before it listens, removes its TAP devices on SIGTERM, and refuses bad NICs with one line.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import trio
from datapath_support import REPO, nobody_python, run_as_nobody
from netns_support import Lab, LoopService, needs_root, ping, unique

from ovsdp.nic import NicError, TapBackend
from ovsdp.nic.tap import ROOT_HINT as hint
from ovsdp.vswitch.switch import format_mac

VM_MAC = "00:15:5d:77:00:01"

PORTS = """
[[port]]
name = "vm1"
backend = "tap"
device = "{tap}"
mac = "{mac}"
mtu = 1400

[[port]]
name = "vm2"
backend = "afpacket"
device = "{veth}"
"""


@needs_root
async def test_tap_port_in_a_namespace_talks_to_an_afpacket_port() -> None:
    with Lab() as lab:
        a, b = lab.namespace("a"), lab.namespace("b")
        root_b, _end_b = lab.veth(b, cidr="10.77.2.2/24")
        tap = unique("nt")
        svc = LoopService(PORTS.format(tap=tap, mac=VM_MAC, veth=root_b))
        async with trio.open_nursery() as nursery:
            await svc.start(nursery)
            vm1 = svc.backend("vm1")
            assert isinstance(vm1, TapBackend) and vm1.created
            # the device is the VM's NIC: it has the port's MAC and MTU, and it is up
            assert format_mac(lab.mac(tap)) == VM_MAC
            (link,) = lab.ipr.get_links(lab.index(tap))
            assert link.get("IFLA_MTU") == 1400
            # the "VM": the device moved into a namespace and configured there
            lab.move(tap, a, cidr="10.77.2.1/24")
            assert format_mac(lab.mac(tap, a)) == VM_MAC
            await svc.cross_connect("vm1", "vm2")

            assert await ping(lab, a, "10.77.2.2") == 3
            counters = vm1.stats()
            assert counters.rx >= 4 and counters.tx >= 4  # ARP and echoes both ways
            assert counters.tx_dropped == counters.rx_errors == 0
            assert svc.switch.outstanding == 0
            await svc.stop()
        # ovsdp created the device: it went away with the descriptor, from where it was
        assert not lab.exists(tap, a)
        assert vm1.fileno() == -1


@needs_root
def test_a_persistent_tap_device_is_attached_to_and_kept() -> None:
    with Lab() as lab:
        name = lab.persistent_tap()
        before = lab.mac(name)
        backend = TapBackend(name, mtu=1300, mac=bytes.fromhex("00155d770002"))
        backend.open()
        try:
            assert not backend.created
            assert lab.mac(name) == before  # the MAC belongs to whoever made the device
            (link,) = lab.ipr.get_links(lab.index(name))
            assert link.get("IFLA_MTU") == 1300
            assert link.get("IFLA_OPERSTATE") in ("UP", "UNKNOWN", "DOWN")
            assert link["flags"] & 1  # IFF_UP
            # a second backend on the same device: it is in use
            with pytest.raises(NicError, match="in use by another process"):
                TapBackend(name).open()
        finally:
            backend.close()
        assert lab.exists(name)


@needs_root
def test_a_device_that_is_down_drops_and_counts() -> None:
    with Lab() as lab:
        backend = TapBackend(unique("nt"))
        backend.open()
        try:
            lab.ipr.link("set", index=lab.index(backend.device), state="down")
            frame = bytes.fromhex("ffffffffffff00155d7700010800") + bytes(50)
            start = time.perf_counter()
            backend.transmit([frame] * 64)
            assert time.perf_counter() - start < 0.5
            counters = backend.counters
            assert (counters.tx, counters.tx_dropped, counters.tx_errors) == (0, 64, 64)
        finally:
            backend.close()


@needs_root
def test_not_a_tap_device() -> None:
    with Lab() as lab:
        ns = lab.namespace("x")
        root, _end = lab.veth(ns)
        with pytest.raises(NicError, match=f"'{root}' exists and is not a TAP device"):
            TapBackend(root).open()


def test_bad_names() -> None:
    for name in ("", "a" * 16, "a/b", "a b", "..", "a:b"):
        with pytest.raises(NicError):
            TapBackend(name)


# -- the service as a process --------------------------------------------------------------------


def serve(config: str, directory: str, **kwargs: object) -> subprocess.Popen[str]:
    path = os.path.join(directory, "ovsdp.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(config)
    return subprocess.Popen(
        [sys.executable, "-m", "ovsdp", "serve", "--socket", f"{directory}/s", "--config", path],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


@needs_root
def test_serve_opens_nics_and_removes_its_tap_on_sigterm() -> None:
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="ovsdp-nic-") as tmp:
        ns = lab.namespace("s")
        root, _end = lab.veth(ns)
        tap = unique("nt")
        proc = serve(PORTS.format(tap=tap, mac=VM_MAC, veth=root), tmp)
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "the service printed nothing"
            assert proc.stdout.readline().startswith("ovsdp: listening on ")
            assert lab.exists(tap)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert err == ""
        assert not lab.exists(tap)


@needs_root
def test_serve_refuses_a_missing_interface() -> None:
    missing = unique("nx")
    config = '[[port]]\nname = "ext"\ntype = "external"\nbackend = "afpacket"\n'
    config += f'device = "{missing}"\n'
    with tempfile.TemporaryDirectory(prefix="ovsdp-nic-") as tmp:
        proc = serve(config, tmp)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert out == ""
        assert err == f"ovsdp: port ext: no interface named {missing!r}\n"
        assert not os.path.exists(f"{tmp}/s")


@pytest.mark.skipif(nobody_python() is None, reason="needs root and a Python uid 65534 can run")
def test_serve_as_an_unprivileged_user_cannot_create_a_tap() -> None:
    tap = unique("nt")
    with tempfile.TemporaryDirectory(prefix="ovsdp-nic-") as tmp:
        os.chmod(tmp, 0o777)
        path = os.path.join(tmp, "ovsdp.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f'[[port]]\nname = "vm1"\nbackend = "tap"\ndevice = "{tap}"\n')
        os.chmod(path, 0o644)
        done = run_as_nobody("-m", "ovsdp", "serve", "--socket", f"{tmp}/s", "--config", path)
    assert done.returncode == 1, done
    # /dev/net/tun may be closed to others (mode 0600) or not: either way, one clear line
    assert done.stderr in (
        f"ovsdp: port vm1: cannot create TAP device {tap!r}: Operation not permitted{hint}\n",
        f"ovsdp: port vm1: cannot open /dev/net/tun: Permission denied{hint}\n",
    ), done.stderr
