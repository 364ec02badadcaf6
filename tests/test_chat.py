"""Rooms, messages, history, direct messages, presence, commands and mentions, as two or three
people on one real node would see them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from onionchat import crypto

from conftest import NodeProcess, connect, login, register, user


async def test_a_message_reaches_everyone_in_the_room_after_its_ack(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "Дмитрий") as dima:
        await alice.join("lobby")
        joined = await dima.join("lobby")
        assert joined["members"] == ["alice", "Дмитрий"]
        assert (await alice.expect("presence"))["user"] == "Дмитрий"

        await alice.send(type="send", room="lobby", text="привет, <b>Дима</b>", ref="m1")
        ack = await alice.recv()
        assert ack["type"] == "ack" and ack["ref"] == "m1" and ack["room"] == "lobby"
        mine = await alice.expect("message")
        theirs = await dima.expect("message")
        assert mine == theirs
        assert theirs["id"] == ack["id"] and theirs["ts"] == ack["ts"]
        assert theirs["sender"] == "alice"
        assert theirs["text"] == "привет, <b>Дима</b>"  # verbatim: clients render text


async def test_ids_are_time_ordered_and_unique(node: NodeProcess) -> None:
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        ids = [(await alice.say("lobby", f"n{i}", ref=str(i)))["id"] for i in range(30)]
        assert ids == sorted(ids) and len(set(ids)) == 30


async def test_history_on_join_and_older_pages(node_factory: Any) -> None:
    node = node_factory(env={"ONIONCHAT_LIMITS_RATE": "100000", "ONIONCHAT_LIMITS_BURST": "1000"})
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        for i in range(260):
            await alice.send(type="send", room="lobby", text=f"line {i}", ref=str(i))
        await alice.expect("ack", ref="259", timeout=20)

    async with user(node, "bob") as bob:
        joined = await bob.join("lobby")
        texts = [m["text"] for m in joined["history"]]
        assert texts == [f"line {i}" for i in range(210, 260)]
        assert joined["more"] is True

        await bob.send(
            type="history", room="lobby", before=joined["history"][0]["id"], limit=200, ref="h"
        )
        page = await bob.expect("history", ref="h")
        assert [m["text"] for m in page["messages"]] == [f"line {i}" for i in range(10, 210)]
        assert page["more"] is True
        await bob.send(
            type="history", room="lobby", before=page["messages"][0]["id"], limit=200, ref="h2"
        )
        last = await bob.expect("history", ref="h2")
        assert [m["text"] for m in last["messages"]] == [f"line {i}" for i in range(10)]
        assert last["more"] is False

        await bob.send(type="history", room="lobby", limit=201, ref="big")
        error = await bob.expect("error", ref="big")
        assert error["code"] == "bad_frame" and "200" in error["message"]


async def test_create_join_leave_list_and_topic(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        joined = await alice.join("Dev")
        assert joined["room"]["name"] == "dev"
        await bob.send(type="join", room="#DEV")
        assert (await bob.expect("joined"))["room"]["name"] == "dev"
        await alice.expect("presence", user="bob", state="join")

        await alice.send(type="topic", room="dev", text="release on Friday", ref="t")
        assert (await alice.expect("topic"))["ref"] == "t"
        topic = await bob.expect("topic")
        assert topic["text"] == "release on Friday" and topic["by"] == "alice"
        assert "ref" not in topic

        await bob.send(type="rooms", ref="l")
        rooms = (await bob.expect("rooms"))["rooms"]
        dev = next(r for r in rooms if r["name"] == "dev")
        assert (dev["topic"], dev["topic_by"], dev["online"]) == ("release on Friday", "alice", 2)

        await alice.send(type="topic", room="dev", text="x" * 301, ref="long")
        error = await alice.expect("error", ref="long")
        assert error["message"] == "the topic is too long (301 characters, at most 300)"
        await alice.send(type="topic", room="dev", text="for now")
        await alice.send(type="topic", room="dev")  # neither text nor box: cleared
        assert (await bob.expect("topic", text=None))["by"] == "alice"
        await bob.send(type="rooms")
        assert {"name": "dev", "online": 2} in (await bob.expect("rooms"))["rooms"]

        await bob.send(type="leave", room="dev", ref="x")
        assert (await bob.expect("left"))["room"] == "dev"
        await alice.expect("presence", user="bob", state="leave")

        await bob.send(type="send", room="dev", text="still here?", ref="late")
        assert (await bob.expect("error", ref="late"))["code"] == "not_joined"


async def test_joined_rooms_are_remembered_for_the_next_connection(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("one")
        await alice.join("two")
        await alice.send(type="leave", room="one")
        await alice.expect("left")
    async with connect(node, token) as alice:
        assert alice.seen[-1]["rooms"] == ["two"]


async def test_leaving_leaves_on_every_device(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with user(node, "bob") as bob, connect(node, token) as phone:
        await bob.join("lobby")
        async with connect(node, token) as laptop:
            await phone.join("lobby")
            await laptop.join("lobby")
            await laptop.send(type="leave", room="lobby", ref="bye")
            assert (await laptop.expect("left"))["ref"] == "bye"
            left = await phone.expect("left")
            assert left["room"] == "lobby" and "ref" not in left
            await bob.expect("presence", user="alice", state="leave")
            await bob.send(type="who", room="lobby")
            assert (await bob.expect("who"))["members"] == ["bob"]
            await phone.send(type="send", room="lobby", text="still in?", ref="s")
            assert (await phone.expect("error", ref="s"))["code"] == "not_joined"
    async with connect(node, token) as again:
        assert again.seen[-1]["rooms"] == []


async def test_presence_counts_users_not_connections(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with user(node, "bob") as bob, connect(node, token) as first:
        await bob.join("lobby")
        await first.join("lobby")
        await bob.expect("presence", user="alice", state="join")
        async with connect(node, token) as second:
            joined = await second.join("lobby")
            assert joined["members"] == ["alice", "bob"]
        await clients(node, 2)  # the node has seen the second connection go
        await bob.nothing()  # alice is still there on her first connection
        await bob.send(type="who", room="lobby")
        assert (await bob.expect("who"))["members"] == ["alice", "bob"]


async def clients(node: NodeProcess, count: int) -> None:
    """Until the node counts `count` connections (it sees a close in a task of its own)."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        for _ in range(200):
            if (await http.get("/api/health")).json()["clients"] == count:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"the node never counted {count} connections")


