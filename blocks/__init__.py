"""Prefect blocks of prefect-cometapi."""

from prefect_cometapi.blocks.credentials import (
    CometAPICredentials,
    CredentialsLike,
    aresolve_credentials,
    resolve_credentials,
)

__all__ = ["CometAPICredentials", "CredentialsLike", "aresolve_credentials", "resolve_credentials"]
