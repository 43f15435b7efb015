"""``prefect-cometapi demo``: the whole pipeline on this machine, offline, in about a minute.

By default it starts the CometAPI emulator and moto's S3 server on 127.0.0.1, runs the
``batch_generate`` flow on Prefect's temporary local server over the packaged example products
(1536x864 at quality low, upscaled to 3840x2160), uploads to a demo bucket, copies the images to
``./demo-output/`` and prints where everything went. Nothing leaves the machine: the AWS
credentials it sets are moto's fake ones, and only inside this process. moto keeps its objects in
memory, so the demo keeps its bucket under ``PREFECT_HOME`` between runs
(:mod:`prefect_cometapi.demo.bucket`): a second run finds every item already in S3 and says so.

With ``--live --bucket NAME`` (and ``COMETAPI_KEY`` set) the same flow runs against the real
API and your S3 bucket through boto3's standard credential chain, within ``--max-cost-usd``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from prefect_cometapi.demo.bucket import sha256_of_file
from prefect_cometapi.demo.environ import patched_environ
from prefect_cometapi.demo.server import prefect_for_demo, server_start_command
from prefect_cometapi.text import usd

__all__ = ["DEMO_KEY", "add_demo_arguments", "run_demo"]

DEMO_BUCKET = "prefect-cometapi-demo"
DEMO_KEY = "sk-demo-emulator-key"
UI_URL = "http://127.0.0.1:4200"
DEMO_EMULATOR_PORT = 28_421
"""The emulator's port when it is free: the image cache is keyed on the API's host and port, so a
stable address lets a second demo run take its images from the cache. It lies below Linux's
range of ephemeral ports (32768-60999), where an outgoing connection could hold it."""
OFFLINE_VARIANT = 20_260_421
"""The cache ``variant`` of the offline demo's images (see :func:`_run`)."""
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_AWS_DROPPED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to a parser.

    Args:
        parser: The ``demo`` subcommand's parser.
    """
    parser.add_argument(
        "--output-dir", default="demo-output", help="where to save copies (default ./demo-output)"
    )
    parser.add_argument(
        "--limit", type=int, default=5, help="how many example products to render (1-5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="items in flight at once (default 4)"
    )
    parser.add_argument(
        "--live", action="store_true", help="use the real API (COMETAPI_KEY) and your S3 bucket"
    )
    parser.add_argument("--bucket", help="S3 bucket (required with --live)")
    parser.add_argument("--prefix", default="demo/", help="S3 key prefix (default demo/)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (with --live)")
    parser.add_argument("--base-url", help="API base URL (with --live; default CometAPI's)")
    parser.add_argument(
        "--max-cost-usd", type=float, default=0.5, help="budget for --live (default $0.50)"
    )


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on an ``add_subparsers()`` object.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The ``demo`` parser (its ``_run`` default is :func:`run_demo`).
    """
    help_text = "run the pipeline end to end offline (emulator + local S3 + Prefect)"
    parser = subparsers.add_parser("demo", help=help_text, description=help_text)
    add_demo_arguments(parser)
    parser.set_defaults(_run=run_demo)
    return parser


def _fake_aws_env(endpoint_url: str) -> AbstractContextManager[None]:
    """moto as this process's S3, with its fake credentials; the developer's AWS settings put
    aside. The endpoint is set as a worker sets its own (``AWS_ENDPOINT_URL_S3``), so the runs'
    parameters and the delivery ledger's keys do not depend on moto's port."""
    return patched_environ(
        set={**_FAKE_AWS, "AWS_ENDPOINT_URL_S3": endpoint_url}, drop=_AWS_DROPPED
    )


