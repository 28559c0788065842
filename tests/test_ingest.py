import hashlib
import io
import sys
import tracemalloc
from pathlib import Path

import pypdf
import pytest

from lift_mlx.errors import LiftError
from lift_mlx.ingest import (
    COUNT_CHARS,
    MAX_TOKENS,
    Document,
    document_tokens,
    normalize_text,
    read_document,
    text_document,
)
from lift_mlx.models import load_model
from lift_mlx.prompts import encode


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, built byte by byte: one Helvetica text line per string."""
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%b\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def rewrite_pdf(data: bytes, **encrypt) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    if encrypt:
        writer.encrypt(algorithm="AES-256", **encrypt)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def lift_error(path, **kwargs) -> str:
    """The message of the LiftError that read_document raises; it must be one line."""
    with pytest.raises(LiftError) as info:
        read_document(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def fake_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# normalize_text


def test_normalize_line_breaks_and_spaces():
    assert normalize_text("a\r\nb\rc\nd") == "a\nb\nc\nd"
    assert normalize_text("a\t\tb  c\u00a0\u2003d") == "a b c d"
    assert normalize_text("one   \ntwo\t\n") == "one\ntwo"
    assert normalize_text("page one\fpage two") == "page one\npage two"


def test_normalize_keeps_paragraphs_and_collapses_blank_runs():
    assert normalize_text("p1\n\n\n\n\np2\n\np3") == "p1\n\np2\n\np3"
    # A line of spaces is a blank line: it separates paragraphs, once.
    assert normalize_text("p1\n  \t \n \n p2") == "p1\n\n p2"
    assert normalize_text("\n\n  text  \n\n") == "text"


def test_normalize_removes_control_characters_but_not_text():
    assert normalize_text("a\x00b\x07c\x1bd\x7fe\ufefff") == "abcdef"
    assert normalize_text("a \x07 b") == "a b"
    text = "Zoë näive 日本語 — “quotes” ✓"
    assert normalize_text(text) == text


def test_normalize_nfc_and_idempotent():
    assert normalize_text("Cafe\u0301") == "Caf\u00e9"
    messy = " A\tb\r\n\r\n\r\nC\u0301  d \x01\n\n\n\ne "
    once = normalize_text(messy)
    assert once == "A b\n\nĆ d\n\ne"
    assert normalize_text(once) == once


# read_document: text


def test_read_text_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_bytes(b"Title\r\n\r\n\r\nFirst  line.\tMore.\r\n")
    doc = read_document(path)
    assert doc == Document(
        text="Title\n\nFirst line. More.",
        sha256=hashlib.sha256(b"Title\n\nFirst line. More.").hexdigest(),
        source=str(path),
    )


def test_source_is_the_path_as_given(tmp_path, monkeypatch):
    (tmp_path / "notes.md").write_text("# Notes\n\n- one\n- two\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    doc = read_document("notes.md")
    assert doc.source == "notes.md"
    assert doc.text == "# Notes\n\n- one\n- two"


@pytest.mark.parametrize(
    "encoded",
    [
        "Grüße, Zoë.\nZweite Zeile.".encode(),
        b"\xef\xbb\xbf" + "Grüße, Zoë.\nZweite Zeile.".encode(),
        "Grüße, Zoë.\r\nZweite Zeile.".encode("utf-16"),
        b"\xfe\xff" + "Grüße, Zoë.\nZweite Zeile.".encode("utf-16-be"),
    ],
    ids=["utf-8", "utf-8-sig", "utf-16-le-bom", "utf-16-be-bom"],
)
def test_encodings_give_the_same_document(tmp_path, encoded):
    path = tmp_path / "doc.txt"
    path.write_bytes(encoded)
    doc = read_document(path)
    assert doc.text == "Grüße, Zoë.\nZweite Zeile."
    assert doc.sha256 == hashlib.sha256(doc.text.encode()).hexdigest()


def test_hash_ignores_how_the_text_was_written(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.any-extension"
    a.write_bytes(b"Same text.\nSame words.\n")
    b.write_bytes(b"\xef\xbb\xbf  Same text.  \r\nSame\twords.\r\n\r\n")
    assert read_document(a).sha256 == read_document(b).sha256
    a.write_bytes(b"Same text.\nOther words.\n")
    assert read_document(a).sha256 != read_document(b).sha256


def test_stdin(monkeypatch):
    fake_stdin(monkeypatch, b"From stdin.\r\n\r\n\r\nSecond paragraph.")
    doc = read_document("-")
    assert doc.source == "stdin"
    assert doc.text == "From stdin.\n\nSecond paragraph."
    assert doc.sha256 == hashlib.sha256(doc.text.encode()).hexdigest()


def test_stdin_pdf(monkeypatch):
    fake_stdin(monkeypatch, make_pdf([["Piped PDF text."]]))
    doc = read_document("-")
    assert (doc.source, doc.text) == ("stdin", "Piped PDF text.")


# read_document: PDF


def test_pdf_pages_joined_by_blank_lines(tmp_path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(make_pdf([["Hello PDF world.", "Second (line) here."], ["Page two."]]))
    doc = read_document(path)
    assert doc.text == "Hello PDF world.\nSecond (line) here.\n\nPage two."
    assert doc.sha256 == hashlib.sha256(doc.text.encode()).hexdigest()


def test_pdf_detected_by_content_and_suffix_case(tmp_path):
    data = make_pdf([["Only page."]])
    (tmp_path / "upper.PDF").write_bytes(data)
    (tmp_path / "no_suffix").write_bytes(data)
    assert read_document(tmp_path / "upper.PDF").text == "Only page."
    assert read_document(tmp_path / "no_suffix").text == "Only page."


def test_pdf_with_only_an_owner_password_is_read(tmp_path):
    path = tmp_path / "owner.pdf"
    path.write_bytes(
        rewrite_pdf(make_pdf([["Open to all."]]), user_password="", owner_password="x")
    )
    assert read_document(path).text == "Open to all."


def test_pdf_skips_empty_pages(tmp_path):
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf([["First."]]))))
    writer.add_blank_page(612, 792)
    writer.append(pypdf.PdfReader(io.BytesIO(make_pdf([["Third."]]))))
    out = io.BytesIO()
    writer.write(out)
    path = tmp_path / "gap.pdf"
    path.write_bytes(out.getvalue())
    assert read_document(path).text == "First.\n\nThird."


# read_document: user mistakes


def test_missing_file(tmp_path):
    message = lift_error(tmp_path / "nope.txt")
    assert message.startswith("No such file:") and "nope.txt" in message
    assert "Check the path" in message


def test_directory(tmp_path):
    message = lift_error(tmp_path)
    assert "is a directory" in message and "single document file" in message


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n  \n", b"\xef\xbb\xbf\r\n"])
def test_empty_or_whitespace_only(tmp_path, content):
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    message = lift_error(path)
    assert "blank.txt" in message
    assert ("is empty" in message) if not content else ("only whitespace" in message)
    assert "contains text" in message


def test_empty_stdin(monkeypatch):
    fake_stdin(monkeypatch, b"")
    assert lift_error("-") == "stdin is empty; pass a document that contains text."


@pytest.mark.parametrize(
    "content",
    [
        b"PK\x03\x04\x14\x00\x00\x00" + bytes(range(256)) * 4,  # a zip header, NULs
        b"looks like text\x00but has a NUL",
        bytes([1, 2, 3, 4, 5, 6, 14, 15, 16]) * 50 + b"some words",  # no NUL, many controls
    ],
    ids=["zip", "nul", "controls"],
)
def test_binary_file(tmp_path, content):
    path = tmp_path / "blob.txt"
    path.write_bytes(content)
    message = lift_error(path)
    assert "blob.txt looks like a binary file" in message and ".pdf" in message


def test_a_few_control_bytes_are_still_text(tmp_path):
    path = tmp_path / "ansi.txt"
    path.write_bytes(b"\x1b[1mBold\x1b[0m words and a bell\x07 in a long enough line of text.")
    assert read_document(path).text == "[1mBold[0m words and a bell in a long enough line of text."


def test_undecodable_text(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("Grüße aus Köln".encode("latin-1"))
    message = lift_error(path)
    assert "not valid UTF-8 or UTF-16" in message
    assert "offset 2" in message and "re-save it as UTF-8" in message


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.4 this is not really a PDF", b"just some text in a file named .pdf"],
    ids=["bad-body", "not-pdf"],
)
def test_corrupt_pdf(tmp_path, content, capsys):
    path = tmp_path / "broken.pdf"
    path.write_bytes(content)
    message = lift_error(path)
    assert "broken.pdf is not a readable PDF" in message and "repair" in message
    # pypdf's own warnings are not printed above the one-line error.
    assert capsys.readouterr().err == ""


def test_truncated_pdf(tmp_path):
    data = make_pdf([["Some words that will be cut off."]])
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: data.index(b"stream") + 20])
    assert "cut.pdf is not a readable PDF (corrupt or truncated?)" in lift_error(path)


def test_encrypted_pdf(tmp_path):
    path = tmp_path / "secret.pdf"
    path.write_bytes(rewrite_pdf(make_pdf([["Hidden."]]), user_password="pw", owner_password="x"))
    message = lift_error(path)
    assert "secret.pdf is an encrypted PDF" in message and "decrypt it first" in message


def test_pdf_without_text(tmp_path):
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    path = tmp_path / "scan.pdf"
    path.write_bytes(out.getvalue())
    message = lift_error(path)
    assert "scan.pdf has no extractable text" in message
    assert "scanned" in message and "OCR" in message


def test_file_over_the_size_limit(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes((b"word " * 1000)[: 3 * 2**10])
    assert path.stat().st_size == 3 * 2**10
    message = lift_error(path, max_bytes=2**10)
    assert message == (
        f"{path} is 3.0 KiB, over the 1.0 KiB limit; "
        "pass a smaller document or raise the size limit."
    )
    assert read_document(path, max_bytes=3 * 2**10).text.startswith("word word")


def test_size_limit_in_mib(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (3 * 2**20 + 2**19))
    assert "is 3.5 MiB, over the 2.0 MiB limit" in lift_error(path, max_bytes=2 * 2**20)


def test_stdin_over_the_size_limit(monkeypatch):
    fake_stdin(monkeypatch, b"x" * 101)
    assert "stdin is over the 100 bytes limit" in lift_error("-", max_bytes=100)
    fake_stdin(monkeypatch, b"x" * 100)
    assert read_document("-", max_bytes=100).text == "x" * 100


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.txt"
    path.write_text("secret")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Patched rather than chmod-ed: a test run as root may read any file.
    monkeypatch.setattr(Path, "open", denied)
    message = lift_error(path)
    assert message == f"Cannot read {path}: permission denied. Check its permissions."


def test_a_large_document_is_read_with_few_copies_of_its_text(tmp_path):
    """A 200 MB text once reached gigabytes before training: normalising made a piece per
    word (17x the text). Reading 8 MB now peaks below 4 copies of it."""
    words = [f"word{i % 997}" for i in range(1_000_000)]
    path = tmp_path / "big.txt"
    path.write_text(" ".join(words) + "\n\nend  of\tthe text.\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        doc = read_document(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert doc.text.endswith("end of the text.") and len(doc.text) == size - 2
    assert doc.sha256 == hashlib.sha256(doc.text.encode()).hexdigest()
    assert peak < 4 * size, peak / size


def test_spaces_are_normalised_as_before():
    text = "a b  c\t d\u00a0e \u2003 f\n  g \n\n\n\nh"
    assert normalize_text(text) == "a b c d e f\n g\n\nh"


class CountingTokenizer:
    """The tiny model's tokenizer, recording the length of each text it is given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.lengths = tokenizer, []

    def encode(self, text, **kwargs):
        self.lengths.append(len(text))
        return self.tokenizer.encode(text, **kwargs)


