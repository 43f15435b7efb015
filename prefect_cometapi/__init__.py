"""prefect-cometapi: Prefect 3 tasks, flows and blocks for GPT Image models on CometAPI."""

from prefect_cometapi.blocks import CometAPICredentials
from prefect_cometapi.client import AsyncCometAPIClient, CometAPIClient
from prefect_cometapi.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CometAPIError,
    ContentPolicyError,
    ImageDownloadError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    TransientStatusError,
    UnexpectedResponseError,
    ValidationError,
    is_retryable,
)
from prefect_cometapi.models import GeneratedImage, ImageResult, Usage
from prefect_cometapi.pricing import DEFAULT_PRICES, ModelPrice, estimate_cost

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncCometAPIClient",
    "AuthenticationError",
    "BadRequestError",
    "CometAPIClient",
    "CometAPICredentials",
    "CometAPIError",
    "ContentPolicyError",
    "DEFAULT_PRICES",
    "GeneratedImage",
    "ImageDownloadError",
    "ImageResult",
    "MissingAPIKeyError",
    "ModelPrice",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
    "TransientStatusError",
    "UnexpectedResponseError",
    "Usage",
    "ValidationError",
    "estimate_cost",
    "is_retryable",
]
