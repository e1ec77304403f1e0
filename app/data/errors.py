from __future__ import annotations


class RowError(Exception):
    """A problem with one record, located by its physical line in the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "message": self.message}


class ImportRefused(Exception):
    """The file cannot be imported; nothing was stored."""

    def __init__(self, detail: str, errors: list[RowError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
