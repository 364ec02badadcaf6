"""The operator's and the user's documentation stay true to the code: `onionchat.toml.example`
names every key with its default, and every command, flag, key and variable that
docs/operating.md and docs/guide.md mention exists."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from onionchat import cli, config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "onionchat.toml.example"
GUIDES = [ROOT / "docs" / "operating.md", ROOT / "docs" / "guide.md"]
BOT = "olga"  # the example's [bots.olga] shows every bot key with its default (Olga's)

# In the example: `[section]` (a live table) or `# [bots.claude]` (an example, commented out),
# `# key = value` (a key left at its default, in a live table) and `key = value` (a key set).
HEADER = re.compile(r"^(#\s*)?\[([a-z0-9_.]+)\]\s*(?:#.*)?$")
COMMENTED = re.compile(r"^#\s?([a-z][a-z0-9_]*)\s*=\s*(\S.*)$")
SET = re.compile(r"^([a-z][a-z0-9_]*)\s*=")


@dataclasses.dataclass
class Example:
    defaults: dict[str, list[tuple[int, str]]]  # "section.key" -> [(line number, TOML value)]
    set: set[str]  # "section.key" of the keys the example sets
    uncommented: str  # the file with every `# key = value` of a live table uncommented
    samples: dict[str, list[str]]  # commented-out tables ("bots.claude"), uncommented


def read_example() -> Example:
    example = Example({}, set(), "", {})
    lines: list[str] = []
    section, live = "", True
    for number, line in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if header := HEADER.match(text):
            live, section = header.group(1) is None, header.group(2)
            if not live:
                example.samples[section] = [f"[{section}]"]
            lines.append(line)
            continue
        commented = COMMENTED.match(text)
        if not live:
            if commented:
                example.samples[section].append(text[1:].strip())
        elif commented:
            key = f"{section}.{commented.group(1)}"
            example.defaults.setdefault(key, []).append((number, commented.group(2)))
            line = text[1:].strip()
        elif assigned := SET.match(text):
            example.set.add(f"{section}.{assigned.group(1)}")
        lines.append(line)
    example.uncommented = "\n".join(lines) + "\n"
    return example


def keys() -> list[tuple[str, str, Any]]:
    """(the key as the example's table names it, as docs name it, its default) for every key."""
    return [
        (dotted.replace("bots.ID.", f"bots.{BOT}."), dotted, default)
        for dotted, _, default, _ in config.documented_keys()
    ]


def toml(value: Any) -> Any:
    """A default as TOML writes it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def written(value: Any) -> str:
    """A default as a line of the example would give it."""
    value = toml(value)
    return str(value).lower() if isinstance(value, bool) else json.dumps(value, ensure_ascii=False)


def same(given: Any, default: Any) -> bool:
    """Equal, and of the same TOML type (an integer may stand for a float, not for a bool)."""
    if isinstance(given, bool) or isinstance(default, bool):
        return type(given) is type(default) and given == default
    if isinstance(default, float):
        return isinstance(given, int | float) and float(given) == default
    return type(given) is type(default) and given == default


def value_of(settings: config.Settings, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    if section == "bots":
        bot_id, _, key = key.partition(".")
        return getattr(settings.bots[bot_id], key)
    return getattr(getattr(settings, section), key)


def test_the_example_parses_with_the_config_loader(tmp_path: Path) -> None:
    """As shipped (every default commented out), and with every default line uncommented,
    which must then give exactly the embedded defaults."""
    example = read_example()
    config.load(EXAMPLE, env={})
    uncommented = tmp_path / "onionchat.toml"
    uncommented.write_text(example.uncommented, encoding="utf-8")
    settings = config.load(uncommented, env={})
    defaults = config.load(None, env={})
    for key, _, _ in keys():
        if key not in example.set:
            assert value_of(settings, key) == value_of(defaults, key), key


def test_the_example_names_every_key_with_its_default() -> None:
    """A key added to onionchat/config.py without its line in the example fails here."""
    example = read_example()
    missing, wrong, twice = [], [], []
    for key, _, default in keys():
        if key in example.set:
            continue
        lines = example.defaults.get(key, [])
        section, _, name = key.rpartition(".")
        if not lines:
            missing.append(f"[{section}] # {name} = {written(default)}")
            continue
        if len(lines) > 1:
            twice.append(f"{key} (lines {', '.join(str(n) for n, _ in lines)})")
        for number, text in lines:
            given = tomllib.loads(f"v = {text}")["v"]
            if not same(given, toml(default)):
                wrong.append(f"line {number}: {key} = {text}, the default is {written(default)}")
    assert not missing, "the example has no line for:\n" + "\n".join(missing)
    assert not wrong, "\n".join(wrong)
    assert not twice, "given twice: " + ", ".join(twice)


def test_the_example_names_only_real_keys() -> None:
    example = read_example()
    known = {key for key, _, _ in keys()}
    named = set(example.defaults) | example.set
    assert not sorted(named - known), f"not settings: {sorted(named - known)}"


def test_the_examples_commented_out_tables_are_valid(tmp_path: Path) -> None:
    """Each `# [bots.ID]` sample, uncommented, is a bot the loader takes."""
    samples = read_example().samples
    assert samples, "the example shows no commented-out bot"
    for section, lines in samples.items():
        assert section.startswith("bots."), f"[{section}]: only bots are shown commented out"
        path = tmp_path / f"{section}.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        table = tomllib.loads(path.read_text(encoding="utf-8"))
        env = {
            bot["api_key_env"]: "not-a-real-key"
            for bot in table["bots"].values()
            if bot.get("api_key_env")
        }
        settings = config.load(path, env=env)
        assert section.removeprefix("bots.") in settings.bots, section


# -- what the guides mention ------------------------------------------------------------------

FENCE = re.compile(r"^\s*```")
SPAN = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
SPLIT = re.compile(r"&&|\|\||;|\||\s#\s")


def code_and_prose(text: str) -> tuple[list[str], str]:
    """The code in a page (each line of a fenced block, continuations joined, and each inline
    span, even one wrapped over two lines), and its prose without the code."""
    code: list[str] = []
    prose: list[str] = []
    fenced = False
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            prose.append(line)
    paragraphs = "\n".join(prose)
    code += [span.replace("\n", " ") for span in SPAN.findall(paragraphs)]
    return code, SPAN.sub(" ", paragraphs)


@dataclasses.dataclass
class Parser:
    options: dict[str, argparse.Action]  # every option string of the command and its actions
    actions: dict[str, Parser]  # sub-subcommands (onion-auth add, ...)


def parser_of(parser: argparse.ArgumentParser) -> Parser:
    options = {s: a for a in parser._actions for s in a.option_strings}
    actions: dict[str, Parser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                actions[name] = parser_of(sub)
                options |= actions[name].options
    return Parser(options, actions)


CLI = parser_of(cli._parser())
ALL_OPTIONS = set(CLI.options)


def onionchat_words(command: str) -> list[str] | None:
    """What follows the program in an `onionchat ...` command (after `VAR=value`, `sudo -u
    USER`, a path such as `.venv/bin/onionchat`), or None for another program's command."""
    words = command.split()
    at = 0
    while at < len(words):
        word = words[at]
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word) or word in ("$", "exec", "env"):
            at += 1
        elif word == "sudo":
            at += 1
            while at < len(words) and words[at].startswith("-"):
                at += 2 if words[at] in ("-u", "-g") else 1
        else:
            break
    if at < len(words) and words[at].rpartition("/")[2] == "onionchat":
        return words[at + 1 :]
    for i in range(at, len(words) - 1):  # `podman exec NAME onionchat health`
        if words[i].rpartition("/")[2] == "onionchat" and words[i + 1] in CLI.actions:
            return words[i + 1 :]
    return None


