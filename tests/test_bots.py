"""Named bots in the rooms, against a real node and model servers that speak each provider's
documented streaming format (tests/model_servers.py: no model server can run here, so these
imitate the wire formats exactly, not the models)."""

from __future__ import annotations

import asyncio
import base64
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from onionchat import crypto, sealed
from onionchat.addressing import Addressing

from conftest import Client, NodeProcess, pipe_client, register, user
from model_servers import ModelServer, closed_port
from test_client import terminal_client, wait_for_screen
from test_web import open_page, open_room, say, shot, sign_up, texts

JOKE = "Why did the onion cry?"


@pytest.fixture
def ollama() -> Iterator[ModelServer]:
    with ModelServer("ollama") as server:
        yield server


def olga(server_url: str, **settings: str) -> dict[str, str]:
    env = {"ONIONCHAT_BOTS_OLGA_BASE_URL": server_url}
    env.update({f"ONIONCHAT_BOTS_OLGA_{k.upper()}": v for k, v in settings.items()})
    return env


async def answer(client: Client, timeout: float = 20) -> tuple[list[str], dict[str, Any]]:
    """The growing texts a client saw, then the bot's stored message."""
    grown: list[str] = []
    while True:
        frame = await client.recv(timeout)
        if frame["type"] == "delta":
            grown.append(frame["text"])
        elif frame["type"] == "message" and frame["sender"] == "Olga":
            return grown, frame


# -- addressing -------------------------------------------------------------------------------


ADDRESSING = Addressing([("olga", "Olga"), ("olga", "Ольга"), ("olga", "Оля")])


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("Olga, tell a joke", "tell a joke"),
        ("olga: what time is it", "what time is it"),
        ("OLGA tell a joke", "tell a joke"),
        ("Ольга, расскажи шутку", "расскажи шутку"),
        ("ольга: расскажи", "расскажи"),
        ("ОЛЯ привет", "привет"),
        ("@Olga what did we decide yesterday?", "what did we decide yesterday?"),
        ("what did we decide, @olga?", "what did we decide?"),
        ("ну что, @Ольга, скажешь?", "ну что, скажешь?"),
    ],
)
def test_a_message_that_calls_a_bot(text: str, prompt: str) -> None:
    call = ADDRESSING.call(text)
    assert call is not None and call.bot == "olga" and call.prompt == prompt


@pytest.mark.parametrize(
    "text",
    [
        "Olgatron, hi",
        "Ольгина мама пришла",
        "hello Olga",  # the name elsewhere, without @
        "write to me@olga.example",
        "Olga",  # no question
        "@Olgatron hi",
        "Оляля",
    ],
)
def test_a_message_that_does_not(text: str) -> None:
    assert ADDRESSING.call(text) is None


# -- answers ----------------------------------------------------------------------------------


async def test_the_answer_grows_for_everyone_and_is_stored(
    node_factory: Any, ollama: ModelServer
) -> None:
    ollama.delay = 0.3
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.say("lobby", "we meet at nine tomorrow", ref="1")
        await bob.say("lobby", "fine by me", ref="2")
        await alice.say("lobby", "Olga, tell a joke", ref="3")
        for client in (alice, bob):
            grown, final = await answer(client)
            assert final["text"] == JOKE
            assert len(grown) >= 3, grown  # a few updates, each the text so far
            assert all(JOKE.startswith(g) for g in grown) and grown == sorted(grown, key=len)
        history = await alice.join("lobby")
    assert history["history"][-1]["text"] == JOKE and history["history"][-1]["sender"] == "Olga"

    # What the model was shown: the system prompt, the room with its authors, the call last
    # without the bot's name.
    sent = ollama.requests[-1]
    assert sent["model"] == "llama3.2" and sent["stream"] is True
    roles = [m["role"] for m in sent["messages"]]
    assert roles[0] == "system" and "Olga" in sent["messages"][0]["content"]
    context = "\n".join(m["content"] for m in sent["messages"][1:])
    assert "alice: we meet at nine tomorrow" in context and "bob: fine by me" in context
    assert sent["messages"][-1]["content"].endswith("alice: tell a joke")

    database = sqlite3.connect(node.data_dir / "onionchat.sqlite3")
    stored = database.execute("SELECT sender, text FROM messages WHERE sender = 'Olga'").fetchall()
    database.close()
    assert stored == [("Olga", JOKE)]  # once, complete


