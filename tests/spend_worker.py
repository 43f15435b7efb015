"""One process of the spend-limit test: generate images under a shared spend limit.

Usage: ``python spend_worker.py '<json>'`` with ``base_url``, ``limit``, ``prompts`` and
``go_file``. The API key comes from ``COMETAPI_KEY`` and the Prefect API from the environment.
The process warms up, waits for the go file (so both processes start together), runs one flow
that maps ``generate_image`` over the prompts, and prints the sha256 of each image as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from prefect import flow, unmapped

from prefect_cometapi import CometAPICredentials
from prefect_cometapi.tasks import generate_image

GO_TIMEOUT_S = 120.0
SIZE = "1024x1024"
QUALITY = "medium"


@flow
def warm_up() -> None:
    """An empty flow run: Prefect's client and threads start before the go."""


@flow
def spend(base_url: str, limit: str, prompts: list[str]) -> list[str]:
    """Generate every prompt under the spend limit.

    Args:
        base_url: The emulator.
        limit: The spend limit's name.
        prompts: What to draw.

    Returns:
        The sha256 of each image.
    """
    credentials = CometAPICredentials(base_url=base_url)
    futures = generate_image.map(
        prompts, unmapped(credentials), size=SIZE, quality=QUALITY, spend_limit=limit
    )
    return [f.result().images[0].sha256 for f in futures]


def main() -> None:
    """Run it."""
    spec = json.loads(sys.argv[1])
    warm_up()
    go = Path(spec["go_file"])
    deadline = time.monotonic() + GO_TIMEOUT_S
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go")
        time.sleep(0.05)
    print(json.dumps(spend(spec["base_url"], spec["limit"], spec["prompts"])))


if __name__ == "__main__":
    main()
