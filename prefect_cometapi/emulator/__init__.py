"""A local CometAPI emulator: the OpenAI Images API (generations and edits) on 127.0.0.1.

It validates requests as the real API does, draws real images with Pillow, reports ``usage``,
counts what would have been billed, and injects faults (429, 5xx, 524, dropped connections, slow
responses, moderation blocks, HTML and redirects) on demand. The official ``openai`` SDK works
against it unchanged::

    from prefect_cometapi.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(latency_s=0.2)) as emu:
        client = openai.OpenAI(api_key="sk-anything", base_url=emu.base_url)
        client.images.generate(model="gpt-image-2", prompt="a red fox", size="1536x1024")
        assert emu.billed_images == 1

Faults come from ``X-Emulator-Fault: <name>``, a ``[[fault:<name>]]`` marker in the prompt,
:meth:`Emulator.script`, or the config's random rates (in that order of precedence); see
:data:`FAULTS`. Out of process: ``prefect-cometapi emulator --port 8000``; with ``--control``
(``Emulator(control=True)``) it also serves the ``/_emulator/state|reset|config|script`` control
endpoints (JSON bodies only; the configured keys are never shown).
"""

from prefect_cometapi.emulator.faults import FAULTS
from prefect_cometapi.emulator.server import Emulator
from prefect_cometapi.emulator.state import EmulatorConfig, RequestRecord

__all__ = ["FAULTS", "Emulator", "EmulatorConfig", "RequestRecord"]
