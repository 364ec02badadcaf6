"""The interface in English and Russian: the language files of the page (web/i18n/) and of
the pages without JavaScript (onionchat/i18n/) agree key for key, a Russian browser is
spoken to in Russian, the account's choice follows it to another device, dates follow the
language; the no-JS pages by Accept-Language and by the account."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import httpx
import pytest
from inproc import Member, member, running
from playwright.async_api import Browser, FilePayload, Page, expect

from onionchat import i18n
from onionchat.auth import COOKIE

from conftest import PASSWORD, SCREENSHOTS, NodeProcess, connect, register, upload, user
from test_web import log_in, open_page, shot, texts

WEB = Path(__file__).resolve().parent.parent / "web" / "i18n"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
PLURAL_FORMS = {"zero", "one", "two", "few", "many", "other"}
MONTHS_RU = re.compile(
    "января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря"
)
MONTHS_EN = re.compile(
    "January|February|March|April|May|June|July|August|September|October|November|December"
)


def web_file(code: str) -> dict[str, str]:
    """A page language file: `export default {...};` around a JSON object."""
    text = (WEB / f"{code}.js").read_text(encoding="utf-8")
    start = text.index("export default {") + len("export default ")
    found: dict[str, str] = json.loads(text[start : text.rindex("}") + 1])
    return found


def web_codes() -> set[str]:
    return {p.stem for p in WEB.glob("*.js") if p.stem != "index"}


def by_base(strings: dict[str, str]) -> dict[str, set[str]]:
    """Each key (a counted one without its plural form) → the placeholders its texts use."""
    found: dict[str, set[str]] = {}
    for key, text in strings.items():
        base, _, form = key.rpartition(".")
        name = base if form in PLURAL_FORMS else key
        found.setdefault(name, set()).update(PLACEHOLDER.findall(text))
    return found


def agree(files: dict[str, dict[str, str]]) -> None:
    english = by_base(files["en"])
    for code, strings in files.items():
        other = by_base(strings)
        assert set(other) == set(english), (
            code,
            sorted(set(english) - set(other)),
            sorted(set(other) - set(english)),
        )
        for key, names in english.items():
            assert other[key] == names, (code, key, names, other[key])
        for key in strings:
            base, _, form = key.rpartition(".")
            if form in PLURAL_FORMS:
                assert f"{base}.other" in strings, (code, key)


def test_the_page_languages_have_the_same_keys_and_placeholders() -> None:
    codes = web_codes()
    assert {"en", "ru"} <= codes
    agree({code: web_file(code) for code in codes})
    # the switch lists every file, and only those
    index = (WEB / "index.js").read_text(encoding="utf-8")
    assert set(re.findall(r"^\s+(\w+): \"", index, re.MULTILINE)) == codes


def test_the_no_js_languages_have_the_same_keys_and_placeholders() -> None:
    assert {"en", "ru"} <= set(i18n.LANGUAGES)
    pages = {
        code: {k: v for k, v in i18n.strings(code).items() if not k.startswith("said.")}
        for code in i18n.LANGUAGES
    }
    agree(pages)
    assert set(i18n.LANGUAGES) == web_codes()  # both tiers speak the same languages


SOURCE = Path(i18n.__file__).resolve().parent.parent
# Where the node speaks to a user, and which argument is the words: a literal or an f-string
# there would be English for everyone.
SPEAKING = {
    "ProtocolError": 1, "AuthError": 1, "Refused": 0, "notice": 1, "announce": 1, "expel": 2,
    "_strike": 1, "ModelError": 0, "OverQuota": 0, "error": 1, "tell": 1,
}  # fmt: skip


def node_modules() -> list[Path]:
    """The node's modules (not the CLI client's, not the operator's tools, which speak to an
    operator in English)."""
    return sorted([*SOURCE.glob("*.py"), *SOURCE.glob("federation/*.py")])


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def templates() -> dict[str, str]:
    """Every sentence the node can say, as its template (the literal of each `say(...)`), and
    where it is."""
    found: dict[str, str] = {}
    for path in node_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = any(
            isinstance(n, ast.ImportFrom) and n.module == "onionchat.i18n"
            and any(a.name == "say" for a in n.names)
            for n in tree.body
        )  # fmt: skip
        for call in ast.walk(tree):
            if imported and isinstance(call, ast.Call) and _called(call) == "say":
                where = f"{path.relative_to(SOURCE)}:{call.lineno}"
                first = call.args[0] if call.args else None
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{where}: say() takes its template as a literal, so that it can be listed"
                )
                found.setdefault(first.value, where)
    return found


def test_every_sentence_the_node_says_has_its_translation() -> None:
    """A language file's `[said]` holds each template the code says, with no {name} the
    template lacks; a sentence the code no longer says is no longer there."""
    said = templates()
    assert len(said) > 300
    for code in i18n.LANGUAGES - {i18n.DEFAULT}:
        table = {
            key.removeprefix("said."): value
            for key, value in i18n.strings(code).items()
            if key.startswith("said.")
        }
        missing = {t: where for t, where in said.items() if t not in table}
        assert not missing, (code, missing)
        assert not set(table) - set(said), (code, "no longer said", set(table) - set(said))
        for template, translation in table.items():
            assert set(PLACEHOLDER.findall(translation)) <= set(PLACEHOLDER.findall(template)), (
                code, template
            )  # fmt: skip


def test_the_node_speaks_through_templates_only() -> None:
    """Where the node tells a user something, its words are a template (say) or a value made
    of one, never a literal or an f-string, which no language file could translate."""
    plain = []
    for path in node_modules():
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(call, ast.Call):
                continue
            name = _called(call)
            words: ast.expr | None = None
            if name == "ModelError" and len(call.args) > 1:
                words = call.args[1]  # the detail is the operator's; this, the room's
            elif name in SPEAKING and len(call.args) > SPEAKING[name]:
                words = call.args[SPEAKING[name]]
            elif name in ("Notice", "Left"):
                words = next((k.value for k in call.keywords if k.arg in ("text", "reason")), None)
            if isinstance(words, ast.JoinedStr) or (
                isinstance(words, ast.Constant) and isinstance(words.value, str)
            ):
                plain.append(f"{path.relative_to(SOURCE)}:{call.lineno}")
            if name == "Notice" and path.name != "node.py":  # read out there, per reader
                plain.append(f"{path.relative_to(SOURCE)}:{call.lineno}: use Node.notice")
    assert not plain, plain


def test_what_the_node_says_is_read_out_in_the_readers_language() -> None:
    """A sentence is read out in the reader's language, what varies in it filled in, a value
    that is itself a sentence read out in the same language; English as it was written."""
    said, say = i18n.said, i18n.say
    own = say("you can edit your own messages only")
    assert own == "you can edit your own messages only"  # the code's English, as a str
    assert said("ru", own) == "изменять можно только свои сообщения"
    missing = say("{where} has no message {id}", where="#lobby", id="01M870CN8N8D8H7XC83M91XZ81")
    assert said("ru", missing) == "#lobby: нет сообщения 01M870CN8N8D8H7XC83M91XZ81"
    assert said("en", missing) == said(None, missing) == str(missing)
    rate = say("at most {rate} frames a second; this one was dropped", rate="20")
    slow = say("slow down: {limit}", limit=rate)
    assert said("ru", slow) == "помедленнее: не больше 20 кадров в секунду; этот отброшен"
    assert said("ru", "a sentence of no template") == "a sentence of no template"
    assert said("ru", say("a template no file has")) == "a template no file has"
    table = i18n.joined("\n", [say("Commands:"), say("{usage}  {help}", usage="/help", help=say(
        "list the commands"))])  # fmt: skip
    assert said("ru", table) == "Команды:\n/help  список команд"
    assert said("ru", say("{user} kicked {target}{said}", user="{said}", target="b", said="")) == (
        "{said} выгнал(а) b"
    )  # a value is never read as a template


async def russian(who: Member) -> Member:
    await who.send(type="language", lang="ru", ref="lang")
    await who.expect("language", ref="lang")
    return who


async def test_a_room_hears_what_staff_did_each_in_their_own_language(tmp_path: Path) -> None:
    """What is said to a whole room (a kick, a mode) is read out once per language there:
    the Russian members get it in Russian, the English in English, and so does the one who
    did it and the one it was done to."""
    async with running(tmp_path / "node") as parts:
        alice = await member(parts, "alice")  # the first account: the node's admin
        bob, dasha, carol = [await member(parts, name) for name in ("bob", "dasha", "carol")]
        await russian(bob)
        await russian(dasha)
        for who in (alice, bob, dasha, carol):
            await who.join("lobby")
        for who in (alice, bob, dasha, carol):
            await who.barrier()
        await alice.send(type="command", room="lobby", line="/kick bob 10 спам", ref="k")
        assert (await alice.expect("notice", ref="k"))["text"] == (
            "alice kicked bob for 10 min: спам"
        )
        assert (await dasha.expect("notice"))["text"] == "alice выгнал(а) bob на 10 мин: спам"
        assert (await carol.expect("notice"))["text"] == "alice kicked bob for 10 min: спам"
        left = await bob.expect("left", room="lobby")
        assert left["reason"] == "alice выгнал(а) вас из #lobby на 10 мин: спам"
        await bob.send(type="join", room="lobby", ref="j")
        again = (await bob.expect("error", ref="j"))["message"]
        assert again.startswith("вы выгнаны: #lobby, решение alice (ещё 10 мин"), again
        await alice.send(type="command", room="lobby", line="/mode slow 5", ref="m")
        assert (await alice.expect("notice", ref="m"))["text"] == (
            "alice set #lobby slow 5; modes: slow: a message every 5 s"
        )
        assert (await dasha.expect("notice"))["text"] == (
            "alice установил(а) в #lobby slow 5; режимы: медленно: сообщение раз в 5 с"
        )
        assert (await carol.expect("notice"))["text"].startswith("alice set #lobby slow 5")
        await dasha.send(type="command", room="lobby", line="/help", ref="h")
        table = (await dasha.expect("notice", ref="h"))["text"].splitlines()
        assert table[0] == "Команды:"
        assert any(line.startswith("/help ") and line.endswith("  список команд") for line in table)
        assert any(
            line.startswith("/join КОМНАТА ") and "войти в комнату" in line for line in table
        )
        starts = {re.match(r"\S.*?\s{2,}", line).end() for line in table[1:]}  # type: ignore[union-attr]
        assert len(starts) == 1  # the usages read out in Russian, the column lined up for them
        await carol.send(type="command", room="lobby", line="/help", ref="h")
        assert (await carol.expect("notice", ref="h"))["text"].startswith("Commands:\n")


async def test_the_account_api_answers_in_the_language_asked(node: NodeProcess) -> None:
    """The page asks in its own language (Accept-Language): a refused login or sign-up is
    answered in it; a client that asks for nothing in particular is answered in English."""
    await register(node, "vera")
    async with node.http() as http:
        prelogin = (await http.post("/api/prelogin", json={"username": "vera"})).json()
        body = {"username": "vera", "secret": "A" * 43}
        ru = {"accept-language": "ru-RU,ru;q=0.9"}
        wrong = await http.post("/api/login", json=body, headers=ru)
        assert (wrong.status_code, wrong.json()["message"]) == (401, "неверное имя или пароль")
        plain = await http.post("/api/login", json=body)
        assert plain.json()["message"] == "wrong username or password"
        taken = {
            "username": "vera", "salt": prelogin["salt"], "iterations": prelogin["iterations"],
            "secret": "A" * 43,
        }  # fmt: skip
        again = await http.post("/api/register", json=taken, headers=ru)
        assert again.status_code == 409 and again.json()["message"] == "имя 'vera' занято"


async def test_a_russian_account_hears_the_node_in_russian(node: NodeProcess) -> None:
    token = await register(node, "sasha")
    async with connect(node, token) as sasha, user(node, "kolya") as kolya:
        await sasha.send(type="language", lang="ru", ref="l")
        await sasha.expect("language", ref="l")
        await kolya.join("dvor")
        theirs = await kolya.say("dvor", "моё", ref="k")
        await sasha.join("dvor")
        await sasha.send(type="send", room="dvor", text="уже моё", edit=theirs["id"], ref="e")
        said = await sasha.expect("error", ref="e")
        assert said == {
            **said,
            "code": "forbidden",
            "message": "изменять можно только свои сообщения",
        }
        await kolya.send(type="send", room="dvor", text="x", edit=theirs["id"] + "0", ref="b")
        assert (await kolya.expect("error", ref="b"))["code"] == "bad_frame"  # others: English
        await sasha.send(type="command", line="/nonsense", room="dvor", ref="c")
        assert (await sasha.expect("error", ref="c"))["message"] == (
            "неизвестная команда /nonsense: /help перечисляет команды"
        )
        async with node.http() as http:
            answer = await upload(http, token, "dvor", b"")
        assert answer.json()["message"] == "файл пустой"


def test_a_language_is_chosen_from_the_account_then_accept_language() -> None:
    assert i18n.choose("ru", "en-US,en;q=0.9") == "ru"
    assert i18n.choose(None, "de-DE, ru;q=0.8, en;q=0.5") == "ru"
    assert i18n.choose(None, "en;q=0.2, ru-RU;q=0.9") == "ru"
    assert i18n.choose(None, "de, fr;q=0.5") == "en"
    assert i18n.choose("xx", None) == "en"
    assert i18n.choose(None, "ru;q=0") == "en"  # q=0: not acceptable
    assert i18n.text("ru", "rooms.title") == "Комнаты"
    assert i18n.text("en", "rooms.online", count=3) == "3 online"


# -- the page, in Chromium -------------------------------------------------------------------


async def sign_up_ru(page: Page, name: str) -> None:
    await page.get_by_label("Имя пользователя").fill(name)
    await page.get_by_label("Пароль", exact=True).fill(PASSWORD)
    await page.get_by_label("Пароль ещё раз").fill(PASSWORD)
    await page.get_by_role("button", name="Создать учётную запись").click()
    await expect(page.locator("#status")).to_have_text("подключено")
    await expect(page.locator("#me")).to_have_text(name)


async def open_room_ru(page: Page, name: str) -> None:
    toggle = page.locator("#new-room-toggle")
    if await toggle.is_visible():  # a phone: the form is folded away
        await toggle.click()
    await page.get_by_label("Войти в комнату или создать её").fill(name)
    await page.get_by_role("button", name="Войти", exact=True).click()
    await expect(page.locator("#room-title")).to_contain_text(f"#{name}")


async def say_ru(page: Page, text: str) -> None:
    box = page.get_by_label("Сообщение", exact=True)
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def test_a_russian_browser_and_the_accounts_language_on_another_device(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node, locale="ru-RU") as watched:
        page = watched.page
        await expect(page.locator("#login-title")).to_have_text("Вход или новая учётная запись")
        assert await page.evaluate("document.documentElement.lang") == "ru"
        await shot(page, "ru-login")
        # the node's refusal is in the page's language too (the page asks in it)
        await page.get_by_label("Имя пользователя").fill("nikto")
        await page.get_by_label("Пароль", exact=True).fill(PASSWORD)
        await page.locator("#do-login").click()
        await expect(page.locator("#login-error")).to_have_text("неверное имя или пароль")
        await sign_up_ru(page, "anya")
        await open_room_ru(page, "kuhnya")
        await say_ru(page, "привет всем")
        await expect(texts(page)).to_have_text(["привет всем"])
        # the node's commands, their help in Russian (the page's own are translated by it)
        await say_ru(page, "/help")
        await expect(page.locator("#help-list")).to_contain_text("список команд")
        await expect(page.locator("#help-list")).to_contain_text("войти в комнату")
        await shot(page, "ru-help")
        await page.locator("#help-close").click()
        await expect(page.locator("#members-title")).to_have_text("В сети (1)")
        await expect(page.locator("#messages li.day")).to_have_text(MONTHS_RU)
        reply = page.locator("#messages button[data-act=reply]")  # shown on hover
        await expect(reply).to_have_attribute("aria-label", "Ответить")
        # the plural forms, as Intl.PluralRules sorts the numbers
        counted = await page.evaluate(
            """async () => {
              const i = await import("/static/js/i18n.js");
              return [1, 2, 5, 11, 21, 22].map((n) => i.plural("rooms.unread", n));
            }"""
        )
        assert counted == [
            "1 непрочитанное",
            "2 непрочитанных",
            "5 непрочитанных",
            "11 непрочитанных",
            "21 непрочитанное",
            "22 непрочитанных",
        ]
        # every counted key has each form its language's rules can pick
        missing = await page.evaluate(
            """async () => {
              const names = (await import("/static/i18n/index.js")).default;
              const missing = [];
              for (const code of Object.keys(names)) {
                const strings = (await import(`/static/i18n/${code}.js`)).default;
                const forms = new Intl.PluralRules(code).resolvedOptions().pluralCategories;
                const bases = new Set(Object.keys(strings).filter((k) => k.endsWith(".other"))
                  .map((k) => k.slice(0, -6)));
                for (const base of bases) {
                  for (const form of forms) {
                    if (!(`${base}.${form}` in strings)) missing.push(`${code} ${base}.${form}`);
                  }
                }
              }
              return missing;
            }"""
        )
        assert missing == []
        await shot(page, "ru-room")

        switch = page.get_by_label("Language / Язык")
        await switch.select_option("en")
        await expect(page.locator("#rooms-title")).to_have_text("Rooms")
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#members-title")).to_have_text("Members online (1)")
        await expect(page.locator("#messages li.day")).to_have_text(MONTHS_EN)
        assert await page.evaluate("document.documentElement.lang") == "en"
        await page.get_by_label("Message", exact=True).fill("/help")
        await page.get_by_label("Message", exact=True).press("Enter")
        await expect(page.locator("#help-list")).to_contain_text("list the commands")
        await page.locator("#help-close").click()
        await switch.select_option("ru")
        await expect(page.locator("#rooms-title")).to_have_text("Комнаты")
        await expect(page.locator("#messages li.day")).to_have_text(MONTHS_RU)
        await watched.assert_clean(http_errors=True)  # the wrong password, on purpose

    # another device, an English browser: the account's Russian comes with ready.lang
    async with open_page(browser, node) as watched:
        page = watched.page
        await expect(page.locator("#login-title")).to_have_text("Log in or create an account")
        await log_in(page, "anya")
        await expect(page.locator("#status")).to_have_text("подключено")
        await expect(page.locator("#rooms-title")).to_have_text("Комнаты")
        await expect(page.get_by_label("Language / Язык")).to_have_value("ru")
        # the browser's own language, chosen here, goes to the account (the node forgets ru)
        await page.get_by_label("Language / Язык").select_option("")
        await expect(page.locator("#status")).to_have_text("connected")
        await page.get_by_role("button", name="Log out").click()
        await expect(page.locator("#login-title")).to_have_text("Log in or create an account")
        await watched.assert_clean()


async def test_a_russian_phone(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node, width=390, height=844, locale="ru-RU") as watched:
        page = watched.page
        await shot(page, "ru-phone-login")
        await sign_up_ru(page, "vasilisa")
        await open_room_ru(page, "dacha")
        await say_ru(page, "набрано на телефоне " + "длинное слово " * 30)
        await expect(texts(page)).to_have_count(1)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing overflows sideways
        for part in ("#rooms", "#messages", "#composer-text", "#language"):
            rect = await page.locator(part).bounding_box()
            assert rect is not None and rect["x"] >= 0 and rect["x"] + rect["width"] <= 390
        await shot(page, "ru-phone-room")
        await watched.assert_clean()


# -- the pages without JavaScript --------------------------------------------------------------


def nojs_shot(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"nojs-{name}.png")


async def test_the_pages_without_javascript_by_accept_language(
    node: NodeProcess, browser: Browser
) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        english = await http.get("/nojs/login", headers={"accept-language": "en-US,en;q=0.9"})
        assert '<html lang="en">' in english.text and "Create an account" in english.text
        plain = await http.get("/nojs/login")  # no header: English
        assert '<html lang="en">' in plain.text
    for width, height, tag in ((1200, 800, ""), (390, 844, "-phone")):
        context = await browser.new_context(
            java_script_enabled=False, locale="ru-RU", viewport={"width": width, "height": height}
        )
        page = await context.new_page()
        await page.goto(f"{node.url}/nojs/")
        assert await page.get_attribute("html", "lang") == "ru"
        note = page.locator("#password-note")
        await expect(note).to_contain_text("отправляет на узел сам пароль")
        await page.screenshot(path=nojs_shot(f"ru{tag}-login"), full_page=True)
        name = f"boris{tag.strip('-')}"
        form = page.locator("form[action='/nojs/register']")
        await form.get_by_label("Имя").fill(name)
        await form.get_by_label("Пароль", exact=True).fill(PASSWORD)
        await form.get_by_label("Пароль ещё раз").fill(PASSWORD)
        await form.get_by_role("button", name="Создать учётную запись").click()
        await expect(page.locator("nav")).to_contain_text(f"вы вошли как {name}")
        await page.get_by_label("Комната").fill(f"chai{tag.strip('-')}")
        await page.get_by_role("button", name="Войти").click()
        await page.get_by_label("Сообщение").fill("чай готов, заходите")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Отправить").click()
        frame = page.frame_locator("iframe")
        await expect(frame.locator("li.message")).to_contain_text("чай готов, заходите")
        await expect(frame.locator(".hint")).to_have_text("Время — UTC.")
        await expect(frame.locator("a.act").first).to_have_text("ответить")
        # a command's answer, the node's words, in the page's language too
        await page.get_by_label("Сообщение").fill("/help")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Отправить").click()
        await expect(page.locator(".answer")).to_contain_text("войти в комнату")
        # a row a command, its usage and what it does in cells of their own, whatever the width
        help_row = page.locator("table.help tr").filter(has_text="/help")
        await expect(help_row.locator("td")).to_have_text(["/help", "список команд"])
        await expect(page.locator("table.help caption")).to_have_text("Команды:")
        usage, meaning = [await help_row.locator("td").nth(n).bounding_box() for n in (0, 1)]
        assert usage and meaning
        if tag:  # a phone: what it does under the usage
            assert meaning["y"] >= usage["y"] + usage["height"] - 1
        else:  # side by side
            assert meaning["x"] > usage["x"] + usage["width"] - 1 and meaning["y"] == usage["y"]
        width_now = await page.evaluate("document.documentElement.scrollWidth")
        assert width_now <= width  # nothing overflows sideways
        await page.screenshot(path=nojs_shot(f"ru{tag}-room"), full_page=True)
        await page.goto(f"{node.url}/nojs/rooms")
        await expect(page.locator("h1")).to_have_text("Комнаты")
        await page.screenshot(path=nojs_shot(f"ru{tag}-rooms"), full_page=True)
        await context.close()


async def test_the_pages_without_javascript_speak_the_accounts_language(
    node: NodeProcess,
) -> None:
    token = await register(node, "gleb")
    async with connect(node, token) as client:
        await client.send(type="language", lang="ru", ref="l")
        await client.expect("language", ref="l")
        await client.join("sad")
    english = {"accept-language": "en-US,en;q=0.9"}
    async with httpx.AsyncClient(base_url=node.url, headers=english) as http:
        http.cookies.set(COOKIE, token)
        rooms = await http.get("/nojs/rooms")
        assert '<html lang="ru">' in rooms.text and "<h1>Комнаты</h1>" in rooms.text
        assert "вы вошли как <b>gleb</b>" in rooms.text
        frame = await http.get("/nojs/room/sad/messages")
        assert "Время — UTC." in frame.text and "Сейчас здесь: gleb" in frame.text
        bad = await http.post("/nojs/join", data={"room": "x"})  # no form token
        assert bad.status_code == 403 and "эта форма устарела" in bad.text
    async with connect(node, token) as client:  # back to the browser's: English
        await client.send(type="language", ref="none")
        await client.expect("language", ref="none")
    async with httpx.AsyncClient(base_url=node.url, headers=english) as http:
        http.cookies.set(COOKIE, token)
        assert "<h1>Rooms</h1>" in (await http.get("/nojs/rooms")).text


@pytest.mark.parametrize("size", [(1200, 800), (390, 844)], ids=["desktop", "phone"])
async def test_replies_reactions_edits_and_files_in_russian(
    node: NodeProcess, browser: Browser, size: tuple[int, int]
) -> None:
    width, height = size
    async with open_page(browser, node, width=width, height=height, locale="ru-RU") as watched:
        page = watched.page
        await sign_up_ru(page, f"olya{width}")
        await open_room_ru(page, f"kuhnya{width}")
        async with user(node, f"petya{width}") as petya:
            await petya.join(f"kuhnya{width}")
            asked = await petya.say(f"kuhnya{width}", "чай или кофе?", ref="q")
            item = page.locator(f"#messages li.message[data-id='{asked['id']}']")
            await page.mouse.move(0, 0)
            await item.locator(".text").click()  # a tap shows its buttons
            await item.get_by_role("button", name="Ответить").click()
            await expect(page.locator("#composing-text")).to_have_text(
                re.compile(f"^Ответ на сообщение petya{width}: чай или кофе\\?")
            )
            await say_ru(page, "чай, пожалуйста")
            reply = await petya.expect("message", text="чай, пожалуйста")
            assert reply["reply"] == asked["id"]
            await petya.send(type="send", room=f"kuhnya{width}", text="❤️", react=reply["id"],
                             ref="t")  # fmt: skip
            await petya.send(type="send", room=f"kuhnya{width}", text="чай или какао?",
                             edit=asked["id"], ref="e")  # fmt: skip
            await expect(item.locator(".edited")).to_have_text("(изменено)")
            mine = page.locator("#messages li.message", has_text="чай, пожалуйста")
            await expect(mine.locator(".reaction")).to_have_text("❤️ 1")
            recipe: FilePayload = {"name": "рецепт.txt", "mimeType": "text/plain",
                                   "buffer": "мёд".encode()}  # fmt: skip
            await page.locator("#attach-input").set_input_files(files=[recipe])
            saving = page.get_by_role("button", name=re.compile("^Сохранить рецепт.txt"))
            await expect(saving).to_be_visible()
            await shot(page, f"ru-daily-{'phone' if width < 700 else 'desktop'}")
        await watched.assert_clean()
