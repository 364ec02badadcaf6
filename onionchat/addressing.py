"""Whether a message calls a bot: "Olga, tell a joke", "ольга: ...", "ОЛЬГА ...", or "@Olga"
anywhere. Case-insensitive over all of Unicode; a name inside a longer word ("Olgatron",
"Ольгина") does not count. The name is taken out of the prompt the model sees."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Call:
    bot: str  # the bot's ID
    prompt: str


class Addressing:
    def __init__(self, names: Iterable[tuple[str, str]]) -> None:
        """`names`: (bot ID, name or alias) pairs."""
        self._by_name: dict[str, str] = {}
        for bot_id, name in names:
            self._by_name[name.casefold()] = bot_id
        # Longest first, so that "Оля" never shadows a longer alias that starts the same way.
        alternatives = "|".join(re.escape(n) for n in sorted(self._by_name, key=len, reverse=True))
        self._start = (
            re.compile(
                rf"^\s*@?(?P<name>{alternatives})(?:\s*[,:]|\s)(?P<rest>.*)$",
                re.IGNORECASE | re.DOTALL,
            )
            if alternatives
            else None
        )
        self._anywhere = (
            re.compile(rf"(?<![\w@])@(?P<name>{alternatives})(?!\w)", re.IGNORECASE)
            if alternatives
            else None
        )

    def bot_of(self, name: str) -> str | None:
        return self._by_name.get(name.casefold().removeprefix("@"))

    def call(self, text: str) -> Call | None:
        if self._start is None or self._anywhere is None:
            return None
        match = self._start.match(text)
        if match is not None:
            bot = self._by_name[match.group("name").casefold()]
            return Call(bot, _tidy(match.group("rest")))
        match = self._anywhere.search(text)
        if match is not None:
            bot = self._by_name[match.group("name").casefold()]
            return Call(bot, _tidy(self._anywhere.sub("", text, count=1)))
        return None


def _tidy(text: str) -> str:
    """What is left once the name is out: no stray comma or doubled spaces."""
    text = re.sub(r"[ \t]{2,}", " ", text).strip()
    text = re.sub(r"[ \t]*,?[ \t]+([?!.,;:])", r"\1", text)  # "decide, @Olga?" -> "decide?"
    return text.lstrip(",:").strip()
