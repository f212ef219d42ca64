"""IPv4 fragmentation of outer packets (RFC 791), for encapsulated packets larger than the
uplink's MTU when the tunnel key does not ask for DF.

The outer headers ovsdp builds have no IP options, so every fragment carries the same 20-byte
header with its own total length, offset, MF flag and checksum.  Fragment payloads are multiples
of 8 bytes except the last.  (The Windows datapath had no outer fragmentation at all: an outer
packet over the MTU left as it was.)
"""

from __future__ import annotations

import struct

from .vxlan import IP_DF, IP_MF, IP_OFFSET, IPV4_HLEN

__all__ = ["FragmentError", "fragment_ipv4"]

_HEAD = struct.Struct("!BBHHHBBH8s")  # IPv4 header without options


class FragmentError(ValueError):
    """The packet cannot be fragmented (DF set, options present, an MTU too small)."""


def fragment_ipv4(frame: bytes, mtu: int, l3: int = 14) -> list[bytes]:
    """Split the IPv4 packet in ``frame`` (its IP header at ``l3``, the link header before it is
    repeated on every fragment) into fragments whose IP length is at most ``mtu``.

    A packet that fits is returned as it is.  Raises FragmentError when it does not fit and
    has DF set, has IP options, or the MTU leaves no room for 8 bytes of payload.
    """
    vhl, tos, total, ident, frag, ttl, proto, _csum, addrs = _HEAD.unpack_from(frame, l3)
    if total <= mtu:
        return [frame]
    if frag & IP_DF:
        raise FragmentError("DF is set")
    if vhl != 0x45:
        raise FragmentError("only headers without options are fragmented")
    step = (mtu - IPV4_HLEN) & ~7
    if step < 8:
        raise FragmentError(f"MTU {mtu} leaves no room for a fragment")
    link = frame[:l3]
    payload = memoryview(frame)[l3 + IPV4_HLEN : l3 + total]
    base = frag & IP_OFFSET  # fragmenting a fragment keeps its offset and its MF
    last_mf = frag & IP_MF
    size = len(payload)
    out = []
    # the header's sum without total length, flags/offset and checksum
    fixed = (vhl << 8 | tos) + ident + (ttl << 8 | proto) + int.from_bytes(addrs, "big")
    for start in range(0, size, step):
        chunk = payload[start : start + step]
        more = IP_MF if start + step < size else last_mf
        field = more | (base + (start >> 3))
        length = IPV4_HLEN + len(chunk)
        s = (fixed + length + field) % 0xFFFF
        head = _HEAD.pack(vhl, tos, length, ident, field, ttl, proto, 0xFFFF - s if s else 0, addrs)
        out.append(link + head + chunk)
    return out
