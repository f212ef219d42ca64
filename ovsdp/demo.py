"""The README's demo: what ovsdp can show today.

For now the codec: an OVS_FLOW_CMD_NEW built from Python values, its bytes, the same bytes decoded
back, and a malformed copy rejected with an errno and a reason.
"""

from __future__ import annotations

import errno
import ipaddress
import os

from .netlink import GenlMessage, NetlinkError, decode_record, encode_genl
from .netlink.constants import NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, FlowCmd
from .netlink.families import OVS_FLOW
from .netlink.structs import OvsKeyEthernet, OvsKeyIpv4, OvsKeyPorts


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def example_flow_message(family_id: int = 0x1D) -> GenlMessage:
    """An OVS_FLOW_CMD_NEW matching one TCP flow and sending it to port 2."""
    key = {
        "in_port": 1,
        "ethernet": OvsKeyEthernet(_mac("52:54:00:00:00:01"), _mac("52:54:00:00:00:02")),
        "ethertype": 0x0800,
        "ipv4": OvsKeyIpv4(_ip("10.0.0.1"), _ip("10.0.0.2"), 6, 0, 64, 0),
        "tcp": OvsKeyPorts(40000, 80),
        "tcp_flags": 0x002,
    }
    mask = {
        "in_port": 0xFFFFFFFF,
        "ethernet": OvsKeyEthernet(b"\xff" * 6, b"\xff" * 6),
        "ethertype": 0xFFFF,
        "ipv4": OvsKeyIpv4(0xFFFFFFFF, 0xFFFFFFFF, 0xFF, 0, 0, 0xFF),
        "tcp": OvsKeyPorts(0, 0xFFFF),
        "tcp_flags": 0,
    }
    return GenlMessage(
        type=family_id,
        flags=NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        seq=1,
        pid=0,
        cmd=FlowCmd.NEW,
        version=OVS_FLOW.version,
        dp_ifindex=7,
        attrs={"key": key, "mask": mask, "actions": [("output", 2)]},
    )


def _hexdump(data: bytes) -> str:
    return "\n".join(
        f"  {off:04x}  {data[off : off + 16].hex(' ')}" for off in range(0, len(data), 16)
    )


def run_demo() -> int:
    """Print the codec at work; returns the process exit status."""
    msg = example_flow_message()
    families = {msg.type: OVS_FLOW}
    data = encode_genl(msg, OVS_FLOW)
    print(f"OVS_FLOW_CMD_NEW, {len(data)} bytes on the wire:")
    print(_hexdump(data))
    back = decode_record(data, families)[0]
    print("\ndecoded again:")
    assert isinstance(back, GenlMessage)
    for name, value in back.attrs.items():
        print(f"  {name}: {value}")
    print(f"  round trip exact: {back == msg}")

    broken = bytearray(data)
    broken[24:26] = (0xFFFF).to_bytes(2, "little")  # first attribute claims 65535 bytes
    try:
        decode_record(bytes(broken), families)
    except NetlinkError as exc:
        name = errno.errorcode[exc.errno]
        print(f"\na corrupted copy is refused: {name} ({os.strerror(exc.errno)}): {exc.reason}")
    return 0
