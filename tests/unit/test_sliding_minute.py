"""The sliding minute of per-key rate limits: what the last 60 seconds counted, when a refused
request would fit, and OpenAI's reset (back to the whole limit)."""

from __future__ import annotations

import pytest

from service.limits import KeyUse, MinuteUse


def test_a_key_uses_what_the_seconds_of_the_last_minute_counted() -> None:
    use = KeyUse.of([(100, 2, 30), (130, 1, 10), (159, 1, -15)], now=159.5)

    assert (use.requests.used, use.tokens.used) == (4, 25)
    assert MinuteUse(((100, 2), (101, -5)), now=101.0).used == 0  # a give-back never goes below


@pytest.mark.parametrize(
    ("amount", "wait_s"),
    [(1, 0.0), (2, 10.5), (3, 10.5), (4, 40.5), (5, 49.5)],
)
def test_a_request_fits_once_enough_of_the_oldest_seconds_have_left_the_minute(
    amount: int, wait_s: float
) -> None:
    use = MinuteUse(((100, 2), (130, 1), (139, 1)), now=149.5)  # 4 of a limit of 5

    assert use.wait_s(limit=5, amount=amount) == pytest.approx(wait_s)


def test_reset_is_when_nothing_counts_any_more() -> None:
    assert MinuteUse(((100, 2), (130, 1)), now=150.25).resets_in_s == pytest.approx(39.75)
    assert MinuteUse(((100, 2), (130, 0)), now=150.25).resets_in_s == pytest.approx(9.75)
    assert MinuteUse((), now=150.25).resets_in_s == 0.0