async def test_russian_and_what_must_not_trigger(node_factory: Any, ollama: ModelServer) -> None:
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "Ольгина мама пришла", ref="1")
        await alice.say("lobby", "Olgatron, hi", ref="2")
        await alice.say("lobby", "Ольга, расскажи шутку", ref="3")
        _, final = await answer(alice)
    assert final["text"] == JOKE
    assert len(ollama.requests) == 1
    assert ollama.requests[0]["messages"][-1]["content"].endswith("alice: расскажи шутку")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_other_providers(node_factory: Any, provider: str) -> None:
    with ModelServer(provider, model="some-model", api_key="sk-test-secret") as server:
        env = {
            "ONIONCHAT_BOTS_OLGA_PROVIDER": provider,
            "ONIONCHAT_BOTS_OLGA_MODEL": "some-model",
            "ONIONCHAT_BOTS_OLGA_API_KEY_ENV": "MODEL_KEY",
            "MODEL_KEY": "sk-test-secret",
            **olga(server.url),
        }
        node: NodeProcess = node_factory(env=env)
        async with user(node, "alice") as alice:
            await alice.join("lobby")
            await alice.say("lobby", "@Olga tell a joke", ref="1")
            _, final = await answer(alice)
        assert final["text"] == JOKE
        assert "sk-test-secret" not in node.log_path.read_text()


async def test_the_context_budget_and_the_longest_answer(
    node_factory: Any, ollama: ModelServer
) -> None:
    ollama.tokens = ["0123456789"] * 5
    node: NodeProcess = node_factory(
        env=olga(ollama.url, context_chars="60", max_answer_chars="25")
    )
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "an old message that will not fit the budget", ref="1")
        await alice.say("lobby", "a recent one", ref="2")
        await alice.say("lobby", "Olga, what is new?", ref="3")
        _, final = await answer(alice)
    assert final["text"] == "0123456789012345678901234\n[cut at 25 characters]"
    context = "\n".join(m["content"] for m in ollama.requests[-1]["messages"][1:])
    assert "alice: a recent one" in context and "an old message" not in context


async def test_a_bot_meant_for_tor_never_goes_around_it(
    node_factory: Any, ollama: ModelServer
) -> None:
    node: NodeProcess = node_factory(env=olga(ollama.url, via_tor="true"))
    said = await say_and_get(node)
    assert said.startswith("⚠") and "only through Tor" in said
    assert ollama.requests == []


async def test_the_cli_sees_the_answer_grow(
    node_factory: Any, ollama: ModelServer, password_file: Any
) -> None:
    ollama.delay = 0.3
    node: NodeProcess = node_factory(env=olga(ollama.url))
    await register(node, "bob")
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        async with pipe_client(node.url, "bob", password_file) as bob:
            await bob.next(type="joined")
            await bob.send("Olga, tell a joke")
            deltas = [await bob.next(type="delta", sender="Olga")]
            final = await bob.next(type="message", sender="Olga")
            assert final["text"] == JOKE
            assert deltas[0]["id"] == final["id"]
            assert (await bob.finish())[0] == 0
        grown, _ = await answer(alice)
        assert grown


# -- failures ---------------------------------------------------------------------------------


async def say_and_get(
    node: NodeProcess, text: str = "Olga, tell a joke", name: str = "alice", lang: str = "en"
) -> str:
    async with user(node, name) as alice:
        await alice.send(type="language", lang=lang, ref="lang")
        await alice.expect("language", ref="lang")
        await alice.join("lobby")
        await alice.say("lobby", text, ref="1")
        _, final = await answer(alice, timeout=30)
    text_: str = final["text"]
    return text_


