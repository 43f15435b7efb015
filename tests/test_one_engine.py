"""One engine (issue 18.1): a user's flow of the public tasks and ``batch_generate`` keep the same
guarantees, because they run the same code.

The table: each row is a way to make and store images -- a flow a user writes from the public
tasks (sync ``.map`` of ``generate_image`` then ``upload_to_s3``; async ``asyncio.gather`` of
``agenerate_image`` then ``aupload_to_s3``) and the packaged ``batch_generate`` -- and each
column a guarantee, asserted on what the row's two runs (a first run and a re-run of the same
work) left behind on the real parts: the session's emulator, moto's S3 server and the Prefect
test server, all on 127.0.0.1.

Each row's S3 credentials are its own (an access key id no other test uses, which moto accepts),
so "built once per process and credentials" counts the real ``boto3`` client constructions of
exactly those credentials, over both runs. The rows also cover prefect-aws blocks: the sync row
passes an ``AwsCredentials`` block with a bucket name, the async row an ``S3Bucket`` block as
``bucket=``, and ``batch_generate`` a saved ``S3Bucket`` block's name in its ``S3Options``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from flow_checks import EVENTS_PAGE, asset_events_under
from prefect import flow, unmapped
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect_aws import AwsCredentials, S3Bucket
from prefect_aws.client_parameters import AwsClientParameters

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.events import IMAGE_EVENT_PREFIX
from prefect_cometapi.flows import ImageOptions, S3Options, batch_generate
from prefect_cometapi.tasks import agenerate_image, aupload_to_s3, generate_image, upload_to_s3

N = 4
SIZE = "1024x640"
ROWS = ["user sync .map flow", "user async gather flow", "batch_generate"]


@dataclass
class Observed:
    """What a row's first run and re-run left behind.

    Attributes:
        n: Images each run makes.
        prefix: ``s3://bucket/prefix/`` the objects went under.
        clients_built: Real boto3 S3 client constructions for the row's credentials (both runs).
        billed_first: Requests the emulator billed in the first run.
        requests_rerun: Requests the emulator received in the re-run.
        ops_first: S3 operations the row's clients sent in the first run.
        ops_rerun: The same for the re-run.
        uris_first: The objects of the first run.
        uris_rerun: The objects the re-run reports.
        existed_rerun: For each object of the re-run, whether it was reported as already there.
        flow_run_first: The first run's flow run id.
        objects: The objects in the bucket after both runs.
        paid_first: ``(cached, billed_usd)`` of each result the first run's caller received.
        paid_rerun: The same for the re-run.
    """

    n: int
    prefix: str
    clients_built: int = 0
    billed_first: int = 0
    requests_rerun: int = 0
    ops_first: list[str] = field(default_factory=list)
    ops_rerun: list[str] = field(default_factory=list)
    uris_first: list[str] = field(default_factory=list)
    uris_rerun: list[str] = field(default_factory=list)
    existed_rerun: list[bool] = field(default_factory=list)
    flow_run_first: str = ""
    objects: set[str] = field(default_factory=set)
    paid_first: list[tuple[bool, float]] = field(default_factory=list)
    paid_rerun: list[tuple[bool, float]] = field(default_factory=list)


class ClientCounter:
    """Counts real ``boto3`` S3 client constructions for one access key id, and what they send."""

    def __init__(self, access_key_id: str) -> None:
        self.access_key_id = access_key_id
        self.built = 0
        self.ops: list[str] = []

    def _record(self, event_name: str, **_: Any) -> None:
        self.ops.append(event_name.rsplit(".", 1)[-1])

    @staticmethod
    def _key_of(session: Any, kwargs: dict[str, Any]) -> str | None:
        if kwargs.get("aws_access_key_id"):
            return kwargs["aws_access_key_id"]
        credentials = session.get_credentials()
        return credentials.access_key if credentials is not None else None

    def wrap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap ``boto3.session.Session.client`` for this test.

        Args:
            monkeypatch: The test's monkeypatch.
        """
        real = boto3.session.Session.client
        counter = self

        def client(session: Any, *args: Any, **kwargs: Any) -> Any:
            made = real(session, *args, **kwargs)
            if counter._key_of(session, kwargs) == counter.access_key_id:
                counter.built += 1
                made.meta.events.register("before-send.s3", counter._record)
            return made

        monkeypatch.setattr(boto3.session.Session, "client", client)


