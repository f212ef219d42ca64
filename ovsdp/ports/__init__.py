"""Datapath ports: switch-backed vports and tunnel vports, in separate hash tables."""

from .table import PortNumbers, VportTable
from .vport import SWITCH_TYPES, TUNNEL_TYPES, Vport, VportState, VportStats

__all__ = [
    "SWITCH_TYPES",
    "TUNNEL_TYPES",
    "PortNumbers",
    "Vport",
    "VportState",
    "VportStats",
    "VportTable",
]
