"""OVS datapath actions: validation (as the kernel's flow_netlink.c), compilation and execution
(as its actions.c), sans-I/O.

* :func:`validate_actions` checks a decoded ``ovs_action`` list (``[(name, value), ...]``, see
  :mod:`ovsdp.netlink.schema`) against the flow's masked key and raises
  :class:`~ovsdp.netlink.errors.NetlinkError` with the kernel's errno.
* :func:`compile_actions` turns a validated list into an immutable :class:`ActionProgram`: a tuple
  of closures with every constant (struct formats, masks, tags) precomputed.  Programs hold no
  per-packet state, so flows with the same actions can share one.
* :meth:`ActionProgram.execute` runs it on one frame.  The frame (``bytes``) is never modified:
  the first rewriting action works on a private copy, and every output, upcall or recirculation
  gets the bytes as they are at that moment (later rewrites never show in earlier outputs).
  Metadata (:class:`~.packet_meta.PacketMeta`) is copied on write the same way.  Everything
  leaving the pipeline goes to an :class:`ActionSink` the datapath implements.

Semantics follow Linux (net/openvswitch/actions.c) where it is reasonable for a switch that keeps
VLAN tags in the frame:

* checksums are kept right after every header change, incrementally (RFC 1624): the IPv4 header
  checksum; the TCP/UDP checksums (and ICMPv6's) when addresses or ports change; a zero UDP
  checksum stays zero; L4 checksums of non-first fragments are never touched (the L4 header is
  not there); SCTP's CRC32c is recomputed with any error carried through (not for fragments);
* ``trunc(N)`` limits the *next* output or userspace action to N bytes (never below the 14-byte
  Ethernet header); the upcall also reports the original length;
* ``sample``, ``clone`` and ``check_pkt_len`` run their actions on a copy: the packet itself goes
  on unchanged; ``dec_ttl`` runs its actions on the packet itself when the TTL / hop limit is
  already <= 1 (it would reach 0), and the packet goes no further;
* ``push_vlan`` inserts the new tag outermost, without the 0x1000 "present" bit; ``pop_vlan``
  removes the outermost tag (a no-op without one); ``push_mpls`` inserts the given label stack
  entry verbatim (the kernel computes neither TTL nor bottom-of-stack: ovs-vswitchd does);
  ``pop_mpls`` is a no-op on a packet that is not MPLS;
* a rewrite whose header is missing or truncated (``set(ipv4)`` on a 30-byte frame, ``set(tcp)``
  on a UDP packet) drops the packet, as the kernel drops a packet whose header cannot be made
  writable; execute() then returns EINVAL instead of 0.  Port rewrites of later fragments are
  skipped silently (they have no ports).

Not implemented (EOPNOTSUPP at validation): ct (and setting ct_mark / ct_labels), meter,
push_eth / pop_eth, push_nsh / pop_nsh (and setting nsh), add_mpls, psample.  ``ct_clear`` is
accepted and does nothing: no packet is ever tracked.
"""

from __future__ import annotations

import copy
import errno
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..netlink.codec import CODECS
from ..netlink.errors import NetlinkError, einval
from .checksum import sctp_checksum
from .packet_headers import (
    ETH_P_IP,
    ETH_P_IPV6,
    FRAG_FIRST,
    FRAG_LATER,
    Headers,
    flow_hash,
    jhash_1word,
    parse_headers,
)
from .packet_meta import PacketMeta

__all__ = [
    "DP_MAX_PORTS",
    "MAX_ACTIONS_SIZE",
    "MAX_DEPTH",
    "UNSUPPORTED_ACTIONS",
    "ActionProgram",
    "ActionSink",
    "PacketMeta",
    "compile_actions",
    "validate_actions",
]

MAX_DEPTH = 16
"""Deepest nesting of sample / clone / check_pkt_len / dec_ttl lists (OVS_COPY_ACTIONS_MAX_DEPTH):
a list at a deeper level is refused with EOVERFLOW."""
MAX_ACTIONS_SIZE = 32 * 1024
"""Largest encoded action list (bytes) accepted; larger ones get EMSGSIZE."""
DP_MAX_PORTS = 65535
"""Output port numbers must be below this."""

ETH_HLEN = 14
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_TEB = 0x6558
VLAN_CFI_MASK = 0x1000

_VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
_MPLS_TYPES = (ETH_P_MPLS_UC, ETH_P_MPLS_MC)
_IP_TYPES = (ETH_P_IP, ETH_P_IPV6)
_PUSH_MPLS_FROM = (ETH_P_IP, ETH_P_IPV6, ETH_P_ARP, ETH_P_RARP, ETH_P_MPLS_UC, ETH_P_MPLS_MC)

_CT_REASON = (
    "ct and meter are parsed and answered with EOPNOTSUPP until they are implemented, "
    "so dpif-netlink's probes see a clear no"
)
UNSUPPORTED_ACTIONS: dict[str, str] = {
    "ct": _CT_REASON,
    "meter": _CT_REASON,
    "push_eth": "push_eth/pop_eth (L3 packets) are not implemented in ovsdp",
    "pop_eth": "push_eth/pop_eth (L3 packets) are not implemented in ovsdp",
    "push_nsh": "NSH (push_nsh/pop_nsh) is not implemented in ovsdp",
    "pop_nsh": "NSH (push_nsh/pop_nsh) is not implemented in ovsdp",
    "add_mpls": "add_mpls is not implemented in ovsdp",
    "psample": "psample is not implemented in ovsdp (no psample sink)",
}
"""Actions ovsdp parses but refuses with EOPNOTSUPP, with the reason sent back."""
_USERSPACE_DP_ONLY = frozenset(("tunnel_push", "tunnel_pop", "lb_output"))

Action = tuple[Any, Any]
"""One decoded action: ``(name, value)``, or ``(number, raw bytes)`` for an unknown type."""


