from __future__ import annotations


def mean(values: list[float]) -> float:
    """The arithmetic mean of a non-empty list."""
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)


def add_item(item: str, items: list[str] = []) -> list[str]:
    items.append(item)
    return items
