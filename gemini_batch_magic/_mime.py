"""Media types from content: a small magic-byte table, the file suffix, and what Gemini reads.

:func:`sniff` names the MIME type of a file from its first bytes (and, for text formats,
which have no magic bytes, its suffix); :func:`check_supported` refuses a type Gemini does
not read. :func:`measure` reads the few header fields the cost estimate needs: an image's
pixel size, a PDF's page count, a WAV file's duration. A table is enough here (a dozen
signatures): no dependency, no libmagic. A leaf of the engine: imports nothing of ours.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = ["SUPPORTED", "MediaFacts", "check_supported", "measure", "normalise", "sniff",
           "suffix_type"]

#: How many leading bytes :func:`sniff` and :func:`measure` look at.
HEAD_BYTES = 64 * 1024

#: The types Gemini reads (its documentation's image, document, audio and video lists).
SUPPORTED = frozenset({
    "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
    "application/pdf", "text/plain", "text/html", "text/css", "text/csv", "text/xml",
    "text/markdown", "text/rtf", "text/javascript", "text/x-python", "application/json",
    "audio/wav", "audio/mp3", "audio/mpeg", "audio/aiff", "audio/aac", "audio/ogg",
    "audio/flac", "audio/mp4",
    "video/mp4", "video/mpeg", "video/mov", "video/quicktime", "video/avi", "video/x-flv",
    "video/mpg", "video/webm", "video/wmv", "video/3gpp",
})

_SUFFIXES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".heic": "image/heic", ".heif": "image/heif", ".gif": "image/gif",
    ".pdf": "application/pdf", ".txt": "text/plain", ".text": "text/plain",
    ".html": "text/html", ".htm": "text/html", ".css": "text/css", ".csv": "text/csv",
    ".xml": "text/xml", ".md": "text/markdown", ".markdown": "text/markdown",
    ".rtf": "text/rtf", ".js": "text/javascript", ".py": "text/x-python",
    ".json": "application/json",
    ".wav": "audio/wav", ".mp3": "audio/mp3", ".aiff": "audio/aiff", ".aif": "audio/aiff",
    ".aac": "audio/aac", ".ogg": "audio/ogg", ".flac": "audio/flac", ".m4a": "audio/mp4",
    ".mp4": "video/mp4", ".mpeg": "video/mpeg", ".mpg": "video/mpg", ".mov": "video/mov",
    ".avi": "video/avi", ".flv": "video/x-flv", ".webm": "video/webm", ".wmv": "video/wmv",
    ".3gp": "video/3gpp",
}
_TEXT_TYPES = {t for t in _SUFFIXES.values() if t.startswith("text/")} | {"application/json"}
_MIME_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")


def suffix_type(name: str) -> str | None:
    """The type a file name's suffix stands for (``photo.JPG`` -> ``image/jpeg``), if any."""
    dot = name.rfind(".")
    slash = max(name.rfind("/"), name.rfind("\\"))
    return _SUFFIXES.get(name[dot:].lower()) if dot > slash + 1 else None


def sniff(head: bytes, name: str = "") -> str | None:
    """The MIME type of content starting with ``head``; ``name`` (its file name) decides only
    for formats without magic bytes (text). None: not recognised."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/avi"}.get(head[8:12])
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mp3"
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "audio/aac"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"FLV"):
        return "video/x-flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video/mpeg"
    if head[:16] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c":
        return "video/wmv"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx"):
            return "image/heic"
        if brand in (b"mif1", b"msf1"):
            return "image/heif"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        if brand == b"qt  ":
            return "video/mov"
        if brand.startswith(b"3g"):
            return "video/3gpp"
        return "video/mp4"
    by_name = suffix_type(name)
    if by_name in _TEXT_TYPES and _is_text(head):
        return by_name
    return None


def _is_text(head: bytes) -> bool:
    """Whether ``head`` reads as UTF-8 text (a character cut at the end is fine)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def normalise(mime: str) -> str:
    """A declared type in canonical form: lower case, parameters dropped."""
    return mime.split(";", 1)[0].strip().lower()


def check_supported(mime: str) -> str | None:
    """None when Gemini reads ``mime``; else why not, with what it reads instead."""
    if not _MIME_RE.match(mime):
        return f"{mime!r} is not a MIME type (type/subtype, e.g. image/png)"
    if mime in SUPPORTED:
        return None
    families = "images (PNG, JPEG, WEBP, HEIC, HEIF), PDF and text documents, audio " \
               "(WAV, MP3, AIFF, AAC, OGG, FLAC) and video (MP4, MPEG, MOV, AVI, FLV, " \
               "WEBM, WMV, 3GPP)"
    return f"{mime} is not a type Gemini reads; it reads {families}"


@dataclass(frozen=True)
class MediaFacts:
    """What the cost estimate needs to know of one file (None: unknown)."""

    width: int | None = None
    height: int | None = None
    pages: int | None = None
    seconds: float | None = None


def measure(mime: str, head: bytes, size: int) -> MediaFacts:
    """The pixel size of an image, the pages of a PDF (counted in ``head``, which holds the
    whole file for small ones), the duration of a WAV file; else nothing."""
    try:
        if mime == "image/png" and len(head) >= 24:
            w, h = struct.unpack(">II", head[16:24])
            return MediaFacts(width=w, height=h)
        if mime == "image/jpeg":
            return _jpeg_size(head)
        if mime == "application/pdf":
            pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", head))
            return MediaFacts(pages=pages or None)
        if mime == "audio/wav":
            return _wav_seconds(head, size)
    except (struct.error, IndexError, ValueError):
        pass
    return MediaFacts()


def _jpeg_size(head: bytes) -> MediaFacts:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF):
            h, w = struct.unpack(">HH", head[i + 5:i + 9])
            return MediaFacts(width=w, height=h)
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2:i + 4])
        i += 2 + length
    return MediaFacts()


def _wav_seconds(head: bytes, size: int) -> MediaFacts:
    i = 12
    byte_rate = None
    while i + 8 <= len(head):
        chunk, length = head[i:i + 4], struct.unpack("<I", head[i + 4:i + 8])[0]
        if chunk == b"fmt ":
            byte_rate = struct.unpack("<I", head[i + 16:i + 20])[0]
        elif chunk == b"data" and byte_rate:
            data = min(length, max(0, size - i - 8))
            return MediaFacts(seconds=data / byte_rate)
        i += 8 + length + (length & 1)
    return MediaFacts()
