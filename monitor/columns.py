"""A batch of usage records as columns: every field read out of the records once, for every
consumer (the per-model store, the app and caller groups) to aggregate with C loops.

A record's fields are separate objects spread over memory: each pass over a field of every
record pays for reaching them. ``msgspec.structs.astuple`` and one transpose read all of them in
one pass (about 1 us a record for a block just decoded, against about 60 ns a field per consumer
per pass through ``attrgetter`` on records already in cache, several times that on a fresh
block). The request end is converted to POSIX seconds once, too. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from msgspec.structs import astuple

from monitor.records import UsageRecord

_FIELDS: Final = UsageRecord.__struct_fields__
_AT: Final = {name: index for index, name in enumerate(_FIELDS)}
_EMPTY: Final[tuple[object, ...]] = ()
_timestamp: Final = datetime.timestamp


class Columns:
    """The fields of ``records``, one tuple per field, in the records' order, and ``epochs``
    (each record's ``ts`` as POSIX seconds). Read-only: consumers take what they need."""

    __slots__ = ("_columns", "epochs", "records")

    def __init__(self, records: list[UsageRecord]) -> None:
        self.records = records
        columns: list[tuple[object, ...]] = (
            list(zip(*map(astuple, records), strict=True)) if records else [_EMPTY] * len(_FIELDS)
        )
        self._columns = columns
        self.epochs: list[float] = list(map(_timestamp, columns[_AT["ts"]]))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> Sequence[object]:
        """The values of one record field, in the records' order."""
        return self._columns[_AT[name]]

    def texts(self, name: str) -> Sequence[str]:
        """:meth:`column` of a text field."""
        return self._columns[_AT[name]]  # type: ignore[return-value]

    def numbers(self, name: str) -> Sequence[float]:
        """:meth:`column` of a number field (None where an optional one is unset)."""
        return self._columns[_AT[name]]  # type: ignore[return-value]

    def subset(self, indices: Sequence[int]) -> Columns:
        """The columns of the records at ``indices`` (in that order)."""
        part = Columns.__new__(Columns)
        part.records = list(map(self.records.__getitem__, indices))
        part._columns = [tuple(map(column.__getitem__, indices)) for column in self._columns]
        part.epochs = list(map(self.epochs.__getitem__, indices))
        return part

    @classmethod
    def of(cls, records: list[UsageRecord], columns: Columns | None) -> Columns:
        """``columns`` when they are those of ``records``, else the columns of ``records``."""
        if columns is not None and columns.records is records:
            return columns
        return cls(records)
