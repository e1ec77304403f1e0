"""Import problems: one bad record (RowError), or a whole file refused (ImportRefused)."""

from __future__ import annotations


class Problem(ValueError):
    """What is wrong with one record, before its line is known.

    ``field`` is a path into the record in canonical names (``"messages[2].content"``); the
    importer turns its first part back into the user's column name. ``{field}`` in the message
    is replaced by that name.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class RowError(Exception):
    """A problem with one record, located by its physical line (Parquet: its row number)."""

    def __init__(self, line: int, message: str, field: str | None = None) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"line": self.line}
        if self.field:
            data["field"] = self.field
        data["message"] = self.message
        return data


class ImportRefused(Exception):
    """The file cannot be imported; nothing was stored."""

    status_code = 422

    def __init__(self, detail: str, errors: list[RowError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class UploadTooLarge(ImportRefused):
    """The file inflates past a size limit: refused as soon as it does (413)."""

    status_code = 413
