"""The one error type the netlink layer raises for bad input."""

from __future__ import annotations

import errno as _errno
import os


class NetlinkError(Exception):
    """A request or message that cannot be accepted.

    ``errno`` is the positive errno value (EINVAL, ERANGE, EMSGSIZE, ...) that goes back to the
    client as ``-errno`` in an NLMSG_ERROR; ``reason`` is a one-line explanation that goes back as
    the extended-ack message.  ``offset``, when known, is the byte offset of the offending
    attribute inside the message (NLMSGERR_ATTR_OFFS).
    """

    def __init__(self, errno: int, reason: str, offset: int | None = None) -> None:
        super().__init__(errno, reason)
        self.errno = errno
        self.reason = reason
        self.offset = offset

    def __str__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"{self.reason} ({name}: {os.strerror(self.errno)})"

    def __repr__(self) -> str:
        name = _errno.errorcode.get(self.errno, str(self.errno))
        return f"NetlinkError({name}, {self.reason!r})"


def einval(reason: str, offset: int | None = None) -> NetlinkError:
    """Shorthand for the most common rejection."""
    return NetlinkError(_errno.EINVAL, reason, offset)
