"""``ovsdp-handler``: a minimal ovs-vswitchd stand-in, so the datapath forwards out of the box.

It opens (or creates) a datapath, adds the ports of a small TOML configuration, reads MISS
upcalls, learns MAC addresses per port, floods unknown destinations, installs L2 megaflows and
expires idle ones, and follows port events (docs/handler.md).

* :mod:`.config` -- the TOML configuration and the embedded default;
* :mod:`.forwarder` -- the decisions, sans I/O (:class:`Forwarder`, :class:`MacTable`);
* :mod:`.service` -- the I/O loop (:class:`Handler`);
* :mod:`.cli` -- the command line (``main``).
"""

from .config import DEFAULT_CONFIG, ConfigError, HandlerConfig, PortConfig, parse_config
from .forwarder import Batch, Flow, Forwarder, MacTable, PortSpec
from .service import Handler

__all__ = [
    "DEFAULT_CONFIG",
    "Batch",
    "ConfigError",
    "Flow",
    "Forwarder",
    "Handler",
    "HandlerConfig",
    "MacTable",
    "PortConfig",
    "PortSpec",
    "parse_config",
]
