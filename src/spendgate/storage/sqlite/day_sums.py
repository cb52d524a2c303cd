"""Sums per combination over whole days, kept as running sums (migrations 0016, 0018).

An hourly rollup with a row per hour and combination reads as many rows as it has
combinations in each hour: when the counted rows spread over many callers, about one per
counted row. A `DaySums` keeps, next to such an hourly table, per combination and day
with rows the running sums of that combination's hourly rows up to the end of the day
(``daily``), and lists the combinations with the first and last day they appear on and
their sums over every day (``combos``). The sums of whole days ``[d1, d2)`` are the
running sums at the last day before ``d2`` less those at the last day before ``d1``: at
most two lookups per combination, whatever its rows per day, and only for those whose days
reach outside ``[d1, d2)``; a report walks only the combinations whose days overlap it.

The roll-up job collects its changes per hour and combination in a scratch table
(``delta``) and `apply` writes them to all three tables: a change on a day adds to that
day's running sums (opened from the day before it when the day had none) and to every
later day of the combination. A late row (an earlier time than rows already rolled up) so
updates a few rows more; the sums stay those of the hourly table exactly. Names are fixed
by the modules that build one, never input (hence the S608 waivers).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
DAY = "hour - (((hour % 86400000) + 86400000) % 86400000)"  # an hour's UTC day, in SQL


def whole_days(first: int, end: int) -> tuple[int, int] | None:
    """The whole UTC days inside ``[first, end)`` (epoch ms), or None when there is none."""
    d1 = -(-first // DAY_MS) * DAY_MS
    d2 = end // DAY_MS * DAY_MS
    return (d1, d2) if d1 < d2 else None


@dataclass(frozen=True)
class DaySums:
    """The statements that keep and read one hourly table's running day sums."""

    hourly: str  # (hour, *columns, *sums), primary key (hour, *columns)
    daily: str  # (*columns, day, *sums), primary key (*columns, day)
    combos: str  # (*columns, first_day, last_day, *sums), primary key (*columns)
    delta: str  # the job's scratch table (temp): (hour, *columns, *sums)
    columns: tuple[str, ...]
    sums: tuple[str, ...]
    column_types: tuple[str, ...]  # the delta table's, one per column

    def _same(self, a: str, b: str) -> str:
        """Rows ``a`` and ``b`` are of one combination."""
        return " AND ".join(f"{a}.{column} = {b}.{column}" for column in self.columns)

    def _of(self, a: str) -> str:
        return ", ".join(f"{a}.{column}" for column in self.columns)

    @property
    def delta_table(self) -> str:
        typed = ", ".join(
            f"{column} {kind}" for column, kind in zip(self.columns, self.column_types, strict=True)
        )
        sums = ", ".join(f"{column} INTEGER" for column in self.sums)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.delta} (hour INTEGER, {typed}, {sums})"

    @property
    def delta_clear(self) -> str:
        return f"DELETE FROM temp.{self.delta}"  # noqa: S608

    @property
    def delta_insert(self) -> str:
        return (
            f"INSERT INTO temp.{self.delta} "
            f"(hour, {', '.join(self.columns)}, {', '.join(self.sums)}) "
        )

    @property
    def apply(self) -> tuple[str, str, str, str]:
        """The delta applied: to the hourly rollup, to the list of combinations, a
        running-sums row opened (from the day before) for each changed day without one,
        and every running sum from each changed day on."""
        combo, sums = ", ".join(self.columns), ", ".join(self.sums)
        summed = ", ".join(f"SUM({column})" for column in self.sums)
        add = ", ".join(f"{column} = {column} + excluded.{column}" for column in self.sums)
        by_day = f"SELECT *, {DAY} AS day FROM temp.{self.delta}"  # noqa: S608
        to_hourly = (
            f"INSERT INTO {self.hourly} (hour, {combo}, {sums}) "  # noqa: S608
            f"SELECT hour, {combo}, {summed} FROM temp.{self.delta} GROUP BY hour, {combo} "
            f"ON CONFLICT (hour, {combo}) DO UPDATE SET {add}"
        )
        to_combos = (
            f"INSERT INTO {self.combos} ({combo}, first_day, last_day, {sums}) "  # noqa: S608
            f"SELECT {combo}, MIN(day), MAX(day), {summed} FROM ({by_day}) GROUP BY {combo} "
            f"ON CONFLICT ({combo}) DO UPDATE SET first_day = MIN(first_day, excluded.first_day), "
            f"last_day = MAX(last_day, excluded.last_day), {add}"
        )
        previous = (
            f"(SELECT MAX(q.day) FROM {self.daily} AS q WHERE {self._same('q', 'd')} "  # noqa: S608
            "AND q.day < d.day)"
        )
        to_days_open = (
            f"INSERT INTO {self.daily} ({combo}, day, {sums}) "  # noqa: S608
            f"SELECT {self._of('d')}, d.day, "
            + ", ".join(f"IFNULL(p.{column}, 0)" for column in self.sums)
            + f" FROM (SELECT DISTINCT {combo}, day FROM ({by_day})) AS d "  # noqa: S608
            f"LEFT JOIN {self.daily} AS p ON {self._same('p', 'd')} AND p.day = {previous} "
            f"WHERE true ON CONFLICT ({combo}, day) DO NOTHING"
        )
        to_days_add = (
            f"UPDATE {self.daily} AS c SET "  # noqa: S608
            + ", ".join(f"{column} = c.{column} + x.{column}" for column in self.sums)
            + f" FROM (SELECT {self._of('e')}, e.day, "
            + ", ".join(f"SUM(d.{column}) AS {column}" for column in self.sums)
            + f" FROM ({by_day}) AS d JOIN {self.daily} AS e ON {self._same('e', 'd')} "
            f"AND e.day >= d.day GROUP BY {self._of('e')}, e.day) AS x "
            f"WHERE {self._same('c', 'x')} AND c.day = x.day"
        )
        return (to_hourly, to_combos, to_days_open, to_days_add)

    def _at(self, column: str, bound: str) -> str:
        """Combination ``c``'s running sum ``column`` at its last day before ``bound``."""
        return (
            f"(SELECT q.{column} FROM {self.daily} AS q WHERE {self._same('q', 'c')} "  # noqa: S608
            f"AND q.day < {bound} ORDER BY q.day DESC LIMIT 1)"
        )

    def _in_days(self, column: str) -> str:
        """Combination ``c``'s sum ``column`` over the days ``[:d1, :d2)``: its sums over
        every day unless it has days from ``:d2`` on, less its running sum before ``:d1``
        if it has days before it (a lookup each, only where needed)."""
        return (
            f"CASE WHEN c.last_day < :d2 THEN c.{column} ELSE {self._at(column, ':d2')} END "
            f"- CASE WHEN c.first_day >= :d1 THEN 0 ELSE {self._at(column, ':d1')} END"
        )

    @property
    def days(self) -> str:
        """A report's whole days ``[:d1, :d2)``: per combination whose days overlap them,
        its sums there."""
        return (
            f"SELECT {self._of('c')}, "  # noqa: S608
            + ", ".join(self._in_days(column) for column in self.sums)
            + f" FROM {self.combos} AS c WHERE c.last_day >= :d1 AND c.first_day < :d2"
        )
