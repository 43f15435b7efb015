"""Every public task and flow pickles: Prefect pickles a served flow, with the tasks it calls,
to start each of its runs in a subprocess (``flow.serve``), so a closure over a lock, a thread
pool or a ``ContextVar`` in any of them crashes every served run before it starts."""

from __future__ import annotations

import cloudpickle
import pytest

import prefect_cometapi.flows as flows
import prefect_cometapi.tasks as tasks

PUBLIC = [
    (module.__name__, name)
    for module in (tasks, flows)
    for name in module.__all__
    if hasattr(getattr(module, name), "fn")
]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[n for _, n in PUBLIC])
def test_public_tasks_and_flows_pickle(module: str, name: str) -> None:
    obj = getattr(tasks if module == tasks.__name__ else flows, name)
    again = cloudpickle.loads(cloudpickle.dumps(obj))
    assert again.name == obj.name


def test_the_list_covers_the_image_and_upload_twins() -> None:
    names = {name for _, name in PUBLIC}
    assert {"generate_image", "agenerate_image", "aupload_to_s3", "batch_generate"} <= names
