"""Recognising a delimited log before reading it: compression (by magic bytes), Parquet,
the text encoding, the field separator and whether the first line is a header, from
the first 64 KiB (:func:`sniff_layout`)."""
from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import RecompareError

USER_ALIASES = ("user", "user_id", "userid", "uid", "customer_id", "customer", "visitor_id",
                "member_id", "account_id", "session_id")
ITEM_ALIASES = ("item", "item_id", "itemid", "iid", "movie_id", "movieid", "product_id",
                "productid", "track_id", "song_id", "artist_id", "book_id", "isbn", "asin",
                "article_id", "video_id", "product")
VALUE_ALIASES = ("rating", "value", "score", "count", "weight", "plays", "playcount",
                 "play_count", "clicks", "quantity", "strength", "book_rating")
TIME_ALIASES = ("timestamp", "time", "ts", "datetime", "date", "event_time", "created_at",
                "time_stamp", "unix_time")

SNIFF_BYTES = 1 << 16
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class TextLayout:
    """How a delimited file is written: separator, header line, encoding."""

    sep: str
    header: bool
    encoding: str


#: leading bytes of compressed files: (name, opener, or None when it cannot be read here)
_COMPRESSED: dict[bytes, tuple[str, Callable[..., Any] | None]] = {
    b"\x1f\x8b": ("gzip", gzip.open),
    b"BZh": ("bzip2", bz2.open),
    b"\xfd7zXZ\x00": ("xz", lzma.open),
    b"PK\x03\x04": ("zip", None),
    b"\x28\xb5\x2f\xfd": ("zstd", None),
}


def compression_of(path: Path) -> tuple[str, Callable[..., Any] | None] | None:
    """How ``path`` is compressed, judged by its first bytes (whatever its name), or None."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    for magic, found in _COMPRESSED.items():
        if head.startswith(magic):
            return found
    return None


def open_text_bytes(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, decompressed on the fly when it is gzip, bzip2 or xz
    compressed (pandas would only see it by the file's suffix); other archives are refused."""
    found = compression_of(path)
    if found is None:
        return open(path, "rb")
    name, opener = found
    if opener is None:
        raise RecompareError(f"{path.name} is {name}-compressed; extract the table first "
                             "(recompare reads plain, gzip, bzip2 or xz-compressed text)")
    return opener(path, "rb")


def is_parquet(path: Path) -> bool:
    """Whether ``path`` starts with the Parquet magic bytes (reads 4 bytes only)."""
    with open(path, "rb") as handle:
        return handle.read(4) == PARQUET_MAGIC


# ------------------------------------------------------------------ sniffing
def _decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise RecompareError(f"cannot decode as {encoding}: {exc}") from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"  # latin-1 decodes any byte string


def _sniff_sep(lines: list[str], path: Path) -> str:
    for candidate in ("::", "\t", ",", ";", "|"):
        counts = {line.count(candidate) for line in lines}
        if len(counts) == 1 and counts.pop() >= 1:
            return candidate
    for candidate in ("\t", ",", ";", "|"):  # quoted fields can make counts vary
        if all(candidate in line for line in lines):
            return candidate
    raise RecompareError(f"cannot detect the field separator of {path}; pass --sep")


#: separator -> (its name, how to pass it to --sep in a shell)
_SEP_NAMES = {"\t": ("tab", "tab"), ",": ("comma", ","), ";": ("semicolon", "';'"),
              "|": ("pipe", "'|'"), "::": ("'::'", "::")}


def _check_given_sep(sep: str, lines: list[str], path: Path) -> None:
    """Refuse a separator found on none of the first lines when another one fits them all."""
    if any(sep in line for line in lines):
        return
    try:
        sniffed = _sniff_sep(lines, path)
    except RecompareError:
        return  # no better guess: let the column checks speak
    name, flag = _SEP_NAMES[sniffed]
    raise RecompareError(
        f"{path.name}: the separator {sep!r} (--sep) is on none of the first lines, which "
        f"look {name}-separated; pass --sep {flag}, or leave --sep out to detect it")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_header(lines: list[str], sep: str, wanted: Sequence[str]) -> bool:
    first = [f.strip().strip('"').strip() for f in lines[0].split(sep)]
    known = set(USER_ALIASES + ITEM_ALIASES + VALUE_ALIASES + TIME_ALIASES)
    if any(f.lower() in known or f in wanted for f in first):
        return True
    if len(lines) > 1:
        second = [f.strip().strip('"') for f in lines[1].split(sep)]
        if any(not _is_number(a) and _is_number(b) for a, b in zip(first, second)):
            return True
    return False


def sniff_layout(path: Path, sep: str | None = None, header: bool | None = None,
                 encoding: str | None = None, wanted: Sequence[str] = ()) -> TextLayout:
    """Separator, header and encoding of a delimited file, from its first 64 KiB."""
    try:
        with open_text_bytes(path) as handle:
            head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise RecompareError(f"cannot read {path}: damaged compressed file ({exc})") from None
    cut = head.rfind(b"\n") if len(head) == SNIFF_BYTES else len(head)
    sample, encoding = _decode(head[:cut if cut > 0 else len(head)], encoding)
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    if not lines:
        raise RecompareError(f"{path} is empty")
    if sep is None:
        sep = _sniff_sep(lines, path)
    else:
        sep = "\t" if sep in ("\\t", "tab", "TAB") else sep
        _check_given_sep(sep, lines, path)
    if header is None:
        header = _sniff_header(lines, sep, wanted)
    return TextLayout(sep=sep, header=header, encoding=encoding)