async def test_model_server_down(node_factory: Any) -> None:
    port = closed_port()
    node: NodeProcess = node_factory(env=olga(f"http://127.0.0.1:{port}"))
    said = await say_and_get(node)
    # the room gets a plain sentence; the model server's address is the operator's, in the log
    assert said == "⚠ the model server is not reachable now (the node's log says why)"
    # said to the room in the language of the one who asked
    said = await say_and_get(node, "Ольга, расскажи шутку", "sasha", "ru")
    assert said == "⚠ сервер моделей сейчас недоступен (почему — написано в журнале узла)"
    failed = [e for e in node.events() if e.get("event") == "bot_error"]
    assert failed and f"http://127.0.0.1:{port} is not reachable" in failed[0]["error"]
    assert "tell a joke" not in node.log_path.read_text()


async def test_model_not_installed(node_factory: Any, ollama: ModelServer) -> None:
    ollama.installed = False
    node: NodeProcess = node_factory(env=olga(ollama.url))
    said = await say_and_get(node)
    assert "model 'llama3.2' is not installed" in said and "ollama pull llama3.2" in said


async def test_bad_api_key(node_factory: Any) -> None:
    with ModelServer("openai", api_key="the-right-key") as server:
        env = {
            "ONIONCHAT_BOTS_OLGA_PROVIDER": "openai",
            "ONIONCHAT_BOTS_OLGA_API_KEY_ENV": "MODEL_KEY",
            "MODEL_KEY": "a-wrong-key",
            **olga(server.url),
        }
        node: NodeProcess = node_factory(env=env)
        said = await say_and_get(node)
    # the room hears it plainly; the operator reads which, in the log; the key is nowhere
    assert said == "⚠ the model server is not set up right for this bot (the node's log says why)"
    failed = [e["error"] for e in node.events() if e.get("event") == "bot_error"]
    assert failed == ["the model server refused the API key (HTTP 401)"]
    assert "a-wrong-key" not in node.log_path.read_text()


async def test_no_first_token_in_time(node_factory: Any, ollama: ModelServer) -> None:
    ollama.first_delay = 10
    node: NodeProcess = node_factory(env=olga(ollama.url, first_token_timeout="1"))
    said = await say_and_get(node)
    assert said.startswith("⚠") and "1 s" in said


@pytest.mark.parametrize("how", ["error", "cut"])
async def test_a_stream_that_breaks_keeps_the_partial_answer(
    node_factory: Any, ollama: ModelServer, how: str
) -> None:
    if how == "error":
        ollama.fail_after = 2
    else:
        ollama.cut_after = 2
    node: NodeProcess = node_factory(env=olga(ollama.url))
    said = await say_and_get(node)
    assert said.startswith("Why did") and "[cut:" in said


async def test_stop_cancels_the_running_answer(node_factory: Any, ollama: ModelServer) -> None:
    ollama.tokens = [f"word{i} " for i in range(200)]
    ollama.delay = 0.1
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.say("lobby", "Olga, count slowly", ref="1")
        await bob.expect("delta", timeout=10)
        await bob.expect("delta", timeout=10)
        await bob.send(type="command", line="/stop", room="lobby", ref="s")
        notice = await bob.expect("notice", ref="s")
        assert "stopped Olga" in notice["text"]
        _, final = await answer(alice)
    assert final["text"].startswith("word0") and final["text"].endswith("[stopped by bob]")
    assert "word199" not in final["text"]
    for _ in range(50):  # the model server sees the stream dropped, and stops writing
        if ollama.abandoned:
            break
        await asyncio.sleep(0.1)
    assert ollama.abandoned == 1 and ollama.served_chunks() < 200


async def test_one_answer_at_a_time_a_bounded_queue_and_a_rate(
    node_factory: Any, ollama: ModelServer
) -> None:
    ollama.delay = 0.3
    node: NodeProcess = node_factory(env=olga(ollama.url, queue="1", user_per_minute="3"))
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "Olga, one", ref="1")
        await alice.expect("delta")
        await alice.say("lobby", "Olga, two", ref="2")
        waiting = await alice.expect("notice")
        assert "after 1 earlier request" in waiting["text"]
        await alice.say("lobby", "Olga, three", ref="3")
        busy = await alice.expect("notice")
        assert "busy" in busy["text"]
        await alice.say("lobby", "Olga, four", ref="4")
        limited = await alice.expect("notice")
        assert "too often" in limited["text"]
        first = (await answer(alice))[1]
        second = (await answer(alice))[1]
    assert first["text"] == JOKE and second["text"] == JOKE and first["id"] < second["id"]
    prompts = [r["messages"][-1]["content"] for r in ollama.requests]
    assert prompts == ["alice: one", "alice: two"]  # answered in turn; three and four were not


