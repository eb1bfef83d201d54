"""Progress lines: the dataset commands' one printer, and the commands that wait on the workers."""

from __future__ import annotations

import io

from shop.management.progress import bar, rate_text, wait_until
from shop.street2shop.jobs import DownloadResult
from shop.street2shop.progress import DownloadProgress, ProgressPrinter, Rate


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def result(photo_id: int, outcome: str) -> DownloadResult:
    return DownloadResult(photo_id, f"http://shop.example/{photo_id}.jpg", outcome, None, 1, 0, "")


def test_it_prints_count_rate_and_eta_on_one_terminal_line() -> None:
    clock, stream = FakeClock(), FakeTerminal()
    printer = DownloadProgress(10, stream=stream, interval=0.5, clock=clock)

    for second in range(1, 5):
        clock.now = float(second)
        printer(result(second, "ok" if second != 3 else "timeout"))
    printer.close()

    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 5  # redrawn in place each time, plus the final line
    final = text.rsplit("\r", 1)[1]
    assert "4/10" in final and "ok 3" in final and "failed 1" in final
    assert "1.0 photos/s" in final and "ETA 0:00:06" in final


def test_it_prints_only_the_final_line_when_quiet() -> None:
    stream = io.StringIO()
    printer = DownloadProgress(2, stream=stream, quiet=True, clock=FakeClock())

    printer(result(1, "ok"))
    printer(result(2, "exists"))
    printer.close()

    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().startswith("2/2  ok 1  exists 1  failed 0")


def test_it_logs_the_first_and_the_final_line_when_not_on_a_terminal() -> None:
    clock, stream = FakeClock(), io.StringIO()
    printer = ProgressPrinter(4, unit="products", stream=stream, log_interval=30.0, clock=clock)

    for second in range(1, 5):
        clock.now = float(second)
        printer.advance()
    printer.close()

    assert stream.getvalue().splitlines() == [
        "1/4  1.0 products/s  ETA 0:00:03",
        "4/4  1.0 products/s  ETA 0:00:00",
    ]


def test_it_takes_count_and_total_from_a_done_of_total_callback() -> None:
    clock, stream = FakeClock(), io.StringIO()
    printer = ProgressPrinter(0, unit="photos", stream=stream, quiet=True, clock=clock)

    clock.now = 2.0
    printer.update(10, 40)
    printer.close()

    assert stream.getvalue() == "10/40  5.0 photos/s  ETA 0:00:06\n"


def test_it_draws_a_bar():
    assert bar(5, 10, width=10) == "[#####.....] 5/10"
    assert bar(0, 0, width=4) == "[####] 0/0"


def test_it_measures_rate_and_time_left_from_the_first_reading():
    times = iter([100.0, 110.0])
    rate = Rate(clock=lambda: next(times))

    assert rate_text(rate, 10, 100) == ""
    assert rate_text(rate, 30, 100) == " 2.0/s, ETA 0:35"


def test_it_logs_few_lines_when_not_on_a_terminal():
    readings = iter([(False, f"line {i}", i) for i in range(50)] + [(True, "done", 50)])
    out = io.StringIO()

    assert wait_until(lambda: next(readings), stream=out, interval=0, log_interval=3600)

    assert out.getvalue().splitlines() == ["line 0", "done"]


def test_it_gives_up_when_progress_stands_still():
    out = io.StringIO()

    assert not wait_until(lambda: (False, "stuck", 1), stream=out, interval=0.01, stall_timeout=0.05)
    assert "no progress" in out.getvalue()


def test_it_redraws_the_line_without_newlines_through_nested_command_outputs():
    from django.core.management.base import OutputWrapper

    from shop.management.progress import Unbuffered

    out = io.StringIO()
    stream = Unbuffered(OutputWrapper(OutputWrapper(out)))  # a command called with another's stdout

    stream.write("\r1/2")
    stream.write("\r2/2")

    assert out.getvalue() == "\r1/2\r2/2"
