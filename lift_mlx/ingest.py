"""Ingest: read a document (text, Markdown, PDF or stdin) into normalised text and its hash.

The sha256 of the normalised text keys every cache, so normalisation must be deterministic and
must not depend on how the bytes arrived (file or stdin, CRLF or LF, BOM or not).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import sys
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import LiftError
from .prompts import encode

MAX_BYTES = 200 * 2**20  # far above any document a LoRA adapter can absorb in reasonable time
# The longest document absorbed unless $LIFT_MLX_MAX_TOKENS says otherwise. Its samples take a
# few hundred MB, which a 16 GB Mac or a 2-core CPU holds; absorbing it takes hours on a Mac
# and days on such a CPU, so a longer one is far more likely a wrong file than a wish.
MAX_TOKENS = 1_000_000
COUNT_CHARS = 2**20  # the piece of a document tokenized at a time while it is counted
SNIFF_BYTES = 8192  # how much of a file the binary check looks at
MAX_CONTROL_SHARE = 0.10  # text files have almost no control bytes; binary formats have many

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Vertical separators other than \n (form feed marks PDF and printer page breaks): each becomes
# a line break so words on either side stay apart.
_LINE_BREAKS = re.compile(r"\r\n|[\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Cc characters, minus \t and \n (handled as whitespace), plus a stray BOM inside the text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
# Runs of horizontal space other than one plain space (each single space matched as well would
# make a piece per word: 17x a document's size in memory while its text is normalised).
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_TRAILING_SPACE = re.compile(r" +\n")
_EXTRA_NEWLINES = re.compile(r"\n{3,}")
# Bytes that never occur in text: everything below 0x20 except \t \n \v \f \r and ESC (ANSI).
_CONTROL_BYTES = (frozenset(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}) | {0x7F}


@dataclass(frozen=True)
class Document:
    """A document's normalised text, its hash (the cache key) and where it came from."""

    text: str  # normalised, see normalize_text
    sha256: str  # hex digest of text encoded as utf-8
    source: str  # the path as given, or "stdin"