class ActionSink(Protocol):
    """What the datapath provides to executing actions.

    ``frame`` arguments are ``bytes`` snapshots the sink may keep; ``meta`` objects are never
    modified by the pipeline after they are passed (sinks must not modify them either).
    """

    def output(self, port_no: int, frame: bytes, meta: PacketMeta) -> None:
        """Send ``frame`` out of port ``port_no`` (``meta.egress_tunnel`` holds the tunnel key
        set by ``set(tunnel(...))`` for tunnel ports)."""

    def userspace(
        self,
        frame: bytes,
        meta: PacketMeta,
        attrs: Mapping[Any, Any],
        actions: list[Action] | None,
        orig_len: int | None,
    ) -> None:
        """An ACTION upcall.  ``attrs`` is the userspace action's nest (``pid`` -- possibly
        0xFFFFFFFF for per-CPU dispatch --, ``userdata``, ``egress_tun_port``: resolving the
        egress tunnel key of that port is the sink's job); ``actions`` is the action list the
        userspace action sits in when it had the ACTIONS flag, else None; ``orig_len`` is the
        frame's length before a ``trunc`` (OVS_PACKET_ATTR_LEN), None when not truncated."""

    def recirculate(self, frame: bytes, meta: PacketMeta) -> None:
        """Run the packet through the flow table again (``meta.recirc_id`` is set)."""

    def random_u32(self) -> int:
        """A uniformly random 32-bit integer, for ``sample`` (tests pass a deterministic one)."""


# =================================================================================================
# Validation
# =================================================================================================


class _Facts:
    """What validation needs from the flow's masked key."""

    __slots__ = ("eth_type", "ethernet", "frag", "mpls_count", "proto", "vlan_tci")

    def __init__(self) -> None:
        self.ethernet = True
        self.eth_type = 0
        self.vlan_tci = 0
        self.proto = 0
        self.frag = 0
        self.mpls_count = 0


def _masked_field(value: Any, mask: Any, field: str, exact: bool) -> int:
    v = int(getattr(value, field))
    if exact:
        return v
    if mask is None:
        return 0
    return v & int(getattr(mask, field))


def _flow_facts(key: Mapping[Any, Any], mask: Mapping[Any, Any] | None) -> _Facts:
    if not isinstance(key, Mapping):
        raise einval("the flow key must be a dict of key attributes")
    if mask is not None and not isinstance(mask, Mapping):
        raise einval("the flow mask must be a dict of key attributes")
    exact = mask is None
    f = _Facts()
    f.ethernet = "ethernet" in key
    vlan_mask = 0xFFFF if mask is None else int(mask.get("vlan", 0xFFFF))
    f.vlan_tci = int(key.get("vlan", 0)) & vlan_mask
    cur: Mapping[Any, Any] = key
    cur_mask: Mapping[Any, Any] | None = mask
    eth_type = int(cur.get("ethertype", 0))
    for _ in range(8):  # VLAN nesting: descend into ENCAP
        inner = cur.get("encap")
        if not isinstance(inner, Mapping):
            break
        cur = inner
        if cur_mask is not None:
            nested = cur_mask.get("encap")
            cur_mask = nested if isinstance(nested, Mapping) else {}
        eth_type = int(cur.get("ethertype", 0))
    f.eth_type = eth_type
    ip_name = "ipv4" if eth_type == ETH_P_IP else "ipv6" if eth_type == ETH_P_IPV6 else None
    if ip_name is not None and cur.get(ip_name) is not None:
        ip = cur[ip_name]
        ip_mask = None if cur_mask is None else cur_mask.get(ip_name)
        f.proto = _masked_field(ip, ip_mask, "proto", exact)
        f.frag = _masked_field(ip, ip_mask, "frag", exact)
    if eth_type in _MPLS_TYPES:
        lses = cur.get("mpls") or ()
        count = len(lses)
        if cur_mask is not None:
            count = min(count, len(cur_mask.get("mpls") or ()))
        f.mpls_count = count
    return f


_VALIDATED: dict[tuple[Any, ...], None] = {}
"""Successful validations, by (key facts, limits, encoded actions): validation depends on
nothing else, and a handler installs the same few action lists on flows of every shape."""
_VALIDATED_MAX = 4096


def validate_actions(
    actions: Sequence[Action],
    key: Mapping[Any, Any],
    mask: Mapping[Any, Any] | None = None,
    *,
    max_depth: int = MAX_DEPTH,
    max_size: int | None = MAX_ACTIONS_SIZE,
    encoded: bytes | None = None,
) -> None:
    """Check an action list as the kernel does before installing a flow or executing a packet.

    ``key`` is the flow key (``ovs_key`` dict); ``mask`` its mask (None: exact match -- e.g. the
    key of an EXECUTE'd packet).  Actions are checked against the masked key, tracking the
    current ethertype, outer VLAN and MPLS label count through push/pop actions (nested lists
    get a copy of that state).  Raises NetlinkError: EINVAL for invalid actions, EOVERFLOW for
    nesting deeper than ``max_depth``, EMSGSIZE when the encoded list exceeds ``max_size``
    bytes, EOPNOTSUPP for actions ovsdp does not implement.  A caller that has the actions'
    encoding passes it as ``encoded``: a list already found valid for the same key facts is not
    checked again.
    """
    if not isinstance(actions, Sequence) or isinstance(actions, str | bytes):
        raise einval("actions must be a list of (name, value) pairs")
    try:
        facts = _flow_facts(key, mask)
        memo = None
        if encoded is not None:
            memo = (
                facts.ethernet,
                facts.eth_type,
                facts.vlan_tci,
                facts.proto,
                facts.frag,
                facts.mpls_count,
                max_depth,
                max_size,
                encoded,
            )
            if memo in _VALIDATED:
                return
        _Validator(facts, max_depth).check_list(
            actions, facts.eth_type, facts.vlan_tci, facts.mpls_count, 0, "actions"
        )
        if max_size is not None:
            size = (
                len(encoded) if encoded is not None else len(CODECS["ovs_action"].encode(actions))
            )
            if size > max_size:
                raise NetlinkError(
                    errno.EMSGSIZE,
                    f"actions of {size} bytes exceed the datapath's limit of {max_size} bytes",
                )
        if memo is not None:
            if len(_VALIDATED) >= _VALIDATED_MAX:
                _VALIDATED.clear()
            _VALIDATED[memo] = None
    except NetlinkError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise einval(f"malformed action list: {exc}") from None