@contextlib.contextmanager
def _local_services() -> Iterator[tuple[str, str]]:
    """Start the emulator and moto's S3 server on 127.0.0.1; yield their URLs."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit(
            "The offline demo needs moto's S3 server: pip install 'moto[server,s3]' "
            "(it comes with: pip install 'prefect-cometapi[demo]')."
        ) from None
    from prefect_cometapi.emulator import Emulator

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    try:
        host, port = s3.get_host_and_port()
        with Emulator(port=_free_or_any(DEMO_EMULATOR_PORT)) as emulator:
            yield emulator.base_url, f"http://{host}:{port}"
    finally:
        s3.stop()


def _free_or_any(port: int) -> int:
    """``port`` when nothing listens on it on 127.0.0.1, else 0 (any free port).

    The probe reuses the address as the servers do, so the server side of an earlier run's
    connections still in TIME_WAIT does not count as a listener.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _save_copies(summary: Any, output_dir: Path, endpoint_url: str | None) -> list[Path]:
    from prefect_cometapi.s3.client import shared_s3_client

    client = shared_s3_client(endpoint_url, None)
    output_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for outcome in summary.outcomes:
        for number, image in enumerate(outcome.images):
            suffix = f"-{number + 1}" if len(outcome.images) > 1 else ""
            ext = "jpg" if image.format == "jpeg" else image.format
            path = output_dir / f"{outcome.item_id}{suffix}.{ext}"
            files.append(path)
            if path.is_file() and sha256_of_file(path) == image.sha256:
                continue  # the copy from an earlier run is this very image
            body = client.get_object(Bucket=image.bucket, Key=image.key)["Body"]
            with body, path.open("wb") as handle:
                for chunk in body.iter_chunks(1 << 20):
                    handle.write(chunk)
    return files


