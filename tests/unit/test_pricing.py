"""Tiered pricing: worked examples by hand, and properties over any valid card and volume."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.billing import pricing
from hub.billing.schemas import Band

# 0.045 yuan up to 1M segments a month, 0.040 up to 5M, 0.035 beyond.
CARD = [
    Band(0, 1_000_000, 45_000),
    Band(1_000_000, 5_000_000, 40_000),
    Band(5_000_000, None, 35_000),
]


def test_graduated_worked_example() -> None:
    # 1,200,000 segments: 1,000,000 x 0.045 + 200,000 x 0.040 = 45,000 + 8,000 = 53,000 yuan.
    assert pricing.graduated_cost(CARD, 1_200_000) == 53_000 * 1_000_000
    # 6,000,000: 45,000 + 4,000,000 x 0.040 + 1,000,000 x 0.035 = 45,000 + 160,000 + 35,000.
    assert pricing.graduated_cost(CARD, 6_000_000) == 240_000 * 1_000_000
    assert pricing.graduated_cost(CARD, 0) == 0


def test_volume_worked_example() -> None:
    # 1,200,000 segments reach band 2: every one at 0.040 = 48,000 yuan.
    assert pricing.volume_cost(CARD, 1_200_000) == 48_000 * 1_000_000
    # Exactly 1,000,000: the last segment is still in band 1.
    assert pricing.volume_cost(CARD, 1_000_000) == 45_000 * 1_000_000
    assert pricing.volume_cost(CARD, 1_000_001) == 1_000_001 * 40_000


@pytest.mark.parametrize(
    ("bands", "expected"),
    [
        ([], "at least one band"),
        ([Band(1, None, 10)], "must start at 0"),
        ([Band(0, 10, 10), Band(20, None, 5)], "gap between band 1"),
        ([Band(0, 10, 10), Band(5, None, 5)], "starts (5) before band 1 ends (10)"),
        ([Band(0, 10, 10), Band(10, None, 12)], "prices may only fall"),
        ([Band(0, 10, 10)], "last band must have no end"),
        ([Band(0, 0, 10), Band(0, None, 5)], "ends (0) where or before it starts"),
        ([Band(0, None, 10), Band(10, None, 5)], "has no end but band 2 follows"),
    ],
)
def test_invalid_cards_say_why(bands: list[Band], expected: str) -> None:
    assert any(expected in problem for problem in pricing.problems(bands))


@st.composite
def cards(draw: st.DrawFn) -> list[Band]:
    """Any valid card: bounds strictly rising from 0, prices never rising."""
    cuts = sorted(draw(st.sets(st.integers(1, 10_000_000), max_size=5)))
    prices = sorted(
        draw(st.lists(st.integers(0, 100_000), min_size=len(cuts) + 1, max_size=len(cuts) + 1)),
        reverse=True,
    )
    starts = [0, *cuts]
    ends: list[int | None] = [*cuts, None]
    return [Band(a, b, p) for a, b, p in zip(starts, ends, prices, strict=True)]


@given(cards())
def test_generated_cards_are_valid(card: list[Band]) -> None:
    assert pricing.problems(card) == []


@given(cards(), st.integers(1, 20_000_000), st.integers(1, 20_000_000))
def test_more_volume_never_raises_the_unit_price(card: list[Band], a: int, b: int) -> None:
    low, high = sorted((a, b))
    for mode in ("graduated", "volume"):
        # cost(high) / high <= cost(low) / low, without division
        assert pricing.cost(mode, card, high) * low <= pricing.cost(mode, card, low) * high


@given(cards(), st.integers(0, 20_000_000))
def test_volume_pricing_never_costs_more_than_graduated(card: list[Band], volume: int) -> None:
    assert pricing.volume_cost(card, volume) <= pricing.graduated_cost(card, volume)


def test_allocate_worked_example() -> None:
    # 100 fen over 1 : 1 : 1 → 33.33 each; the one fen left goes to the first largest remainder.
    assert pricing.allocate(100, [1, 1, 1]) == [34, 33, 33]
    # 10 fen over 5 : 3 : 2 splits exactly.
    assert pricing.allocate(10, [5, 3, 2]) == [5, 3, 2]
    assert pricing.allocate(0, [0, 0]) == [0, 0]


@given(st.integers(0, 10**12), st.lists(st.integers(0, 10**9), min_size=1, max_size=300))
def test_allocations_add_up_exactly_and_stay_within_a_unit(total: int, weights: list[int]) -> None:
    if sum(weights) == 0:
        total = 0
    parts = pricing.allocate(total, weights)
    assert sum(parts) == total
    whole = sum(weights) or 1
    for part, weight in zip(parts, weights, strict=True):
        exact_floor = total * weight // whole
        assert exact_floor <= part <= exact_floor + 1


def test_a_band_above_the_list_price_is_refused() -> None:
    found = pricing.problems([Band(0, None, 70_000)], list_price=60_000)
    assert found == ["band 1 costs more (70000) than the list price (60000)"]


def test_the_cap_turns_a_fen_away_from_a_tenant_at_its_list_price() -> None:
    # 13 fen over 1 : 1 is 6.5 each: the first's cap (6) sends the odd fen to the second.
    assert pricing.allocate(13, [1, 1], caps=[6, 12]) == [6, 7]
    with pytest.raises(ValueError, match="hold 0 of the 1"):
        pricing.allocate(13, [1, 1], caps=[6, 6])


@st.composite
def bills(draw: st.DrawFn) -> tuple[str, list[Band], int, list[int]]:
    """A card with its list price (whole fen, no band above it), and tenants' segments."""
    card = draw(cards())
    fen = draw(st.integers(card[0].price_micros // pricing.MICROS_PER_FEN, 20))
    list_price = max(fen * pricing.MICROS_PER_FEN, card[0].price_micros)
    list_price += -list_price % pricing.MICROS_PER_FEN  # whole fen, at or above every band
    mode = draw(st.sampled_from(["graduated", "volume"]))
    tenants = draw(st.lists(st.integers(0, 3_000_000), min_size=1, max_size=60))
    return mode, card, list_price, tenants


@given(bills())
def test_no_tenant_pays_more_than_list_price(bill: tuple[str, list[Band], int, list[int]]) -> None:
    mode, card, list_price, segments = bill
    assert pricing.problems(card, list_price) == []
    hub_fen = pricing.to_fen(pricing.cost(mode, card, sum(segments)))
    shares = pricing.split(hub_fen, segments, list_price)
    assert sum(shares) == hub_fen  # the tenants pay the hub's cost exactly
    for share, n in zip(shares, segments, strict=True):
        assert share * pricing.MICROS_PER_FEN <= n * list_price
