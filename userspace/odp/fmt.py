"""Formatting helpers that reproduce the printf conventions of OVS's text output.

C's ``%#x`` prints ``0`` for zero (no ``0x``), which Python's ``%#x`` does not; hex blobs drop
leading zero bytes and print ``0`` when all bytes are zero; flag sets print lowest bit first.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping


def cx(value: int) -> str:
    """C ``%#x``: ``0`` for zero, else ``0x`` and lower-case hex."""
    return f"0x{value:x}" if value else "0"


def mac(value: bytes) -> str:
    """An Ethernet address as ``xx:xx:xx:xx:xx:xx``."""
    return ":".join(f"{b:02x}" for b in value)


def ip4(value: int) -> str:
    """An IPv4 address (integer) in dotted-quad form."""
    return ".".join(str(b) for b in value.to_bytes(4, "big"))


def ip6(value: bytes) -> str:
    """An IPv6 address in the C library's ``inet_ntop`` form."""
    return socket.inet_ntop(socket.AF_INET6, bytes(value))


def hex_blob(value: bytes) -> str:
    """Bytes as one hex number: ``0x`` + digits without leading zero bytes, ``0`` if all zero."""
    stripped = bytes(value).lstrip(b"\0")
    if not stripped:
        return "0"
    return f"0x{stripped[0]:x}" + stripped[1:].hex()


def hex_spaced(value: bytes) -> str:
    """Bytes as two-digit hex separated by spaces (OVS's generic attribute form)."""
    return " ".join(f"{b:02x}" for b in value)


def flags(bits: int, names: Mapping[int, str], delim: str = "|") -> str:
    """A set of flags by name, lowest bit first; unnamed bits as one hex number; ``0`` if none."""
    if not bits:
        return "0"
    out = []
    bad = 0
    remaining = bits
    while remaining:
        bit = remaining & -remaining
        name = names.get(bit)
        if name is None:
            bad |= bit
        else:
            out.append(name)
        remaining &= ~bit
    if bad:
        out.append(f"0x{bad:x}")
    return delim.join(out)


def flags_masked(bits: int, mask: int, max_mask: int, names: Mapping[int, str]) -> str:
    """Masked flags: ``a|b`` when fully masked, else ``+set-clear`` per masked bit; ``0/0``."""
    if mask == max_mask:
        return flags(bits, names, "|")
    if not mask:
        return "0/0"
    out = []
    while mask:
        bit = mask & -mask
        out.append(("+" if bits & bit else "-") + names.get(bit, "[Unknown]"))
        mask &= ~bit
    return "".join(out)