def _add_local_copies_to_gallery(summary: Any, flow_run_id: Any, files: list[Path]) -> None:
    """Name each image's local copy beside it in the run's gallery artifact (edited in place)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    from prefect_cometapi.flows.batch import FLOW_NAME, GALLERY_TITLE
    from prefect_cometapi.reports.artifacts import artifact_key, gallery_markdown

    uris = [image.uri for outcome in summary.outcomes for image in outcome.images]
    local_paths = {uri: str(path.resolve()) for uri, path in zip(uris, files, strict=False)}
    markdown = gallery_markdown(summary, GALLERY_TITLE, local_paths)
    with get_client(sync_client=True) as client:
        galleries = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(any_=[artifact_key(FLOW_NAME, "gallery")]),
            )
        )
        for gallery in galleries:
            client.update_artifact(gallery.id, ArtifactUpdate(data=markdown))


def _report(
    summary: Any, files: list[Path], flow_run_id: Any, live: bool, ui_url: str | None
) -> None:
    print()
    print(f"Results: {summary.headline()}")
    file_iter = iter(files)
    for outcome in summary.outcomes:
        if outcome.status == "failed":
            print(f"  {outcome.item_id:<16} FAILED {outcome.error_code}: {outcome.error}")
            continue
        for image in outcome.images:
            path = next(file_iter, None)
            print(f"  {outcome.item_id:<16} {image.size:>9} {image.format:<4} {image.uri}")
            if path is not None:
                print(f"  {'':<16} -> {path}")
        if outcome.already_delivered:
            note = " (already in S3 from an earlier run: nothing requested, upscaled or uploaded)"
        elif outcome.cached:
            note = " (from cache, not paid again)"
        else:
            note = ""
        print(
            f"  {'':<16} tokens {outcome.input_tokens} in / {outcome.output_tokens} out, "
            f"{usd(outcome.cost_usd)}{note}"
        )
    prices = "at CometAPI's list prices" if live else "emulated, at CometAPI's list prices"
    print(
        f"Total: {summary.images} images, {summary.input_tokens} input + "
        f"{summary.output_tokens} output tokens, {usd(summary.total_cost_usd)} ({prices})"
    )
    print()
    print("See the run in the Prefect UI:")
    if not ui_url:
        print(f"  {server_start_command(os.environ.get('PREFECT_HOME'))}")
        ui_url = UI_URL
    where = f"{ui_url}/runs/flow-run/{flow_run_id}" if flow_run_id else f"{ui_url}/runs"
    print(f"  then open {where}")
    print("  (Artifacts tab: the gallery, the results table and the progress bar of this run)")


def _run(args: argparse.Namespace) -> int:
    if args.live:
        if not args.bucket:
            print("error: --live needs --bucket NAME (an existing S3 bucket)", file=sys.stderr)
            return 2
        if not os.environ.get("COMETAPI_KEY"):
            print("error: --live needs the COMETAPI_KEY environment variable", file=sys.stderr)
            return 2
    # The Prefect server starts first: it takes the longest, and the flow's modules, the
    # emulator, the S3 server and the kept bucket are made ready meanwhile.
    with prefect_for_demo() as connect:
        return _run_with(args, connect)


def _run_with(
    args: argparse.Namespace, connect: Callable[[], AbstractContextManager[str | None]]
) -> int:
    from prefect_cometapi.batching.sources import EXAMPLE_ITEMS, EXAMPLE_TEMPLATE, parse_items
    from prefect_cometapi.blocks import CometAPICredentials
    from prefect_cometapi.demo.environ import allowing
    from prefect_cometapi.flows.batch import batch_generate
    from prefect_cometapi.forms.options import ImageOptions, S3Options, UpscaleOptions

    items = parse_items(EXAMPLE_ITEMS.read_text(encoding="utf-8"), EXAMPLE_ITEMS.name)
    items = items[: max(1, min(args.limit, len(items)))]
    parameters: dict[str, Any] = {
        "template": str(EXAMPLE_TEMPLATE),
        "items": items,
        "image": ImageOptions(size="1536x864", quality="low"),
        "upscale": UpscaleOptions(target="3840x2160"),
        "concurrency": args.concurrency,
    }

    def run(
        credentials: CometAPICredentials, s3: S3Options, budget: float | None, ui_url: str | None
    ) -> int:
        state = batch_generate(
            s3=s3, credentials_block=credentials, max_cost_usd=budget, return_state=True,
            **parameters,
        )  # fmt: skip
        summary = state.result(raise_on_failure=False)
        if isinstance(summary, BaseException):
            print(f"error: the demo flow failed: {summary}", file=sys.stderr)
            return 1
        files = _save_copies(summary, Path(args.output_dir), s3.endpoint_url)
        _add_local_copies_to_gallery(summary, state.state_details.flow_run_id, files)
        _report(summary, files, state.state_details.flow_run_id, args.live, ui_url)
        return 0 if summary.failed == 0 else 1

    if args.live:
        # The command line is the worker owner's own choice: allow what it names.
        with allowing([args.base_url or ""], [args.endpoint_url or ""]):
            credentials = CometAPICredentials()
            if args.base_url:
                credentials = credentials.model_copy(update={"base_url": args.base_url})
            s3 = S3Options(bucket=args.bucket, prefix=args.prefix, endpoint_url=args.endpoint_url)
            print(
                f"Live run: {len(items)} images from {credentials.base_url} to s3://{args.bucket}"
            )
            with connect() as ui_url:
                return run(credentials, s3, args.max_cost_usd, ui_url)

    with (
        _local_services() as (base_url, endpoint_url),
        _fake_aws_env(endpoint_url),
        allowing([base_url]),
    ):
        import boto3
        from prefect.settings import PREFECT_HOME

        from prefect_cometapi.demo.bucket import keep_bucket, kept_dir, restore_bucket

        client = boto3.client("s3")
        client.create_bucket(Bucket=DEMO_BUCKET)
        kept = kept_dir(Path(PREFECT_HOME.value()), DEMO_BUCKET)
        restored = restore_bucket(client, DEMO_BUCKET, kept)
        print(f"CometAPI emulator: {base_url} (offline: no real requests, nothing billed)")
        print(
            f"S3 (moto):         {endpoint_url}, bucket {DEMO_BUCKET}"
            + (
                f" ({restored} object{'s' if restored != 1 else ''} kept from earlier demo runs)"
                if restored
                else ""
            ),
            flush=True,
        )
        credentials = CometAPICredentials(api_key=DEMO_KEY, base_url=base_url)
        # No presigned links: they would point at the S3 server that stops with the demo (the
        # gallery shows previews, the S3 URIs and the local copies instead).
        s3 = S3Options(bucket=DEMO_BUCKET, prefix=args.prefix, presign_expires=None)
        # The image cache is keyed on the API's address already; a variant of its own also
        # keeps the emulator's drawings apart from any older cache entries of these products.
        parameters["image"] = parameters["image"].model_copy(update={"variant": OFFLINE_VARIANT})
        with connect() as ui_url:
            print(
                f"Running batch_generate: {len(items)} example products, 1536x864 quality low, "
                "upscaled to 3840x2160 ...",
                flush=True,
            )
            status = run(credentials, s3, None, ui_url)
        try:
            keep_bucket(client, DEMO_BUCKET, kept)
        except OSError as exc:
            print(f"note: the demo bucket could not be kept for the next run ({exc})")
        return status


def run_demo(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the demo.

    Args:
        args: Parsed options (from :func:`add_demo_arguments`), or argv-like strings, or
            ``None`` for ``sys.argv[1:]``.

    Returns:
        The exit status: 0 when every item was delivered.
    """
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="prefect-cometapi demo")
        add_demo_arguments(parser)
        args = parser.parse_args(args)
    if not 1 <= args.limit <= 5:
        print("error: --limit must be between 1 and 5", file=sys.stderr)
        return 2
    if not 1 <= args.concurrency <= 64:
        print("error: --concurrency must be between 1 and 64", file=sys.stderr)
        return 2
    return _run(args)
