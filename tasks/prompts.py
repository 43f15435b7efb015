"""The ``render_prompt`` task: a prompt template rendered into a checked prompt.

The rendering and its rules are :func:`prefect_cometapi.templates.render_template`, usable
without Prefect. ``arender_prompt`` is its async twin.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from prefect_cometapi.orchestration.twins import async_twin
from prefect_cometapi.templates import render_template

__all__ = ["arender_prompt", "render_prompt", "render_template"]


@task(name="render-prompt", cache_policy=NO_CACHE)
def render_prompt(
    template: str | os.PathLike[str], variables: Mapping[str, Any] | None = None
) -> str:
    """Prefect task: render a prompt template (see
    :func:`prefect_cometapi.templates.render_template` for every rule).

    Cheap and deterministic, so it has no retries and no cache. Errors are
    :class:`~prefect_cometapi.errors.ValidationError` and fail the task run at once.

    Args:
        template: Template text, or the path of a template file.
        variables: Values for the template's names.

    Returns:
        The rendered, stripped prompt.
    """
    prompt = render_template(template, variables)
    get_run_logger().info("Rendered a prompt of %d characters", len(prompt))
    return prompt


arender_prompt = async_twin(render_prompt)
