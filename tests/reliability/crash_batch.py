"""Run one ``batch_generate`` in its own process (the crash-and-resume test kills it).

Usage: ``python crash_batch.py '<json>'`` with ``base_url``, ``bucket``, ``endpoint_url``,
``tag``, ``count`` and ``concurrency``. The API key comes from ``COMETAPI_KEY`` (never argv), the
Prefect API and result storage from the environment the test passes on. The batch is built with
the same helpers as the test's own re-run, so both runs send identical requests.
"""

from __future__ import annotations

import json
import sys

from reliability_support import crash_batch_kwargs

from prefect_cometapi.flows import batch_generate


def main(argv: list[str]) -> int:
    """Run the batch described by ``argv[1]`` and print its headline.

    Args:
        argv: ``sys.argv``.

    Returns:
        The exit code.
    """
    spec = json.loads(argv[1])
    summary = batch_generate(**crash_batch_kwargs(**spec))
    print(summary.headline(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
