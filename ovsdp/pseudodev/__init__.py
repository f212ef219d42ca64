"""The pseudo-device: netlink socket instances over an AF_UNIX SOCK_SEQPACKET socket.

:mod:`.device` is the sans-I/O core (connections, PIDs, dispatch tables, dumps, queues);
:mod:`.server` is the trio shell; :mod:`.registry` is the family registration API;
:mod:`.nlctrl` and :mod:`.control` are the two families every device has.
"""

from .device import Connection, Credentials, Device, Request
from .registry import Command, Family, Ops, Reply

__all__ = ["Command", "Connection", "Credentials", "Device", "Family", "Ops", "Reply", "Request"]