def normalize_text(text: str) -> str:
    """NFC, unified line breaks, one space per whitespace run, no control characters, at most
    one blank line between paragraphs, no leading or trailing whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _HORIZONTAL_SPACE.sub(" ", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _EXTRA_NEWLINES.sub("\n\n", text)
    return text.strip()


def read_document(path: str | Path, *, max_bytes: int = MAX_BYTES) -> Document:
    """Read a text, Markdown or PDF file (or stdin for "-") into a normalised Document.

    Raises LiftError, with a message that says what to do, for anything the user can fix.
    """
    if str(path) == "-":
        source = "stdin"
        data = _read_up_to(sys.stdin.buffer, max_bytes + 1)
        if len(data) > max_bytes:
            raise LiftError(
                f"stdin is over the {_size(max_bytes)} limit; "
                "pass a smaller document or raise the size limit."
            )
        is_pdf = data.startswith(b"%PDF-")
    else:
        source = str(path)
        data = _read_file(Path(path), source, max_bytes)
        is_pdf = Path(path).suffix.lower() == ".pdf" or data.startswith(b"%PDF-")

    if not data:
        raise LiftError(f"{source} is empty; pass a document that contains text.")
    text = _pdf_text(data, source) if is_pdf else _decode_text(data, source)
    del data  # a large document's bytes go before its normalised copy is made
    return text_document(text, source)


def text_document(text: str, source: str = "text") -> Document:
    """A Document from text already in memory (normalised and hashed like a file's)."""
    text = normalize_text(text)
    if not text:
        raise LiftError(f"{source} contains only whitespace; pass a document that contains text.")
    digest = hashlib.sha256()
    for start in range(0, len(text), COUNT_CHARS):  # not a second whole copy as UTF-8
        digest.update(text[start:start + COUNT_CHARS].encode("utf-8"))
    return Document(text=text, sha256=digest.hexdigest(), source=source)


def max_tokens() -> int:
    """The longest document absorbed, in tokens: $LIFT_MLX_MAX_TOKENS, else MAX_TOKENS."""
    value = os.environ.get("LIFT_MLX_MAX_TOKENS", "").strip()
    if not value:
        return MAX_TOKENS
    if not value.isdigit() or int(value) < 1:
        raise LiftError(f"LIFT_MLX_MAX_TOKENS must be a whole number of tokens, not {value!r}")
    return int(value)


def document_tokens(tokenizer, doc: Document) -> list[int]:
    """The tokens of `doc`, or a LiftError when it has more than `max_tokens()`: counted piece
    by piece first, so a document far over the limit is refused before it is tokenized whole
    (a 200 MB text tokenized at once took over 10 GB)."""
    limit, counted, tokens = max_tokens(), 0, []
    for start in range(0, len(doc.text), COUNT_CHARS):
        tokens = encode(tokenizer, doc.text[start:start + COUNT_CHARS])
        counted += len(tokens)
        if counted > limit:
            break
    if len(doc.text) > COUNT_CHARS and counted <= limit:  # one piece: its tokens are all
        tokens = encode(tokenizer, doc.text)
    if counted > limit or len(tokens) > limit:
        raise LiftError(f"{doc.source} is over {limit:,} tokens, the longest document lift-mlx "
                        "absorbs; pass a shorter one, or set LIFT_MLX_MAX_TOKENS to a higher "
                        "limit if this machine can absorb it")
    return tokens


def _read_file(path: Path, source: str, max_bytes: int) -> bytes:
    try:
        if not path.exists():
            raise LiftError(f"No such file: {source}. Check the path and try again.")
        if path.is_dir():
            raise LiftError(f"{source} is a directory; pass a single document file.")
        size = path.stat().st_size
        if size > max_bytes:
            raise LiftError(
                f"{source} is {_size(size)}, over the {_size(max_bytes)} limit; "
                "pass a smaller document or raise the size limit."
            )
        with path.open("rb") as f:
            # Read one byte past the limit: the file may have grown since stat().
            data = _read_up_to(f, max_bytes + 1, size + 1)
    except PermissionError:
        raise LiftError(
            f"Cannot read {source}: permission denied. Check its permissions."
        ) from None
    except OSError as e:
        raise LiftError(f"Cannot read {source}: {e.strerror or e}.") from None
    if len(data) > max_bytes:
        raise LiftError(
            f"{source} is over the {_size(max_bytes)} limit; "
            "pass a smaller document or raise the size limit."
        )
    return data


def _read_up_to(f, limit: int, expected: int = 2**20) -> bytes:
    """At most `limit` bytes of `f`, read `expected` bytes at a time: f.read(limit) would set
    aside the whole limit (200 MB) for a document of a few kilobytes."""
    chunks, total = [], 0
    while total < limit and (chunk := f.read(min(expected, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode_text(data: bytes, source: str) -> str:
    has_utf16_bom = data.startswith(_UTF16_BOMS)
    # UTF-16 text is full of NUL bytes, so the binary check only applies without its BOM.
    if not has_utf16_bom and _looks_binary(data[:SNIFF_BYTES]):
        raise LiftError(
            f"{source} looks like a binary file, not text; pass a .txt, .md or .pdf document."
        )
    try:
        return data.decode("utf-8-sig")  # also plain utf-8: the BOM is optional
    except UnicodeDecodeError as e:
        if has_utf16_bom:
            try:
                return data.decode("utf-16")
            except UnicodeDecodeError:
                pass
        raise LiftError(
            f"{source} is not valid UTF-8 or UTF-16 text (bad byte at offset {e.start}); "
            "re-save it as UTF-8 and try again."
        ) from None


def _looks_binary(sample: bytes) -> bool:
    if b"\x00" in sample:
        return True
    n_control = sum(1 for b in sample if b in _CONTROL_BYTES)
    return n_control > MAX_CONTROL_SHARE * len(sample)


def _pdf_text(data: bytes, source: str) -> str:
    import pypdf  # only PDF input pays for the import

    unreadable = f"{source} is not a readable PDF (corrupt or truncated?)"
    with _quiet_pypdf():
        try:
            reader = pypdf.PdfReader(io.BytesIO(data))
        except Exception as e:  # pypdf raises many types on malformed files
            raise LiftError(f"{unreadable}: {_one_line(e)}. Re-export or repair it.") from None
        if reader.is_encrypted:
            # Many PDFs carry only an owner password (no password needed to open): try "".
            try:
                opened = reader.decrypt("") != pypdf.PasswordType.NOT_DECRYPTED
            except Exception:  # e.g. a missing crypto backend for AES
                opened = False
            if not opened:
                raise LiftError(
                    f"{source} is an encrypted PDF; decrypt it first "
                    "(e.g. qpdf --decrypt --password=... in.pdf out.pdf) and pass the result."
                )
        try:
            pages = [page.extract_text() or "" for page in reader.pages]
        except Exception as e:  # same: errors surface lazily, page by page
            raise LiftError(f"{unreadable}: {_one_line(e)}. Re-export or repair it.") from None
    if not pages:
        raise LiftError(f"{source} is a PDF with no pages; pass a PDF that contains text.")
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not normalize_text(text):
        raise LiftError(
            f"{source} has no extractable text; it may be a scanned PDF. "
            "Run OCR on it first (e.g. ocrmypdf in.pdf out.pdf) and pass the result."
        )
    return text


@contextmanager
def _quiet_pypdf():
    # pypdf logs warnings such as "EOF marker not found" on imperfect files; Python's fallback
    # handler would print them above our own one-line error.
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(e: Exception) -> str:
    message = " ".join(str(e).split()).rstrip(".")
    return message or type(e).__name__


def _size(n_bytes: int) -> str:
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.1f} MiB"
    if n_bytes >= 2**10:
        return f"{n_bytes / 2**10:.1f} KiB"
    return f"{n_bytes} bytes"
