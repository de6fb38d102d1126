"""Tables: message-per-row CSV and Parquet (and SQL results, tasks/readers/sql.py), rows grouped
into conversations by their id and ordered by their turn column.

CSV is read row by row, Parquet in pyarrow record batches. A conversation with a bad row is
rejected whole, never written with a turn missing (see `group_rows`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ftflow.errors import InputError
from ftflow.reading import READ_ERRORS, FaultingReader, ReadFault, read_fault
from tasks.readers import Candidate, ExtractOptions, Item, Rejection, printable
from tasks.readers.compressed import fault_rejection, open_source

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def _sort_key(value: Any) -> tuple[int, Any]:
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))


@dataclass(frozen=True)
class RowProblem:
    """A table row that cannot be used as read, in place of its values.

    With a conversation id, the whole conversation is rejected for it (a conversation with a
    turn missing would be silently changed); without one, the row is rejected on its own.
    `ends_file` marks a read fault: the conversation being read and the rest of the file go.
    """

    reason: str
    detail: str
    record: Any = None
    conversation_id: str | None = None
    ends_file: bool = False


JSON_SCALARS = (str, int, float, bool, type(None))


def _problem_in(row: dict[str, Any], options: ExtractOptions) -> tuple[str, str] | None:
    """Why a table row's values cannot make a message: no turn order, or a value JSON cannot hold."""
    order = row.get(options.order_column)
    if order is None or (isinstance(order, str) and not order.strip()):
        return "missing_turn_order", f"no {options.order_column!r} value, so the turn's place is unknown"
    for column in (options.role_column, options.content_column):
        value = row.get(column)
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return "invalid_utf8", f"{column!r} holds bytes that are not valid UTF-8"
        elif not isinstance(value, (*JSON_SCALARS, list, dict)):
            return "data_type", f"{column!r} is {type(value).__name__}, not text"
    return None


def _text_value(value: Any) -> Any:
    """Binary text columns (Parquet BYTE_ARRAY without a UTF-8 annotation, SQL BLOBs) as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def json_safe(value: Any) -> Any:
    """A value for rejected.jsonl: bytes, decimals and the like as their repr."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, str):
        return printable(value)
    return value if isinstance(value, JSON_SCALARS) else repr(value)


def group_rows(
    rows: Iterable[tuple[str, dict[str, Any] | RowProblem]], source: str, options: ExtractOptions
) -> Iterator[Item]:
    """Group message-per-row rows (loc, row) by conversation id into examples.

    Rows of one conversation must be contiguous (sort the table or query by id); a
    conversation whose rows appear again after another one started is rejected, not merged.
    A conversation with a bad row (no turn order, a value that is not text, a ragged or
    undecodable CSV row, a row without an id between two of its rows) is rejected whole,
    with the first bad row's reason and location: never written with a turn missing.
    """
    seen: set[str] = set()
    current_id: str | None = None
    current: list[tuple[str, Any]] = []
    problem: tuple[str, RowProblem] | None = None  # the current conversation's first bad row

    def flush() -> Iterator[Item]:
        if current_id is None:
            return
        loc = current[0][0]
        records = [json_safe(row.record if isinstance(row, RowProblem) else row) for _, row in current]
        if current_id in seen:
            yield Rejection(
                source,
                loc,
                "conversation_not_contiguous",
                f"rows of conversation {current_id!r} appear again after other conversations",
                records,
            )
            return
        seen.add(current_id)
        if problem is not None:
            bad_loc, bad = problem
            yield Rejection(source, loc, bad.reason, f"{bad_loc}: {bad.detail}", records)
            return
        ordered = sorted(current, key=lambda item: _sort_key(item[1].get(options.order_column)))
        messages = [
            {"role": _text_value(row.get(options.role_column)), "content": _text_value(row.get(options.content_column))}
            for _, row in ordered
        ]
        yield Candidate(source, loc, {"messages": messages})

    # Bad rows without a conversation id wait here: if the rows around them belong to one
    # conversation, they were part of it, and it goes with them; otherwise each goes alone.
    orphans: list[tuple[str, RowProblem]] = []

    def orphan_rejections() -> Iterator[Item]:
        for loc, bad in orphans:
            yield Rejection(source, loc, bad.reason, bad.detail, json_safe(bad.record))
        orphans.clear()

    for loc, row in rows:
        if isinstance(row, RowProblem) and row.ends_file:
            if current_id is not None:
                problem = problem or (loc, RowProblem(row.reason, "the file ends before this conversation does"))
                yield from flush()
            yield from orphan_rejections()
            yield Rejection(source, loc, row.reason, row.detail, json_safe(row.record))
            return
        if isinstance(row, RowProblem):
            conversation_id = row.conversation_id if row.conversation_id and row.conversation_id.strip() else None
        else:
            value = row.get(options.id_column)
            conversation_id = str(value) if value is not None and str(value).strip() else None
        if conversation_id is None:
            bad = row if isinstance(row, RowProblem) else RowProblem(
                "missing_conversation_id", f"no {options.id_column!r}", row)
            orphans.append((loc, bad))
            continue
        if conversation_id == current_id and orphans:
            for orphan_loc, bad in orphans:
                current.append((orphan_loc, bad))
                problem = problem or (orphan_loc, bad)
            orphans.clear()
        if conversation_id != current_id:
            yield from flush()
            yield from orphan_rejections()
            current_id, current, problem = conversation_id, [], None
        current.append((loc, row))
        if problem is None:
            if isinstance(row, RowProblem):
                problem = (loc, row)
            elif found := _problem_in(row, options):
                problem = (loc, RowProblem(*found))
    yield from flush()
    yield from orphan_rejections()


