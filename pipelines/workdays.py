"""Working days (工作日), the one calendar every deadline of lifecycle.md counts in.

Working days follow the State Council's holiday arrangement, weekend days made
working days (调休) included. Each year is read from the first source that has it:

1. the `chinese-calendar` library (pinned; it knows the years published when it
   was released);
2. an operator's calendar file `<Settings.calendar>/<year>.yaml` for a year the
   library does not know yet, copied from the State Council's notice:

       # 国务院办公厅关于2027年部分节假日安排的通知
       holidays: [2027-01-01, 2027-02-06, 2027-02-07, ...]   # 放假的日期
       workdays: [2027-02-14, 2027-02-27]                      # 调休上班的周末

3. otherwise Monday to Friday without the fixed-date holidays (元旦 1-1,
   劳动节 5-1 and 5-2, 国庆节 10-1 to 10-3), with a warning in Chinese that the
   caller puts in the run report and an alert. A deadline is never silently
   wrong, and nothing stops for it.

The API is small: `WorkCalendar(folder)` with `is_working_day(day)`,
`add_working_days(start, n)`, `working_days_between(start, end)`,
`window(first, n)` (publicity) and `warnings`; `add_working_days(start, n,
folder)` returns `(date, warnings)` for a one-off call.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import chinese_calendar
import yaml

log = logging.getLogger(__name__)

FIXED_HOLIDAYS = ((1, 1), (5, 1), (5, 2), (10, 1), (10, 2), (10, 3))


class WorkCalendar:
    """The working-day calendar, reading each year once from its source."""

    def __init__(self, folder: Path | str | None = None):
        self.folder = Path(folder) if folder else None
        self._years: dict[int, tuple[str, frozenset[date], frozenset[date]]] = {}
        self._warnings: dict[int, str] = {}
        # A night asks about the same few hundred days for every ledger row, and the
        # library's own check scans its whole holiday table on each call (about 20 µs):
        # without these memos the deadlines of 100k rows took a minute.
        self._days: dict[date, bool] = {}
        self._added: dict[tuple[date, int], date] = {}
        self._between: dict[tuple[date, date], int] = {}

    @property
    def warnings(self) -> list[str]:
        """Chinese lines for every year counted by the Monday-to-Friday fallback so far."""
        return [self._warnings[y] for y in sorted(self._warnings)]

    def source(self, year: int) -> str:
        """library | file | fallback: where `year` is read from."""
        return self._year(year)[0]

    def is_working_day(self, day: date) -> bool:
        known = self._days.get(day)
        if known is None:
            known = self._days[day] = self._is_working_day(day)
        return known

    def _is_working_day(self, day: date) -> bool:
        source, holidays, workdays = self._year(day.year)
        if source == "library":
            return chinese_calendar.is_workday(day)
        if day in workdays:
            return True
        return day.weekday() < 5 and day not in holidays

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day after `start` (start itself not counted; n = 0: start)."""
        if n < 0:
            raise ValueError("n must not be negative")
        key = (start, n)
        if key not in self._added:
            day = start
            while n:
                day += timedelta(days=1)
                if self.is_working_day(day):
                    n -= 1
            self._added[key] = day
        return self._added[key]

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after `start` up to and including `end` (0 when end is not after start)."""
        key = (start, end)
        if key not in self._between:   # the lists ask it for the same few pairs row after row
            n, day = 0, start
            while day < end:
                day += timedelta(days=1)
                n += self.is_working_day(day)
            self._between[key] = n
        return self._between[key]

    def window(self, first: date, n: int) -> date:
        """The last day of a window of n working days that opens on `first` and counts it
        when it is a working day (a 公示 opened on a Saturday starts on Monday)."""
        if n <= 0:
            raise ValueError("a window has at least one working day")
        return self.add_working_days(first, n - 1 if self.is_working_day(first) else n)

    def _year(self, year: int) -> tuple[str, frozenset[date], frozenset[date]]:
        if year not in self._years:
            self._years[year] = self._load(year)
        return self._years[year]

    def _load(self, year: int) -> tuple[str, frozenset[date], frozenset[date]]:
        try:
            chinese_calendar.is_workday(date(year, 1, 1))
            return "library", frozenset(), frozenset()
        except NotImplementedError:
            pass
        path = self.folder / f"{year}.yaml" if self.folder else None
        problem = "且未提供运营日历文件" + (f" {path}" if path else "")
        if path is not None and path.is_file():
            try:
                holidays, workdays = read_calendar_file(path, year)
                log.info("working days of %d from the operator's calendar %s", year, path)
                return "file", holidays, workdays
            except (OSError, ValueError, yaml.YAMLError) as exc:
                problem = f"运营日历文件 {path} 无法使用（{exc}）"
        self._warnings[year] = (f"{year}年的节假日安排未知（节假日库未收录，{problem}），该年期限暂按周一至周五"
                                "并扣除元旦、劳动节、国庆节固定假日计算，可能与国务院安排不符；"
                                f"请按国务院办公厅通知填写 {year}.yaml 运营日历文件。")
        log.warning("working days of %d: no calendar, Monday to Friday with fixed-date holidays", year)
        return "fallback", frozenset(date(year, m, d) for m, d in FIXED_HOLIDAYS), frozenset()


def read_calendar_file(path: Path, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(holidays, 调休 workdays) of an operator's calendar file; ValueError (Chinese) when malformed."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("holidays"), list):
        raise ValueError("应包含 holidays 日期列表")
    out = []
    for key in ("holidays", "workdays"):
        days = doc.get(key) or []
        if not isinstance(days, list) or not all(isinstance(d, date) and d.year == year for d in days):
            raise ValueError(f"{key} 应为 {year} 年的日期列表（YYYY-MM-DD）")
        out.append(frozenset(days))
    return out[0], out[1]


def add_working_days(start: date, n: int, folder: Path | str | None = None) -> tuple[date, list[str]]:
    """The n-th working day after `start`, and the warnings of the years it counted through."""
    calendar = WorkCalendar(folder)
    return calendar.add_working_days(start, n), calendar.warnings


def is_working_day(day: date, folder: Path | str | None = None) -> bool:
    return WorkCalendar(folder).is_working_day(day)