async def test_bots_lists_them_and_whether_they_answer(
    node_factory: Any, ollama: ModelServer
) -> None:
    env = {
        **olga(ollama.url),
        "ONIONCHAT_BOTS_GPT_PROVIDER": "openai",
        "ONIONCHAT_BOTS_GPT_BASE_URL": f"http://127.0.0.1:{closed_port()}",
    }
    node: NodeProcess = node_factory(env=env)
    listings = []
    for name in ("alice", "bob"):  # alice, the first account, is the node's admin
        async with user(node, name) as member:
            await member.join("lobby")
            await member.send(type="command", line="/bots", room="lobby", ref="b")
            listings.append((await member.expect("notice", ref="b"))["text"])
    for listing in listings:
        olga_line = next(line for line in listing.splitlines() if line.startswith("Olga"))
        assert "Ольга" in olga_line and "llama3.2" in olga_line and olga_line.endswith("ready")
    staff, member_ = (next(ln for ln in t.splitlines() if ln.startswith("Gpt")) for t in listings)
    assert staff.endswith("unavailable: not reachable: connection refused")
    assert member_.endswith("unavailable")  # why is for the operator


async def test_no_account_may_take_a_bot_name(node: NodeProcess) -> None:
    import httpx

    for name in ("Olga", "ольга", "ОЛЯ"):
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.post(
                "/api/register",
                json={"username": name, "salt": "A" * 22, "iterations": 1000, "secret": "A" * 43},
            )
        assert response.status_code == 409 and "bot" in response.json()["message"]


# -- key-protected rooms ------------------------------------------------------------------------


async def no_answer(client: Client, wait: float = 1.5) -> None:
    """Whatever else arrives for a moment, nothing of a bot's answer does."""
    deadline = asyncio.get_running_loop().time() + wait
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            return
        assert frame["type"] != "delta" and frame.get("sender") != "Olga", frame


class Holder:
    """A raw client that seals and signs as the clients do (onionchat.sealed)."""

    def __init__(self, client: Client, room: str, key: bytes) -> None:
        self.client, self.room, self.key = client, room, key
        self.secret, _ = crypto.new_identity()

    async def publish(self) -> None:
        await self.client.send(
            type="identity",
            public=base64.b64encode(crypto.public_of(self.secret)).decode(),
            wrapped=crypto.wrap_identity(crypto.new_room_key(), self.secret),
            signing=base64.b64encode(sealed.signing_public(self.secret)).decode(),
            ref="id",
        )
        await self.client.expect("identity", ref="id")

    def box(self, text: str, key: bytes | None = None, sender: str | None = None) -> str:
        return sealed.seal_body(
            key or self.key,
            sealed.signing_key(self.secret),
            room=self.room,
            sender=sender or self.client.user,
            kind="message",
            text=text,
        )

    async def say(self, text: str, ref: str, **kwargs: Any) -> dict[str, Any]:
        box = self.box(text, **kwargs)
        await self.client.send(type="send", room=self.room, box=box, ref=ref)
        return await self.client.expect("ack", ref=ref)

    async def invite(self, bot: str, key: bytes | None = None) -> None:
        await self.client.send(type="key", user=bot, ref="k")
        public = base64.b64decode((await self.client.expect("key", ref="k"))["public"])
        invitation = sealed.seal_invitation(
            key or self.key,
            public,
            sealed.signing_key(self.secret),
            room=self.room,
            sender=self.client.user,
            to=bot,
        )
        await self.client.send(type="invite", room=self.room, to=bot, sealed=invitation, ref="i")


async def bot_answer(client: Client, key: bytes) -> tuple[list[str], str]:
    """The sealed deltas and the sealed answer of Olga, opened with `key` and verified as
    Olga's words in this room."""
    grown: list[str] = []
    while True:
        frame = await client.recv(20)
        if frame["type"] == "delta":
            assert "text" not in frame  # sealed, like every message here
            grown.append(sealed.open_body([key], frame["box"]).text)
        elif frame["type"] == "message" and frame["sender"] == "Olga":
            assert "text" not in frame
            body = sealed.open_body([key], frame["box"])
            body.check(frame["room"], "Olga", "message", frame["ts"])
            return grown, body.text


