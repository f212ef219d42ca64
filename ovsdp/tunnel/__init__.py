"""VXLAN tunnels: encapsulation, decapsulation, IPv4 reassembly before decap (sans I/O).

* :mod:`.vxlan` -- outer header templates, checksums, parsing of VXLAN packets;
* :mod:`.fragment` -- IPv4 fragmentation of outer packets over the uplink's MTU;
* :mod:`.reassembly` -- the reassembly table for fragments addressed to the VTEP;
* :mod:`.neighbours` -- routes (connected subnet, default gateway) and the ARP table;
* :mod:`.endpoint` -- the switch's VTEP tying them together, used by the packet path.

Design and counters: docs/tunnel.md.
"""

from .endpoint import TunnelCounters, TunnelEndpoint, TunnelParams, TunnelSettings, endpoint_of

__all__ = ["TunnelCounters", "TunnelEndpoint", "TunnelParams", "TunnelSettings", "endpoint_of"]
