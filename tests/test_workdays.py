"""The working-day calendar: the library's years (调休 included), an operator's file
for a year the library does not know, and the warned fallback."""
from __future__ import annotations

from datetime import date

import pytest

from pipelines import workdays
from pipelines.workdays import WorkCalendar


def test_national_day_2026_and_its_working_saturday():
    cal = WorkCalendar()
    assert all(not cal.is_working_day(date(2026, 10, d)) for d in range(1, 8))   # 10-01..10-07 off
    assert cal.is_working_day(date(2026, 10, 10))                                # 调休: a working Saturday
    assert not cal.is_working_day(date(2026, 10, 11))
    assert cal.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 8)
    assert cal.add_working_days(date(2026, 10, 9), 1) == date(2026, 10, 10)
    assert cal.warnings == [] and cal.source(2026) == "library"


def test_add_working_days_counts_from_the_day_after():
    day, warnings = workdays.add_working_days(date(2026, 11, 26), 15)   # a Thursday
    assert (day, warnings) == (date(2026, 12, 17), [])
    assert workdays.add_working_days(date(2026, 11, 28), 1)[0] == date(2026, 11, 30)  # from a Saturday
    assert workdays.add_working_days(date(2026, 11, 26), 0)[0] == date(2026, 11, 26)
    with pytest.raises(ValueError):
        workdays.add_working_days(date(2026, 11, 26), -1)


def test_a_year_the_library_does_not_know_uses_the_operators_file(tmp_path):
    (tmp_path / "2030.yaml").write_text(
        "holidays: [2030-01-01, 2030-10-01, 2030-10-02, 2030-10-03, 2030-10-04, 2030-10-07]\n"
        "workdays: [2030-10-12]\n", encoding="utf-8")
    cal = WorkCalendar(tmp_path)
    assert cal.source(2030) == "file" and cal.warnings == []
    assert not cal.is_working_day(date(2030, 10, 7))       # a Monday off by the file
    assert cal.is_working_day(date(2030, 10, 12))          # a Saturday worked by the file
    assert cal.add_working_days(date(2030, 9, 30), 1) == date(2030, 10, 8)


def test_without_a_file_the_fallback_is_weekdays_less_fixed_holidays_and_says_so(tmp_path):
    (tmp_path / "2031.yaml").write_text("holidays: not a list\n", encoding="utf-8")
    day, warnings = workdays.add_working_days(date(2029, 12, 31), 1, tmp_path)
    assert day == date(2030, 1, 2)                         # 2030-01-01 is 元旦
    assert len(warnings) == 1 and warnings[0].startswith("2030年的节假日安排未知")
    cal = WorkCalendar(tmp_path)
    assert not cal.is_working_day(date(2031, 5, 2)) and cal.source(2031) == "fallback"
    assert "2031.yaml" in cal.warnings[0] and "无法使用" in cal.warnings[0]


def test_the_library_is_asked_once_per_day(monkeypatch):
    """A night counts the deadlines of every ledger row over the same few weeks: each day
    is looked up in the library once (its check scans the whole holiday table)."""
    asked = []
    real = workdays.chinese_calendar.is_workday
    monkeypatch.setattr(workdays.chinese_calendar, "is_workday", lambda day: asked.append(day) or real(day))
    calendar = WorkCalendar()
    first = [calendar.add_working_days(date(2026, 9, 25), n) for n in range(1, 16)]
    again = [calendar.add_working_days(date(2026, 9, 25), n) for n in range(1, 16)]
    assert first == again and first[-1] == date(2026, 10, 22)   # 10-10, a 调休 Saturday, counts
    days = [d for d in asked if d.year == 2026 and d.month in (9, 10)]
    assert len(days) == len(set(days))