async def test_a_key_protected_room_only_with_an_invitation(
    node_factory: Any, ollama: ModelServer, password_file: Any
) -> None:
    key = crypto.new_room_key()
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as a, user(node, "bob") as b:
        alice, bob = Holder(a, "plans", key), Holder(b, "plans", key)
        for holder in (alice, bob):
            await holder.publish()
        await a.join("plans", protected=True)
        await b.join("plans", protected=True)
        await alice.say("Olga, tell a joke", "1")
        await no_answer(a)  # not invited: the node cannot read the call, nor can Olga
        assert ollama.requests == []

        # The CLI explains it locally (the node cannot).
        await register(node, "carol")
        async with pipe_client(
            f"{node.url}/#room=plans&key={crypto.encode_key(key)}", "carol", password_file
        ) as carol:
            await carol.next(type="joined")
            await carol.send("Olga, are you there?")
            hint = await carol.next(type="notice")
            assert "Olga cannot read #plans" in hint["text"] and "/invite Olga" in hint["text"]
            assert (await carol.finish())[0] == 0

        await alice.invite("Olga")
        readers = await b.expect("readers")
        assert readers["bots"] == ["Olga"]
        told = await b.expect("notice")
        assert "Olga can read #plans now" in told["text"] and "alice" in told["text"]

        await bob.say("Olga, tell a joke", "2")
        grown, said = await bot_answer(a, key)
        assert grown and said == JOKE
        assert ollama.requests[-1]["messages"][-1]["content"].endswith("bob: tell a joke")

        # A newcomer is told who reads the room; /uninvite takes the key back.
        async with user(node, "dave") as dave:
            joined = await dave.join("plans", protected=True)
            assert joined["room"]["readers"] == ["Olga"]
            assert "Olga can read #plans" in (await dave.expect("notice"))["text"]
        await a.send(type="command", line="/uninvite Olga", room="plans", ref="u")
        assert (await b.expect("readers"))["bots"] == []
        await alice.say("Olga, again?", "3")
        await no_answer(a)
    assert len(ollama.requests) == 1

    # The node's files hold the room only sealed, the bot's answer included.
    for path in node.data_dir.glob("onionchat.sqlite3*"):
        data = path.read_bytes()
        assert b"tell a joke" not in data and b"onion cry" not in data, path


async def test_an_insider_cannot_turn_a_bot_against_the_room(
    node_factory: Any, ollama: ModelServer
) -> None:
    """mallory, a member, invites Olga with a key of her own, replays alice's call under her
    name, and writes a call in alice's name: Olga keeps answering the room under the room's key,
    answers mallory only under mallory's key with nothing of the room as context, and ignores
    what is not what it claims to be."""
    key, hers = crypto.new_room_key(), crypto.new_room_key()
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as a, user(node, "mallory") as m:
        alice, mallory = Holder(a, "plans", key), Holder(m, "plans", key)
        for holder in (alice, mallory):
            await holder.publish()
        await a.join("plans", protected=True)
        await m.join("plans", protected=True)
        await alice.invite("Olga")
        await a.expect("readers")
        # only staff invite bots: mallory is a room moderator gone bad
        await a.send(type="command", room="plans", line="/op mallory", ref="op")
        await a.expect("notice", ref="op")
        await mallory.invite("Olga", key=hers)
        await a.expect("readers")
        await alice.say("the vault code is 4711", "s")

        await alice.say("Olga, tell a joke", "c")
        _, said = await bot_answer(a, key)  # under the room's key: alice and bob read it
        assert said == JOKE
        calls = len(ollama.requests)

        await mallory.say("Olga, repeat everything said here", "h", key=hers)
        _, said = await bot_answer(m, hers)  # under her own key only
        context = " ".join(t["content"] for t in ollama.requests[-1]["messages"])
        assert "4711" not in context and "tell a joke" not in context
        with pytest.raises(crypto.CryptoError):
            sealed.open_body([key], (await a.expect("message", sender="Olga"))["box"])

        # A replay of alice's box under mallory's name, and a box claiming alice's name.
        old = alice.box("Olga, tell a joke")
        await m.send(type="send", room="plans", box=old, ref="r")
        await m.expect("ack", ref="r")
        await mallory.say("Olga, tell a joke", "f", sender="alice")
        await no_answer(a)
        assert len(ollama.requests) == calls + 1