def check_columns(names: list[str], source: str, options: ExtractOptions) -> None:
    needed = [options.id_column, options.order_column, options.role_column, options.content_column]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; have {names}")


def _batch_rows(batches: Iterable[pa.RecordBatch], first_row: int) -> Iterator[tuple[str, dict | RowProblem]]:
    row = first_row
    try:
        for batch in batches:
            for record in batch.to_pylist():
                yield f"row {row}", record
                row += 1
    except (pa.ArrowException, *READ_ERRORS) as exc:
        from_os = isinstance(exc, READ_ERRORS) and getattr(exc, "errno", None) is not None  # pyarrow's have none
        fault = read_fault(exc) if from_os else ReadFault("corrupt_file", f"corrupt Parquet data ({exc})")
        yield f"row {row}", RowProblem(fault.reason, f"{fault.detail}; the rest of the file is unreadable",
                                       ends_file=True)


def csv_rows(
    reader: Iterator[list[str]], header: list[str], id_column: str | None = None
) -> Iterator[tuple[str, dict | RowProblem]]:
    """CSV rows as dicts (empty cells as None); ragged or undecodable rows as RowProblems.

    Bytes that are not UTF-8 arrive as surrogate escapes, so one bad byte costs one row.
    Rows are numbered as a spreadsheet shows them: the header is row 1. `id_column` names the
    conversation a problem row belonged to (message-per-row tables).
    """
    id_index = header.index(id_column) if id_column is not None else None
    number = 1
    while True:
        number += 1
        loc = f"row {number}"
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield loc, RowProblem("malformed_row", f"not valid CSV ({exc})")
            continue
        except ReadFault as fault:
            yield loc, RowProblem(fault.reason, f"{fault.detail}; the rest of the file is unreadable", ends_file=True)
            return
        if not fields:
            continue  # a blank line holds no row
        conversation_id = fields[id_index] if id_index is not None and len(fields) > id_index else None
        if len(fields) != len(header):
            detail = f"{len(fields)} fields where the header has {len(header)}"
            yield loc, RowProblem("ragged_row", detail, fields, conversation_id)
        elif any(_has_escapes(value) for value in fields):
            yield loc, RowProblem("invalid_utf8", "bytes that are not valid UTF-8", fields, conversation_id)
        else:
            yield loc, {name: (value if value != "" else None) for name, value in zip(header, fields, strict=True)}


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _has_escapes(value: str) -> bool:
    return _ESCAPED_BYTE.search(value) is not None


@contextmanager
def csv_reader(path: Path, options: ExtractOptions) -> Iterator[tuple[Iterator[list[str]], list[str] | Rejection]]:
    """A strict CSV reader of the file past its header, and the header; the header's rejection
    instead when even row 1 cannot be read (the file is then one rejection)."""
    csv.field_size_limit(1 << 30)  # a long message is not an error
    with open_source(path, options) as f:
        text = io.TextIOWrapper(
            io.BufferedReader(FaultingReader(f)), encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        reader = csv.reader(text, strict=True)
        header: list[str] | Rejection
        try:
            header = next(reader, [])
        except (ReadFault, csv.Error) as exc:
            fault = exc if isinstance(exc, ReadFault) else ReadFault("malformed_row", f"not valid CSV ({exc})")
            header = fault_rejection(fault, str(path), "row 1")
        yield reader, header


def read_csv_table(path: Path, options: ExtractOptions) -> Iterator[Item]:
    with csv_reader(path, options) as (reader, header):
        if isinstance(header, Rejection):
            yield header
            return
        check_columns(header, str(path), options)
        yield from group_rows(csv_rows(reader, header, options.id_column), str(path), options)


def read_parquet_table(
    path: Path, options: ExtractOptions, *, row_groups: list[int] | None = None, first_line: int = 1
) -> Iterator[Item]:
    """Rows of the given row groups (a shard; all when None), numbered from first_line."""
    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        yield Rejection(source, "row 1", "corrupt_file", f"not a readable Parquet file ({exc})")
        return
    check_columns(parquet.schema_arrow.names, source, options)
    columns = [options.id_column, options.order_column, options.role_column, options.content_column]
    batches = parquet.iter_batches(batch_size=options.batch_size, row_groups=row_groups, columns=columns)
    yield from group_rows(_batch_rows(batches, first_line), source, options)
