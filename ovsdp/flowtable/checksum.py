"""Internet checksums (RFC 1071), their incremental update (RFC 1624), and CRC32c for SCTP.

The ones'-complement sum of a run of 16-bit big-endian words equals, modulo 0xFFFF, the run read
as one big-endian integer (because 2**16 is 1 modulo 0xFFFF).  That turns both the full checksum
and its incremental update into integer arithmetic done in C:

* a checksum field ``c`` of correct data satisfies ``c == -S mod 0xFFFF`` (``S`` the sum of the
  covered words, the field excluded), with ``c`` in 0..0xFFFE -- the value a full recomputation
  yields for any data that is not all zero;
* replacing a word-aligned run whose integer value is ``old`` by ``new`` changes the field to
  ``(c + old - new) mod 0xFFFF`` (RFC 1624 equation 3 in modular form).  The result is the same
  number a full recomputation gives, so incrementally updated packets compare equal to ones
  whose checksums were computed from scratch.

CRC32c (Castagnoli, reflected, used by SCTP) is table driven in pure Python: slow (about 0.1 µs
per byte) but only SCTP port rewrites need it.
"""

from __future__ import annotations

__all__ = [
    "crc32c",
    "csum_adjust",
    "internet_checksum",
    "sctp_checksum",
]


def csum_adjust(check: int, old: int, new: int) -> int:
    """The checksum field ``check`` after a covered, 16-bit aligned run changed from ``old`` to
    ``new`` (both read as big-endian integers of the same width: a port, an address, a word)."""
    return (check + old - new) % 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The RFC 1071 checksum of ``data`` (an odd length is padded with a zero byte).

    ``initial`` adds the ones'-complement sum of other covered words (a pseudo-header), as an
    integer taken modulo 0xFFFF.
    """
    raw = bytes(data)
    if len(raw) & 1:
        raw += b"\0"
    total = (int.from_bytes(raw, "big") + initial) % 0xFFFF
    if total == 0 and not any(raw) and not initial:
        return 0xFFFF
    return -total % 0xFFFF


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32c of ``data`` (``crc32c(b"123456789") == 0xE3069283``); ``crc`` continues a previous
    result."""
    table = _CRC32C
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def sctp_checksum(packet: bytes | bytearray | memoryview) -> int:
    """The value of an SCTP common header's checksum field, read little-endian as SCTP stores
    it: CRC32c over the SCTP packet with the 4-byte field (offset 8) taken as zero."""
    raw = bytes(packet)
    return crc32c(raw[:8] + b"\0\0\0\0" + raw[12:])
