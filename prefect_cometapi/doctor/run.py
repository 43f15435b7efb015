"""``prefect-cometapi doctor``: its options, the order of the checks, and the printing."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from prefect_cometapi.doctor.checks import (
    check_api_answers,
    check_base_url_allowed,
    check_credentials,
    check_prefect_api,
)
from prefect_cometapi.doctor.limits import check_limits
from prefect_cometapi.doctor.live import check_live
from prefect_cometapi.doctor.report import exit_code, render_json, render_text, scrub
from prefect_cometapi.doctor.result import CheckResult, DoctorContext, DoctorOptions
from prefect_cometapi.doctor.storage import (
    check_lock_manager,
    check_result_storage,
    check_s3_bucket,
)

__all__ = ["add_doctor_arguments", "package_version", "run_checks", "run_doctor"]


def package_version() -> str:
    """The installed package's version (``importlib.metadata``), else ``__version__``.

    Returns:
        The version.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefect-cometapi")
    except PackageNotFoundError:
        from prefect_cometapi import __version__

        return __version__


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the doctor's options to its subparser.

    Args:
        parser: The ``doctor`` subparser.
    """
    parser.add_argument(
        "--credentials",
        metavar="NAME",
        help="a saved CometAPI Credentials block (default: COMETAPI_KEY and CometAPI's base URL)",
    )
    parser.add_argument("--base-url", metavar="URL", help="the base_url the flows are given")
    parser.add_argument("--bucket", metavar="NAME", help="the S3 bucket the flows deliver to")
    parser.add_argument("--s3-endpoint-url", metavar="URL", help="an S3-compatible endpoint")
    parser.add_argument(
        "--aws-credentials-block", metavar="NAME", help="a prefect-aws AwsCredentials block"
    )
    parser.add_argument(
        "--write-probe",
        action="store_true",
        help="write a small probe object to the bucket and remove it",
    )
    parser.add_argument("--concurrency-limit", metavar="NAME", help="global concurrency limit")
    parser.add_argument("--rate-limit", metavar="NAME", help="global limit with slot decay")
    parser.add_argument("--spend-limit", metavar="NAME", help="spend limit (a dollar budget)")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="this worker is one of several machines: shared locks and results are needed",
    )
    parser.add_argument(
        "--result-storage",
        metavar="SLUG",
        help="the flows' result storage block, e.g. s3-bucket/cometapi-results (default: "
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK)",
    )
    parser.add_argument(
        "--live", action="store_true", help="spend one cheapest generation (price shown first)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds per network check"
    )


def _options(args: argparse.Namespace) -> DoctorOptions:
    return DoctorOptions(
        credentials=args.credentials or None,
        base_url=args.base_url or None,
        bucket=args.bucket or None,
        s3_endpoint_url=args.s3_endpoint_url or None,
        aws_credentials_block=args.aws_credentials_block or None,
        write_probe=args.write_probe,
        concurrency_limit=args.concurrency_limit or None,
        rate_limit=args.rate_limit or None,
        spend_limit=args.spend_limit or None,
        fleet=args.fleet,
        result_storage=args.result_storage or None,
        live=args.live,
        timeout_s=args.timeout,
    )


def run_checks(
    options: DoctorOptions, announce: Callable[[str], None] = print
) -> tuple[list[CheckResult], DoctorContext]:
    """Run every check in order; a later check uses what an earlier one found.

    Args:
        options: What to check.
        announce: Told the ``--live`` generation's price before it is sent.

    Returns:
        The results (not yet scrubbed) and the context (which holds the key: do not print it).
    """
    ctx = DoctorContext(options)
    results = [
        check_prefect_api(ctx),
        check_credentials(ctx),
        check_base_url_allowed(ctx),
        check_api_answers(ctx),
        check_s3_bucket(ctx),
        *check_limits(ctx),
        check_lock_manager(ctx),
        check_result_storage(ctx),
    ]
    results.append(check_live(ctx, announce))
    return results, ctx


def run_doctor(args: argparse.Namespace) -> int:
    """Run ``prefect-cometapi doctor`` and print its report.

    Args:
        args: The parsed options.

    Returns:
        ``1`` when a check found a problem, else ``0``.
    """
    as_json = bool(args.json)

    def announce(text: str) -> None:
        print(text, file=sys.stderr if as_json else sys.stdout, flush=True)

    results, ctx = run_checks(_options(args), announce)
    secrets = [ctx.api_key, os.environ.get("COMETAPI_KEY")]
    if ctx.block is not None and ctx.block.api_key is not None:
        secrets.append(ctx.block.api_key.get_secret_value())
    results = scrub(results, secrets)
    render = render_json if as_json else render_text
    sys.stdout.write(render(results, package_version()))
    sys.stdout.flush()
    return exit_code(results)
