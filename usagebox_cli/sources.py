"""Reading event sources: files, gzip files and standard input, as a stream.

Formats live in ``readers``; this module only reads bytes.  A source is read once, front to back, in bounded pieces: memory stays flat
whatever the file's size.  The sha256 of the bytes read (the compressed bytes
for a ``.gz``, i.e. what ``sha256sum`` prints for the file) is computed on the
way through, so provenance costs no second pass.  Lines longer than
``MAX_LINE_BYTES`` are skipped without being held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Union

from usagebox_cli.errors import CannotRun

MAX_LINE_BYTES = 1 << 20


class TooLong:
    """Marker for a line over the size limit."""


TOO_LONG = TooLong()
RawLine = Union[bytes, TooLong]


class SourceReadError(CannotRun):
    """A source broke off mid-stream (truncated gzip, I/O error)."""


class _HashingRaw(io.RawIOBase):
    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # End of input is final: a terminal reports one Ctrl-D once, and a
        # second read would wait for another.
        if self.ended:
            return 0
        count = self._raw.readinto(buffer)
        if count == 0:
            self.ended = True
        if count:
            view = memoryview(buffer)[:count]
            self.sha256.update(view)
            self.size += count
        return count or 0


@dataclass
class Source:
    """One input as given on the command line."""

    path: str
    input_format: str = "auto"
    _hasher: _HashingRaw | None = field(default=None, repr=False)
    _stream: BinaryIO | None = field(default=None, repr=False)
    total_bytes: int | None = None

    @property
    def label(self) -> str:
        """The name in messages: the path as given, so ``-`` for standard input,
        as in ``sources`` and ``explain`` (one name for one source everywhere)."""
        return self.path

    def open(self) -> BinaryIO:
        """Open the input (again, after ``set_aside``) and return its stream."""
        if self._stream is not None:
            return self._stream
        if self.path == "-":
            # The unbuffered stream: a buffered one fills its whole buffer
            # (1 MiB here) before returning, which stalls a slow producer's pipe.
            raw = getattr(sys.stdin.buffer, "raw", sys.stdin.buffer)
        else:
            try:
                raw = open(self.path, "rb")
            except FileNotFoundError:
                raise CannotRun(f"cannot read {self.path}: no such file") from None
            except IsADirectoryError:
                raise CannotRun(f"cannot read {self.path}: it is a directory") from None
            except OSError as exc:
                raise CannotRun(f"cannot read {self.path}: {exc.strerror or exc}") from None
            try:
                self.total_bytes = os.fstat(raw.fileno()).st_size
            except OSError:
                self.total_bytes = None
        self._hasher = _HashingRaw(raw)
        buffered = io.BufferedReader(self._hasher, buffer_size=1 << 20)
        head = buffered.peek(2)[:2]
        if head == b"\x1f\x8b":
            self._stream = gzip.GzipFile(fileobj=buffered, mode="rb")
        else:
            self._stream = buffered
        return self._stream

    def head(self) -> bytes:
        """The first bytes of the (decompressed) input, without consuming them: what ``auto`` sniffs."""
        try:
            return self._stream.peek(4096)[:4096]  # type: ignore[union-attr]
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceReadError(f"cannot read {self.label}: {exc}") from None

    @property
    def bytes_read(self) -> int:
        return self._hasher.size if self._hasher else 0

    def finish(self) -> tuple[str, int]:
        """Read whatever is left (so the hash covers the whole input) and return (sha256, size)."""
        assert self._hasher is not None
        while self._hasher.readinto(bytearray(1 << 16)):
            pass
        return self._hasher.sha256.hexdigest(), self._hasher.size

    def set_aside(self) -> None:
        """Close a file that was opened to be checked and sniffed, until its turn to be read.

        An ingest of a whole ``~/.claude/projects`` folder names thousands of
        files: holding each one open with its read buffer cost about 1 MiB of
        memory per file and ran into the open-files limit (256 on macOS).
        Standard input cannot be opened twice, so it stays open.
        """
        if self.path != "-":
            self.close()
            self._stream = None
            self._hasher = None

    def reopen(self) -> None:
        """Open a set-aside file for reading; one removed meanwhile breaks off like a truncated input."""
        try:
            self.open()
        except CannotRun as exc:
            raise SourceReadError(str(exc), hint="the inputs before it are stored; run the same ingest again") from None

    def close(self) -> None:
        if self._stream is not None and self.path != "-":
            self._stream.close()
            self._hasher._raw.close()  # type: ignore[union-attr]


def iter_lines(source: Source) -> Iterator[tuple[int, RawLine]]:
    """Non-blank lines as ``(line_number, bytes)``; an over-long line as ``TOO_LONG``."""
    for number, raw in _physical_lines(source):
        if raw is TOO_LONG or not raw.isspace():  # type: ignore[union-attr]
            yield number, raw


def _physical_lines(source: Source) -> Iterator[tuple[int, RawLine]]:
    """Every physical line, blank ones included (CSV fields may span lines)."""
    stream = source._stream
    assert stream is not None
    number = 0
    try:
        while True:
            raw = stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:
                    rest = stream.readline(MAX_LINE_BYTES)
                    if not rest or rest.endswith(b"\n"):
                        break
                yield number, TOO_LONG
                continue
            yield number, raw
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceReadError(
            f"cannot read {source.label} after line {number}: {exc}",
            hint="the lines before it are stored; fix the file and run the same ingest again",
        ) from None
