"""``ovsdp-dpctl``: OVS's ovs-dpctl for the ovsdp service (docs/dpctl.md).

The datapath commands (add-dp, del-dp, dump-dps, show), port commands (add-if, set-if, del-if),
flow commands (dump-flows, add-flow, mod-flow, get-flow, del-flow, add-flows, mod-flows,
del-flows) with ovs-dpctl's output formats, and ``monitor`` (port events and upcalls).

* :mod:`.app` -- options, the command table, exit status
* :mod:`.context` -- options, streams, the connection, finding datapaths
* :mod:`.dps` -- datapath and port commands
* :mod:`.flows` -- flow commands, the dump-flows line, batch files
* :mod:`.flowfilter` -- ``dump-flows filter=...``
* :mod:`.monitor` -- ``monitor``
"""

from .app import COMMANDS, main, parse_options, run
from .context import PROG, program_name
from .flows import format_dpif_flow, format_flow_stats, parse_flow_line

__all__ = [
    "COMMANDS",
    "PROG",
    "format_dpif_flow",
    "format_flow_stats",
    "main",
    "parse_flow_line",
    "parse_options",
    "program_name",
    "run",
]
