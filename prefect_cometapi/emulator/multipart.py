"""A small multipart/form-data parser (python-multipart is not a dependency of this project)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

__all__ = ["MultipartError", "Part", "parse_multipart"]


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


@dataclass(frozen=True)
class Part:
    """One form field.

    Attributes:
        name: The field name (``image``, ``image[]``, ``prompt`` ...).
        filename: The file name for file parts, else ``None``.
        content_type: The part's ``Content-Type``, if any.
        data: The raw bytes.
    """

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def is_file(self) -> bool:
        """Whether the part was sent as a file (has a ``filename``)."""
        return self.filename is not None


def _header_params(header_name: str, value: str) -> Message:
    msg = Message()
    msg[header_name] = value
    return msg


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart ``Content-Type``.

    Args:
        content_type: The header value.

    Returns:
        The boundary.

    Raises:
        MultipartError: If it is not multipart/form-data with a boundary.
    """
    msg = _header_params("content-type", content_type)
    if msg.get_content_type() != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {content_type or 'nothing'!r}")
    boundary = msg.get_param("boundary", header="content-type")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("multipart/form-data without a boundary")
    return boundary


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into its parts, in order.

    Args:
        body: The request body.
        content_type: The request's ``Content-Type`` header.

    Returns:
        The parts.

    Raises:
        MultipartError: If the body is malformed.
    """
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise MultipartError("no multipart boundary found in the body")
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts
        if not chunk.startswith(b"\r\n"):
            raise MultipartError("malformed multipart boundary line")
        head, sep, data = chunk[2:].partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("multipart part without a header/body separator")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        msg = _header_params("content-disposition", disposition)
        name = msg.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise MultipartError("multipart part without a field name")
        filename = msg.get_filename()
        parts.append(Part(name, filename, headers.get("content-type"), data))
    raise MultipartError("multipart body without its closing boundary")
