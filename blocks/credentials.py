"""The ``CometAPICredentials`` block: the API key, where the API lives, and how long to wait."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator

from prefect_cometapi.allowlist import DEFAULT_BASE_URL, check_base_url
from prefect_cometapi.client import AsyncCometAPIClient, CometAPIClient
from prefect_cometapi.client.core import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
)
from prefect_cometapi.client.keys import check_api_key, resolve_api_key
from prefect_cometapi.errors import ValidationError
from prefect_cometapi.forms.fields import OptionalSecret
from prefect_cometapi.orchestration.named_blocks import aload_block, load_block

__all__ = ["CometAPICredentials"]


class CometAPICredentials(Block):
    """Credentials and connection settings for CometAPI's OpenAI-compatible Images API.

    The API key is stored as a secret; when it is left empty, the ``COMETAPI_KEY`` environment
    variable of the process that runs the flow is used instead.

    Attributes:
        api_key: The CometAPI key (``sk-...``).
        base_url: The API base URL, ending in ``/v1``.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for an answer.
        max_retries: Client-side retries of transient failures per task attempt.

    Example:
        Load a stored block and generate an image:
        ```python
        from prefect_cometapi import CometAPICredentials

        credentials = CometAPICredentials.load("BLOCK_NAME")
        with credentials.get_client() as client:
            result = client.generate("a lighthouse at dawn", size="1536x1024", quality="low")
        ```
    """

    # A refused key must not be echoed back in pydantic's error text.
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "CometAPI Credentials"
    _block_type_slug = "cometapi-credentials"
    _logo_url = "https://www.cometapi.com/favicon.png"  # type: ignore[assignment]
    _documentation_url = "https://apidoc.cometapi.com/images-generations"  # type: ignore[assignment]
    _description = (
        "Credentials and connection settings for GPT Image models (gpt-image-2) on CometAPI's "
        "OpenAI-compatible Images API."
    )

    api_key: OptionalSecret = Field(
        default=None,
        title="API Key",
        description=(
            "The CometAPI key. Leave empty to use the COMETAPI_KEY environment variable of the "
            "worker."
        ),
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        title="Base URL",
        description="The Images API base URL, ending in /v1 (a local emulator for tests).",
    )
    connect_timeout: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT,
        gt=0,
        description="Seconds to wait for a TCP/TLS connection.",
    )
    read_timeout: float = Field(
        default=DEFAULT_READ_TIMEOUT,
        gt=0,
        description=(
            "Seconds to wait for the API's answer. High quality and 4K images can take minutes, "
            "so the default is 600."
        ),
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES,
        ge=0,
        le=10,
        description=(
            "Retries of transient failures (429, 5xx, timeouts, dropped connections) inside one "
            "task attempt."
        ),
    )

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, value: SecretStr | None) -> SecretStr | None:
        """Refuse, when the block is built, a key that cannot go in an HTTP header."""
        if value is not None:
            check_api_key(value.get_secret_value().strip())
        return value

    def resolved_api_key(self) -> str:
        """The key in use: this block's, else ``COMETAPI_KEY``.

        Returns:
            The key.

        Raises:
            MissingAPIKeyError: If neither is set.
        """
        return resolve_api_key(self.api_key)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            # The block's own key, or None: the client then uses COMETAPI_KEY and checks that
            # the worker allows this base URL for it.
            "api_key": self.api_key,
            "base_url": self.base_url,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_retries": self.max_retries,
        }

    def get_client(self) -> CometAPIClient:
        """Build a synchronous Images API client from these settings.

        Returns:
            A :class:`~prefect_cometapi.client.CometAPIClient`; use it as a context manager.
        """
        return CometAPIClient(**self._client_kwargs())

    def get_async_client(self) -> AsyncCometAPIClient:
        """Build an asynchronous Images API client from these settings.

        Returns:
            An :class:`~prefect_cometapi.client.AsyncCometAPIClient`.
        """
        return AsyncCometAPIClient(**self._client_kwargs())


CredentialsLike = CometAPICredentials | str | None
"""What the tasks take as credentials: a block, a saved block's name, or ``None``."""


def _block(credentials: CredentialsLike, loaded: CometAPICredentials | None) -> CometAPICredentials:
    if loaded is not None:
        return loaded
    if isinstance(credentials, CometAPICredentials):
        return credentials
    if credentials is None or credentials == "":
        return CometAPICredentials()
    raise ValidationError(
        "credentials",
        "must be a CometAPICredentials block, the name of a saved one, or empty",
        type(credentials),
    )


def _missing(name: str, exc: ValueError) -> ValidationError:
    return ValidationError(
        "credentials_block",
        f"no CometAPI Credentials block named {name!r} ({exc}); create it in the UI (Blocks) "
        "or leave it empty to use COMETAPI_KEY",
    )


def _checked(credentials: CometAPICredentials, base_url: str | None) -> CometAPICredentials:
    """Apply the allow-list: the key goes only where the worker allows."""
    saved = getattr(credentials, "_block_document_id", None) is not None
    if not saved:
        check_base_url(credentials.base_url, param="credentials_block.base_url")
    if base_url:
        allowed = check_base_url(base_url, also=[credentials.base_url] if saved else [])
        credentials = credentials.model_copy(update={"base_url": allowed})
    return credentials


def resolve_credentials(
    credentials: CredentialsLike, base_url: str | None = None
) -> CometAPICredentials:
    """The credentials a task or a flow uses: from a block, a saved block's name or nothing.

    A name is loaded once per flow run
    (:func:`~prefect_cometapi.orchestration.named_blocks.load_block`): the cache key and the
    task body of every task run in the flow run share that one load. The key goes only where
    the worker allows (see :mod:`prefect_cometapi.allowlist`): a saved block's own base URL,
    CometAPI's, or a host in ``PREFECT_COMETAPI_ALLOWED_BASE_URLS``. A block given inline (not
    loaded from the server) and ``base_url`` may be run parameters, so they may name only the
    last two.

    Args:
        credentials: A ``CometAPICredentials`` block, the name of a saved one, or ``None`` for
            ``COMETAPI_KEY`` and the default base URL.
        base_url: Overrides the block's base URL (an allowed host only).

    Returns:
        The block (a copy when ``base_url`` changes it).

    Raises:
        ValidationError: ``param="credentials_block"`` when no block has that name;
            ``param="base_url"`` (or ``credentials_block.base_url``) for a host the worker does
            not allow.
    """
    loaded = None
    if isinstance(credentials, str) and credentials:
        try:
            loaded = load_block(CometAPICredentials, credentials)
        except ValueError as exc:
            raise _missing(credentials, exc) from None
    return _checked(_block(credentials, loaded), base_url)


async def aresolve_credentials(
    credentials: CredentialsLike, base_url: str | None = None
) -> CometAPICredentials:
    """:func:`resolve_credentials` for async code (loads a named block without blocking).

    Args:
        credentials: The block, its name, or ``None``.
        base_url: Overrides the block's base URL (an allowed host only).

    Returns:
        The block.

    Raises:
        ValidationError: As :func:`resolve_credentials`.
    """
    loaded = None
    if isinstance(credentials, str) and credentials:
        try:
            loaded = await aload_block(CometAPICredentials, credentials)
        except ValueError as exc:
            raise _missing(credentials, exc) from None
    return _checked(_block(credentials, loaded), base_url)
