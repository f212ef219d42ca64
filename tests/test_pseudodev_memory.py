"""Back-pressure (docs/pseudodev.md section 8): a dump of a million entries costs the service one
record of memory, because the next record is produced only when the socket takes the last.

The service runs in a child process (the test family, ``serve``) so its resident memory can be
read from /proc while a slow client reads the dump.
"""

from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from pseudodev_support import CMD_COUNT, TEST_CODEC, socket_path
from test_pseudodev_tools import REPO, TESTS, cpu_seconds, encode, rss_kib

from ovsdp.netlink.constants import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE

SERVICE = textwrap.dedent(
    """
    import sys
    from functools import partial
    sys.path.insert(0, {tests!r})
    import trio
    from pseudodev_support import make_device
    from ovsdp.pseudodev.server import serve
    device, _ = make_device()
    assert device.families_by_name["ovsdp_test"].id == 0x12
    trio.run(partial(serve, device, {path!r}, on_listening=lambda p: print("up", flush=True)))
    """
)
TEST_ID = 0x12
HDR = struct.Struct("=IHHII")


def read_dump(
    sock: socket.socket, on_record: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Read a dump to its NLMSG_DONE; (messages, records)."""
    messages = records = 0
    buffer = bytearray(128 << 10)
    unpack = HDR.unpack_from
    while True:
        n = sock.recv_into(buffer)
        records += 1
        off = 0
        while off < n:
            length, mtype = unpack(buffer, off)[:2]
            if mtype == NLMSG_DONE:
                assert struct.unpack_from("=i", buffer, off + 16) == (0,)
                return messages, records
            assert mtype == TEST_ID
            messages += 1
            off += (length + 3) & ~3
        if on_record is not None:
            on_record(records)


@pytest.mark.slow
def test_a_million_entry_dump_keeps_the_service_memory_flat() -> None:
    path = socket_path()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE.format(tests=str(TESTS), path=path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == "up\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(30)
        sock.connect(path)

        def dump(count: int, seq: int) -> bytes:
            return encode(
                TEST_CODEC,
                TEST_ID,
                CMD_COUNT,
                {"count": count, "payload": b"m" * 16},
                flags=NLM_F_REQUEST | NLM_F_DUMP,
                seq=seq,
            )

        # warm up: buffers, codec caches, a first dump through the same paths
        sock.send(dump(50_000, 1))
        assert read_dump(sock)[0] == 50_000
        time.sleep(0.2)
        baseline = max(rss_kib(proc.pid) for _ in range(3))

        sock.send(dump(1_000_000, 2))
        first = sock.recv(128 << 10)
        assert HDR.unpack_from(first)[1] == TEST_ID
        # a slow client: not reading for a second; the service must wait, not produce
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        idle_cpu = cpu_seconds(proc.pid) - cpu_before
        samples = [rss_kib(proc.pid)]

        def sample(records: int) -> None:
            if records % 50 == 0:
                samples.append(rss_kib(proc.pid))
            if records < 300 and records % 25 == 0:
                time.sleep(0.01)  # slow for a while, then as fast as it can

        messages, records = read_dump(sock, sample)
        samples.append(rss_kib(proc.pid))
        messages += sum(1 for _ in struct.iter_unpack("=52s", first))
        assert HDR.unpack_from(first)[0] == 52 and len(first) % 52 == 0
        sock.close()
    finally:
        proc.kill()
        proc.wait()
    assert messages == 1_000_000
    assert records > 1000  # about 52 MB went through the socket
    growth_kib = max(samples) - baseline
    assert growth_kib < 4 * 1024, (baseline, samples)
    assert idle_cpu < 0.3, idle_cpu  # parked while the client did not read
