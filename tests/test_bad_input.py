"""Bad input gets a clear error and loses nothing: the sender learns what was wrong, keeps its
connection when it can, and the others in the room notice nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from conftest import Client, NodeProcess, register, user

LIMITS = {"ONIONCHAT_LIMITS_MAX_FRAME_BYTES": "8192", "ONIONCHAT_LIMITS_MAX_TEXT_CHARS": "500"}


@contextlib.asynccontextmanager
async def room_of_two(node: NodeProcess) -> AsyncIterator[tuple[Client, Client, str]]:
    """alice (who will misbehave) and bob (who must notice nothing) in #lobby, with one good
    message already accepted."""
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.join("vault", protected=True)
        ack = await alice.say("lobby", "a good message before the bad one", ref="good")
        assert (await bob.expect("message"))["id"] == ack["id"]
        yield alice, bob, ack["id"]


async def unharmed(alice: Client, bob: Client, good_id: str) -> None:
    """alice's connection still works, bob saw nothing, and the good message is kept."""
    await alice.send(type="ping", ref="alive")
    await alice.expect("pong", ref="alive")
    await bob.nothing()
    await bob.send(type="history", room="lobby", ref="h")
    history = await bob.expect("history", ref="h")
    assert [m["id"] for m in history["messages"]] == [good_id]


BAD_FRAMES: list[tuple[str, str | bytes, str, str]] = [
    ("malformed JSON", '{"v":1,"type":"send",', "bad_json", "malformed JSON"),
    ("not an object", "[1, 2, 3]", "bad_frame", "Expected `object`"),
    ("unknown type", '{"v":1,"type":"dance","ref":"x"}', "bad_frame", "'dance'"),
    ("missing type", '{"v":1,"room":"lobby"}', "bad_frame", "missing required field `type`"),
    ("missing version", '{"type":"ping"}', "bad_frame", "missing required field `v`"),
    ("wrong version", '{"v":7,"type":"ping"}', "unsupported_version", "version 7"),
    ("missing field", '{"v":1,"type":"join"}', "bad_frame", "`room`"),
    (
        "mistyped field",
        '{"v":1,"type":"send","room":"lobby","text":42}',
        "bad_frame",
        "Expected `str | null`, got `int` - at `$.text`",
    ),
    ("unknown field", '{"v":1,"type":"ping","extra":1}', "bad_frame", "unknown field `extra`"),
    ("binary frame", b"\x00\x01binary", "binary_frame", "text frames"),
    (
        "frame over the limit",
        json.dumps({"v": 1, "type": "send", "room": "lobby", "text": "x" * 9000}),
        "too_large",
        "at most 8192",
    ),
    (
        "text over the limit",
        json.dumps({"v": 1, "type": "send", "room": "lobby", "text": "y" * 501}),
        "bad_body",
        "at most 500",
    ),
    ("empty message", '{"v":1,"type":"send","room":"lobby","text":"   "}', "bad_body", "empty"),
    (
        "room and to",
        '{"v":1,"type":"send","room":"lobby","to":"bob","text":"x"}',
        "bad_frame",
        "exactly one of room or to",
    ),
    (
        "text and box",
        '{"v":1,"type":"send","room":"lobby","text":"x","box":"eA=="}',
        "bad_body",
        "exactly one of text or box",
    ),
    (
        "room not joined",
        '{"v":1,"type":"send","room":"vault2","text":"x"}',
        "unknown_room",
        "no room #vault2",
    ),
    ("unknown room", '{"v":1,"type":"join","room":"nowhere"}', "unknown_room", "#nowhere"),
    ("empty room name", '{"v":1,"type":"join","room":"","create":true}', "bad_name", "empty"),
    (
        "long room name",
        json.dumps({"v": 1, "type": "join", "room": "r" * 65, "create": True}),
        "bad_name",
        "too long",
    ),
    (
        "room name with spaces",
        '{"v":1,"type":"join","room":"a b","create":true}',
        "bad_name",
        "only letters",
    ),
    (
        "ciphertext not base64",
        '{"v":1,"type":"send","room":"vault","box":"not base64!!"}',
        "bad_ciphertext",
        "not valid base64",
    ),
    (
        "ciphertext too short",
        '{"v":1,"type":"send","room":"vault","box":"AAAAAAAAAAAA"}',
        "bad_ciphertext",
        "too short",
    ),
    (
        "box in an open room",
        '{"v":1,"type":"send","room":"lobby","box":"AAAA"}',
        "bad_body",
        "open",
    ),
    (
        "history before a bad id",
        '{"v":1,"type":"history","room":"lobby","before":"x"}',
        "bad_frame",
        "message id",
    ),
    ("auth twice", '{"v":1,"type":"auth","token":"abc"}', "bad_frame", "only valid first"),
    (
        "command without slash",
        '{"v":1,"type":"command","line":"help"}',
        "bad_command",
        "starts with one /",
    ),
]


