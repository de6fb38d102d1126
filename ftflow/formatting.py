"""How figures read on the terminal and in artifacts: money with the sign first, counts with separators."""

from __future__ import annotations


def usd(value: float | None, digits: int = 2) -> str:
    """`-$1.70`, not `$-1.70`; `-` for no value."""
    if value is None:
        return "-"
    sign = "-" if value < 0 and round(abs(value), digits) > 0 else ""
    return f"{sign}${abs(value):,.{digits}f}"


def count(value: float | int | None) -> str:
    """A whole count with thousands separators (token means are rounded, never printed as floats)."""
    return "-" if value is None else f"{round(value):,}"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def change(value: float | None) -> str:
    """A signed share: `-79%` (fewer), `+12%` (more)."""
    return "-" if value is None else f"{value:+.0%}"


def with_interval(value: float | None, interval: list[float] | tuple[float, float] | None, digits: int = 2) -> str:
    """`0.92 [0.88, 0.95]`; the value alone when there is no interval."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if interval:
        low, high = interval
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text
