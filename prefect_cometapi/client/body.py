"""Reading with a cap: the one capped body reader, its decoder, and the one local file reader.

:class:`BodyReader` collects a streamed HTTP body (the API's answers, image downloads and the
input downloads of :mod:`prefect_cometapi.inputs.fetch`) under a byte cap, raw and decoded;
:func:`read_path` reads a local file under a cap, refused from ``stat`` before it is read.

httpx's own decoders inflate each received chunk in full: a gzip bomb's chunk of a few
kilobytes becomes tens of megabytes before any cap is checked. :class:`BoundedDecoder` reads the
raw stream (``iter_raw``) and inflates with ``zlib``'s ``max_length``, so it never produces more
than the cap plus one byte, whatever arrives. It decodes ``gzip`` (several members too),
``deflate`` (zlib or raw) and ``identity``, in the order the ``Content-Encoding`` header lists
them; the clients only ask for those (``Accept-Encoding: gzip, deflate``).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import httpx

from prefect_cometapi.allowlist import shown_path
from prefect_cometapi.errors import UnexpectedResponseError, ValidationError

__all__ = [
    "ACCEPT_ENCODING",
    "BodyReader",
    "BodyTooLarge",
    "BoundedDecoder",
    "UnsupportedEncoding",
    "check_size",
    "read_path",
]

ACCEPT_ENCODING = "gzip, deflate"
"""What the clients send as ``Accept-Encoding``: only what :class:`BoundedDecoder` decodes."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_STEP = 1024 * 1024
"""The most one ``decompress`` call produces (zlib builds its output in blocks and joins them:
one call for the whole cap would briefly hold it twice)."""


class BodyTooLarge(Exception):
    """The body decodes to more than the cap."""


class UnsupportedEncoding(ValueError):
    """A ``Content-Encoding`` this decoder does not know (and the client did not ask for)."""


class _Inflater:
    """One ``gzip`` or ``deflate`` layer, its output capped at ``limit`` bytes in total."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.gzip = encoding in ("gzip", "x-gzip")
        self.limit = limit
        self.total = 0
        self.raw_deflate = False
        self.started = False
        self.done = False
        self.inflater = self._new()

    def _new(self) -> zlib._Decompress:
        if self.gzip:
            return zlib.decompressobj(_GZIP_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if self.raw_deflate else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        while data and not self.done:
            try:
                piece = self.inflater.decompress(data, min(_STEP, self.limit - self.total + 1))
            except zlib.error:
                if self.gzip or self.started or self.raw_deflate:
                    raise
                self.raw_deflate = True  # "deflate" sent without its zlib header
                self.inflater = self._new()
                continue
            self.started = True
            self.total += len(piece)
            if self.total > self.limit:
                raise BodyTooLarge
            if piece:
                out.append(piece)
            if self.inflater.eof:
                data = self.inflater.unused_data
                if self.gzip and data:
                    self.inflater = self._new()  # the next gzip member
                else:
                    self.done = True
            else:
                tail = self.inflater.unconsumed_tail
                if not piece and len(tail) >= len(data):
                    break  # no progress: wait for more input
                data = tail
        return out


class BoundedDecoder:
    """Decodes a body chunk by chunk, never past ``limit`` decoded bytes.

    Args:
        content_encoding: The response's ``Content-Encoding`` header (``None`` for none).
        limit: The most decoded bytes accepted.

    Raises:
        UnsupportedEncoding: An encoding other than ``gzip``, ``deflate`` or ``identity``.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        self.limit = limit
        self.total = 0
        names = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
        names = [e for e in names if e != "identity"]
        unknown = [e for e in names if e not in ("gzip", "x-gzip", "deflate")]
        if unknown:
            raise UnsupportedEncoding(f"the body's Content-Encoding {unknown[0][:40]!r}")
        # The last encoding listed was applied last: it is undone first.
        self.layers = [_Inflater(e, limit) for e in reversed(names)]

    def decode(self, chunk: bytes) -> list[bytes]:
        """Decode the next raw chunk.

        Args:
            chunk: Bytes as received.

        Returns:
            The decoded pieces (possibly none yet).

        Raises:
            BodyTooLarge: The body has now decoded to more than ``limit`` bytes.
            zlib.error: The body is not valid for its encoding.
        """
        pieces = [chunk] if chunk else []
        for layer in self.layers:
            pieces = [out for piece in pieces for out in layer.feed(piece)]
        self.total += sum(len(p) for p in pieces)
        if self.total > self.limit:
            raise BodyTooLarge
        return pieces


