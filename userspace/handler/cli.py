"""``ovsdp-handler [--socket PATH] [--config FILE] [--verbose]``: a minimal ovs-vswitchd."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from ovsdp.netlink.errors import NetlinkError

from ..netlink_socket import ServiceGone, default_socket_path
from .config import ConfigError, load_config
from .service import Handler

GC_THRESHOLD = 10_000


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovsdp-handler",
        description="Open a datapath, add the configured ports and forward like a learning "
        "switch: MAC learning, flooding, megaflows with idle expiry (see docs/handler.md).",
    )
    p.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="the service's socket (default: $OVSDP_SOCKET, else /run/ovsdp/ovsdp.sock)",
    )
    p.add_argument(
        "--config", default=None, metavar="FILE", help="TOML configuration (default: embedded)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every flow put and delete")
    p.add_argument(
        "--stats-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between summary lines (0: none; default 10)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the handler in the foreground; the exit status (0 after SIGINT or SIGTERM)."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="ovsdp-handler: %(message)s", stream=sys.stderr, force=True
    )
    log = logging.getLogger("ovsdp.handler")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    path = args.socket or default_socket_path()
    # Every flow is a few long-lived containers: collect the young generation less often
    # (CPython's default of 700 allocations makes flow setup a third slower).
    gc.set_threshold(GC_THRESHOLD, 10, 10)
    handler = Handler(config, path, verbose=args.verbose, stats_interval=args.stats_interval)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        handler.start()
        log.info("ready")
        handler.run()
    except (ServiceGone, NetlinkError, OSError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        handler.close()
        for signum, old in previous.items():
            signal.signal(signum, old)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