# -- in the browser -----------------------------------------------------------------------------


async def test_the_page_shows_the_answer_grow_and_invites_a_bot(
    node_factory: Any, ollama: ModelServer, browser: Browser
) -> None:
    ollama.delay = 0.4
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "lobby")
        await say(page, "Ольга, расскажи шутку")
        growing = page.locator("#messages li.growing")
        await expect(growing).to_have_count(1)
        await expect(growing.locator(".sender")).to_have_text("Olga")
        await shot(page, "bot-growing")
        await expect(growing).to_have_count(0, timeout=20_000)
        await expect(texts(page)).to_have_text(["Ольга, расскажи шутку", JOKE])

        # A key-protected room: first a local hint, then an invitation, then a sealed answer.
        await open_room(page, "plans", protected=True)
        await say(page, "Olga, tell a joke")
        await expect(page.locator("#notice")).to_contain_text("Olga cannot read #plans")
        await say(page, "/invite Olga")
        await expect(page.locator("#notice")).to_contain_text("Olga can read #plans now")
        await expect(page.locator("#room-readers")).to_have_text("readable by Olga")
        await say(page, "@Olga another one?")
        await expect(texts(page)).to_have_text(
            ["Olga, tell a joke", "@Olga another one?", JOKE], timeout=20_000
        )
        await shot(page, "bot-protected")
        await say(page, "/uninvite Olga")
        await expect(page.locator("#room-readers")).to_be_hidden()
        await watched.assert_clean()
    assert ollama.requests[-1]["messages"][-1]["content"].endswith("alice: another one?")


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"ONIONCHAT_BOTS_OLGA_PROVIDER": "gpt"}, "ONIONCHAT_BOTS_OLGA_PROVIDER: must be one of"),
        ({"ONIONCHAT_BOTS_OLGA_API_KEY_ENV": "NO_SUCH_KEY"}, "the environment has no NO_SUCH_KEY"),
        ({"ONIONCHAT_BOTS_OLGA_QUEUE": "many"}, "ONIONCHAT_BOTS_OLGA_QUEUE: expected an integer"),
        ({"ONIONCHAT_BOTS_OLGA_FROB": "1"}, "ONIONCHAT_BOTS_OLGA_FROB: unknown setting"),
        ({"ONIONCHAT_BOTS_OLYA_NAME": "Оля"}, "the name 'Оля' is also"),
        ({"ONIONCHAT_BOTS_OLGA_NAME": "Оlga"}, "the name 'Оlga'"),  # Cyrillic О, Latin lga
    ],
)
def test_bad_bot_settings_stop_the_node(env: dict[str, str], said: str) -> None:
    from onionchat import config

    with pytest.raises(config.ConfigError, match=re.escape(said)):
        config.load(env=env)


def test_bots_from_the_file_and_the_environment(tmp_path: Any) -> None:
    from onionchat import config

    path = tmp_path / "onionchat.toml"
    path.write_text(
        '[bots.olga]\nrooms = ["lobby", "dev"]\n\n'
        '[bots.claude]\nprovider = "anthropic"\napi_key_env = "KEY"\nvia_tor = true\n'
    )
    settings = config.load(path, env={"KEY": "k", "ONIONCHAT_BOTS_CLAUDE_MODEL": "m"})
    assert settings.bots["olga"].rooms == ("lobby", "dev")
    claude = settings.bots["claude"]
    assert (claude.name, claude.provider, claude.model, claude.via_tor) == (
        "Claude",
        "anthropic",
        "m",
        True,
    )
    off = config.load(env={"ONIONCHAT_BOTS_OLGA_ENABLED": "false"})
    assert off.bots == {}


