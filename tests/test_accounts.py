"""Accounts and sessions: what the node learns, what it stores, and what it tells strangers."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
from typing import Any

import httpx
import pytest
import websockets

from onionchat import crypto

from conftest import PASSWORD, NodeProcess, b64url, connect, login, register


async def test_register_login_logout(node: NodeProcess) -> None:
    await register(node, "alice")
    response = await login(node, "alice")
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "alice" and len(base64.urlsafe_b64decode(body["token"] + "=")) == 32
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie

    async with connect(node, body["token"]) as client:
        async with httpx.AsyncClient(base_url=node.url) as http:
            out = await http.post(
                "/api/logout", headers={"Authorization": f"Bearer {body['token']}"}
            )
            assert out.status_code == 204
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
        assert "logged out" in closed.value.rcvd.reason

    with pytest.raises(websockets.ConnectionClosed) as refused:
        async with connect(node, body["token"]):
            pass
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4001


async def test_a_page_can_ask_whether_its_session_holds(node: NodeProcess) -> None:
    await register(node, "alice")
    token = (await login(node, "alice")).json()["token"]
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.get("/api/session")).status_code == 401
        http.cookies.set("onionchat_session", token)
        answer = await http.get("/api/session")
        assert answer.status_code == 200 and answer.json()["user"] == "alice"
        await http.post("/api/logout")
        gone = await http.get("/api/session")
        assert gone.status_code == 401 and gone.json()["error"] == "auth_failed"


async def test_the_password_never_reaches_the_node(node: NodeProcess) -> None:
    """The node stores an argon2id hash of a secret derived from the password; neither the
    password nor the derived secret appears in its files."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        salt = secrets.token_bytes(16)
        secret = crypto.login_secret(PASSWORD, salt, 1000)
        response = await http.post(
            "/api/register",
            json={
                "username": "alice",
                "salt": b64url(salt),
                "iterations": 1000,
                "secret": b64url(secret),
            },
        )
        assert response.status_code == 201
    database = node.data_dir / "onionchat.sqlite3"
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT hash FROM users").fetchone()
    assert stored.startswith("$argon2id$")
    everything = b"".join(p.read_bytes() for p in node.data_dir.iterdir()) + (
        node.log_path.read_bytes()
    )
    for needle in (PASSWORD.encode(), secret, b64url(secret).encode()):
        assert needle not in everything
    assert crypto.wrapping_key(PASSWORD, salt, 1000) != secret


async def test_wrong_password_and_unknown_name_look_the_same(node: NodeProcess) -> None:
    await register(node, "alice")
    wrong = await login(node, "alice", "not the password")
    unknown = await login(node, "nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "auth_failed",
            "message": "wrong username or password",
        }
    )
    async with httpx.AsyncClient(base_url=node.url) as http:
        first = (await http.post("/api/prelogin", json={"username": "nobody"})).json()
        again = (await http.post("/api/prelogin", json={"username": "NOBODY"})).json()
        real = (await http.post("/api/prelogin", json={"username": "alice"})).json()
    assert first == again  # a stable answer, like a real account's
    assert set(first) == set(real) == {"salt", "iterations"}
    assert len(base64.urlsafe_b64decode(first["salt"] + "==")) == 16


async def test_guessing_a_name_is_slowed_but_its_owner_still_logs_in(node: NodeProcess) -> None:
    await register(node, "alice")
    known = await login(node, "alice")  # alice's own client, before the attack
    device = known.json()["device"]
    for _ in range(5):
        assert (await login(node, "alice", "guess")).status_code == 401
    # the attacker must now wait, and longer after each failure: a crawl, refused unhashed
    limited = await login(node, "alice", "guess")
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    await asyncio.sleep(int(limited.headers["retry-after"]))
    assert (await login(node, "alice", "guess")).status_code == 401
    again = await login(node, "alice", "guess")
    assert again.status_code == 429 and int(again.headers["retry-after"]) >= 2
    # alice's client that logged in before is not held back by the attacker's failures
    owner = await login(node, "alice", device=device)
    assert owner.status_code == 200 and owner.json()["user"] == "alice"
    # a forged or another name's device token is no pass
    assert (await login(node, "alice", "guess", device="A" * 43)).status_code == 429
    # the same delays for a name that does not exist, so they tell nothing either
    for _ in range(5):
        await login(node, "ghost", "guess")
    assert (await login(node, "ghost", "guess")).status_code == 429
    # others are not slowed by alice's attacker
    await register(node, "bob")
    assert (await login(node, "bob")).status_code == 200


async def test_a_login_spray_is_bounded_by_the_hash_queue_not_a_shutter(
    node_factory: Any,
) -> None:
    """Many names guessed at once: what the hash workers cannot take is refused at once, unhashed;
    nothing stays shut, so the owner of another name logs in right after."""
    node = node_factory(
        env={
            "ONIONCHAT_AUTH_ARGON2": "interactive",
            "ONIONCHAT_AUTH_HASH_WORKERS": "1",
            "ONIONCHAT_AUTH_HASH_QUEUE": "2",
        }
    )
    await register(node, "carol")
    async with httpx.AsyncClient(base_url=node.url) as http:
        guesses = [
            http.post("/api/login", json={"username": f"user{i}", "secret": b64url(bytes(32))})
            for i in range(30)
        ]
        codes = [r.status_code for r in await asyncio.gather(*guesses)]
    assert codes.count(429) >= 20 and codes.count(401) >= 3, codes
    assert (await login(node, "carol")).status_code == 200


