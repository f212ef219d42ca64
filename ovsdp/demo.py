"""The README's demo: the service, the handler, and packets crossing the emulated switch.

It starts ``ovsdp serve`` with the embedded default switch (vm1, vm2, vm3, ext, host) and
``ovsdp-handler``, then plays a short conversation between vm1 and vm2 by injecting frames on
their ports (as their NICs would receive them), and shows along the way what a user would see:
``ovsdp vswitch list``, ``ovsdp-dpctl show``, what each port received (decoded in OVS's flow
syntax), ``ovsdp-dpctl dump-flows`` and the datapath's counters.  Everything it runs is the real
command; it cleans up after itself.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from .flowtable.checksum import internet_checksum
from .flowtable.flow_key import extract_key, key_to_attrs, port_prefix

VM1_MAC = bytes.fromhex("00155d000001")
VM2_MAC = bytes.fromhex("00155d000002")
BROADCAST = b"\xff" * 6
VM1_IP = bytes((10, 0, 0, 1))
VM2_IP = bytes((10, 0, 0, 2))

_PY = sys.executable


def arp(
    op: int, src_mac: bytes, dst_mac: bytes, src_ip: bytes, target_mac: bytes, target_ip: bytes
) -> bytes:
    """An Ethernet/ARP frame (op 1 request, 2 reply), padded to 60 bytes."""
    frame = (
        dst_mac
        + src_mac
        + struct.pack("!H", 0x0806)
        + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, src_mac, src_ip, target_mac, target_ip)
    )
    return frame + bytes(60 - len(frame))


def icmp_echo(
    src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, seq: int, reply: bool = False
) -> bytes:
    """An Ethernet/IPv4/ICMP echo request (or reply) with valid checksums."""
    payload = b"ovsdp demo payload!!"
    icmp = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, 0x4242, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0x4000, 64, 1, 0, src_ip, dst_ip
    )
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", 0x0800) + ip + icmp


def describe(frame: bytes) -> str:
    """A frame in OVS's flow syntax (its key, as the datapath extracts it)."""
    from userspace.odp import format_key

    attrs = key_to_attrs(extract_key(frame, port_prefix(0)))
    for meta in ("recirc_id", "dp_hash", "priority", "in_port", "skb_mark"):
        attrs.pop(meta, None)
    return format_key(attrs)


class Demo:
    """Runs commands against a service on a private socket and prints them as a transcript."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ovsdp-demo-")
        self.socket = os.path.join(self.dir, "ovsdp.sock")
        self.env = {**os.environ, "OVSDP_SOCKET": self.socket}
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, title: str, argv: Sequence[str]) -> subprocess.Popen[str]:
        print(f"$ {title} &")
        proc = subprocess.Popen(
            list(argv), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.procs.append(proc)
        return proc

    def run(self, title: str, argv: Sequence[str], *, show: bool = True) -> str:
        done = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{title} failed: {done.stderr.strip()}")
        if show:
            print(f"$ {title}")
            print(done.stdout.rstrip())
            print()
        return done.stdout

    def vswitch(self, *args: str, show: bool = True) -> str:
        return self.run(
            "ovsdp vswitch " + " ".join(args), [_PY, "-m", "ovsdp", "vswitch", *args], show=show
        )

    def dpctl(self, *args: str) -> str:
        return self.run("ovsdp-dpctl " + " ".join(args), [_PY, "-m", "userspace.dpctl.app", *args])

    def inject(self, port: str, frame: bytes, what: str) -> None:
        print(f"# {what}")
        self.vswitch("inject", port, frame.hex(), show=False)
        print(f"$ ovsdp vswitch inject {port} {frame.hex()[:24]}...")

    def received(self, port: str) -> list[bytes]:
        out = self.vswitch("received", port, show=False)
        frames = [bytes.fromhex(line) for line in out.split()]
        print(f"$ ovsdp vswitch received {port}     # {len(frames)} frame(s), decoded:")
        for frame in frames:
            print(f"    {describe(frame)}")
        return frames

    def wait_for_handler(self) -> None:
        """Until the handler has created the datapath and added the switch's ports."""
        from userspace.dpif import Dpif
        from userspace.netlink_socket import NetlinkSocket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with NetlinkSocket(self.socket) as sock:
                    names = Dpif.enumerate(sock)
                    if names:
                        dpif = Dpif.open(names[0], sock=sock)
                        if len(list(dpif.port_dump())) >= 6:
                            return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("ovsdp-handler did not set the datapath up in time")

    def settle(self) -> None:
        time.sleep(0.3)  # the upcall goes to the handler and its flow comes back

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_demo() -> int:
    """The demo; its exit status (1 if a step failed)."""
    demo = Demo()
    try:
        print("# ovsdp: a userspace Open vSwitch datapath behind an emulated Hyper-V switch.")
        print("# The service, with the embedded default switch (three VMs, the physical NIC,")
        print("# the host's vNIC), and ovsdp-handler, a minimal ovs-vswitchd (MAC learning):\n")
        service = demo.start(
            f"ovsdp serve --socket {demo.socket}",
            [_PY, "-m", "ovsdp", "serve", "--socket", demo.socket],
        )
        assert service.stdout is not None
        print(service.stdout.readline().rstrip())
        demo.start("ovsdp-handler", [_PY, "-m", "userspace.handler.cli", "--stats-interval", "0"])
        demo.wait_for_handler()
        print()
        demo.vswitch("list")
        demo.dpctl("show")

        demo.inject(
            "vm1",
            arp(1, VM1_MAC, BROADCAST, VM1_IP, bytes(6), VM2_IP),
            "vm1 asks who has 10.0.0.2 (a broadcast: the handler floods it)",
        )
        demo.settle()
        for port in ("vm2", "vm3", "ext", "host"):
            demo.received(port)
        print()
        demo.inject(
            "vm2",
            arp(2, VM2_MAC, VM1_MAC, VM2_IP, VM1_MAC, VM1_IP),
            "vm2 answers (vm1's MAC is learned: the reply goes to vm1 only)",
        )
        demo.settle()
        demo.received("vm1")
        demo.received("vm3")
        print()
        print("# vm1 pings vm2 three times; vm2 replies")
        for seq in (1, 2, 3):
            demo.vswitch(
                "inject", "vm1", icmp_echo(VM1_MAC, VM2_MAC, VM1_IP, VM2_IP, seq).hex(), show=False
            )
            demo.settle()
            demo.vswitch(
                "inject",
                "vm2",
                icmp_echo(VM2_MAC, VM1_MAC, VM2_IP, VM1_IP, seq, reply=True).hex(),
                show=False,
            )
            demo.settle()
        demo.received("vm2")
        demo.received("vm1")
        print()
        print("# the megaflows the handler installed (the later pings hit them):")
        demo.dpctl("dump-flows")
        demo.dpctl("show")
        print("# done: everything above ran against the real service; see README.md.")
        return 0
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"ovsdp demo: {exc}", file=sys.stderr)
        for proc in demo.procs:
            if proc.poll() is not None and proc.stdout is not None:
                print(proc.stdout.read(), file=sys.stderr)
        return 1
    finally:
        demo.stop()
