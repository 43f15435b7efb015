"""Runs for tools/ui_check_forms.py to look at: hostile values, and a review gate that waits.

Offline, like the demo: the CometAPI emulator and moto's S3 server on 127.0.0.1, against the
Prefect server named by ``PREFECT_API_URL``.

- ``hostile``: a batch whose variables and a single-image run whose item id and S3 prefix are
  markdown images, ``javascript:`` links, HTML and bare URLs; the flow runs' ids are printed.
- ``review``: a two-item batch with ``review=ReviewOptions(...)``; it pauses (a flow called
  from a script) until the round is answered in the UI or through the API.

    PREFECT_API_URL=http://127.0.0.1:4200/api python tools/ui_runs.py hostile|review
"""

from __future__ import annotations

import sys
from typing import Any

HOSTILE = [
    "![t](http://attacker.example/t.png)",
    "[x](javascript:alert(1))",
    "<img src=http://attacker.example/x>",
    "see https://attacker.example/bare www.attacker.example",
]
"""Values that must reach the UI as inert text."""


def _runs(mode: str) -> int:
    from prefect_cometapi.blocks import CometAPICredentials
    from prefect_cometapi.demo.environ import allowing
    from prefect_cometapi.demo.run import DEMO_KEY, _fake_aws_env, _local_services
    from prefect_cometapi.flows.batch import batch_generate
    from prefect_cometapi.flows.pipeline import generate_and_upload
    from prefect_cometapi.forms.options import ImageOptions, S3Options
    from prefect_cometapi.forms.review import ReviewOptions

    with (
        _local_services() as (base_url, endpoint_url),
        _fake_aws_env(endpoint_url),
        allowing([base_url]),
    ):
        import boto3

        boto3.client("s3").create_bucket(Bucket="ui-check")
        credentials = CometAPICredentials(api_key=DEMO_KEY, base_url=base_url, max_retries=0)
        s3 = S3Options(bucket="ui-check", presign_expires=None)
        image = ImageOptions(size="1024x1024", quality="low")
        common: dict[str, Any] = {"credentials_block": credentials, "image": image}
        if mode == "review":
            state = batch_generate(
                s3=s3, template="A banner for {{ name }}",
                items=[{"id": "lamp", "name": "Lumen lamp"}, {"id": "kettle", "name": HOSTILE[0]}],
                review=ReviewOptions(timeout_s=900, on_timeout="approve_all"),
                return_state=True, **common,
            )  # fmt: skip
            print(f"review {state.state_details.flow_run_id} {state.type.value}", flush=True)
            return 0
        state = batch_generate(
            s3=s3, template="A banner for {{ name }}",
            items=[{"id": f"h{n}", "name": value} for n, value in enumerate(HOSTILE)],
            return_state=True, **common,
        )  # fmt: skip
        print(f"hostile-batch {state.state_details.flow_run_id} {state.type.value}", flush=True)
        for n, value in enumerate(HOSTILE):
            state = generate_and_upload(
                prompt=f"a lighthouse {value}", item_id=value,
                s3=s3.model_copy(update={"prefix": f"x{n}/{value}/".replace(" ", "-"),
                                         "key_template": "{prefix}{date}/{sha8}.{ext}"}),
                return_state=True, **common,
            )  # fmt: skip
            run_id = state.state_details.flow_run_id
            print(f"hostile-single {run_id} {state.type.value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_runs(sys.argv[1] if len(sys.argv) > 1 else "hostile"))