def check_command(command: str, where: str, problems: list[str]) -> int:
    """The subcommand, action and flags of one `onionchat ...` command; how many it checked."""
    if command.lstrip().startswith("#"):
        return 0  # a comment line
    words = onionchat_words(command)
    if words is None:
        if command.lstrip().startswith("--"):  # a flag named alone: `--private`
            for flag in FLAG.findall(command):
                if flag not in ALL_OPTIONS:
                    problems.append(f"{where}: {flag} is no option of onionchat ({command!r})")
        return 0
    if not words:
        return 0
    name, rest, parser = words[0], words[1:], CLI
    if name.startswith("-"):
        name, rest = "", words
    elif not re.fullmatch(r"[a-z][a-z-]*", name):
        return 0  # a placeholder: `onionchat COMMAND`
    elif name not in CLI.actions:
        problems.append(f"{where}: `onionchat {name}` is no subcommand ({command!r})")
        return 1
    else:
        parser = CLI.actions[name]
    shown = f"onionchat {name}".strip()
    taking, acted = False, False
    for word in rest:
        bare = word.strip("[]")
        if bare.startswith("--"):
            flag = bare.partition("=")[0]
            action = parser.options.get(flag)
            if action is None:
                problems.append(f"{where}: `{shown}` has no {flag} ({command!r})")
            taking = action is not None and action.nargs != 0 and "=" not in bare
        elif taking:
            taking = False
        elif parser.actions and not acted and re.fullmatch(r"[a-z][a-z-]*", bare):
            acted = True
            if bare not in parser.actions:
                problems.append(f"{where}: `{shown}` has no action {bare} ({command!r})")
    return 1


