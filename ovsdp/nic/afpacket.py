"""The AF_PACKET backend: a switch port on an existing Linux interface (the wire).

One ``AF_PACKET``/``SOCK_RAW`` socket bound to the interface (for example the root end of a veth
pair, or a physical NIC), promiscuous (``PACKET_MR_PROMISC``, dropped again when the socket
closes), blind to its own transmissions (``PACKET_IGNORE_OUTGOING``; on kernels before 4.20 the
receive loop skips frames whose packet type is ``PACKET_OUTGOING``).  The interface's MAC and MTU
are left alone (they belong to the wire); ovsdp only brings it up.

What the kernel took out of a frame is put back, so the datapath sees the frame as it was on the
wire (``PACKET_AUXDATA`` on every frame):

* a VLAN tag the NIC or the kernel stripped into the skb (``TP_STATUS_VLAN_VALID``): re-inserted
  after the MAC addresses with its TPID (``TP_STATUS_VLAN_TPID_VALID``, else 0x8100) and TCI;
* a TCP or UDP checksum left for offload (``TP_STATUS_CSUMNOTREADY``: a frame a local stack sent
  through a veth with checksum offload on): completed, so the receiver does not drop the frame.
  Segmentation offload cannot be undone this way: a TSO/GSO frame larger than the MTU is read
  whole and then refused by the output interface (counted in ``tx_errors``); turn TSO/GSO off on
  stacks that send through such interfaces (docs/nic.md).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import platform
import socket
import struct
from collections.abc import Sequence

from ..flowtable.checksum import internet_checksum
from .base import BATCH, FdBackend, NicCounters, NicError, describe
from .tap import configure_link, interface_index

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V2 = 1
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

TP_STATUS_USER = 1
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_FIXUP = TP_STATUS_CSUMNOTREADY | TP_STATUS_VLAN_VALID

_MREQ = struct.Struct("iHH8s")  # struct packet_mreq
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_STATUS = struct.Struct("=I")
_TPACKET_STATS = struct.Struct("=II")  # struct tpacket_stats: tp_packets, tp_drops
_TAG = struct.Struct("!HH")
# struct tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid, padding
_V2_HDR = struct.Struct("=IIIHHIIHH4x")
_V2_SLL_PKTTYPE = 32 + 10  # sockaddr_ll after the aligned header: its sll_pkttype
_TPACKET_REQ = struct.Struct("=IIII")  # block size, block count, frame size, frame count
_U16 = struct.Struct("!H")
ANC_SIZE = socket.CMSG_SPACE(_AUXDATA.size)

READ_SIZE = 65536
"""Bytes asked for per receive: a frame of any MTU, even a GSO super-frame, is read whole."""

DEFAULT_RCVBUF = 4 << 20
"""Socket receive buffer (bytes): what the kernel holds while the service is busy elsewhere."""

RING_FRAMES = 4096
RING_BYTES = 16 << 20
"""Slots of the receive ring (PACKET_MMAP), each holding one frame of up to the MTU, and the
most memory the ring may take (fewer slots for a large MTU)."""

RING_BLOCK = 1 << 17
RING_OVERHEAD = 128
"""Bytes of a ring slot before the frame (header, address, alignment; the kernel uses ~80)."""

RING_SAFE = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
"""Reading the ring from Python needs no memory barrier between a slot's status and its data
only where stores are not reordered (x86); elsewhere the backend uses recvmsg."""

_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)


def complete_checksum(frame: bytes) -> bytes:
    """The frame with the TCP/UDP checksum a checksum-offloading sender left partial filled in
    (the field holds the pseudo-header sum; the checksum covers it and the L4 segment)."""
    offset = 12
    ethertype = _U16.unpack_from(frame, offset)[0]
    while ethertype in _VLAN_TPIDS and len(frame) >= offset + 6:
        offset += 4
        ethertype = _U16.unpack_from(frame, offset)[0]
    l3 = offset + 2
    if ethertype == 0x0800 and len(frame) >= l3 + 20:
        l4 = l3 + (frame[l3] & 0x0F) * 4
        proto = frame[l3 + 9]
        end = l3 + _U16.unpack_from(frame, l3 + 2)[0]
    elif ethertype == 0x86DD and len(frame) >= l3 + 40:
        l4 = l3 + 40
        proto = frame[l3 + 6]
        end = l4 + _U16.unpack_from(frame, l3 + 4)[0]
    else:
        return frame
    if proto == 6:
        field = l4 + 16
    elif proto == 17:
        field = l4 + 6
    else:
        return frame
    if end > len(frame) or field + 2 > end:
        return frame
    check = internet_checksum(memoryview(frame)[l4:end])
    if proto == 17 and check == 0:
        check = 0xFFFF
    fixed = bytearray(frame)
    _U16.pack_into(fixed, field, check)
    return bytes(fixed)


class AfPacketBackend(FdBackend):
    """An AF_PACKET socket on an existing interface, read drain-style."""

    kind = "afpacket"

    def __init__(
        self,
        ifname: str,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        sndbuf: int | None = None,
        batch: int = BATCH,
        bring_up: bool = True,
        ring: bool | None = None,
    ) -> None:
        super().__init__(ifname, batch=batch)
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.bring_up = bring_up
        self.use_ring = RING_SAFE if ring is None else ring
        self.sock: socket.socket | None = None
        self.ifindex = 0
        self._skip_outgoing = False  # PACKET_IGNORE_OUTGOING unavailable: filter in the loop
        self._ring: mmap.mmap | None = None
        self._slot = 0  # the next ring slot to look at
        self._slots = 0
        self._slot_size = 0

    def open(self) -> None:
        """Open the socket, bind it to the interface, make it promiscuous."""
        if self.sock is not None:
            return
        name = self.device
        index = interface_index(name)
        if index is None:
            raise NicError(f"no interface named {name!r}")
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            hint = " (needs CAP_NET_RAW: run ovsdp as root)" if exc.errno == errno.EPERM else ""
            raise NicError(f"cannot open an AF_PACKET socket: {describe(exc)}{hint}") from None
        try:
            if self.bring_up:
                configure_link(name)  # before bind: binding to a down interface is ENETDOWN
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                self._skip_outgoing = True
            _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, self.rcvbuf)
            if self.use_ring:
                self._map_ring(sock, _mtu(sock, name))
            if self.sndbuf is not None:
                _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, self.sndbuf)
            sock.bind((name, ETH_P_ALL))
            sock.setsockopt(
                SOL_PACKET, PACKET_ADD_MEMBERSHIP, _MREQ.pack(index, PACKET_MR_PROMISC, 0, b"")
            )
            sock.setblocking(False)
        except OSError as exc:
            self._unmap()
            sock.close()
            raise NicError(f"cannot attach to interface {name!r}: {describe(exc)}") from None
        except BaseException:
            self._unmap()
            sock.close()
            raise
        self.sock = sock
        self.ifindex = index
        self.fd = sock.fileno()

    def _map_ring(self, sock: socket.socket, mtu: int) -> None:
        """A TPACKET_V2 receive ring (PACKET_MMAP) of RING_FRAMES slots sized for ``mtu``."""
        size = 2048
        while size < mtu + 18 + RING_OVERHEAD and size < RING_BLOCK:
            size *= 2
        per_block = RING_BLOCK // size
        blocks = max(1, min(RING_FRAMES, RING_BYTES // size) // per_block)
        slots = blocks * per_block
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(
            SOL_PACKET, PACKET_RX_RING, _TPACKET_REQ.pack(RING_BLOCK, blocks, size, slots)
        )
        self._ring = mmap.mmap(
            sock.fileno(), RING_BLOCK * blocks, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
        )
        self._slot, self._slots, self._slot_size = 0, slots, size

    def _unmap(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def _read_ring(self, ring: mmap.mmap, limit: int) -> list[bytes]:
        """Up to ``limit`` frames from the receive ring: no system call per frame."""
        frames: list[bytes] = []
        append = frames.append
        header = _V2_HDR.unpack_from
        release = _STATUS.pack_into
        slot, slots, size = self._slot, self._slots, self._slot_size
        skip_outgoing = self._skip_outgoing
        truncated = 0
        for _ in range(limit):
            offset = slot * size
            status, length, snaplen, mac, _net, _sec, _nsec, tci, tpid = header(ring, offset)
            if not status & TP_STATUS_USER:
                break
            start = offset + mac
            data = ring[start : start + snaplen]
            if snaplen != length:
                truncated += 1  # larger than a slot (an MTU raised since, a GSO frame)
            elif skip_outgoing and ring[offset + _V2_SLL_PKTTYPE] == PACKET_OUTGOING:
                pass
            else:
                if status & _FIXUP:
                    data = _fix(data, status, tci, tpid)
                append(data)
            release(ring, offset, 0)  # TP_STATUS_KERNEL: the slot is the kernel's again
            slot += 1
            if slot == slots:
                slot = 0
        self._slot = slot
        counters = self.counters
        counters.rx += len(frames)
        counters.rx_errors += truncated
        return frames

    def read_batch(self, limit: int) -> list[bytes]:
        """Up to ``limit`` frames, VLAN tags re-inserted, partial checksums completed."""
        if self._ring is not None:
            return self._read_ring(self._ring, limit)
        sock = self.sock
        if sock is None:
            return []
        frames: list[bytes] = []
        append = frames.append
        recvmsg = sock.recvmsg
        status_of = _STATUS.unpack_from
        skip_outgoing = self._skip_outgoing
        truncated = 0
        for _ in range(limit):
            try:
                data, anc, flags, addr = recvmsg(READ_SIZE, ANC_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self.read_error(exc)  # ENETDOWN once when the interface goes down, ...
                break
            if flags & socket.MSG_TRUNC:
                truncated += 1
                continue
            if skip_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            if anc:
                aux = anc[0][2]
                if status_of(aux)[0] & _FIXUP:
                    data = _restore(data, aux)
            append(data)
        counters = self.counters
        counters.rx += len(frames)
        counters.rx_errors += truncated
        return frames

    def transmit(self, frames: Sequence[bytes]) -> None:
        """Send each frame; on EAGAIN the rest of the batch is dropped (a full NIC ring)."""
        sock = self.sock
        if sock is None:
            self.counters.tx_dropped += len(frames)
            return
        # ENOBUFS: the qdisc dropped it (a full queue too); anything else is an error
        self.send_each(sock.send, frames, errno.ENOBUFS)

    def stats(self) -> NicCounters:
        """The counters, with the kernel's receive drops (``PACKET_STATISTICS``) folded in."""
        if self.sock is not None:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
            self.counters.rx_dropped += _TPACKET_STATS.unpack(raw)[1]  # reading resets them
        return self.counters

    def _release(self) -> None:
        if self.sock is not None:
            try:
                self.stats()  # the last kernel drops
            except OSError:
                pass
            self._unmap()
            self.sock.close()
            self.sock = None


def _restore(data: bytes, aux: bytes) -> bytes:
    """Put back the VLAN tag the kernel stripped, complete a partial checksum."""
    status, _len, _snaplen, _mac, _net, tci, tpid = _AUXDATA.unpack(aux)
    return _fix(data, status, tci, tpid)


def _fix(data: bytes, status: int, tci: int, tpid: int) -> bytes:
    if status & TP_STATUS_VLAN_VALID:
        if not status & TP_STATUS_VLAN_TPID_VALID:
            tpid = 0x8100
        data = data[:12] + _TAG.pack(tpid, tci) + data[12:]
    if status & TP_STATUS_CSUMNOTREADY:
        data = complete_checksum(data)
    return data


def _set_buffer(sock: socket.socket, force: int, option: int, size: int) -> None:
    """Set a socket buffer size, past the sysctl limit when privileged."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


SIOCGIFMTU = 0x8921
_IFREQ_MTU = struct.Struct("16si20x")


def _mtu(sock: socket.socket, name: str) -> int:
    """The interface's MTU (SIOCGIFMTU)."""
    raw = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, _IFREQ_MTU.pack(name.encode(), 0))
    mtu: int = _IFREQ_MTU.unpack(raw)[1]
    return mtu