def _bits_outside(value: Any, mask: Any) -> bool:
    """Whether ``value`` has a bit set where ``mask`` has none (SET_MASKED's rule)."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return bool(value & ~int(mask))
    if isinstance(value, bytes | bytearray):
        if len(value) != len(mask):
            raise ValueError("value and mask differ in length")
        return any(v & ~m for v, m in zip(value, mask, strict=True))
    if isinstance(value, tuple):
        if len(value) != len(mask):
            raise ValueError("value and mask differ in length")
        return any(_bits_outside(v, m) for v, m in zip(value, mask, strict=True))
    raise TypeError(f"unexpected masked value {value!r}")


_NOT_SETTABLE = frozenset(
    (
        "encap",
        "in_port",
        "vlan",
        "ethertype",
        "icmp",
        "icmpv6",
        "arp",
        "nd",
        "tcp_flags",
        "dp_hash",
        "recirc_id",
        "ct_state",
        "ct_zone",
        "ct_orig_tuple_ipv4",
        "ct_orig_tuple_ipv6",
        "packet_type",
        "nd_extensions",
        "tunnel_info",
        "ipv6_exthdrs",
    )
)
_L4_KEYS = {"tcp": 6, "udp": 17, "sctp": 132}
_TUNNEL_OPTS = ("geneve_opts", "vxlan_opts", "erspan_opts")
_GENEVE_OPTS_MAX = 252  # IP_TUNNEL_OPTS_MAX (255) rounded down to whole 4-byte words


class _Validator:
    def __init__(self, facts: _Facts, max_depth: int) -> None:
        self.f = facts
        self.max_depth = max_depth

    def check_list(
        self, actions: Any, eth_type: int, vlan_tci: int, mpls: int, depth: int, where: str
    ) -> None:
        if depth > self.max_depth:
            raise NetlinkError(
                errno.EOVERFLOW,
                f"{where}: actions nested {depth} deep (sample/clone/check_pkt_len/dec_ttl); "
                f"the limit is {self.max_depth}",
            )
        if not isinstance(actions, Sequence) or isinstance(actions, str | bytes):
            raise einval(f"{where}: an action list must be a list")
        last = len(actions) - 1
        for i, item in enumerate(actions):
            name, value = item
            here = f"{where}[{i}]"
            if isinstance(name, int):
                what = "UNSPEC (0)" if name == 0 else f"unknown action type {name}"
                raise einval(f"{here}: {what} is not a valid action")
            if name in UNSUPPORTED_ACTIONS:
                raise NetlinkError(errno.EOPNOTSUPP, f"{here} {name}: {UNSUPPORTED_ACTIONS[name]}")
            if name in _USERSPACE_DP_ONLY:
                raise einval(
                    f"{here} {name}: only OVS's userspace datapath knows this action; "
                    "the kernel interface does not have it"
                )
            here = f"{here} {name}"
            if name == "output":
                if not 0 <= value < DP_MAX_PORTS:
                    raise einval(f"{here}: port {value} is not below {DP_MAX_PORTS}")
            elif name == "userspace":
                if not isinstance(value, Mapping) or not value.get("pid"):
                    raise einval(f"{here}: needs a non-zero pid")
            elif name in ("set", "set_masked"):
                self.check_set(value, name == "set_masked", eth_type, here)
            elif name == "push_vlan":
                if not self.f.ethernet:
                    raise einval(f"{here}: the flow has no Ethernet header")
                if value.tpid not in _VLAN_TPIDS:
                    raise einval(f"{here}: TPID {value.tpid:#06x} is neither 0x8100 nor 0x88a8")
                if not value.tci & VLAN_CFI_MASK:
                    raise einval(f"{here}: the TCI needs the 0x1000 (tag present) bit")
                vlan_tci = value.tci
            elif name == "pop_vlan":
                if not self.f.ethernet:
                    raise einval(f"{here}: the flow has no Ethernet header")
                vlan_tci = 0
            elif name == "sample":
                if not isinstance(value, Mapping) or any(isinstance(k, int) for k in value):
                    raise einval(f"{here}: unknown sample attribute")
                if "probability" not in value or "actions" not in value:
                    raise einval(f"{here}: needs both a probability and actions")
                self.check_list(
                    value["actions"], eth_type, vlan_tci, mpls, depth + 1, f"{here}.actions"
                )
            elif name == "clone":
                self.check_list(value, eth_type, vlan_tci, mpls, depth + 1, here)
            elif name == "check_pkt_len":
                if not isinstance(value, Mapping) or any(isinstance(k, int) for k in value):
                    raise einval(f"{here}: unknown check_pkt_len attribute")
                if not value.get("pkt_len"):
                    raise einval(f"{here}: needs a non-zero pkt_len")
                for part in ("actions_if_less_equal", "actions_if_greater"):
                    if part not in value:
                        raise einval(
                            f"{here}: needs pkt_len, actions_if_greater and actions_if_less_equal"
                        )
                for part in ("actions_if_less_equal", "actions_if_greater"):
                    self.check_list(
                        value[part], eth_type, vlan_tci, mpls, depth + 1, f"{here}.{part}"
                    )
            elif name == "dec_ttl":
                if not isinstance(value, Mapping) or "action" not in value:
                    raise einval(f"{here}: needs its action attribute")
                self.check_list(
                    value["action"], eth_type, vlan_tci, mpls, depth + 1, f"{here}.action"
                )
            elif name == "recirc":
                pass
            elif name == "hash":
                if value.alg not in (0, 1):
                    raise einval(
                        f"{here}: hash algorithm {value.alg} is neither 0 (l4) nor 1 (sym_l4)"
                    )
            elif name == "push_mpls":
                if value.ethertype not in _MPLS_TYPES:
                    raise einval(f"{here}: ethertype {value.ethertype:#06x} is not MPLS")
                if vlan_tci & VLAN_CFI_MASK:
                    raise einval(f"{here}: not allowed on a VLAN-tagged packet")
                if eth_type not in _PUSH_MPLS_FROM:
                    raise einval(
                        f"{here}: not allowed on ethertype {eth_type:#06x} (only IPv4, "
                        "IPv6, ARP, RARP, MPLS)"
                    )
                eth_type = value.ethertype
                mpls += 1
            elif name == "pop_mpls":
                if vlan_tci & VLAN_CFI_MASK:
                    raise einval(f"{here}: not allowed on a VLAN-tagged packet")
                if eth_type not in _MPLS_TYPES:
                    raise einval(f"{here}: the packet is not MPLS here (ethertype {eth_type:#06x})")
                if value == ETH_P_TEB and self.f.ethernet:
                    raise einval(f"{here}: ethertype 0x6558 needs a packet without Ethernet")
                mpls -= 1
                eth_type = value if value in _MPLS_TYPES and mpls else 0
            elif name == "trunc":
                if value < ETH_HLEN:
                    raise einval(f"{here}: max_len {value} is below {ETH_HLEN}")
            elif name == "ct_clear":
                pass
            elif name == "drop":
                if i != last:
                    raise einval(f"{here}: drop must be the last action of its list")
            else:
                raise einval(f"{here}: unknown action")

    def check_set(self, value: Any, masked: bool, eth_type: int, here: str) -> None:
        f = self.f
        if not isinstance(value, Mapping) or len(value) != 1:
            raise einval(f"{here}: needs exactly one key attribute")
        ((kname, kval),) = value.items()
        if isinstance(kname, int):
            raise einval(f"{here}: unknown key attribute {kname}")
        here = f"{here}({kname})"
        if kname == "tunnel":
            if masked:
                raise einval(f"{here}: a masked set of the tunnel key is not supported")
            self.check_tunnel(kval, here)
            return
        if masked:
            kval, kmask = kval
            if _bits_outside(kval, kmask):
                raise einval(f"{here}: the value has bits set outside its mask")
        else:
            kmask = None
        if kname in ("priority", "skb_mark"):
            return
        if kname in ("ct_mark", "ct_labels"):
            raise NetlinkError(errno.EOPNOTSUPP, f"{here}: {_CT_REASON}")
        if kname == "ethernet":
            if not f.ethernet:
                raise einval(f"{here}: the flow has no Ethernet header")
        elif kname == "ipv4":
            if eth_type != ETH_P_IP:
                raise einval(f"{here}: the packet is not IPv4 here (ethertype {eth_type:#06x})")
            self._check_ip_rewrite(kval, kmask, here)
        elif kname == "ipv6":
            if eth_type != ETH_P_IPV6:
                raise einval(f"{here}: the packet is not IPv6 here (ethertype {eth_type:#06x})")
            self._check_ip_rewrite(kval, kmask, here)
            if kmask is not None and kmask.label & 0xFFF00000:
                raise einval(f"{here}: the flow label mask has bits beyond 20")
            if kval.label & 0xFFF00000:
                raise einval(f"{here}: the flow label has bits beyond 20")
        elif kname in _L4_KEYS:
            if eth_type not in _IP_TYPES or f.proto != _L4_KEYS[kname]:
                raise einval(f"{here}: the flow does not match IP protocol {_L4_KEYS[kname]}")
        elif kname == "mpls":
            if eth_type not in _MPLS_TYPES:
                raise einval(f"{here}: the packet is not MPLS here (ethertype {eth_type:#06x})")
            if not kval:
                raise einval(f"{here}: needs a label stack entry")
        elif kname == "nsh":
            raise NetlinkError(errno.EOPNOTSUPP, f"{here}: NSH is not implemented in ovsdp")
        elif kname in _NOT_SETTABLE:
            raise einval(f"{here}: this key attribute cannot be set")
        else:
            raise einval(f"{here}: unknown key attribute")

    def _check_ip_rewrite(self, kval: Any, kmask: Any, here: str) -> None:
        if kmask is not None:
            if kmask.proto or kmask.frag:
                raise einval(f"{here}: proto and frag cannot be rewritten")
        elif kval.proto != self.f.proto or kval.frag != self.f.frag:
            raise einval(
                f"{here}: proto {kval.proto} / frag {kval.frag} differ from the flow's "
                f"{self.f.proto} / {self.f.frag} (a set may not change them)"
            )

    @staticmethod
    def check_tunnel(tun: Any, here: str) -> None:
        if not isinstance(tun, Mapping):
            raise einval(f"{here}: the tunnel key must be a nest of tunnel attributes")
        unknown = [k for k in tun if isinstance(k, int)]
        if unknown:
            raise einval(f"{here}: unknown tunnel attribute {unknown[0]}")
        v4 = "ipv4_src" in tun or "ipv4_dst" in tun
        v6 = "ipv6_src" in tun or "ipv6_dst" in tun
        if v4 and v6:
            raise einval(f"{here}: mixes IPv4 and IPv6 addresses")
        if not tun.get("ipv4_dst") and not any(tun.get("ipv6_dst") or b""):
            raise einval(f"{here}: needs a non-zero destination address")
        if "ttl" not in tun:
            raise einval(f"{here}: needs a TTL")
        if sum(1 for k in _TUNNEL_OPTS if k in tun) > 1:
            raise einval(f"{here}: at most one of geneve, vxlan and erspan options")
        opts = tun.get("geneve_opts")
        if opts is not None:
            if len(opts) % 4 or len(opts) > _GENEVE_OPTS_MAX:
                raise einval(
                    f"{here}: Geneve options of {len(opts)} bytes (whole words, at most "
                    f"{_GENEVE_OPTS_MAX})"
                )
            off = 0
            while off < len(opts):
                if len(opts) - off < 4:
                    raise einval(f"{here}: truncated Geneve option header")
                off += 4 + (opts[off + 3] & 0x1F) * 4
                if off > len(opts):
                    raise einval(f"{here}: a Geneve option runs past the options")
        vxlan = tun.get("vxlan_opts")
        if vxlan is not None and (
            not isinstance(vxlan, Mapping) or any(isinstance(k, int) for k in vxlan)
        ):
            raise einval(f"{here}: unknown VXLAN extension")


# =================================================================================================
# Execution
# =================================================================================================


class _State:
    """One packet in flight: the frame, whether it is a private bytearray, the metadata and
    whether it is private, the pending trunc length, the sink, the cached header offsets."""

    __slots__ = ("buf", "cut", "err", "hdr", "meta", "meta_own", "own", "sink")

    def __init__(self, frame: bytes, meta: PacketMeta, sink: ActionSink) -> None:
        self.buf: bytes | bytearray = frame if type(frame) is bytes else bytes(frame)
        self.own = False
        self.meta = meta
        self.meta_own = False
        self.cut = -1
        self.sink = sink
        self.hdr: Headers | None = None
        self.err = 0

    def writable(self) -> bytearray:
        buf = self.buf
        if not self.own:
            buf = self.buf = bytearray(buf)
            self.own = True
        return buf  # type: ignore[return-value]

    def frozen(self) -> bytes:
        if self.own:
            self.buf = bytes(self.buf)
            self.own = False
        return self.buf  # type: ignore[return-value]

    def wmeta(self) -> PacketMeta:
        if not self.meta_own:
            self.meta = self.meta.copy()
            self.meta_own = True
        return self.meta

    def headers(self) -> Headers:
        h = self.hdr
        if h is None:
            h = self.hdr = parse_headers(self.buf)
        return h

    def fork(self) -> _State:
        """A copy for nested actions: both sides copy before writing from now on."""
        child = _State.__new__(_State)
        child.buf = self.frozen()
        child.own = False
        child.meta = self.meta
        child.meta_own = self.meta_own = False
        child.cut = self.cut
        child.sink = self.sink
        child.hdr = self.hdr
        child.err = 0
        return child

    def fail(self) -> bool:
        self.err = errno.EINVAL
        return False


Op = Callable[[_State], bool]
"""A compiled action: returns False when the packet goes no further."""


def _run(ops: tuple[Op, ...], st: _State) -> None:
    for op in ops:
        if not op(st):
            return


class ActionProgram:
    """A compiled, immutable action list.

    * ``single_output``: the port number when the whole list is one output (the datapath may
      forward such packets itself, without calling :meth:`execute`), else None;
    * ``drops``: nothing can ever leave (an empty list, only ``drop``, or actions none of which
      outputs, upcalls or recirculates): the datapath may drop without calling execute();
    * ``actions``: the action list it was compiled from.
    """

    __slots__ = ("_ops", "actions", "drops", "single_output")

    _ops: tuple[Op, ...]
    actions: tuple[Action, ...]
    drops: bool
    single_output: int | None

    def __init__(
        self,
        ops: tuple[Op, ...],
        actions: tuple[Action, ...],
        drops: bool,
        single_output: int | None,
    ) -> None:
        object.__setattr__(self, "_ops", ops)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "drops", drops)
        object.__setattr__(self, "single_output", single_output)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ActionProgram is immutable")

    def __repr__(self) -> str:
        return f"<ActionProgram {len(self._ops)} ops, {list(self.actions)!r}>"

    def execute(self, frame: bytes, meta: PacketMeta, sink: ActionSink) -> int:
        """Run the actions on one packet.  ``frame`` and ``meta`` are not modified.

        Returns 0, or EINVAL when an action could not apply (a header it rewrites is missing or
        truncated) and the packet was dropped there; what was already output stays output.
        """
        st = _State(frame, meta, sink)
        for op in self._ops:
            if not op(st):
                break
        return st.err


def compile_actions(actions: Sequence[Action]) -> ActionProgram:
    """Compile a validated action list (see :func:`validate_actions`) into an ActionProgram.

    Raises NetlinkError (EINVAL / EOPNOTSUPP) for actions that cannot be compiled; it does not
    repeat validation's checks against the flow key.
    """
    try:
        ops, emits = _compile_list(actions)
    except NetlinkError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise einval(f"malformed action list: {exc}") from None
    single = None
    if len(actions) == 1 and actions[0][0] == "output":
        single = int(actions[0][1])
    return ActionProgram(ops, tuple(actions), not emits, single)


def _compile_list(actions: Sequence[Action]) -> tuple[tuple[Op, ...], bool]:
    """The ops of one list, and whether anything can leave the pipeline through it."""
    ops: list[Op] = []
    emits = False
    for name, value in actions:
        if name == "output":
            ops.append(_op_output(int(value)))
            emits = True
        elif name == "userspace":
            attrs = dict(value)
            listed = copy.deepcopy(list(actions)) if attrs.get("actions") else None
            ops.append(_op_userspace(attrs, listed))
            emits = True
        elif name == "set":
            ops.append(_compile_set(value, False))
        elif name == "set_masked":
            ops.append(_compile_set(value, True))
        elif name == "push_vlan":
            ops.append(_op_push_vlan(value.tpid, value.tci))
        elif name == "pop_vlan":
            ops.append(_op_pop_vlan)
        elif name == "sample":
            nested, sub = _compile_list(value["actions"])
            ops.append(_op_sample(int(value["probability"]), nested))
            emits = emits or sub
        elif name == "clone":
            nested, sub = _compile_list(value)
            ops.append(_op_clone(nested))
            emits = emits or sub
        elif name == "check_pkt_len":
            greater, sub_gt = _compile_list(value["actions_if_greater"])
            less_eq, sub_le = _compile_list(value["actions_if_less_equal"])
            ops.append(_op_check_pkt_len(int(value["pkt_len"]), greater, less_eq))
            emits = emits or sub_gt or sub_le
        elif name == "dec_ttl":
            nested, sub = _compile_list(value["action"])
            ops.append(_op_dec_ttl(nested))
            emits = emits or sub
        elif name == "recirc":
            ops.append(_op_recirc(int(value)))
            emits = True
        elif name == "hash":
            ops.append(_op_hash(int(value.alg), int(value.basis)))
        elif name == "push_mpls":
            ops.append(_op_push_mpls(int(value.lse), int(value.ethertype)))
        elif name == "pop_mpls":
            ops.append(_op_pop_mpls(int(value)))
        elif name == "trunc":
            ops.append(_op_trunc(int(value)))
        elif name == "ct_clear":
            pass  # nothing is ever tracked
        elif name == "drop":
            ops.append(_op_drop)
            break
        elif name in UNSUPPORTED_ACTIONS:
            raise NetlinkError(errno.EOPNOTSUPP, f"{name}: {UNSUPPORTED_ACTIONS[name]}")
        else:
            raise einval(f"action {name!r} cannot be executed")
    return tuple(ops), emits


# --- output, upcall, recirculation ---


def _op_output(port: int) -> Op:
    def output(st: _State) -> bool:
        buf = st.buf
        if st.own:
            buf = st.buf = bytes(buf)
            st.own = False
        assert type(buf) is bytes
        cut = st.cut
        if cut >= 0:
            st.cut = -1
            if len(buf) > cut:
                buf = buf[: cut if cut > ETH_HLEN else ETH_HLEN]
        st.meta_own = False
        st.sink.output(port, buf, st.meta)
        return True

    return output


def _op_userspace(attrs: dict[Any, Any], listed: list[Action] | None) -> Op:
    def userspace(st: _State) -> bool:
        buf = st.frozen()
        orig_len = None
        cut = st.cut
        if cut >= 0:
            st.cut = -1
            if len(buf) > cut:
                orig_len = len(buf)
                buf = buf[:cut]
        st.meta_own = False
        st.sink.userspace(buf, st.meta, attrs, listed, orig_len)
        return True

    return userspace


def _op_recirc(recirc_id: int) -> Op:
    def recirc(st: _State) -> bool:
        meta = st.meta.copy()
        meta.recirc_id = recirc_id
        st.sink.recirculate(st.frozen(), meta)
        return True

    return recirc


def _op_trunc(max_len: int) -> Op:
    def trunc(st: _State) -> bool:
        st.cut = max_len
        return True

    return trunc


def _op_drop(st: _State) -> bool:
    return False


# --- nested lists ---


def _op_sample(probability: int, nested: tuple[Op, ...]) -> Op:
    def sample(st: _State) -> bool:
        if probability != 0xFFFFFFFF and (not probability or st.sink.random_u32() > probability):
            return True
        _run(nested, st.fork())
        return True

    return sample


def _op_clone(nested: tuple[Op, ...]) -> Op:
    def clone(st: _State) -> bool:
        _run(nested, st.fork())
        return True

    return clone


def _op_check_pkt_len(pkt_len: int, greater: tuple[Op, ...], less_eq: tuple[Op, ...]) -> Op:
    def check_pkt_len(st: _State) -> bool:
        mru = st.meta.mru
        length = mru + st.headers().l3 if mru else len(st.buf)
        _run(less_eq if length <= pkt_len else greater, st.fork())
        return True

    return check_pkt_len


def _op_dec_ttl(nested: tuple[Op, ...]) -> Op:
    def dec_ttl(st: _State) -> bool:
        h = st.headers()
        l3 = h.l3
        if h.eth_type == ETH_P_IP:
            if l3 + 20 > len(st.buf):
                return st.fail()
            ttl = st.buf[l3 + 8]
            if ttl <= 1:
                _run(nested, st)
                return False
            b = st.writable()
            b[l3 + 8] = ttl - 1
            check = ((b[l3 + 10] << 8 | b[l3 + 11]) + 0x100) % 0xFFFF  # word (ttl, proto) -256
            b[l3 + 10] = check >> 8
            b[l3 + 11] = check & 0xFF
        elif h.eth_type == ETH_P_IPV6:
            if l3 + 40 > len(st.buf):
                return st.fail()
            hlim = st.buf[l3 + 7]
            if hlim <= 1:
                _run(nested, st)
                return False
            st.writable()[l3 + 7] = hlim - 1
        return True

    return dec_ttl


# --- metadata ---


def _op_hash(alg: int, basis: int) -> Op:
    def hash_action(st: _State) -> bool:
        if alg == 0:
            base = st.meta.hash
            if not base:
                base = flow_hash(st.buf, st.headers())
                st.wmeta().hash = base
        else:
            base = flow_hash(st.buf, st.headers(), True)
        st.wmeta().dp_hash = jhash_1word(base, basis) or 1
        return True

    return hash_action


def _op_set_meta(field: str, value: int, mask: int) -> Op:
    value &= mask

    def set_meta(st: _State) -> bool:
        meta = st.wmeta()
        setattr(meta, field, (getattr(meta, field) & ~mask) | value)
        return True

    return set_meta


def _op_set_tunnel(tunnel: dict[str, Any]) -> Op:
    def set_tunnel(st: _State) -> bool:
        st.wmeta().egress_tunnel = tunnel
        return True

    return set_tunnel


# --- header rewrites ---

_U32 = struct.Struct(">I")
_pack_u32 = _U32.pack_into
_unpack_u32 = _U32.unpack_from
_FULL48 = (1 << 48) - 1
_FULL128 = (1 << 128) - 1


def _masked(value: Any, mask: Any) -> tuple[int, int]:
    """(value & mask, mask) as integers (bytes are read big-endian)."""
    if isinstance(value, bytes | bytearray):
        v, m = int.from_bytes(value, "big"), int.from_bytes(mask, "big")
    else:
        v, m = int(value), int(mask)
    return v & m, m


def _compile_set(value: Mapping[Any, Any], masked: bool) -> Op:
    ((kname, kval),) = value.items()
    if kname == "tunnel":
        if masked:
            raise einval("a masked set of the tunnel key is not supported")
        return _op_set_tunnel(copy.deepcopy(dict(kval)))
    if masked:
        kval, kmask = kval
    else:
        kmask = _FULL_MASKS.get(kname)
    if kname == "priority":
        return _op_set_meta("priority", *_masked(kval, kmask))
    if kname == "skb_mark":
        return _op_set_meta("skb_mark", *_masked(kval, kmask))
    if kname == "ethernet":
        src = _masked(kval.src, kmask.src)
        dst = _masked(kval.dst, kmask.dst)
        return _op_set_ethernet(src, dst)
    if kname == "ipv4":
        return _op_set_ipv4(
            _masked(kval.src, kmask.src),
            _masked(kval.dst, kmask.dst),
            _masked(kval.tos, kmask.tos),
            _masked(kval.ttl, kmask.ttl),
        )
    if kname == "ipv6":
        return _op_set_ipv6(
            _masked(kval.src, kmask.src),
            _masked(kval.dst, kmask.dst),
            _masked(kval.label, kmask.label & 0xFFFFF),
            _masked(kval.tclass, kmask.tclass),
            _masked(kval.hlimit, kmask.hlimit),
        )
    if kname in _L4_KEYS:
        return _op_set_ports(
            _L4_KEYS[kname], _masked(kval.src, kmask.src), _masked(kval.dst, kmask.dst)
        )
    if kname == "mpls":
        return _op_set_mpls(*_masked(kval[0], kmask[0]))
    if kname in ("ct_mark", "ct_labels"):
        raise NetlinkError(errno.EOPNOTSUPP, f"set({kname}): {_CT_REASON}")
    if kname == "nsh":
        raise NetlinkError(errno.EOPNOTSUPP, "set(nsh): NSH is not implemented in ovsdp")
    raise einval(f"key attribute {kname!r} cannot be set")


def _full_masks() -> dict[str, Any]:
    from ..netlink.structs import OvsKeyEthernet, OvsKeyIpv4, OvsKeyIpv6, OvsKeyPorts

    ones6, ones16 = b"\xff" * 6, b"\xff" * 16
    return {
        "priority": 0xFFFFFFFF,
        "skb_mark": 0xFFFFFFFF,
        "ethernet": OvsKeyEthernet(ones6, ones6),
        "ipv4": OvsKeyIpv4(0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 0xFF, 0xFF, 0xFF),
        "ipv6": OvsKeyIpv6(ones16, ones16, 0x000FFFFF, 0xFF, 0xFF, 0xFF, 0xFF),
        "tcp": OvsKeyPorts(0xFFFF, 0xFFFF),
        "udp": OvsKeyPorts(0xFFFF, 0xFFFF),
        "sctp": OvsKeyPorts(0xFFFF, 0xFFFF),
        "mpls": (0xFFFFFFFF,),
    }


_FULL_MASKS = _full_masks()


def _op_set_ethernet(src: tuple[int, int], dst: tuple[int, int]) -> Op:
    src_v, src_m = src
    dst_v, dst_m = dst
    src_bytes, dst_bytes = src_v.to_bytes(6, "big"), dst_v.to_bytes(6, "big")

    def set_ethernet(st: _State) -> bool:
        if len(st.buf) < ETH_HLEN:
            return st.fail()
        b = st.writable()
        if dst_m == _FULL48:
            b[0:6] = dst_bytes
        elif dst_m:
            old = int.from_bytes(b[0:6], "big")
            b[0:6] = ((old & ~dst_m) | dst_v).to_bytes(6, "big")
        if src_m == _FULL48:
            b[6:12] = src_bytes
        elif src_m:
            old = int.from_bytes(b[6:12], "big")
            b[6:12] = ((old & ~src_m) | src_v).to_bytes(6, "big")
        return True

    return set_ethernet


def _pseudo_header_changed(b: bytearray, h: Headers, delta: int, icmpv6: bool) -> None:
    """Fix the L4 checksum after pseudo-header addresses changed by ``delta`` (old - new, as
    big-endian integers)."""
    l4 = h.l4
    if l4 < 0:
        return
    proto = h.proto
    if proto == 6:
        if l4 + 20 > len(b):
            return
        off = l4 + 16
    elif proto == 17:
        if l4 + 8 > len(b):
            return
        off = l4 + 6
        check = b[off] << 8 | b[off + 1]
        if not check:
            return  # no checksum: stays so
        check = (check + delta) % 0xFFFF or 0xFFFF
        b[off] = check >> 8
        b[off + 1] = check & 0xFF
        return
    elif proto == 58 and icmpv6:
        if l4 + 8 > len(b):
            return
        off = l4 + 2
    else:
        return
    check = ((b[off] << 8 | b[off + 1]) + delta) % 0xFFFF
    b[off] = check >> 8
    b[off + 1] = check & 0xFF


def _forget_hash(st: _State) -> None:
    if st.meta.hash:
        st.wmeta().hash = 0


def _op_set_ipv4(
    src: tuple[int, int], dst: tuple[int, int], tos: tuple[int, int], ttl: tuple[int, int]
) -> Op:
    src_v, src_m = src
    dst_v, dst_m = dst
    tos_v, tos_m = tos
    ttl_v, ttl_m = ttl
    src_keep, dst_keep, tos_keep, ttl_keep = ~src_m, ~dst_m, ~tos_m, ~ttl_m
    unpack_u32, pack_u32 = _unpack_u32, _pack_u32

    def set_ipv4(st: _State) -> bool:
        h = st.hdr or st.headers()
        l3 = h.l3
        if h.eth_type != ETH_P_IP or l3 + 20 > len(st.buf):
            return st.fail()
        if st.own:
            b: bytearray = st.buf  # type: ignore[assignment]
        else:
            b = st.buf = bytearray(st.buf)
            st.own = True
        delta = 0  # pseudo-header change (old - new)
        if src_m:
            old = unpack_u32(b, l3 + 12)[0]
            new = (old & src_keep) | src_v
            if new != old:
                pack_u32(b, l3 + 12, new)
                delta = old - new
        if dst_m:
            old = unpack_u32(b, l3 + 16)[0]
            new = (old & dst_keep) | dst_v
            if new != old:
                pack_u32(b, l3 + 16, new)
                delta += old - new
        change = delta
        if tos_m:
            old = b[l3 + 1]
            new = (old & tos_keep) | tos_v
            b[l3 + 1] = new
            change += old - new
        if ttl_m:
            old = b[l3 + 8]
            new = (old & ttl_keep) | ttl_v
            b[l3 + 8] = new
            change += (old - new) << 8
        if change:
            check = ((b[l3 + 10] << 8 | b[l3 + 11]) + change) % 0xFFFF
            b[l3 + 10] = check >> 8
            b[l3 + 11] = check & 0xFF
        if delta:
            _pseudo_header_changed(b, h, delta, False)
            if st.meta.hash:
                st.wmeta().hash = 0
        return True

    return set_ipv4


def _op_set_ipv6(
    src: tuple[int, int],
    dst: tuple[int, int],
    label: tuple[int, int],
    tclass: tuple[int, int],
    hlimit: tuple[int, int],
) -> Op:
    src_v, src_m = src
    dst_v, dst_m = dst
    fl_v, fl_m = label
    tc_v, tc_m = tclass
    hl_v, hl_m = hlimit

    def set_ipv6(st: _State) -> bool:
        h = st.hdr or st.headers()
        l3 = h.l3
        if h.eth_type != ETH_P_IPV6 or l3 + 40 > len(st.buf):
            return st.fail()
        b = st.writable()
        addr = False
        if src_m:
            old = int.from_bytes(b[l3 + 8 : l3 + 24], "big")
            new = (old & ~src_m) | src_v
            if new != old:
                b[l3 + 8 : l3 + 24] = new.to_bytes(16, "big")
                _pseudo_header_changed(b, h, old - new, True)
                addr = True
        if dst_m:
            old = int.from_bytes(b[l3 + 24 : l3 + 40], "big")
            new = (old & ~dst_m) | dst_v
            if new != old:
                b[l3 + 24 : l3 + 40] = new.to_bytes(16, "big")
                if not h.routing:
                    _pseudo_header_changed(b, h, old - new, True)
                addr = True
        if tc_m or fl_m:
            word = _unpack_u32(b, l3)[0]
            tc = (((word >> 20) & 0xFF) & ~tc_m) | tc_v
            fl = ((word & 0xFFFFF) & ~fl_m) | fl_v
            _pack_u32(b, l3, (word & 0xF0000000) | tc << 20 | fl)
        if hl_m:
            b[l3 + 7] = (b[l3 + 7] & ~hl_m) | hl_v
        if addr:
            _forget_hash(st)
        return True

    return set_ipv6


def _op_set_ports(proto: int, src: tuple[int, int], dst: tuple[int, int]) -> Op:
    src_v, src_m = src
    dst_v, dst_m = dst
    need = {6: 20, 17: 8, 132: 12}[proto]

    def set_ports(st: _State) -> bool:
        h = st.hdr or st.headers()
        l4 = h.l4
        if l4 < 0 or h.proto != proto:
            if h.frag == FRAG_LATER and h.proto == proto:
                return True  # a later fragment carries no ports
            return st.fail()
        if l4 + need > len(st.buf):
            return st.fail()
        b = st.writable()
        old_src = b[l4] << 8 | b[l4 + 1]
        old_dst = b[l4 + 2] << 8 | b[l4 + 3]
        new_src = (old_src & ~src_m) | src_v
        new_dst = (old_dst & ~dst_m) | dst_v
        if new_src == old_src and new_dst == old_dst:
            return True
        if proto == 132:
            _rewrite_sctp_ports(b, h, l4, new_src, new_dst)
        else:
            off = l4 + (16 if proto == 6 else 6)
            check = b[off] << 8 | b[off + 1]
            b[l4] = new_src >> 8
            b[l4 + 1] = new_src & 0xFF
            b[l4 + 2] = new_dst >> 8
            b[l4 + 3] = new_dst & 0xFF
            if check or proto == 6:
                # ports are two adjacent words: one 32-bit delta
                check = (check + (old_src << 16 | old_dst) - (new_src << 16 | new_dst)) % 0xFFFF
                if proto == 17 and not check:
                    check = 0xFFFF
                b[off] = check >> 8
                b[off + 1] = check & 0xFF
        _forget_hash(st)
        return True

    return set_ports


def _rewrite_sctp_ports(b: bytearray, h: Headers, l4: int, src: int, dst: int) -> None:
    end = h.end if h.end >= l4 + 12 else len(b)
    fragment = h.frag == FRAG_FIRST
    if not fragment:
        old_field = int.from_bytes(b[l4 + 8 : l4 + 12], "little")
        old_correct = sctp_checksum(b[l4:end])
    b[l4] = src >> 8
    b[l4 + 1] = src & 0xFF
    b[l4 + 2] = dst >> 8
    b[l4 + 3] = dst & 0xFF
    if not fragment:
        # carry a wrong checksum through as wrong as it was
        new_field = old_field ^ old_correct ^ sctp_checksum(b[l4:end])
        b[l4 + 8 : l4 + 12] = new_field.to_bytes(4, "little")


def _op_set_mpls(value: int, mask: int) -> Op:
    def set_mpls(st: _State) -> bool:
        h = st.hdr or st.headers()
        l3 = h.l3
        if h.eth_type not in _MPLS_TYPES or l3 + 4 > len(st.buf):
            return st.fail()
        b = st.writable()
        _pack_u32(b, l3, (_unpack_u32(b, l3)[0] & ~mask) | value)
        return True

    return set_mpls


# --- push / pop ---


def _op_push_vlan(tpid: int, tci: int) -> Op:
    tag = struct.pack(">HH", tpid, tci & ~VLAN_CFI_MASK & 0xFFFF)

    def push_vlan(st: _State) -> bool:
        b = st.buf
        if len(b) < ETH_HLEN:
            return st.fail()
        if st.own:
            b[12:12] = tag  # type: ignore[index]
        else:
            st.buf = b[:12] + tag + b[12:]
        st.hdr = None
        return True

    return push_vlan


def _op_pop_vlan(st: _State) -> bool:
    b = st.buf
    if len(b) >= 18 and (b[12] << 8 | b[13]) in _VLAN_TPIDS:
        if st.own:
            del b[12:16]  # type: ignore[union-attr]
        else:
            st.buf = b[:12] + b[16:]
        st.hdr = None
    return True


def _op_push_mpls(lse: int, ethertype: int) -> Op:
    shim = struct.pack(">HI", ethertype, lse)

    def push_mpls(st: _State) -> bool:
        b = st.buf
        if len(b) < ETH_HLEN:
            return st.fail()
        h = st.hdr or st.headers()
        t, l3 = h.type_off, h.l3
        if st.own:
            b[t:l3] = shim  # type: ignore[index]
        else:
            st.buf = b[:t] + shim + b[l3:]
        st.hdr = None
        return True

    return push_mpls


def _op_pop_mpls(ethertype: int) -> Op:
    new_type = struct.pack(">H", ethertype)

    def pop_mpls(st: _State) -> bool:
        h = st.hdr or st.headers()
        if h.eth_type not in _MPLS_TYPES:
            return True
        b = st.buf
        t, l3 = h.type_off, h.l3
        if l3 + 4 > len(b):
            return st.fail()
        if st.own:
            b[t : l3 + 4] = new_type  # type: ignore[index]
        else:
            st.buf = b[:t] + new_type + b[l3 + 4 :]
        st.hdr = None
        return True

    return pop_mpls
