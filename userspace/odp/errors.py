"""The one exception the ODP text layer raises."""

from __future__ import annotations


class OdpParseError(ValueError):
    """Text that is not valid ODP syntax (or a value the text format cannot express).

    ``reason`` says what is wrong; ``pos`` (when known) is the offset into ``text`` where the
    problem was found.  ``str()`` of the error carries both, with a short excerpt of the text.
    """

    def __init__(self, reason: str, text: str | None = None, pos: int | None = None) -> None:
        self.reason = reason
        self.text = text
        self.pos = pos
        if text is not None and pos is not None:
            excerpt = text[pos : pos + 40]
            if len(text) > pos + 40:
                excerpt += "..."
            message = f"{reason} at offset {pos}: {excerpt!r}"
        else:
            message = reason
        super().__init__(message)
