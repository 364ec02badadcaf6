"""The words of the pages without JavaScript, in every language that has a file here.

Each `CODE.toml` beside this module is one language: its tables and keys make dotted keys
(`[rooms] title = ...` is `rooms.title`), `{name}` is filled in. Adding a language is adding
its file (and the page's, web/i18n/CODE.js). The files are read once, at import.
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

DEFAULT = "en"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
MAX_ACCEPT = 512  # characters of an Accept-Language header looked at, at most
_CODE = re.compile(r"[a-z]{2,3}")


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _load() -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for entry in resources.files(__package__).iterdir():
        code, dot, kind = entry.name.partition(".")
        if dot and kind == "toml" and _CODE.fullmatch(code):
            found[code] = _flatten(tomllib.loads(entry.read_text(encoding="utf-8")))
    return found


_STRINGS = _load()
LANGUAGES = frozenset(_STRINGS)


def strings(lang: str) -> dict[str, str]:
    """Every text of a language, by key (a copy)."""
    return dict(_STRINGS[lang])


def _template(lang: str, key: str) -> str:
    found = _STRINGS.get(lang, {}).get(key)
    return found if found is not None else _STRINGS[DEFAULT][key]


def text(lang: str, key: str, **values: object) -> str:
    """The text of `key` in `lang` (English where it has none), its {names} filled in."""
    return PLACEHOLDER.sub(
        lambda m: str(values[m[1]]) if m[1] in values else m[0], _template(lang, key)
    )


def markup(
    lang: str, key: str, html_values: Mapping[str, str] | None = None, **values: object
) -> str:
    """The text as HTML: the text and `values` escaped, `html_values` (HTML already) as is."""
    given = html_values or {}
    template = _template(lang, key)
    parts: list[str] = []
    last = 0
    for m in PLACEHOLDER.finditer(template):
        parts.append(html.escape(template[last : m.start()]))
        name = m[1]
        if name in given:
            parts.append(given[name])
        else:
            parts.append(html.escape(str(values[name]) if name in values else m[0]))
        last = m.end()
    parts.append(html.escape(template[last:]))
    return "".join(parts)


class Said(str):
    """A sentence of the node's: the English text, which keeps its template and values so
    that `said` can read it out in another language wherever it ends up."""

    template: str
    values: Mapping[str, object]

    def __new__(cls, template: str, values: Mapping[str, object]) -> Said:
        self = super().__new__(cls, _filled(template, values))
        self.template = template
        self.values = values
        return self


def say(template: str, **values: object) -> Said:
    """A sentence the node says to someone: `template` is its English, each `{name}` one of
    `values`. A language's `[said]` table holds the template as a key, its translation as
    the value; a value that is itself said is read out in the same language."""
    return Said(template, values)


def joined(separator: str, parts: Iterable[str]) -> Said:
    """Sentences one after another (the lines of a table), each read out in the reader's
    language."""
    values = {f"p{index}": part for index, part in enumerate(parts)}
    return Said(separator.join(f"{{{name}}}" for name in values), values)


def said(lang: str | None, text: str) -> str:
    """What the node says (an error, a notice), in `lang` where its file translates that
    sentence, else in English. The node's code keeps its words in English templates: this is
    where they are read out in the reader's language."""
    if not isinstance(text, Said):
        return str(text)
    if not lang or lang == DEFAULT:
        return str(text)
    translation = _STRINGS.get(lang, {}).get(f"said.{text.template}", text.template)
    values = {
        name: said(lang, value) if isinstance(value, Said) else value
        for name, value in text.values.items()
    }
    return _filled(translation, values)


def _filled(template: str, values: Mapping[str, object]) -> str:
    return PLACEHOLDER.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], template)


def _accepted(header: str) -> list[str]:
    """The languages of an Accept-Language header, most wanted first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:MAX_ACCEPT].split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        code = tag.strip().lower().split("-")[0]
        if quality > 0 and code:
            ranked.append((-quality, index, code))
    return [code for _, _, code in sorted(ranked)]


def choose(account: str | None, accept_language: str | None) -> str:
    """The account's language if it chose one this node speaks, else the browser's first
    that it speaks, else English."""
    if account is not None and account in LANGUAGES:
        return account
    for code in _accepted(accept_language or ""):
        if code in LANGUAGES:
            return code
    return DEFAULT
