"""What a month's volume costs under a rate card: pure integer arithmetic, no I/O.

`graduated`: each band's share of the volume at the band's price (the first million at one
price, the rest at another). `volume`: every segment at the price of the band the volume
reaches. Prices may only fall from band to band, so more volume never raises the unit price.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from hub.billing.schemas import Band


def problems(bands: Sequence[Band], list_price: int | None = None) -> list[str]:
    """Why these bands cannot be a rate card with this list price (empty if they can)."""
    if not bands:
        return ["a rate card needs at least one band"]
    found: list[str] = []
    if list_price is not None:
        found += [
            f"band {n} costs more ({band.price_micros}) than the list price ({list_price})"
            for n, band in enumerate(bands, 1)
            if band.price_micros > list_price
        ]
    if bands[0].from_ != 0:
        found.append(f"the first band must start at 0, not {bands[0].from_}")
    for n, band in enumerate(bands, 1):
        if band.to is not None and band.to <= band.from_:
            found.append(f"band {n} ends ({band.to}) where or before it starts ({band.from_})")
    for n, (band, after) in enumerate(pairwise(bands), 1):
        found += _between(n, band, after)
    if bands[-1].to is not None:
        found.append(f"the last band must have no end (to: null), not {bands[-1].to}")
    return found


def _between(n: int, band: Band, after: Band) -> list[str]:
    """What is wrong between band n and band n + 1."""
    if band.to is None:
        return [f"band {n} has no end but band {n + 1} follows it"]
    found = []
    if after.from_ > band.to:
        found.append(f"gap between band {n} (to {band.to}) and band {n + 1} (from {after.from_})")
    elif after.from_ < band.to:
        found.append(f"band {n + 1} starts ({after.from_}) before band {n} ends ({band.to})")
    if after.price_micros > band.price_micros:
        found.append(f"band {n + 1} costs more than band {n}: prices may only fall")
    return found


def graduated_cost(bands: Sequence[Band], volume: int) -> int:
    """Micro-yuan for `volume` segments, each band's share at its own price."""
    total = 0
    for band in bands:
        end = volume if band.to is None else min(volume, band.to)
        if end > band.from_:
            total += (end - band.from_) * band.price_micros
    return total


def reached(bands: Sequence[Band], volume: int) -> Band:
    """The band a month's volume reaches: the one holding its last segment (the first for 0)."""
    last = max(volume - 1, 0)
    for band in bands:
        if band.to is None or last < band.to:
            return band
    return bands[-1]


def volume_cost(bands: Sequence[Band], volume: int) -> int:
    """Micro-yuan for `volume` segments, every one at the price of the band reached."""
    return volume * reached(bands, volume).price_micros


def cost(mode: str, bands: Sequence[Band], volume: int) -> int:
    return graduated_cost(bands, volume) if mode == "graduated" else volume_cost(bands, volume)


def allocate(total: int, weights: Sequence[int], caps: Sequence[int] | None = None) -> list[int]:
    """Split `total` (whole units, e.g. fen) in proportion to `weights` so the parts add up to
    exactly `total`: each part is its exact share rounded down, and the units left over go to
    the largest remainders (ties to the earlier weight, so the result is deterministic).

    With `caps`, no part exceeds its cap (a tenant's list price): a unit left over skips a part
    that its cap holds at its floor. ValueError if the caps cannot hold the total, or a share
    rounded down is already above its cap.
    """
    whole = sum(weights)
    if total < 0 or any(w < 0 for w in weights):
        raise ValueError("allocate takes a non-negative total and weights")
    if whole == 0:
        if total:
            raise ValueError("cannot allocate a non-zero total over zero weights")
        return [0] * len(weights)
    parts = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    room = (
        [total] * len(parts) if caps is None else [c - p for c, p in zip(caps, parts, strict=True)]
    )
    if any(r < 0 for r in room):
        raise ValueError("a share rounded down is above its cap")
    left = total - sum(parts)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    takers = [i for i in order if room[i] > 0]
    if len(takers) < left:
        raise ValueError(f"the caps hold {len(takers)} of the {left} units left over")
    for i in takers[:left]:
        parts[i] += 1
    return parts


MICROS_PER_FEN = 10_000


def to_fen(micros: int, whole: int = 1) -> int:
    """micros / whole in whole fen, rounded half up."""
    return (2 * micros + MICROS_PER_FEN * whole) // (2 * MICROS_PER_FEN * whole)


def split(fen: int, segments: Sequence[int], list_price: int) -> list[int]:
    """A carrier's cost to the hub (`fen`) over tenants pro rata by their segments, in fen,
    adding up to `fen` exactly, and none above the same segments at the list price. That holds
    whenever the list price is a whole number of fen and no band costs more (cards are checked
    for both): then the hub's cost is at most the sum of the tenants' list prices."""
    return allocate(fen, segments, [n * list_price // MICROS_PER_FEN for n in segments])
