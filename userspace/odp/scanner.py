"""A position-tracking scanner with the lexical rules of the ODP text format.

Numbers follow C ``%i`` (decimal, ``0x`` hex, leading ``0`` octal), ``%u`` (decimal) or ``%x``
(hex, optional ``0x``); addresses are dotted IPv4, ``inet_pton`` IPv6 and colon-separated MACs.
Every failure raises :class:`~userspace.odp.errors.OdpParseError` with the offset it happened at.
"""

from __future__ import annotations

import re
import socket
import struct

from .errors import OdpParseError

_C_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_DEC = re.compile(r"[+-]?[0-9]+")
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_IPV6 = re.compile(r"[0-9a-fA-F:.]{1,46}")
_MAC = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F \t\r\n]*")

DELIMITERS = ", \t\r\n"
"""Characters that separate one key attribute or one action from the next."""


class Scanner:
    """A cursor over ``text``; every ``read_*`` either consumes a token or raises."""

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    # -- errors and lookahead -----------------------------------------------------------------

    def error(self, reason: str, pos: int | None = None) -> OdpParseError:
        """An OdpParseError located at ``pos`` (default: the cursor)."""
        return OdpParseError(reason, self.text, self.pos if pos is None else pos)

    def eof(self) -> bool:
        """True when the whole text has been consumed."""
        return self.pos >= len(self.text)

    def peek(self) -> str:
        """The next character, or '' at the end."""
        return self.text[self.pos : self.pos + 1]

    def at(self, literal: str) -> bool:
        """True if the text continues with ``literal``."""
        return self.text.startswith(literal, self.pos)

    def take(self, literal: str) -> bool:
        """Consume ``literal`` if it comes next."""
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str, what: str | None = None) -> None:
        """Consume ``literal`` or raise."""
        if not self.take(literal):
            raise self.error(f"expected {literal!r}" + (f" {what}" if what else ""))

    def skip_delimiters(self) -> None:
        """Skip commas and white space between attributes or actions."""
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in DELIMITERS:
            pos += 1
        self.pos = pos

    def skip_space(self) -> None:
        """Skip white space."""
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        self.pos = pos

    def _match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        m = pattern.match(self.text, self.pos)
        if m is not None:
            self.pos = m.end()
        return m

    # -- tokens ----------------------------------------------------------------------------------

    def ident(self) -> str:
        """An identifier (attribute, field or action name)."""
        m = self._match(_IDENT)
        if m is None:
            raise self.error("expected a name")
        return m.group(0)

    def peek_ident(self) -> str:
        """The identifier at the cursor without consuming it ('' if none)."""
        m = _IDENT.match(self.text, self.pos)
        return m.group(0) if m else ""

    def until(self, stop: str) -> str:
        """Everything up to (not including) the first character of ``stop``."""
        start = self.pos
        text = self.text
        while self.pos < len(text) and text[self.pos] not in stop:
            self.pos += 1
        return text[start : self.pos]

    def _range(self, value: int, bits: int, what: str, start: int) -> int:
        limit = 1 << bits
        if value < 0:
            if value < -limit:
                raise self.error(f"{what} {value} out of range", start)
            return value & (limit - 1)
        if value >= limit:
            raise self.error(f"{what} {value} does not fit in {bits} bits", start)
        return value

    def c_int(self, bits: int = 32, what: str = "number") -> int:
        """A C ``%i`` integer (decimal, 0x hex, 0 octal) that fits in ``bits`` bits."""
        start = self.pos
        m = self._match(_C_INT)
        if m is None:
            raise self.error(f"expected {what}")
        return self._range(c_value(m.group(0)), bits, what, start)

    def dec_int(self, bits: int = 32, what: str = "number") -> int:
        """A decimal integer (C ``%u``/``%d``) that fits in ``bits`` bits."""
        start = self.pos
        m = self._match(_DEC)
        if m is None:
            raise self.error(f"expected decimal {what}")
        return self._range(int(m.group(0), 10), bits, what, start)

    def hex_int(self, bits: int = 32, what: str = "number") -> int:
        """A hexadecimal integer (C ``%x``, ``0x`` optional) that fits in ``bits`` bits."""
        start = self.pos
        m = self._match(_HEX)
        if m is None:
            raise self.error(f"expected hexadecimal {what}")
        return self._range(int(m.group(1), 16), bits, what, start)

    def ipv4(self) -> int:
        """A dotted-quad IPv4 address, as an integer."""
        start = self.pos
        m = self._match(_IPV4)
        if m is None:
            raise self.error("expected an IPv4 address")
        octets = [int(g) for g in m.groups()]
        if any(o > 255 for o in octets):
            raise self.error("IPv4 address octet out of range", start)
        return int.from_bytes(bytes(octets), "big")

    def ipv6(self) -> bytes:
        """An IPv6 address in any ``inet_pton`` form, as 16 bytes."""
        start = self.pos
        m = self._match(_IPV6)
        if m is None:
            raise self.error("expected an IPv6 address")
        try:
            return socket.inet_pton(socket.AF_INET6, m.group(0))
        except OSError:
            raise self.error(f"invalid IPv6 address {m.group(0)!r}", start) from None

    def mac(self) -> bytes:
        """An Ethernet address ``xx:xx:xx:xx:xx:xx``, as 6 bytes."""
        m = self._match(_MAC)
        if m is None:
            raise self.error("expected an Ethernet address")
        return bytes(int(part, 16) for part in m.group(0).split(":"))

    def int_string(self, width: int, what: str = "value") -> bytes:
        """A number of up to ``width`` bytes: ``0x`` and any number of hex digits (right
        aligned), or a C integer; returned big-endian in ``width`` bytes."""
        start = self.pos
        if self.at("0x") or self.at("0X"):
            self.pos += 2
            m = self._match(_HEX_DIGITS)
            digits = "".join(ch for ch in (m.group(0) if m else "") if not ch.isspace())
            # trailing white space is not part of the number
            while self.pos > start + 2 and self.text[self.pos - 1].isspace():
                self.pos -= 1
            if not digits:
                raise self.error(f"expected hex digits for {what}")
            digits = digits.lstrip("0") or "0"
            if (len(digits) + 1) // 2 > width:
                raise self.error(f"{what} does not fit in {width} bytes", start)
            return int(digits, 16).to_bytes(width, "big")
        m = self._match(_C_INT)
        if m is None:
            raise self.error(f"expected {what}")
        value = c_value(m.group(0))
        if value < 0 or value >= 1 << (8 * width):
            raise self.error(f"{what} does not fit in {width} bytes", start)
        return value.to_bytes(width, "big")

    def hex_bytes(self, what: str = "hex data") -> bytes:
        """Pairs of hex digits (white space between pairs allowed), as bytes."""
        out = bytearray()
        text = self.text
        while True:
            self.skip_space()
            pair = text[self.pos : self.pos + 2]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(int(pair, 16))
                self.pos += 2
                continue
            if pair[:1] and pair[:1] in "0123456789abcdefABCDEF":
                raise self.error(f"odd number of hex digits in {what}")
            return bytes(out)


def c_value(token: str) -> int:
    """The value of a C integer literal (``0x`` hex, leading ``0`` octal, else decimal)."""
    sign = -1 if token.startswith("-") else 1
    body = token.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        return sign * int(body[2:], 16)
    if len(body) > 1 and body.startswith("0"):
        return sign * int(body, 8)
    return sign * int(body, 10)


def ipv4_to_bytes(value: int) -> bytes:
    """An IPv4 address (integer) as 4 network-order bytes."""
    return struct.pack("!I", value)