async def test_direct_messages_reach_only_the_two(node: NodeProcess) -> None:
    async with (
        user(node, "alice") as alice,
        user(node, "Светлана") as olga,
        user(node, "eve") as eve,
    ):
        for client in (alice, olga, eve):
            await client.join("lobby")
        await alice.send(type="command", room="lobby", line="/msg светлана hi, just you", ref="d")
        ack = await alice.expect("ack", ref="d")
        got = await olga.expect("message")
        assert got["to"] == "Светлана" and got["text"] == "hi, just you" and got["id"] == ack["id"]
        assert (await alice.expect("message"))["id"] == ack["id"]
        await eve.nothing()

        await olga.send(type="history", room=got["room"], ref="h")
        assert [m["text"] for m in (await olga.expect("history"))["messages"]] == ["hi, just you"]
        await eve.send(type="history", room=got["room"], ref="spy")
        assert (await eve.expect("error", ref="spy"))["code"] == "forbidden"

        async with connect(node, await register(node, "frank")) as frank:
            await frank.send(type="send", to="ALICE", text="hi from frank", ref="f")
            await frank.expect("ack", ref="f")
            await alice.expect("message", sender="frank")
        # the conversation is listed for both, and found under any spelling of the names
        async with connect(node, (await login(node, "frank")).json()["token"]) as again:
            assert again.seen[-1]["direct"] == ["@alice+frank"]
            await again.send(type="history", room="@FRANK+Alice", ref="h2")
            assert (await again.expect("history", ref="h2"))["messages"][0]["text"] == (
                "hi from frank"
            )

        await alice.send(type="send", to="nobody", text="hello?", ref="n")
        assert (await alice.expect("error", ref="n"))["code"] == "unknown_user"


