"""One datapath: its name and ifindex, features, upcall PIDs, vports, flows, statistics."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from ..flowtable.table import EMC_ENTRIES_PER_MASK_CACHE_SLOT, FlowTable
from ..netlink.constants import OVS_DP_F_KNOWN, DpFeature, VportType
from ..netlink.errors import NetlinkError, einval
from ..ports.table import VportTable
from ..ports.vport import Vport

MASKS_CACHE_DEFAULT = 256
MASKS_CACHE_MAX = 4096
"""The kernel's bound: one CPU's share of the cache fits the smallest per-CPU allocation unit
(PCPU_MIN_UNIT_SIZE, 32 KiB) at 8 bytes an entry."""

SUPPORTED_FEATURES = DpFeature.UNALIGNED | DpFeature.VPORT_PIDS | DpFeature.DISPATCH_UPCALL_PER_CPU
"""TC_RECIRC_SHARING needs tc offload, which ovsdp does not have: EOPNOTSUPP, as on a kernel
without TC skb extensions."""


@dataclass
class DatapathStats:
    """What ovs_dp_stats reports (n_flows, and the megaflow stats, come from the flow table)."""

    n_hit: int = 0
    n_missed: int = 0
    n_lost: int = 0


def check_features(features: int) -> None:
    """Unknown bits and unsupported ones are refused with EOPNOTSUPP (current kernels)."""
    unknown = features & ~OVS_DP_F_KNOWN
    if unknown:
        raise NetlinkError(errno.EOPNOTSUPP, f"unknown datapath feature bits {unknown:#x}")
    unsupported = features & ~int(SUPPORTED_FEATURES)
    if unsupported:
        raise NetlinkError(
            errno.EOPNOTSUPP, f"datapath features {unsupported:#x} are not supported (no tc)"
        )


def check_masks_cache_range(size: int) -> None:
    """At most MASKS_CACHE_MAX, else ERANGE: the kernel's attribute policy, checked before the
    request is handled at all (so before the features)."""
    if size > MASKS_CACHE_MAX:
        raise NetlinkError(errno.ERANGE, f"masks cache size {size} is outside 0..{MASKS_CACHE_MAX}")


def check_masks_cache_size(size: int) -> None:
    """0 (off) or a power of two, else EINVAL (the kernel's resize); the range is checked first."""
    check_masks_cache_range(size)
    if size & (size - 1):
        raise einval(f"masks cache size {size} is not 0 or a power of two")


_NOT_IN_IFNAME = b"/: \t\n\v\f\r\xa0"


def check_ifname(name: str, what: str) -> None:
    """A name the kernel would give a net device it creates (a datapath's local port, a tunnel
    vport): not empty, not ``.`` or ``..``, no ``/``, ``:`` or white space, else EINVAL.  (The
    15-byte limit is the codec's: ERANGE.)"""
    if not name:
        raise einval(f"{what} needs a name")
    # the kernel's isspace() is Latin-1's: 0xa0 (a byte of many UTF-8 characters) counts too
    if name in (".", "..") or any(b in _NOT_IN_IFNAME for b in name.encode()):
        raise einval(f"{what} name {name!r} is not a valid interface name")


@dataclass(eq=False)
class Datapath:
    """A datapath and everything it owns."""

    name: str
    ifindex: int
    upcall_pid: int = 0
    user_features: int = 0
    masks_cache_size: int = MASKS_CACHE_DEFAULT
    per_cpu_pids: tuple[int, ...] = ()
    vports: VportTable = field(default_factory=VportTable)
    stats: DatapathStats = field(default_factory=DatapathStats)
    flows: FlowTable = field(default_factory=FlowTable)

    def __post_init__(self) -> None:
        local = Vport(0, self.name, VportType.INTERNAL, (self.upcall_pid,), ifindex=self.ifindex)
        self.vports.add_local(local)
        self.set_masks_cache_size(self.masks_cache_size)

    def set_masks_cache_size(self, size: int) -> None:
        """MASKS_CACHE_SIZE sizes the exact-match cache: 32 entries per slot (the default 256
        gives 8192 entries, the size of OVS's userspace EMC); 0 turns it off."""
        self.masks_cache_size = size
        self.flows.emc_size = size * EMC_ENTRIES_PER_MASK_CACHE_SLOT
        self.flows.emc.clear()

    @property
    def local(self) -> Vport:
        """Port 0, the datapath's own internal port."""
        vport = self.vports.get(0)
        assert vport is not None
        return vport

    @property
    def per_cpu_dispatch(self) -> bool:
        return bool(self.user_features & DpFeature.DISPATCH_UPCALL_PER_CPU)

    @property
    def vport_pids(self) -> bool:
        return bool(self.user_features & DpFeature.VPORT_PIDS)

    @property
    def n_flows(self) -> int:
        return len(self.flows)

    @property
    def n_masks(self) -> int:
        return self.flows.n_masks

    def miss_pid(self, in_port: Vport | None, flow_hash: int) -> int:
        """Where a miss goes: a per-CPU PID (ovsdp's "CPU" is the packet's hash, as RSS would
        spread it) or the in-port's PID(s); 0 means nowhere (the upcall is lost)."""
        if self.per_cpu_dispatch:
            pids = self.per_cpu_pids
            return pids[flow_hash % len(pids)] if pids else 0
        if in_port is None:
            return 0
        return in_port.upcall_pid(flow_hash)
