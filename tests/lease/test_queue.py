"""LeaseQueue against a naive dict model (hypothesis), plus edge cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelson.lease import LeaseQueue

ids = st.integers(min_value=1, max_value=12)
times = st.integers(min_value=0, max_value=40).map(float)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), ids, st.one_of(times, st.just(math.inf))),
        st.tuples(st.just("remove"), ids, st.just(0.0)),
        st.tuples(st.just("pop"), st.integers(min_value=0, max_value=5), times),
        st.tuples(st.just("clear"), st.just(0), st.just(0.0)),
    ),
    max_size=200,
)


def naive_pop(model: dict[int, float], now: float, limit: int) -> list[int]:
    due = sorted((d, i) for i, d in model.items() if d <= now and d != math.inf)[:limit]
    for _, i in due:
        del model[i]
    return [i for _, i in due]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ops)
def test_matches_naive_model(script: list[tuple[str, int, float]]) -> None:
    q = LeaseQueue()
    model: dict[int, float] = {}
    for op, a, t in script:
        if op == "push":
            q.push(a, t)
            model[a] = t
        elif op == "remove":
            q.remove(a)
            model.pop(a, None)
        elif op == "pop":
            assert q.pop_due(t, a) == naive_pop(model, t, a)
        else:
            q.clear()
            model.clear()
        assert len(q) == len(model)
        live = sorted((d, i) for i, d in model.items() if d != math.inf)
        assert q.peek() == (live[0] if live else None)
    assert q.pop_due(math.inf) == naive_pop(model, math.inf, len(model))


def test_heap_is_compacted_under_churn() -> None:
    q = LeaseQueue()
    for step in range(10_000):
        q.push(step % 10, float(step))
    assert len(q) == 10
    assert len(q._heap) <= 3 * 10 + 64
    assert q.pop_due(1e9) == list(range(10))


def test_nan_rejected() -> None:
    with pytest.raises(ValueError):
        LeaseQueue().push(1, math.nan)
