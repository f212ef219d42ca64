"""A test family for the pseudo-device, and ways to run the service in tests.

``ovsdp_test`` exercises the registration API the datapath families use: a no-op echo, an object
store with NEW/DEL/GET and a dump whose cursor is a slot (entries change while it runs), a dump of
N generated entries (for memory tests), and a command that sends unsolicited messages.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import trio
from construct import GreedyBytes, Int32ul

from ovsdp.netlink.codec import compile_new_spaces
from ovsdp.netlink.errors import NetlinkError
from ovsdp.netlink.message import GenlFamily, GenlMessage, encode_genl
from ovsdp.netlink.nla import SPACES, AttributeSpace, NulString
from ovsdp.pseudodev.device import Device, Request
from ovsdp.pseudodev.registry import Command, Family, Reply
from ovsdp.pseudodev.server import PseudoDevice
from ovsdp.slottable import SlotTable

TEST_FAMILY = "ovsdp_test"
TEST_GROUP = "test_events"

CMD_ECHO = 1
CMD_NEW = 2
CMD_DEL = 3
CMD_GET = 4
CMD_COUNT = 5
CMD_SEND = 6

if "ovsdp_test" not in SPACES:
    AttributeSpace(
        "ovsdp_test",
        {
            1: "id" / Int32ul,
            2: "name" / NulString(15),
            3: "count" / Int32ul,
            4: "payload" / GreedyBytes,
            5: "pid" / Int32ul,
        },
    )
    compile_new_spaces()  # TEST_CODEC must work in a client that never builds a Device


class TestFamily:
    """The ``ovsdp_test`` family and its object store."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.objects: SlotTable[dict[str, Any]] = SlotTable()
        self.family = Family(
            TEST_FAMILY,
            1,
            4,
            "ovsdp_test",
            {
                c.cmd: c
                for c in (
                    Command(CMD_ECHO, "ECHO", do=self._echo),
                    Command(
                        CMD_NEW,
                        "NEW",
                        do=self._new,
                        mutating=True,
                        required=("name",),
                        reply=Reply.ECHO,
                    ),
                    Command(
                        CMD_DEL,
                        "DEL",
                        do=self._del,
                        mutating=True,
                        required=("id",),
                        reply=Reply.ECHO,
                    ),
                    Command(CMD_GET, "GET", do=self._get, dump=self._dump, required=("id",)),
                    Command(CMD_COUNT, "COUNT", dump=self._count, required=("count",)),
                    Command(CMD_SEND, "SEND", do=self._send, mutating=True, required=("count",)),
                )
            },
            (TEST_GROUP,),
        )

    def register(self, device: Device) -> Family:
        return device.register(self.family)

    def _echo(self, request: Request) -> list[GenlMessage]:
        return [request.reply(CMD_ECHO, dict(request.attrs), request.msg.dp_ifindex)]

    def _new(self, request: Request) -> list[GenlMessage]:
        obj = {"name": request.attrs["name"]}
        obj["id"] = self.objects.add(obj)
        return [request.reply(CMD_NEW, dict(obj))]

    def _del(self, request: Request) -> list[GenlMessage]:
        try:
            obj = self.objects.remove(request.attrs["id"])
        except KeyError:
            raise NetlinkError(errno.ENOENT, f"no object {request.attrs['id']}") from None
        return [request.reply(CMD_DEL, dict(obj))]

    def _get(self, request: Request) -> list[GenlMessage]:
        obj = self.objects.get(request.attrs["id"])
        if obj is None:
            raise NetlinkError(errno.ENOENT, f"no object {request.attrs['id']}")
        return [request.reply(CMD_GET, dict(obj))]

    def _dump(self, request: Request) -> Iterator[GenlMessage]:
        for _slot, obj in self.objects.items_from(0):
            yield request.reply(CMD_GET, dict(obj))

    def _count(self, request: Request) -> Iterator[GenlMessage]:
        # Not a generator itself: the device calls this when the dump starts, so a bad request
        # is refused there with an NLMSG_ERROR (the device checks ``required`` only for
        # transactions; a KeyError raised while the dump runs would take the service down).
        if "count" not in request.attrs:
            raise NetlinkError(errno.EINVAL, "COUNT needs the count attribute")
        count = request.attrs["count"]
        payload = request.attrs.get("payload", b"")
        return (request.reply(CMD_COUNT, {"id": i, "payload": payload}) for i in range(count))

    def _send(self, request: Request) -> list[GenlMessage]:
        """Send ``count`` unsolicited messages: to ``pid`` if given, else to the group."""
        device = request.device
        family = request.family
        payload = request.attrs.get("payload", b"")
        target = request.attrs.get("pid")
        for i in range(request.attrs["count"]):
            msg = GenlMessage(
                family.id, 0, 0, target or 0, CMD_SEND, 1, 0, {"id": i, "payload": payload}
            )
            record = encode_genl(msg, family.genl)
            if target is not None:
                device.unicast(target, record)
            else:
                device.multicast(family.group_ids[TEST_GROUP], record)
        return []


def make_device(**kwargs: Any) -> tuple[Device, TestFamily]:
    """A device with the test family registered."""
    device = Device(**kwargs)
    test = TestFamily()
    test.register(device)
    return device, test


def socket_path(tmp_dir: str | None = None) -> str:
    """A fresh socket path in a temporary directory."""
    return os.path.join(tempfile.mkdtemp(prefix="ovsdp-", dir=tmp_dir), "ovsdp.sock")


class ServiceThread:
    """The service running in its own thread with its own trio loop (for blocking clients)."""

    def __init__(self, device: Device, path: str, **service_kwargs: Any) -> None:
        self.device = device
        self.path = path
        self.service = PseudoDevice(device, path, **service_kwargs)
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(self.service.run)
                self._started.set()

    def start(self) -> ServiceThread:
        self.service.open()
        self._thread.start()
        self._started.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the service's thread (to touch the device safely)."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None and self._thread.is_alive():
            try:
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)
        if self.error is not None:
            raise self.error

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


TEST_CODEC = GenlFamily(TEST_FAMILY, 1, 4, "ovsdp_test", (TEST_GROUP,))
"""What a client needs to resolve the test family: ``sock.family(TEST_FAMILY, TEST_CODEC)``."""
