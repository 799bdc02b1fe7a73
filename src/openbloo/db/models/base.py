"""What every table shares: the metadata (constraint naming), integer keys, optional JSON, epoch-ms columns,
partial indexes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, text

# Integer primary keys must be INTEGER on SQLite to alias the rowid (and so autoincrement cheaply).
SeqType = BigInteger().with_variant(Integer(), "sqlite")
# Optional JSON: Python None is stored as SQL NULL, not as the JSON text 'null' (which costs an encode on
# every write and a decode on every read of the message columns that are usually empty). Rows written
# before read back the same: both forms are None.
OptionalJSON = JSON(none_as_null=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def epoch_ms(name: str, nullable: bool = True) -> Column:
    """A time column: UTC epoch milliseconds (BIGINT)."""
    return Column(name, BigInteger, nullable=nullable)


def partial(predicate: str) -> dict[str, Any]:
    """An ``Index``'s keyword arguments that make it partial, ``WHERE predicate``, on both stores."""
    where = text(predicate)
    return {"sqlite_where": where, "postgresql_where": where}
