"""One worker of the spend-limit test: serves the ``spend`` flow as a deployment.

Usage: ``python spend_worker.py '<json>'`` with ``deployment`` (its name) and ``runs_at_once``.
Both workers of the test serve the same deployment on the same Prefect server, so each picks
up some of its flow runs (each in a subprocess, as any served deployment's). The API key comes
from ``COMETAPI_KEY``, the Prefect API from the environment, and the worker's name from
``SPEND_WORKER``: a flow run writes the sha256 of its images and the name of the worker that ran
it to ``<out_dir>/<flow run id>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from prefect import flow, unmapped
from prefect.runtime import flow_run

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.tasks import generate_image

SIZE = "1024x1024"
QUALITY = "medium"


@flow
def spend(base_url: str, limit: str, prompts: list[str], out_dir: str) -> None:
    """Generate every prompt under the spend limit and write what was made.

    Args:
        base_url: The emulator.
        limit: The spend limit's name.
        prompts: What to draw.
        out_dir: Where the run's record goes.
    """
    credentials = CometAPICredentials(base_url=base_url)
    futures = generate_image.map(
        prompts, unmapped(credentials), size=SIZE, quality=QUALITY, spend_limit=limit
    )
    made = [f.result().images[0].sha256 for f in futures]
    record = {"worker": os.environ["SPEND_WORKER"], "sha256": made}
    Path(out_dir, f"{flow_run.id}.json").write_text(json.dumps(record))


def main() -> None:
    """Serve the deployment until stopped."""
    spec = json.loads(sys.argv[1])
    spend.serve(name=spec["deployment"], limit=spec["runs_at_once"])


if __name__ == "__main__":
    main()
