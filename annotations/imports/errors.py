"""How an import reports problems: each one located ("reviews.csv line 14: …"), collected
rather than raised one at a time, so a user fixes the file once rather than once per error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

MAX_ERRORS = 50


class ImportFailed(Exception):
    """Nothing was imported. `errors` lists the first problems found, each naming where it is;
    `total` counts every problem found."""

    def __init__(self, errors: Iterable[str], total: int | None = None) -> None:
        self.errors = list(errors)
        self.total = max(total or 0, len(self.errors))
        super().__init__("\n".join(self.messages))

    @property
    def more(self) -> int:
        return self.total - len(self.errors)

    @property
    def messages(self) -> list[str]:
        """The errors to show, ending with "… and N more errors" when some were left out."""
        if not self.more:
            return list(self.errors)
        return [*self.errors, f"… and {self.more:,} more error{'s' if self.more != 1 else ''}"]


class ErrorList:
    """Collects located errors, keeping the first MAX_ERRORS and counting the rest."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_ERRORS:
            self.shown.append(message)

    def __bool__(self) -> bool:
        return self.total > 0

    def fail(self, *final: str) -> NoReturn:
        for message in final:
            self.add(message)
        raise ImportFailed(self.shown, self.total)