def test_a_document_over_the_token_limit_is_refused_before_it_is_tokenized_whole(
        tiny_model_path, demo_text, monkeypatch):
    tokenizer = load_model(str(tiny_model_path)).tokenizer
    doc = text_document((demo_text + "\n\n") * 400, "long.md")  # ~2.5M characters
    monkeypatch.setenv("LIFT_MLX_MAX_TOKENS", "5000")
    counting = CountingTokenizer(tokenizer)
    with pytest.raises(LiftError) as e:
        document_tokens(counting, doc)
    assert str(e.value) == ("long.md is over 5,000 tokens, the longest document lift-mlx "
                            "absorbs; pass a shorter one, or set LIFT_MLX_MAX_TOKENS to a higher "
                            "limit if this machine can absorb it")
    assert counting.lengths == [COUNT_CHARS]  # one piece counted, the rest never tokenized
    short = text_document(demo_text, "short.md")
    assert document_tokens(tokenizer, short) == encode(tokenizer, short.text)
    monkeypatch.setenv("LIFT_MLX_MAX_TOKENS", "lots")
    with pytest.raises(LiftError, match="LIFT_MLX_MAX_TOKENS must be a whole number"):
        document_tokens(tokenizer, short)
    monkeypatch.delenv("LIFT_MLX_MAX_TOKENS")
    assert MAX_TOKENS == 1_000_000 and len(document_tokens(tokenizer, doc)) < MAX_TOKENS
