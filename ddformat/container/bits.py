"""The bit account: where every bit of a file goes, by component and by class.

It is a pure function of the layout (``spec/format.md`` § Bit account), so a writer can store it
and a reader can recompute and compare it. Components and classes each sum to ``8 × file size``
exactly; bits that belong to no single class are shared evenly, the remainder going one bit each
to the lowest class indices.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol


class _Placed(Protocol):
    component: str
    length: int
    class_bytes: list[int] | None


def bit_account(header_length: int, file_length: int, sections: Iterable[_Placed], num_classes: int) -> dict[str, Any]:
    sections = list(sections)
    total = 8 * file_length
    components: dict[str, int] = {}
    for s in sections:
        components[s.component] = components.get(s.component, 0) + 8 * s.length
    components["metadata"] = 8 * header_length
    components["container"] = total - sum(components.values())
    attributed = [0] * num_classes
    for s in sections:
        if s.class_bytes is not None:
            for c, n in enumerate(s.class_bytes):
                attributed[c] += 8 * n
    shared = total - sum(attributed)
    share, extra = divmod(shared, num_classes)
    per_class = [a + share + (1 if c < extra else 0) for c, a in enumerate(attributed)]
    return {"total": total, "components": components, "per_class": per_class}


def bpc(account: dict[str, Any]) -> float:
    """Bits per class (RUO Eq. 21): all bits of the file over the number of classes."""
    return account["total"] / len(account["per_class"])

