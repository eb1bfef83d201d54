"""Progress lines of the commands that wait on the workers."""

from __future__ import annotations

import io

from shop.management.progress import RateMeter, bar, wait_until


def test_it_draws_a_bar():
    assert bar(5, 10, width=10) == "[#####.....] 5/10"
    assert bar(0, 0, width=4) == "[####] 0/0"


def test_it_measures_rate_and_time_left_from_the_first_reading():
    times = iter([100.0, 110.0])
    meter = RateMeter(clock=lambda: next(times))

    assert meter(10, 100) == ""
    assert meter(30, 100) == " 2.0/s, ETA 0:35"


def test_it_logs_few_lines_when_not_on_a_terminal():
    readings = iter([(False, f"line {i}", i) for i in range(50)] + [(True, "done", 50)])
    out = io.StringIO()

    assert wait_until(lambda: next(readings), stream=out, interval=0, log_interval=3600)

    assert out.getvalue().splitlines() == ["line 0", "done"]


def test_it_gives_up_when_progress_stands_still():
    out = io.StringIO()

    assert not wait_until(lambda: (False, "stuck", 1), stream=out, interval=0.01, stall_timeout=0.05)
    assert "no progress" in out.getvalue()
