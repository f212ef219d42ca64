"""The ``ovsdp`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()


def _cmd_serve(args: argparse.Namespace) -> int:
    from .daemon import ServiceConfig, load_switch_config, serve_main
    from .vswitch.config import ConfigError

    try:
        switch = load_switch_config(args.config)
    except ConfigError as exc:
        print(f"ovsdp: {exc}", file=sys.stderr)
        return 1
    return serve_main(
        ServiceConfig(
            args.socket, mode=args.mode, owner=args.owner, group=args.group, switch=switch
        )
    )


def _cmd_vswitch(args: argparse.Namespace) -> int:
    from userspace.vswitchctl import run

    return run(args)


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ovsdp`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="ovsdp", description="A userspace Open vSwitch datapath, built like OVS on Hyper-V."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show the datapath at work (the README's first command)")
    demo.set_defaults(func=_cmd_demo)

    from .daemon import default_socket_path

    serve = sub.add_parser("serve", help="run the datapath service on a pseudo-device socket")
    serve.add_argument(
        "--socket",
        default=default_socket_path(),
        help="socket path (default: $OVSDP_SOCKET or /run/ovsdp/ovsdp.sock)",
    )
    serve.add_argument("--mode", type=_mode, default=0o660, help="socket file mode (octal)")
    serve.add_argument("--owner", help="socket file owner (user name or uid)")
    serve.add_argument(
        "--group",
        help="socket file group (name or gid); its members may change state, as root may",
    )
    serve.add_argument(
        "--config", help="TOML file declaring the switch's ports (default: the embedded switch)"
    )
    serve.set_defaults(func=_cmd_serve)

    from userspace.vswitchctl import add_arguments

    vswitch = sub.add_parser("vswitch", help="manage the emulated Hyper-V switch")
    vswitch.add_argument(
        "--socket",
        default=default_socket_path(),
        help="socket path (default: $OVSDP_SOCKET or /run/ovsdp/ovsdp.sock)",
    )
    add_arguments(vswitch)
    vswitch.set_defaults(func=_cmd_vswitch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ovsdp`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
