"""The ``storage:`` section of the config: where keys, the ledger and counters live, what
happens while storage fails, and the PostgreSQL backend's pool and ledger partitions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_POSTGRES = ("postgresql://", "postgres://")
# What `storage.counters_url` may name: the schemes `spendgate.storage.open` opens there.
COUNTER_SCHEMES = frozenset(
    {"redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}
    | {"sqlite", "memory", "postgresql", "postgres"}
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class PostgresConfig(Strict):
    # Connections per gateway process: opened at start, and at most.
    pool_min_size: Annotated[int, Field(ge=0)] = 2
    pool_max_size: Annotated[int, Field(ge=1)] = 20
    # A connection attempt or a statement taking longer fails (the outage policy applies).
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    statement_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # Monthly ledger partitions created ahead of the current month.
    partitions_ahead: Annotated[int, Field(ge=0, le=24)] = 2
    # Months of ledger kept, the current one included; older partitions are dropped.
    # None: keep every row.
    retention_months: Annotated[int, Field(ge=1)] | None = None
    # False: commits return before the server's WAL is on disk (faster; a server crash
    # may lose the last commits, a gateway crash never does).
    synchronous_commit: bool = True


class StorageConfig(Strict):
    url: str = "sqlite:///spendgate.db"
    counters_url: str | None = None  # live counters elsewhere: redis://... (storage.md)
    # Where rows that storage would not take wait for it (a local directory; default:
    # "<database file>.spool" beside a SQLite file, "spendgate.spool" beside the config
    # file for PostgreSQL, none for an in-memory database).
    spool_dir: str | None = None
    # Worst-case dollars, in all, that requests no budget or limit applies to may cost
    # while storage fails (per gateway process, until it answers again). 0: every
    # request is refused while storage fails (fail closed).
    outage_allowance_usd: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)

    @model_validator(mode="before")
    @classmethod
    def _postgres_spool(cls, data: object) -> object:
        """A PostgreSQL outage spools rows on local disk unless told where: a directory
        beside the config file (resolved by the loader like any relative path)."""
        if isinstance(data, dict) and str(data.get("url", "")).startswith(_POSTGRES):
            return {"spool_dir": "spendgate.spool", **data}
        return data

    def spool_path(self) -> Path | None:
        if self.spool_dir is not None:
            return Path(self.spool_dir)
        if self.url.startswith("sqlite:///") and not self.url.endswith(":memory:"):
            return Path(self.url.removeprefix("sqlite:///") + ".spool")
        return None

    @field_validator("counters_url")
    @classmethod
    def _counters_scheme(cls, value: str | None) -> str | None:
        """Refused here, naming the key, rather than by `serve` alone (check-config said OK)."""
        scheme, separator, _ = (value or "").partition("://")
        if value is not None and (not separator or scheme.lower() not in COUNTER_SCHEMES):
            shown = (
                f"scheme {scheme!r}" if separator else "no scheme://"
            )  # never the URL: a password
            raise ValueError(
                f"{shown} is not one live counters can use: they go on Redis "
                "(redis://host:6379/0, rediss://..., redis+sentinel://host:26379/service, "
                "redis+cluster://host:7000; see docs/storage.md)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.startswith(_POSTGRES):
            return value
        if not value.startswith("sqlite://"):
            raise ValueError(
                "supported: sqlite:///PATH (or sqlite://:memory:) and "
                "postgresql://USER@HOST:PORT/DATABASE"
            )
        rest = value.removeprefix("sqlite://")
        if rest and rest != ":memory:" and (not rest.startswith("/") or "?" in rest):
            raise ValueError(
                f"{value!r} names no file: a SQLite URL takes three slashes before a path "
                "relative to the config file (sqlite:///spendgate.db) and four before an "
                "absolute one (sqlite:////var/lib/spendgate/spendgate.db), and no query"
            )
        if rest.endswith("/"):  # `serve` could not open a folder as its database
            raise ValueError(
                f"{value!r} names a folder, not a database file: name the file in it "
                f"(sqlite://{rest}spendgate.db)"
            )
        return value
