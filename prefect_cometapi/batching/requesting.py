"""The image tasks as the flows call them, and their result store.

``generate_step`` and ``edit_step`` are ``generate_image`` and ``edit_image`` with identical cache
keys (the policy ignores task options) whose persisted results are not also kept in Prefect's
in-memory result cache, which would otherwise hold every image of a batch.
"""

from __future__ import annotations

from typing import Any

from prefect.states import State

from prefect_cometapi.models import ImageResult
from prefect_cometapi.tasks.images import edit_image, generate_image

__all__ = ["edit_step", "generate_step", "image_result_store", "run_request"]

generate_step = generate_image.with_options(cache_result_in_memory=False, tags=set())
edit_step = edit_image.with_options(cache_result_in_memory=False, tags=set())


def image_result_store() -> Any:
    """The result store the image tasks persist to (where their cache records live).

    Returns:
        Prefect's ``ResultStore`` for ``generate_step`` in the current context.
    """
    from prefect.results import get_result_store

    return get_result_store().update_for_task(generate_step)


def run_request(step: Any, **kwargs: Any) -> tuple[ImageResult | None, bool, BaseException | None]:
    """Call an image task and tell a fresh result, a cached one and a failure apart.

    Args:
        step: :data:`generate_step` or :data:`edit_step`.
        **kwargs: The task's arguments.

    Returns:
        ``(result, cached, error)``.
    """
    state: State[ImageResult] = step(return_state=True, **kwargs)
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        error = state.result(raise_on_failure=False)
        if not isinstance(error, BaseException):
            error = RuntimeError(state.message or "the image request failed")
        return None, False, error
    return state.result(), state.name == "Cached", None
