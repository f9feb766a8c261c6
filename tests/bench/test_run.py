"""bench.run's pure parts: parsing the benchmark's output and picking the median round."""

from __future__ import annotations

import pytest

from bench.run import Figures, median_run, parse, rounds_for

OUTPUT = """
Summary:
  Total:	2.0162 secs.
  Slowest:	0.0102 secs.
  Fastest:	0.0011 secs.
  Average:	0.0020 secs.
  Stddev:	0.0006 secs.
  Requests/sec:	495.9875

Latency distribution:
  10% in 0.0014 secs.
  99% in 0.0041 secs.
"""


def test_parse_reads_rate_average_and_p99() -> None:
    f = parse(OUTPUT)
    assert f.rps == pytest.approx(495.9875)
    assert f.avg_ms == pytest.approx(2.0)
    assert f.p99_ms == pytest.approx(4.1)


def test_parse_refuses_output_without_figures() -> None:
    with pytest.raises(RuntimeError, match="Requests/sec"):
        parse("benchmark: connection refused\n")


def test_median_run_takes_the_middle_rate_of_the_rounds() -> None:
    runs = [Figures(500, 2.0, 4.0), Figures(420, 2.4, 5.0), Figures(610, 1.6, 3.0)]
    assert median_run(runs) == runs[0]
    assert median_run(runs[:2]) == runs[1]  # even count: the lower middle one
    assert median_run(runs[2:]) == runs[2]
    with pytest.raises(ValueError):
        median_run([])


def test_only_1_1_and_16_256_of_the_full_run_have_rounds() -> None:
    assert rounds_for(1, 1, quick=False) == 3
    assert rounds_for(1, 1, quick=True) == 1
    assert rounds_for(16, 256, quick=False) == 3
    assert rounds_for(16, 256, quick=True) == 1
    assert rounds_for(4, 16, quick=False) == 1
