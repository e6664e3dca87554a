"""Reading corpora: .txt, .jsonl, .jsonl.gz, .jsonl.zst and .parquet, as a stream of documents.

Every reader streams (memory is constant in file size, except a whole-file .txt document) and
names `file:line` for a bad record. Two layers: `iter_raw_batches` cuts a file into batches of
undecoded payloads cheaply (so a pipeline can read in one process and parse in workers), and
`parse_payload` turns one payload into text and fields. `iter_documents` joins the two.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamaforge.errors import UserError

SUFFIXES = (".jsonl.zst", ".jsonl.zstd", ".jsonl.gz", ".jsonl", ".txt", ".parquet")
SKIP_HINT = "use --skip-bad to skip and count such records"
EXTRA_HINT = "pip install 'llamaforge[data]'"


@dataclass
class Document:
    text: str
    fields: dict  # the record's other fields, carried through unchanged
    source: str  # file path
    line: int | None  # 1-based line (jsonl), block start line (txt blocks); None for whole-file txt and parquet
    row: int | None = None  # 0-based row index for parquet


@dataclass
class BadRecords:
    """Counts skipped records and keeps the first `keep` of them (file, line, reason) for reports."""

    keep: int = 20
    count: int = 0
    examples: list = field(default_factory=list)
    by_reason: Counter = field(default_factory=Counter)

    def add(self, source: str, line: int | None, reason: str, category: str | None = None) -> None:
        self.count += 1
        self.by_reason[category or reason.split(" (")[0]] += 1
        if len(self.examples) < self.keep:
            self.examples.append((str(source), line, reason))

    def merge(self, other: BadRecords) -> None:
        self.count += other.count
        self.by_reason.update(other.by_reason)
        room = self.keep - len(self.examples)
        if room > 0:
            self.examples.extend(other.examples[:room])

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_reason": dict(self.by_reason),
            "examples": [{"file": f, "line": ln, "reason": r} for f, ln, r in self.examples],
        }


@dataclass
class RawBatch:
    """Undecoded records of one file: JSON lines or text blocks (bytes), or parquet rows (dicts)."""

    source: str
    kind: str  # "json" | "text" | "row"
    lines: list  # 1-based line per record (None for whole-file text); for "row", the 0-based row index
    payloads: list
    nbytes: int = 0  # payload bytes (uncompressed)
    offset: int = 0  # bytes of the file consumed so far (compressed bytes for .gz/.zst): for progress


class BadRecordError(ValueError):
    """One record is unusable; the message says why (without the location)."""


def file_kind(path: str | Path) -> str:
    """'jsonl', 'jsonl.gz', 'jsonl.zst', 'txt' or 'parquet' from the name; UserError otherwise."""
    name = str(path).lower()
    for suf in SUFFIXES:
        if name.endswith(suf):
            return {"jsonl.zstd": "jsonl.zst"}.get(suf[1:], suf[1:])
    raise UserError(f"{path}: unknown input format; supported: {', '.join(SUFFIXES)}")


def _known(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES) and not path.name.startswith(".")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, directories (recursive, known extensions, hidden entries skipped) and globs, in order."""
    out: list[Path] = []
    for spec in inputs:
        p = Path(spec)
        if p.is_file():
            file_kind(p)
            found = [p]
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _known(f) and not _hidden(f, p))
            if not found:
                raise UserError(f"{p}: directory holds no input files ({', '.join(SUFFIXES)})")
        elif any(c in spec for c in "*?["):
            found = []
            for m in sorted(glob.glob(spec, recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    found += sorted(f for f in mp.rglob("*") if f.is_file() and _known(f) and not _hidden(f, mp))
                elif mp.is_file() and _known(mp):
                    found.append(mp)
            if not found:
                raise UserError(f"{spec}: no input files match ({', '.join(SUFFIXES)})")
        else:
            raise UserError(f"{spec}: no such file or directory")
        out += found
    seen: set[Path] = set()
    unique = []
    for f in out:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise UserError("no input files given")
    return unique


def _open_binary(path: Path, kind: str) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(decoded byte stream, the raw file under it: its tell() is the progress)."""
    if kind == "jsonl.zst":
        try:
            import zstandard
        except ImportError:
            raise UserError(f"{path}: reading .zst needs the 'zstandard' package; {EXTRA_HINT}") from None
    raw = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed with the reader
    if kind == "jsonl.gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if kind == "jsonl.zst":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        return io.BufferedReader(reader, buffer_size=1 << 20), raw
    return raw, raw


def _read_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, EOFError, zlib.error, gzip.BadGzipFile]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errs)


def _line_batches(path: Path, kind: str, batch_bytes: int, max_records: int) -> Iterator[RawBatch]:
    src = str(path)
    f, raw_file = _open_binary(path, kind)
    with raw_file, f:
        lines: list[int] = []
        payloads: list[bytes] = []
        size = 0
        try:
            for n, raw in enumerate(f, 1):
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                lines.append(n)
                payloads.append(raw)
                size += len(raw)
                if size >= batch_bytes or len(payloads) >= max_records:
                    yield RawBatch(src, "json", lines, payloads, size, raw_file.tell())
                    lines, payloads, size = [], [], 0
        except _read_errors():
            if payloads:  # the records read before the damage are good: hand them on first
                yield RawBatch(src, "json", lines, payloads, size, raw_file.tell())
            raise
        if payloads:
            yield RawBatch(src, "json", lines, payloads, size, raw_file.tell())


def _text_batches(path: Path, txt_mode: str, batch_bytes: int, max_records: int) -> Iterator[RawBatch]:
    src = str(path)
    if txt_mode == "file":
        data = path.read_bytes()
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        yield RawBatch(src, "text", [None], [data], len(data), len(data))
        return
    if txt_mode != "blocks":
        raise UserError(f"txt_mode must be 'file' or 'blocks', not {txt_mode!r}")
    lines: list[int] = []
    payloads: list[bytes] = []
    size = 0
    block: list[bytes] = []
    start = 0
    with open(path, "rb", buffering=1 << 20) as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                if not block:
                    start = n
                block.append(raw)
                continue
            if block:
                data = b"".join(block)
                lines.append(start)
                payloads.append(data)
                size += len(data)
                block = []
                if size >= batch_bytes or len(payloads) >= max_records:
                    yield RawBatch(src, "text", lines, payloads, size, f.tell())
                    lines, payloads, size = [], [], 0
    if block:
        data = b"".join(block)
        lines.append(start)
        payloads.append(data)
        size += len(data)
    if payloads:
        yield RawBatch(src, "text", lines, payloads, size, path.stat().st_size)


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[RawBatch]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading .parquet needs the 'pyarrow' package; {EXTRA_HINT}") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a non-parquet file
        raise UserError(f"{path}: cannot read as parquet: {e}") from None
    row = 0
    total_rows = max(1, pf.metadata.num_rows)
    file_size = path.stat().st_size
    for batch in pf.iter_batches(batch_size=batch_rows):
        rows = batch.to_pylist()
        size = sum(len(v) for r in rows for v in r.values() if isinstance(v, (str, bytes)))
        row += len(rows)
        yield RawBatch(str(path), "row", list(range(row - len(rows), row)), rows, size,
                       file_size * row // total_rows)


def iter_raw_batches(path: str | Path, txt_mode: str = "file", batch_bytes: int = 1 << 20,
                     max_records: int = 10_000, skip_bad: bool = False,
                     bad: BadRecords | None = None) -> Iterator[RawBatch]:
    """Cut one file into batches of undecoded records (cheap: no JSON parsing, no UTF-8 decoding).

    A file that cannot be decompressed or read stops with UserError, or with skip_bad is counted
    once in `bad` (the records before the damage are still yielded).
    """
    path = Path(path)
    kind = file_kind(path)
    try:
        if kind == "parquet":
            yield from _parquet_batches(path, max(1, min(max_records, 4096)))
        elif kind == "txt":
            yield from _text_batches(path, txt_mode, batch_bytes, max_records)
        else:
            yield from _line_batches(path, kind, batch_bytes, max_records)
    except _read_errors() as e:
        reason = f"unreadable file ({type(e).__name__}: {e})"
        if not skip_bad:
            raise UserError(f"{path}: {reason}; use --skip-bad to skip and count such files") from None
        if bad is not None:
            bad.add(str(path), None, reason)


def _utf8_error_line(data: bytes, e: UnicodeDecodeError) -> tuple[int, str]:
    """(0-based line offset within data, reason) for invalid UTF-8."""
    return data.count(b"\n", 0, e.start), f"invalid UTF-8 (byte 0x{data[e.start]:02x})"


def _json_type(v: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "an array",
             str: "a string", dict: "an object"}
    return names.get(type(v), type(v).__name__)


def parse_payload(kind: str, payload: Any, text_field: str = "text") -> tuple[str, dict]:
    """(text, other fields) of one record; BadRecordError(reason, line_offset) if unusable.

    For text payloads a decoding error can sit on a later line of the block: the exception's
    second argument is that line's offset from the record's start line.
    """
    if kind == "text":
        try:
            return payload.decode("utf-8").replace("\r\n", "\n"), {}
        except UnicodeDecodeError as e:
            off, reason = _utf8_error_line(payload, e)
            raise BadRecordError(reason, off) from None
    if kind == "json":
        try:
            s = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRecordError(_utf8_error_line(payload, e)[1], 0) from None
        try:
            rec = json.loads(s)
        except json.JSONDecodeError as e:
            raise BadRecordError(f"malformed JSON ({e.msg} at column {e.colno})", 0) from None
    else:
        rec = payload
    if not isinstance(rec, dict):
        raise BadRecordError(f"record is {_json_type(rec)}, not an object", 0)
    if text_field not in rec:
        raise BadRecordError(f"no {text_field!r} field (fields: {', '.join(map(str, rec)) or 'none'})", 0)
    text = rec.pop(text_field)
    if not isinstance(text, str):
        raise BadRecordError(f"field {text_field!r} is {_json_type(text)}, not a string", 0)
    return text, rec


def bad_location(kind: str, line: int | None, offset: int = 0) -> int | None:
    """The 1-based line a bad record's error sits on (None for a parquet row)."""
    if kind == "row":
        return None
    return (line or 1) + offset


def where(source: str, kind: str, line: int | None, offset: int = 0) -> str:
    """`file:line`, or `file: row N` (0-based) for parquet."""
    if kind == "row":
        return f"{source}: row {line}"
    return f"{source}:{bad_location(kind, line, offset)}"


def record_bad(bad: BadRecords | None, source: str, kind: str, line: int | None, err: BadRecordError) -> None:
    reason = err.args[0]
    offset = err.args[1] if len(err.args) > 1 else 0
    if bad is not None:
        shown = f"row {line}: {reason}" if kind == "row" else reason
        bad.add(source, bad_location(kind, line, offset), shown, category=reason.split(" (")[0])


def bad_error(source: str, kind: str, line: int | None, err: BadRecordError) -> UserError:
    offset = err.args[1] if len(err.args) > 1 else 0
    return UserError(f"{where(source, kind, line, offset)}: {err.args[0]}; {SKIP_HINT}")


def iter_documents(path: str | Path, text_field: str = "text", txt_mode: str = "file", skip_bad: bool = False,
                   bad: BadRecords | None = None) -> Iterator[Document]:
    """Documents of one file, streaming. A bad record raises UserError naming file:line, or is
    counted in `bad` when skip_bad."""
    for batch in iter_raw_batches(path, txt_mode=txt_mode, skip_bad=skip_bad, bad=bad):
        for line, payload in zip(batch.lines, batch.payloads):
            try:
                text, fields = parse_payload(batch.kind, payload, text_field)
            except BadRecordError as e:
                if not skip_bad:
                    raise bad_error(batch.source, batch.kind, line, e) from None
                record_bad(bad, batch.source, batch.kind, line, e)
                continue
            if batch.kind == "row":
                yield Document(text, fields, batch.source, None, row=line)
            else:
                yield Document(text, fields, batch.source, line)