def _aws(access_key_id: str, endpoint_url: str) -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=access_key_id,
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint_url),
    )


def _user_sync(credentials: Any, prompts: list[str], target: dict[str, Any]) -> Any:
    @flow(name="user-sync-map")
    def user_sync_map() -> list[Any]:
        results = generate_image.map(prompts, unmapped(credentials), size=SIZE, quality="low")
        stored = upload_to_s3.map(results, **{k: unmapped(v) for k, v in target.items()})
        return [(s.result(), r.result()) for s, r in zip(stored, results, strict=True)]

    return user_sync_map(return_state=True)


def _user_async(credentials: Any, prompts: list[str], target: dict[str, Any]) -> Any:
    @flow(name="user-async-gather")
    async def user_async_gather() -> list[Any]:
        results = await asyncio.gather(
            *(agenerate_image(p, credentials, size=SIZE, quality="low") for p in prompts)
        )
        stored = await asyncio.gather(*(aupload_to_s3(r, **target) for r in results))
        return list(zip(stored, results, strict=True))

    return asyncio.run(user_async_gather(return_state=True))


def _paid(pairs: list[Any]) -> list[tuple[bool, float]]:
    return [(result.cached, result.billed_usd) for _, result in pairs]


def _run_row(row: str, emulator: Any, api_key: str, s3_server: Any, bucket: str) -> Observed:
    word = uuid.uuid4().hex[:10]
    access_key_id = f"ONE{uuid.uuid4().hex[:17].upper()}"
    counter = ClientCounter(access_key_id)
    credentials = CometAPICredentials(api_key=api_key, base_url=emulator.base_url, max_retries=0)
    prefix = f"{row.split()[1] if row.startswith('user') else 'batch'}/"
    observed = Observed(n=N, prefix=f"s3://{bucket}/{prefix}")
    aws = _aws(access_key_id, s3_server.endpoint_url)
    prompts = [f"one engine {word} item {i}" for i in range(N)]
    if row == "user sync .map flow":
        target = {"bucket": bucket, "prefix": prefix, "aws_credentials": aws}

        def run() -> tuple[Any, list[Any], list[Any]]:
            state = _user_sync(credentials, prompts, target)
            pairs = state.result()
            return state, [(s.uri, s.existed) for s, _ in pairs], _paid(pairs)
    elif row == "user async gather flow":
        target = {"bucket": S3Bucket(bucket_name=bucket, credentials=aws), "prefix": prefix}

        def run() -> tuple[Any, list[Any], list[Any]]:
            state = _user_async(credentials, prompts, target)
            pairs = state.result()
            return state, [(s.uri, s.existed) for s, _ in pairs], _paid(pairs)
    else:
        block = f"one-engine-{word}"
        S3Bucket(bucket_name=bucket, credentials=aws).save(block)
        s3 = S3Options(bucket_block=block, prefix=prefix)
        items = [{"id": f"i{i}", "prompt": p} for i, p in enumerate(prompts)]

        def run() -> tuple[Any, list[Any], list[Any]]:
            state = batch_generate(
                template="{{ prompt }}",
                items=items,
                s3=s3,
                image=ImageOptions(custom_size=SIZE, quality="low"),
                credentials_block=credentials,
                concurrency=N,
                return_state=True,
            )
            summary = state.result()
            return (
                state,
                [
                    (image.uri, image.existed or o.already_delivered)
                    for o in summary.outcomes
                    for image in o.images
                ],
                [(o.cached, o.cost_usd) for o in summary.outcomes],
            )

    emulator.reset()
    with pytest.MonkeyPatch.context() as monkeypatch:
        counter.wrap(monkeypatch)
        state, first, observed.paid_first = run()
        observed.billed_first = emulator.billed_requests
        observed.ops_first = list(counter.ops)
        counter.ops.clear()
        before = len(emulator.requests)
        _, again, observed.paid_rerun = run()
        observed.requests_rerun = len(emulator.requests) - before
        observed.ops_rerun = list(counter.ops)
    observed.clients_built = counter.built
    observed.flow_run_first = str(state.state_details.flow_run_id)
    observed.uris_first = [uri for uri, _ in first]
    observed.uris_rerun = [uri for uri, _ in again]
    observed.existed_rerun = [existed for _, existed in again]
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    observed.objects = {f"s3://{bucket}/{o['Key']}" for o in listing.get("Contents", [])}
    return observed


