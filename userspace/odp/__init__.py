"""OVS's ODP flow text: parse and format flow keys, masks, actions and UFIDs.

The values are those of the netlink codec (:mod:`ovsdp.netlink`): a key or mask is a dict of the
``ovs_key`` attribute space, an action list a list of ``(name, value)`` of ``ovs_action``.

* :func:`parse_key` / :func:`format_key` -- ``in_port(1),eth(...),...`` <-> ``(key, mask)``
* :func:`parse_actions` / :func:`format_actions` -- ``1,set(...),ct(commit)`` <-> actions
* :func:`key_fitness` / :func:`normalize_key` -- how OVS userspace judges a key, and the
  canonical key it writes back (``odp_flow_key_to_flow`` then ``odp_flow_key_from_flow``)
* :func:`exact_mask` / :func:`zero_mask` -- the all-exact and all-wildcard masks of a key
* :func:`parse_ufid` / :func:`format_ufid` -- ``ufid:<uuid>`` <-> 16 bytes
* every parse error is an :class:`OdpParseError` (a ValueError) saying what and where

The rules are OVS's (``lib/odp-util.c``), quirks included: with a mask of None, non-verbose
formatting leaves ``ct_mark()``/``ct_zone()``/``ct_label()`` empty; ERSPAN options print their
mask even when exact; ``userspace(pid=N)`` without a cookie carries a zeroed 48-byte cookie;
USERDATA is padded to 8 bytes.  Where OVS's own parser cannot read OVS's own output, we read it:
``ct_tuple6(...,src_port=,dst_port=)`` (as printed) besides ``tp_src/tp_dst``, ``nsh(...,ttl=)``,
``push_eth(src=,dst=)`` without ``type=``, ``hash(...)``, ``push_mpls``/``pop_mpls``,
``recirc(0x..)``; ``push_nsh`` MD2 prints with its leading zero bytes; an all-wildcarded first
``eth()`` is followed by a comma.
"""

from .actions import format_actions, parse_actions
from .errors import OdpParseError
from .flow import Fitness, key_fitness, normalize_key
from .keys import exact_mask, format_key, parse_key, zero_mask
from .ufid import format_ufid, parse_ufid

__all__ = [
    "Fitness",
    "OdpParseError",
    "exact_mask",
    "format_actions",
    "format_key",
    "format_ufid",
    "key_fitness",
    "normalize_key",
    "parse_actions",
    "parse_key",
    "parse_ufid",
    "zero_mask",
]
