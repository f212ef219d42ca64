"""UFIDs: 16 bytes on the wire (four host-order u32 words), ``ufid:`` + UUID text form."""

from __future__ import annotations

import re
import struct

from .errors import OdpParseError

_WORDS = struct.Struct("<4I")
_UUID = re.compile(
    r"([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-([0-9a-fA-F]{12})$"
)


def parse_ufid(text: str) -> bytes:
    """``[ufid:]xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` -> the 16 UFID bytes.

    The text prints word0, word1 (high, low 16 bits), word2 (high, low), word3; each word is
    stored in host (little-endian) order."""
    body = text[5:] if text.startswith("ufid:") else text
    m = _UUID.match(body)
    if m is None:
        raise OdpParseError(
            f"invalid UFID {text!r} (expected ufid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        )
    a, b, c, d, e = (int(g, 16) for g in m.groups())
    return _WORDS.pack(a, (b << 16) | c, (d << 16) | (e >> 32), e & 0xFFFFFFFF)


def format_ufid(ufid: bytes) -> str:
    """The 16 UFID bytes -> ``ufid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``."""
    if len(ufid) != 16:
        raise OdpParseError(f"a UFID is 16 bytes, not {len(ufid)}")
    w0, w1, w2, w3 = _WORDS.unpack(bytes(ufid))
    return (
        f"ufid:{w0:08x}-{w1 >> 16:04x}-{w1 & 0xFFFF:04x}-{w2 >> 16:04x}-{w2 & 0xFFFF:04x}{w3:08x}"
    )