async def test_commands(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")

        await alice.send(type="command", room="lobby", line="/help")
        help_text = (await alice.expect("notice"))["text"]
        for name in ("help", "clear", "me", "who", "join", "leave", "rooms", "msg", "topic"):
            assert f"/{name}" in help_text

        await alice.send(type="command", room="lobby", line="/me waves")
        action = await bob.expect("message")
        assert action["me"] is True and action["text"] == "waves"

        await alice.send(type="command", room="lobby", line="/who")
        assert (await alice.expect("who"))["members"] == ["alice", "bob"]

        await alice.send(type="command", room="lobby", line="/topic Friday: ship it")
        assert (await bob.expect("topic"))["text"] == "Friday: ship it"
        await bob.send(type="command", room="lobby", line="/topic")
        assert "Friday: ship it" in (await bob.expect("notice"))["text"]

        await alice.send(type="command", room="lobby", line="/join games")
        assert (await alice.expect("joined"))["room"]["name"] == "games"
        await alice.send(type="command", room="lobby", line="/rooms")
        names = [r["name"] for r in (await alice.expect("rooms"))["rooms"]]
        assert names == ["games", "lobby"]
        await alice.send(type="command", room="games", line="/leave")
        assert (await alice.expect("left"))["room"] == "games"

        await alice.send(type="command", room="lobby", line="/clear", ref="c")
        assert (await alice.expect("clear"))["ref"] == "c"

        await alice.send(type="command", room="lobby", line="/frobnicate now", ref="u")
        error = await alice.expect("error", ref="u")
        assert error["code"] == "unknown_command" and "/frobnicate" in error["message"]
        assert "/help" in error["message"]
        await alice.send(type="command", room="lobby", line="/msg bob", ref="m")
        assert "usage: /msg USER MESSAGE" in (await alice.expect("error", ref="m"))["message"]


async def test_mentions_notify_users_in_other_rooms(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("elsewhere")
        await alice.say("lobby", "@bob can you look at this?")
        mention = await bob.expect("mention")
        assert mention["room"] == "lobby" and mention["sender"] == "alice"
        assert mention["text"] == "@bob can you look at this?"
        await alice.say("lobby", "mail me at bob@example.org", ref="2")
        await bob.nothing()


async def test_key_protected_room_carries_only_boxes(node: NodeProcess) -> None:
    key = crypto.new_room_key()
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        joined = await alice.join("vault", protected=True)
        assert joined["room"]["protected"] is True
        await bob.send(type="join", room="vault")
        await bob.expect("joined")

        box = crypto.seal(key, "the launch code is 0000")
        await alice.send(type="send", room="vault", box=box, ref="b")
        await alice.expect("ack", ref="b")
        got = await bob.expect("message")
        assert got["box"] == box and "text" not in got
        assert crypto.open_box(key, got["box"]) == "the launch code is 0000"

        await alice.send(type="send", room="vault", text="oops, plain", ref="p")
        error: dict[str, Any] = await alice.expect("error", ref="p")
        assert error["code"] == "bad_body" and "key-protected" in error["message"]
        await alice.send(type="command", room="vault", line="/me whispers", ref="me")
        assert (await alice.expect("error", ref="me"))["code"] == "bad_body"

        await alice.send(type="topic", room="vault", box=crypto.seal(key, "secret plans"))
        topic = await bob.expect("topic")
        assert crypto.open_box(key, topic["box"]) == "secret plans"

        await bob.send(type="join", room="vault", create=True, protected=False, ref="j")
        assert (await bob.expect("error", ref="j"))["code"] == "room_mode"
        await alice.join("lobby")
        await alice.send(type="join", room="lobby", protected=True, ref="k")
        error = await alice.expect("error", ref="k")
        assert error["code"] == "room_mode" and "open" in error["message"]


async def test_a_join_storm_drops_no_one_and_presence_adds_up(node_factory: Any) -> None:
    """Many people join at once, with small send queues: everyone stays, `joined` comes first,
    and each one's member list plus the presence frames after it give exactly the room."""
    # 40 newcomers at once would make the room invite-only (limits.join_wave): not a raid here
    env = {"ONIONCHAT_LIMITS_SEND_QUEUE_BYTES": "65536", "ONIONCHAT_LIMITS_JOIN_WAVE": "0"}
    node = node_factory(env=env)
    names = [f"storm{i}" for i in range(40)]
    tokens = await asyncio.gather(*(register(node, name) for name in names))
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(node, t)) for t in tokens]
        for client in clients:
            await client.send(type="join", room="storm", create=True)
        for client in clients:
            joined = await client.recv()
            assert joined["type"] == "joined", "frames of the room came before joined"
            present = set(joined["members"])
            while present != set(names):
                frame = await client.recv()
                assert frame["type"] == "presence" and frame["state"] == "join"
                assert frame["user"] not in present, "presence repeats the member list"
                present.add(frame["user"])
        for client in clients:  # and nothing more: no one was told twice, no one was dropped
            await client.send(type="ping", ref="done")
            assert (await client.recv())["type"] == "pong"
