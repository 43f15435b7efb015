"""Prompt templates: Jinja2 rendering in a bounded sandbox, every problem a ``ValidationError``."""

from prefect_cometapi.templates.render import (
    MAX_RENDER_CHARS,
    MAX_TEMPLATE_BYTES,
    TEMPLATE_SUFFIXES,
    render_template,
)

__all__ = ["MAX_RENDER_CHARS", "MAX_TEMPLATE_BYTES", "TEMPLATE_SUFFIXES", "render_template"]