async def test_a_terminal_shows_the_answer_grow(
    node_factory: Any, ollama: ModelServer, password_file: Any
) -> None:
    """A person at a real terminal (tmux) sees the answer arrive in pieces, not at the end."""
    ollama.tokens = [
        "Why ",
        "did ",
        "the ",
        "onion ",
        "cry? ",
        "Because ",
        "it ",
        "was ",
        "chopped.",
    ]
    ollama.delay = 0.5
    node: NodeProcess = node_factory(env=olga(ollama.url))
    with terminal_client(node, "bob", password_file) as session:
        async with user(node, "alice") as alice:
            await alice.join("lobby")
            await alice.expect("presence", user="bob", state="join", timeout=15)
            await alice.say("lobby", "Olga, tell a joke", ref="1")
            early = await wait_for_screen(session, "Olga is writing: Why did the")
            assert "chopped" not in early  # a part of it, before the end
            final = await wait_for_screen(session, "<Olga> Why did the onion cry? Because it was")
            assert "Olga is writing" not in final  # the toolbar is gone once it is stored
        subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)


# -- bounds: what a caller can make the node ask of model servers ------------------------------


async def test_many_bots_commands_cost_one_check_of_the_model_server(
    node_factory: Any, ollama: ModelServer
) -> None:
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        for i in range(20):
            await alice.send(type="command", line="/bots", room="lobby", ref=f"b{i}")
        for i in range(20):
            listing = await alice.expect("notice", ref=f"b{i}")
            assert "ready" in listing["text"]
    checks = [p for p in ollama.paths if not p.startswith("POST /api/chat")]
    assert 1 <= len(checks) <= 2, checks  # one check of the server (at most two requests)


async def test_answers_at_once_on_the_node_are_bounded(
    node_factory: Any, ollama: ModelServer
) -> None:
    """With one answer at a time node-wide, a call in a second room waits for the first."""
    ollama.hold_after = 1
    node: NodeProcess = node_factory(env={**olga(ollama.url), "ONIONCHAT_LIMITS_BOT_ANSWERS": "1"})
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("one")
        await bob.join("two")
        await alice.say("one", "Olga, tell a joke", ref="1")
        await alice.expect("delta")
        await bob.say("two", "Olga, tell another", ref="2")
        await bob.send(type="ping", ref="barrier")
        await bob.expect("pong", ref="barrier")
        await asyncio.sleep(0.5)  # time for a request that should not come (without the bound)
        assert len(ollama.requests) == 1  # the second waits its turn, nothing asked yet
        ollama.hold_after = None
        ollama.release()
        _, first = await answer(alice)
        _, second = await answer(bob)
    assert first["text"] == JOKE and second["text"] == JOKE and len(ollama.requests) == 2


async def test_a_rotated_room_key_reaches_the_bots_that_read_the_room(
    node_factory: Any, ollama: ModelServer
) -> None:
    """Issue 14: after a kick, the room's new key goes to every member and to the bots that
    read the room (the node lists them for `who` with `all`); Olga then answers under it, and
    her answer does not open with the old key the kicked member holds."""
    old, new = crypto.new_room_key(), crypto.new_room_key()
    node: NodeProcess = node_factory(env=olga(ollama.url))
    async with user(node, "alice") as a, user(node, "mallory") as m:
        alice = Holder(a, "plans", old)
        await alice.publish()
        await a.join("plans", protected=True)
        await m.join("plans", protected=True)
        await alice.invite("Olga")
        await a.expect("readers")
        await a.send(type="command", room="plans", line="/kick mallory", ref="k")
        await a.expect(
            "notice", text="mallory still holds #plans's key: /rotate seals a new one to the others"
        )
        await a.send(type="who", room="plans", all=True, ref="w")
        assert (await a.expect("who", ref="w"))["members"] == ["alice", "Olga"]
        await alice.invite("Olga", key=new)  # as /rotate does, for each one listed
        await a.expect("readers")
        await alice.say("Olga, tell a joke", "c", key=new)
        _, said = await bot_answer(a, new)
        assert said
        answer = [f for f in a.seen if f["type"] == "message" and f["sender"] == "Olga"][-1]
        with pytest.raises(crypto.CryptoError):
            sealed.open_body([old], answer["box"])
