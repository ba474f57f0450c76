"""Token ids to text as they are generated: what can be shown so far, and where a stop string ends the answer."""

from __future__ import annotations

from lit_gpt.tokenizer import Tokenizer


class TextStream:
    """Decodes a growing list of token ids and hands out the new text, holding back what could be the start of one
    of ``stops`` or an unfinished multi-byte character (``lit-gpt generate`` prints text the same way).

    ``push(token)`` returns ``(delta, stopped)``: text that is now certain, and whether a stop string appeared (the
    text is then cut before it and nothing follows). ``finish()`` returns the text held back at the end.
    """

    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.text, self.shown, self.stopped = "", 0, False

    @property
    def tokens(self) -> int:
        """Token ids pushed so far (the answer's length in tokens)."""
        return len(self.ids)

    def push(self, token: int) -> tuple[str, bool]:
        """Add one generated id; see the class docstring."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        cuts = [text.find(s) for s in self.stops if s in text]
        if cuts:
            self.text, self.stopped = text[: min(cuts)], True
            return self._take(len(self.text)), True
        self.text = text
        if text.endswith("\ufffd"):  # in the middle of a multi-byte character
            return "", False
        return self._take(len(text) - self.hold), False

    def finish(self) -> str:
        """The text not handed out yet."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        delta = self.text[self.shown : end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return delta