def mentions(page: Path) -> tuple[list[str], str]:
    code, prose = code_and_prose(page.read_text(encoding="utf-8"))
    commands = [part for segment in code for part in SPLIT.split(segment)]
    return commands, prose


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_every_command_and_flag_the_guides_name_exists(page: Path) -> None:
    commands, prose = mentions(page)
    problems: list[str] = []
    checked = sum(check_command(command, page.name, problems) for command in commands)
    for flag in FLAG.findall(prose):
        if flag not in ALL_OPTIONS:
            problems.append(f"{page.name}: {flag} (in the text) is no option of onionchat")
    assert not problems, "\n".join(problems)
    assert checked >= 5, f"{page.name}: only {checked} commands found: is the parsing off?"


# `section.key`, but not a file name (`federation.md`, `DATA_DIR/tor/tor.log`, `tor.py`).
NOT_A_FILE = r"(?!(?:md|py|toml|log|json|txt|pem|sock|sqlite3)\b)"
SECTION_KEY = re.compile(
    rf"(?<![\w/.-])({'|'.join(config.SECTIONS)})\.{NOT_A_FILE}([a-z_][a-z0-9_]*)(?![\w-])"
)
BOT_KEY = re.compile(r"(?<![\w/.-])bots\.([A-Za-z0-9]+)\.([a-z_][a-z0-9_]*)(?![\w-])")
VARIABLE = re.compile(r"(?<![\w])ONIONCHAT_[A-Z0-9_]+")
# Variables that are not settings: scripts/testnet's state directory.
OTHER_VARIABLES = {"ONIONCHAT_TESTNET_DIR"}


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.name)
def test_every_key_and_variable_the_guides_name_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    known = {dotted for dotted, _, _, _ in config.documented_keys()}
    bot_keys = {f.name for f in dataclasses.fields(config.Bot)}
    variables = {variable for _, variable, _, _ in config.documented_keys()} | OTHER_VARIABLES
    problems = [
        f"{page.name}: {m.group(0)} is no setting"
        for m in SECTION_KEY.finditer(text)
        if m.group(0) not in known
    ]
    problems += [
        f"{page.name}: {m.group(0)} is no bot setting"
        for m in BOT_KEY.finditer(text)
        if m.group(2) not in bot_keys
    ]
    for variable in VARIABLE.findall(text):
        if variable.endswith("_"):
            continue  # a pattern: ONIONCHAT_BOTS_<ID>_<KEY>
        bot = variable.startswith("ONIONCHAT_BOTS_") and any(
            variable.endswith(f"_{key.upper()}") for key in bot_keys
        )
        if variable not in variables and not bot:
            problems.append(f"{page.name}: {variable} is no setting's variable")
    assert not problems, "\n".join(problems)
    if page.name == "operating.md":  # the user's guide need name no setting
        found = len(SECTION_KEY.findall(text)) + len(BOT_KEY.findall(text))
        assert found >= 10, f"{page.name}: only {found} settings found: is the parsing off?"