@pytest.fixture(scope="module")
def observe(
    emulator_server: Any, api_key: str, s3_server: Any
) -> Iterator[Callable[[str], Observed]]:
    """Each row's two runs, made once for the whole table (in a bucket of the row's own)."""
    made: dict[str, Observed] = {}
    buckets: list[str] = []
    admin = s3_server.client()

    def get(row: str) -> Observed:
        if row not in made:
            bucket = f"one-engine-{uuid.uuid4().hex[:12]}"
            admin.create_bucket(Bucket=bucket)
            buckets.append(bucket)
            made[row] = _run_row(row, emulator_server, api_key, s3_server, bucket)
        return made[row]

    yield get
    for bucket in buckets:
        for obj in admin.list_objects_v2(Bucket=bucket).get("Contents", []):
            admin.delete_object(Bucket=bucket, Key=obj["Key"])
        admin.delete_bucket(Bucket=bucket)


def s3_client_built_once(seen: Observed) -> None:
    """One boto3 client for the row's endpoint and credentials, over both runs and all items."""
    assert seen.clients_built == 1, f"{seen.clients_built} clients built"


def paid_once(seen: Observed) -> None:
    """The first run pays for each image once; the re-run sends the API nothing."""
    assert seen.billed_first == seen.n
    assert seen.requests_rerun == 0


def events_emitted(seen: Observed) -> None:
    """Each stored object is a Prefect asset, and the first run emitted one generation event
    per image, linked to its flow run."""
    assert seen.objects == set(seen.uris_first) and len(seen.objects) == seen.n
    assets = asset_events_under(seen.prefix, seen.n)
    assert {e.resource.id for e in assets} >= seen.objects
    assert all(e.event == "prefect.asset.materialization.succeeded" for e in assets)
    generated = f"{IMAGE_EVENT_PREFIX}.generated"
    wanted = EventFilter(
        event=EventNameFilter(name=[generated]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{seen.flow_run_first}"]),
    )
    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=wanted, limit=EVENTS_PAGE).events
        if len(events) >= seen.n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(events) == seen.n


def delivery_skipped_on_rerun(seen: Observed) -> None:
    """The re-run finds every object already there: nothing is uploaded again."""
    assert seen.uris_rerun == seen.uris_first
    assert all(seen.existed_rerun)
    assert "PutObject" in seen.ops_first
    assert not {"PutObject", "CreateMultipartUpload", "UploadPart"} & set(seen.ops_rerun)


def paid_or_cached_on_the_result(seen: Observed) -> None:
    """Each result the caller receives says whether this run paid: the first run's results are
    not cached and bill their price, the re-run's are cached and bill 0 (sum billed_usd)."""
    assert len(seen.paid_first) == len(seen.paid_rerun) == seen.n
    assert all(not cached and billed > 0 for cached, billed in seen.paid_first)
    assert all(cached and billed == 0 for cached, billed in seen.paid_rerun)
    assert sum(billed for _, billed in seen.paid_rerun) == 0


GUARANTEES: dict[str, Callable[[Observed], None]] = {
    "S3 client built once per process+credentials": s3_client_built_once,
    "paid once (emulator request count)": paid_once,
    "events emitted": events_emitted,
    "delivery skipped on a re-run": delivery_skipped_on_rerun,
    "paid-or-cached on the result": paid_or_cached_on_the_result,
}


@pytest.mark.parametrize("guarantee", list(GUARANTEES))
@pytest.mark.parametrize("row", ROWS)
def test_guarantee(row: str, guarantee: str, observe: Callable[[str], Observed]) -> None:
    GUARANTEES[guarantee](observe(row))
