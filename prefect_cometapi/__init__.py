"""prefect-cometapi: Prefect 3 tasks, flows and blocks for GPT Image models on CometAPI."""

from prefect_cometapi.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CometAPIError,
    ContentPolicyError,
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
    "AuthenticationError",
    "BadRequestError",
    "CometAPIError",
    "ContentPolicyError",
    "DEFAULT_PRICES",
    "GeneratedImage",
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
