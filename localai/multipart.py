"""Multipart uploads streamed to disk: the file is written as it arrives, never held in memory.

Once the file passes its limit nothing more is written (the partial file is deleted) and the
service answers 400 `file_too_large` at once; the HTTP server reads and drops the rest of the
body, so the client still gets that answer rather than a broken connection it would retry.
Memory stays at one network chunk whatever the size of the upload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from localai.exceptions import InvalidRequest

MAX_FIELD_BYTES = 64 * 1024  # form fields next to the file (purpose, ...) are small


@dataclass
class StreamedForm:
    """The form fields, and the file written to `path` (absent when the part was missing)."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0
    too_large: bool = False


class _Receiver:
    """python-multipart callbacks: the file part goes to disk, other parts to small buffers."""

    def __init__(self, file_field: str, path: Path, max_bytes: int) -> None:
        self.file_field, self.target, self.max_bytes = file_field, path, max_bytes
        self.form = StreamedForm()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._in_file = False
        self._out: IO[bytes] | None = None

    def on_part_begin(self) -> None:
        self._headers, self._name, self._value, self._in_file = {}, None, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == self.file_field and b"filename" in options:
            self.form.filename = options[b"filename"].decode("utf-8", "replace")
            self.form.path = self.target
            self._in_file = True
            self._out = open(self.target, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.form.size += end - start
            if self.form.size > self.max_bytes and not self.form.too_large:
                self.form.too_large = True
                self.discard()
            elif self._out is not None:
                self._out.write(data[start:end])
        elif len(self._value) + end - start > MAX_FIELD_BYTES:
            raise InvalidRequest(f"Form field '{self._name}' is too large", param=self._name)
        else:
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._in_file:
            if self._out is not None:
                self._out.close()
                self._out = None
        elif self._name:
            self.form.fields[self._name] = self._value.decode("utf-8", "replace")

    def discard(self) -> None:
        """Delete what was written of the file (over its limit, or the request failed)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.target.unlink(missing_ok=True)
        self.form.path = None

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in dir(self) if name.startswith("on_")}


async def receive_form(request: Request, *, file_field: str, path: Path, max_bytes: int) -> StreamedForm:
    """Stream a multipart/form-data body; the file part `file_field` is written to `path`."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidRequest("Expected a multipart/form-data body", param=file_field)
    receiver = _Receiver(file_field, path, max_bytes)
    try:
        parser = MultipartParser(options[b"boundary"], receiver.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            if receiver.form.too_large:
                break  # answer now; the server reads and drops the rest of the body
        else:
            parser.finalize()
    except FormParserError as exc:
        # e.g. "Maximum header size exceeded" (a part header over 4 KiB: a long file or field
        # name): the client's mistake, a 400 it must not retry, never a 500 it would.
        receiver.discard()
        raise InvalidRequest(f"Malformed multipart/form-data body: {exc}", param=file_field) from None
    except BaseException:
        receiver.discard()
        raise
    return receiver.form
