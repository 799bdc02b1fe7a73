"""Statements with an ``IN (...)`` list, prebuilt for a few list lengths, so they can run direct.

An expanding ``IN`` (``column.in_(python_list)``) makes SQLAlchemy build and compile the statement for
every call, and :mod:`openbloo.db.direct` cannot run it on the driver cursor. The hot paths look rows up by
a handful of ids at a time, so instead each such statement is built once per list length in
:data:`SIZES`, with one plain bind parameter per slot; a shorter list is padded by repeating its last
value, which changes nothing in an ``IN``. Longer lists are split into chunks by the caller
(:meth:`InList.chunks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import BindParameter, Executable, bindparam

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MAX_SIZE = SIZES[-1]


class InList:
    """One statement per list length; ``build`` gets the slots' bind parameters and returns the statement."""

    __slots__ = ("_build", "_names", "_prefix", "_stmts")

    def __init__(self, build: Callable[[list[BindParameter[Any]]], Executable], prefix: str = "b_in") -> None:
        self._build = build
        self._prefix = prefix
        self._stmts: dict[int, Executable] = {}
        self._names = [f"{prefix}{i}" for i in range(MAX_SIZE)]

    def __call__(
        self, values: Sequence[Any], params: dict[str, Any] | None = None
    ) -> tuple[Executable, dict[str, Any]]:
        """The statement for ``values`` (1 to :data:`MAX_SIZE` of them) and its parameters (``params`` added)."""
        n = len(values)
        if not 0 < n <= MAX_SIZE:
            raise ValueError(f"an IN list of {n} values (1 to {MAX_SIZE} allowed)")
        size = next(s for s in SIZES if s >= n)
        stmt = self._stmts.get(size)
        if stmt is None:
            stmt = self._stmts[size] = self._build([bindparam(name) for name in self._names[:size]])
        bound = dict(params) if params else {}
        bound.update(zip(self._names, values, strict=False))
        last = values[-1]
        for name in self._names[n:size]:
            bound[name] = last
        return stmt, bound

    @staticmethod
    def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """``values`` in slices of at most :data:`MAX_SIZE`."""
        for start in range(0, len(values), MAX_SIZE):
            yield values[start : start + MAX_SIZE]