@pytest.mark.parametrize(
    ("frame", "code", "says"), [b[1:] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES]
)
async def test_a_bad_frame_gets_a_clear_error(
    node_factory: Any, frame: str | bytes, code: str, says: str
) -> None:
    node = node_factory(env=LIMITS)
    async with room_of_two(node) as (alice, bob, good_id):
        await alice.send_raw(frame)
        error = await alice.expect("error")
        assert error["code"] == code
        assert says in error["message"]
        await unharmed(alice, bob, good_id)


async def test_not_joined(node: NodeProcess) -> None:
    async with room_of_two(node) as (alice, bob, good_id):
        await bob.send(type="join", room="quiet", create=True)
        await bob.expect("joined")
        await alice.send(type="send", room="quiet", text="let me in", ref="q")
        error = await alice.expect("error", ref="q")
        assert error["code"] == "not_joined" and "join #quiet first" in error["message"]
        await unharmed(alice, bob, good_id)


async def test_a_long_message_within_limits_is_delivered_whole(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        text = "ж" * 4000  # 8000 bytes of UTF-8, at the default limit of characters
        await alice.say("lobby", text)
        assert (await bob.expect("message"))["text"] == text


async def test_invalid_utf8_closes_with_1007(node: NodeProcess) -> None:
    async with room_of_two(node) as (alice, bob, good_id):
        await alice.ws.send(b'{"v":1,"type":"ping","ref":"\xff\xfe"}', text=True)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await alice.recv()
        assert alice.ws.close_code == 1007
        await bob.expect("presence", user="alice", state="leave")
        await bob.send(type="history", room="lobby", ref="h")
        assert [m["id"] for m in (await bob.expect("history"))["messages"]] == [good_id]


async def test_a_frame_far_over_the_limit_closes_with_1009(node_factory: Any) -> None:
    node = node_factory(env=LIMITS)
    async with room_of_two(node) as (alice, bob, _):
        await alice.send_raw("z" * (4 * 8192 + 1))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await alice.recv()
        assert alice.ws.close_code == 1009
        await bob.expect("presence", user="alice", state="leave")


async def test_frames_before_authentication(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        await ws.send('{"v":1,"type":"join","room":"lobby","ref":"early"}')
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "not_authenticated"
        assert "authenticate first" in error["message"]
        await ws.send(json.dumps({"v": 1, "type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "ready"


async def test_chatter_without_authenticating_is_cut_short(node: NodeProcess) -> None:
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(50):
                await ws.send('{"v":1,"type":"ping"}')
                assert json.loads(await ws.recv())["code"] == "not_authenticated"
        assert ws.close_code == 4001
        assert ws.close_reason == "too many frames without authenticating"


async def test_a_bad_token_closes_with_4001(node: NodeProcess) -> None:
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        await ws.send('{"v":1,"type":"auth","token":"forged"}')
        error = json.loads(await ws.recv())
        assert error["code"] == "auth_failed"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4001


async def test_silence_instead_of_authentication_closes_with_4001(node_factory: Any) -> None:
    node = node_factory(env={"ONIONCHAT_AUTH_AUTH_TIMEOUT": "0.5"})
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4001


async def test_a_flood_gets_errors_then_a_close(node_factory: Any) -> None:
    node = node_factory(
        env={
            "ONIONCHAT_LIMITS_RATE": "5",
            "ONIONCHAT_LIMITS_BURST": "10",
            "ONIONCHAT_LIMITS_FLOOD_STRIKES": "20",
        }
    )
    async with room_of_two(node) as (alice, bob, _):
        codes: list[str] = []
        with contextlib.suppress(websockets.ConnectionClosed):
            for n in range(200):
                await alice.send(type="send", room="lobby", text=f"flood {n}", ref=str(n))
            while True:
                codes.append((await alice.recv())["type"])
        assert alice.ws.close_code == 4008
        assert "flooding" in (alice.ws.close_reason or "")
        rate_errors = [f for f in alice.seen if f.get("code") == "rate_limited"]
        assert len(rate_errors) >= 19 and "at most 5 frames a second" in rate_errors[0]["message"]
        accepted = [f["id"] for f in alice.seen if f["type"] == "ack" and f["ref"] != "good"]
        assert 1 <= len(accepted) <= 11
        # bob got exactly the accepted messages, in order, then alice's departure
        for message_id in accepted:
            assert (await bob.expect("message"))["id"] == message_id
        await bob.expect("presence", user="alice", state="leave")


async def test_a_client_that_stops_reading_is_dropped_and_the_room_goes_on(
    node_factory: Any,
) -> None:
    node = node_factory(
        env={
            "ONIONCHAT_LIMITS_SEND_QUEUE_BYTES": "65536",
            "ONIONCHAT_LIMITS_RATE": "1e5",
            "ONIONCHAT_LIMITS_BURST": "100000",
        }
    )
    slow_token = await register(node, "slow")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.port))
    async with (
        user(node, "alice") as alice,
        user(node, "bob") as bob,
        websockets.connect(node.ws_url, sock=sock, proxy=None, max_queue=1) as slow,
    ):
        await alice.join("lobby")
        await bob.join("lobby")
        await slow.send(json.dumps({"v": 1, "type": "auth", "token": slow_token}))
        await slow.send(json.dumps({"v": 1, "type": "join", "room": "lobby"}))
        await bob.expect("presence", user="slow", state="join")
        # from now on slow reads nothing
        sent = []
        for n in range(3000):
            ack = await alice.say("lobby", f"{n:05d} " + "x" * 3000, ref=str(n))
            sent.append(ack["id"])
            got = await bob.expect("message")
            assert got["id"] == ack["id"]
            if {
                "type": "presence",
                "room": "lobby",
                "user": "slow",
                "state": "leave",
                "v": 1,
            } in bob.seen:
                break
        else:
            raise AssertionError("the slow client was never dropped")
        # the room went on: alice and bob still talk
        ack = await alice.say("lobby", "still here", ref="after")
        assert (await bob.expect("message"))["id"] == ack["id"]
        # the slow client, reading at last, finds out why it was dropped
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 10)
        assert slow.close_code == 4009
        assert "too slow" in (slow.close_reason or "")


async def test_bad_http_bodies(node: NodeProcess) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        malformed = await http.post(
            "/api/login", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400 and malformed.json()["error"] == "bad_json"
        wrong_type = await http.post("/api/login", json={"username": 5, "secret": "x"})
        assert wrong_type.status_code == 400 and "$.username" in wrong_type.json()["message"]
        form = await http.post("/api/login", data={"username": "a"})
        assert form.status_code == 415
        huge = await http.post(
            "/api/login",
            content=b"{" + b" " * 20000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413
        bad_secret = await http.post("/api/login", json={"username": "a", "secret": "c2hvcnQ"})
        assert bad_secret.status_code == 400 and "32 bytes" in bad_secret.json()["message"]