async def test_registrations_have_their_own_rate(node_factory: Any) -> None:
    node = node_factory(env={"ONIONCHAT_AUTH_REGISTRATIONS": "3"})
    codes = [(await register_raw(node, f"new{i}")).status_code for i in range(5)]
    assert codes[:3] == [201, 201, 201] and codes[3:] == [429, 429]
    later = await register_raw(node, "later")
    assert later.status_code == 429 and "new accounts" in later.json()["message"]
    # logins are counted apart: the first accounts still log in
    assert (await login(node, "new0", "x")).status_code == 401  # a wrong secret, not refused


async def test_iterations_beyond_the_nodes_maximum_are_refused(node: NodeProcess) -> None:
    response = await register_raw(node, "greedy", iterations=100_000_000)
    assert response.status_code == 400
    assert "at most 2000000" in response.json()["message"]


async def register_raw(node: NodeProcess, name: str, iterations: int = 1000) -> httpx.Response:
    """A registration as a client would post it, with a dummy salt and secret."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        body = {
            "username": name,
            "salt": b64url(bytes(16)),
            "iterations": iterations,
            "secret": b64url(bytes(32)),
        }
        return await http.post("/api/register", json=body)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Оlga", "mixes Cyrillic and Latin"),  # a Cyrillic О before Latin letters
        ("pаypal", "mixes Cyrillic and Latin"),  # a Cyrillic а inside
        ("a" * 33, "too long"),
        ("", "empty"),
        ("two words", "only letters"),
        ("<script>", "only letters"),
    ],
)
async def test_names_that_could_deceive_are_refused(
    node: NodeProcess, name: str, reason: str
) -> None:
    response = await register_raw(node, name)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] in ("bad_name", "bad_frame") and reason in body["message"]


async def test_unicode_names_are_welcome_and_unique_without_case(node: NodeProcess) -> None:
    for name in ("Светлана", "Дмитрий", "山田たろう", "José"):
        await register(node, name)
        assert (await login(node, name)).json()["user"] == name
    assert (await login(node, "светлана")).status_code == 200
    for taken in ("СВЕТЛАНА", "ｊｏｓé"):  # other case; full-width letters fold by NFKC
        response = await register_raw(node, taken)
        assert response.status_code == 409
        assert response.json()["error"] == "name_taken"


async def test_weak_iterations_are_refused(node: NodeProcess) -> None:
    response = await register_raw(node, "alice", iterations=10)
    assert response.status_code == 400 and "iterations" in response.json()["message"]


async def test_an_expired_session_is_refused_and_closes_its_connection(
    node_factory: Any,
) -> None:
    node = node_factory(env={"ONIONCHAT_AUTH_SESSION_HOURS": "0.001"})  # 3.6 seconds
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("lobby")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:  # an idle connection is closed when its session ends
                await alice.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002
        assert "expired" in closed.value.rcvd.reason
    async with websockets.connect(node.ws_url, proxy=None) as ws:
        await ws.send(f'{{"v":1,"type":"auth","token":"{token}"}}')
        error = await ws.recv()
        assert '"session_expired"' in str(error)
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4002


async def test_the_websocket_takes_the_session_cookie(node: NodeProcess) -> None:
    token = await register(node, "alice")
    headers = {"Cookie": f"onionchat_session={token}"}
    async with websockets.connect(node.ws_url, proxy=None, additional_headers=headers) as ws:
        assert '"ready"' in str(await ws.recv())


async def test_a_token_in_the_url_is_not_a_session(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with websockets.connect(f"{node.ws_url}?token={token}", proxy=None) as ws:
        await ws.send('{"v":1,"type":"ping"}')
        assert '"not_authenticated"' in str(await ws.recv())


async def test_a_foreign_origin_is_refused(node: NodeProcess) -> None:
    token = await register(node, "alice")
    headers = {"Cookie": f"onionchat_session={token}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            node.ws_url,
            proxy=None,
            additional_headers=headers,
            origin=websockets.Origin("http://evil.example"),
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_hashing_work_has_a_budget_per_second(node_factory: Any) -> None:
    """However many logins come at once, hashes start at `auth.hash_rate` a second at most:
    six wrong logins at a rate of two take at least two seconds (a bound, not a timing)."""
    node = node_factory(env={"ONIONCHAT_AUTH_HASH_RATE": "2", "ONIONCHAT_AUTH_HASH_WORKERS": "1"})
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=node.url, timeout=30) as http:
        started = loop.time()
        guesses = [
            http.post("/api/login", json={"username": f"u{i}", "secret": b64url(bytes(32))})
            for i in range(6)
        ]
        codes = [r.status_code for r in await asyncio.gather(*guesses)]
        took = loop.time() - started
    assert codes == [401] * 6 and took >= 2.0


async def test_the_language_an_account_chose_goes_with_it_to_every_device(
    node: NodeProcess,
) -> None:
    token = await register(node, "olya")
    async with connect(node, token) as phone, connect(node, token) as laptop:
        assert "lang" not in phone.seen[-1]  # none chosen: the browser's
        await phone.send(type="language", lang="ru", ref="l")
        assert await phone.expect("language", ref="l") == {
            "type": "language", "v": 1, "lang": "ru", "ref": "l"
        }  # fmt: skip
        assert (await laptop.expect("language"))["lang"] == "ru"
        await phone.send(type="language", lang="Russian!", ref="bad")
        assert (await phone.expect("error", ref="bad"))["code"] == "bad_frame"
    async with connect(node, token) as again:
        assert again.seen[-1]["lang"] == "ru"
        await again.send(type="language", ref="none")  # back to the browser's
        await again.expect("language", ref="none")
    async with connect(node, token) as last:
        assert "lang" not in last.seen[-1]
