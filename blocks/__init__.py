"""Prefect blocks of prefect-cometapi."""

from prefect_cometapi.blocks.credentials import CometAPICredentials

__all__ = ["CometAPICredentials"]