class BodyReader:
    """Collects a streamed body, enforcing a byte cap (raw and decompressed) and a deadline.

    The drivers feed it the raw stream chunk by chunk (``iter_raw``); it decodes with
    :class:`~prefect_cometapi.client.body.BoundedDecoder`, which never inflates past the cap. So
    a trickling server, an endless chunked body or a compression bomb ends in a typed error
    while it is being read, holding at most the cap in memory. The errors are the API's
    (``UnexpectedResponseError``); a subclass names its own in :meth:`too_large`,
    :meth:`not_decodable` and :meth:`unsupported`.

    Args:
        response: The streamed response.
        cap: The most bytes accepted, on the wire and after decompression.
        deadline: ``time.monotonic()`` by which the whole body must have arrived.
        where: The base URL (or the source), for the error message.
    """

    def __init__(self, response: httpx.Response, cap: int, deadline: float, where: str) -> None:
        self.response = response
        self.cap = cap
        self.deadline = deadline
        self.where = where
        self.chunks: list[bytes] = []
        try:
            self.decoder = BoundedDecoder(response.headers.get("content-encoding"), cap)
        except UnsupportedEncoding as exc:
            raise self.unsupported(exc) from None

    def unsupported(self, exc: UnsupportedEncoding) -> Exception:
        """The error for a ``Content-Encoding`` that is not decoded."""
        return UnexpectedResponseError(self.response.status_code, f"{exc}", self.where)

    def too_large(self, decoded: bool) -> Exception:
        """The error for a body over the cap (``decoded``: once decompressed)."""
        return UnexpectedResponseError(
            self.response.status_code,
            f"a body over {self.cap // (1024 * 1024)} MB (stopped reading)",
            self.where,
        )

    def not_decodable(self) -> Exception:
        """The error for a body that is not valid for its ``Content-Encoding``."""
        return UnexpectedResponseError(
            self.response.status_code,
            "a body that is not valid for its Content-Encoding",
            self.where,
        )

    def add(self, chunk: bytes) -> None:
        """Take one raw chunk (as received, still compressed).

        Raises:
            UnexpectedResponseError: Over the cap (raw or decoded), or not valid for its
                ``Content-Encoding`` (a subclass's own errors instead).
            httpx.ReadTimeout: Past the deadline (the exchange treats it as a timeout).
        """
        if self.response.num_bytes_downloaded > self.cap:
            self.chunks.clear()
            raise self.too_large(False)
        try:
            self.chunks.extend(self.decoder.decode(chunk))
        except BodyTooLarge:
            self.chunks.clear()
            raise self.too_large(True) from None
        except zlib.error:
            self.chunks.clear()
            raise self.not_decodable() from None
        if time.monotonic() > self.deadline:
            raise httpx.ReadTimeout(
                "the answer took longer than the attempt's total deadline",
                request=self.response.request,
            )

    def add_decoded(self, body: bytes) -> None:
        """Take a body an ``httpx`` event hook already read (and decoded) in full.

        Raises:
            UnexpectedResponseError: Over the cap.
        """
        if len(body) > self.cap:
            raise self.too_large(True)
        self.chunks.append(body)

    def finished(self) -> httpx.Response:
        """The response with its whole (decoded) body in memory.

        Returns:
            A new ``httpx.Response`` with the same status, headers (without the encoding) and
            request.
        """
        dropped = ("content-encoding", "content-length", "transfer-encoding")
        headers = [
            (k, v) for k, v in self.response.headers.multi_items() if k.lower() not in dropped
        ]
        body = b"".join(self.chunks)
        self.chunks.clear()
        return httpx.Response(
            self.response.status_code, headers=headers, content=body, request=self.response.request
        )


def check_size(size: int, max_bytes: int, param: str, what: str) -> None:
    """The one size rule of what is read: at most ``max_bytes``.

    Args:
        size: The size found (from ``stat``, a header, or the bytes read).
        max_bytes: The cap.
        param: The parameter errors blame.
        what: What the message names (a path, a URL).

    Raises:
        ValidationError: Over the cap.
    """
    if size > max_bytes:
        raise ValidationError(
            param,
            f"{what} is {size:,} bytes, more than the {max_bytes:,} byte limit "
            "(raise max_bytes or shrink the file)",
        )


def read_path(path: Path, max_bytes: int, param: str) -> bytes:
    """The one reader of local files: refused from ``stat`` over ``max_bytes``, then read.

    It reads the path it is given (the input allow-list, when there is one, is checked before
    by the caller).

    Args:
        path: The file.
        max_bytes: The cap (:func:`check_size`).
        param: The parameter errors blame.

    Returns:
        The bytes.

    Raises:
        ValidationError: Missing, a directory, not readable, over the cap.
    """
    shown = shown_path(path)
    try:
        if path.is_dir():
            raise ValidationError(param, f"{shown} is a directory; give the path of a file")
        check_size(path.stat().st_size, max_bytes, param, shown)
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ValidationError(
            param,
            f"file not found: {shown}; it could not be read (a relative path starts at the "
            "working directory); check the path, or give a URL or s3:// URI",
        ) from None
    except PermissionError:
        raise ValidationError(
            param, f"file not readable: {shown} (permission denied); fix its permissions"
        ) from None
    except OSError as exc:
        raise ValidationError(
            param, f"could not be read from {shown}: {exc.strerror or exc}"
        ) from None
    check_size(len(data), max_bytes, param, shown)
    return data
