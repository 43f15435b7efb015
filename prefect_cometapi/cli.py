"""The ``prefect-cometapi`` command line.

Each subcommand is a pair in :data:`SUBCOMMANDS`: a function that adds its arguments to a
subparser and a function that runs it. Add one by defining both and registering them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

__all__ = ["Run", "build_parser", "main"]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any)")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted bearer token (repeatable; default: any non-empty token)",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="added latency per request (s)")
    for fault in ("429", "500", "503", "drop", "slow"):
        parser.add_argument(
            f"--rate-{fault}",
            type=float,
            default=0.0,
            metavar="P",
            help=f"probability of a '{fault}' fault per request",
        )
    parser.add_argument("--slow-s", type=float, default=30.0, help="delay of 'slow' faults (s)")
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="retry-after sent on 429/503 (s)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    parser.add_argument(
        "--light-images",
        action="store_true",
        help="answer flat drawings (~0.1 MB) instead of images as heavy as the real API's (~2 MB)",
    )
    parser.add_argument(
        "--image-pool",
        type=int,
        default=0,
        metavar="N",
        help="answer generations from N pre-drawn realistic PNGs (for benchmarks; 0: draw each)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="serve the /_emulator/state|reset|config|script control endpoints (JSON only)",
    )


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_emulator(args: argparse.Namespace) -> int:
    from prefect_cometapi.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(
        api_keys=frozenset(args.api_keys) if args.api_keys else None,
        latency_s=args.latency,
        rate_429=args.rate_429,
        rate_500=args.rate_500,
        rate_503=args.rate_503,
        rate_drop=args.rate_drop,
        rate_slow=args.rate_slow,
        slow_s=args.slow_s,
        retry_after_s=args.retry_after,
        seed=args.seed,
        light_images=args.light_images,
        image_pool=args.image_pool,
    )
    emulator = Emulator(config, host=args.host, port=args.port, control=args.control)
    try:
        emulator.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(emulator.base_url, flush=True)
    control = f"state: {emulator.url}/_emulator/state" if args.control else "no --control"
    print(
        f"CometAPI emulator serving at {emulator.base_url} ({control}). Press Ctrl-C to stop.",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from prefect_cometapi.demo.run import add_demo_arguments

    add_demo_arguments(parser)


def _run_demo(args: argparse.Namespace) -> int:
    from prefect_cometapi.demo.run import run_demo

    return run_demo(args)


def _add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    from prefect_cometapi.doctor import add_doctor_arguments

    add_doctor_arguments(parser)


def _run_doctor(args: argparse.Namespace) -> int:
    from prefect_cometapi.doctor import run_doctor

    return run_doctor(args)


def _version() -> str:
    from prefect_cometapi.doctor import package_version

    return package_version()


#: name -> (help, add_arguments, run)
SUBCOMMANDS: dict[str, tuple[str, AddArguments, Run]] = {
    "emulator": (
        "serve the CometAPI (OpenAI Images API) emulator on 127.0.0.1",
        _add_emulator_arguments,
        _run_emulator,
    ),
    "demo": (
        "run the pipeline end to end offline: emulator, local S3, Prefect (--live for real)",
        _add_demo_arguments,
        _run_demo,
    ),
    "doctor": (
        "check this worker's setup before the first run: key, base URL, API, bucket, limits, "
        "locks, result storage, Prefect (exit 1 on a problem)",
        _add_doctor_arguments,
        _run_doctor,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="prefect-cometapi", description="Prefect + CometAPI GPT Image tools."
    )
    parser.add_argument("--version", action="version", version=f"prefect-cometapi {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub_parser)
        sub_parser.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``prefect-cometapi``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
