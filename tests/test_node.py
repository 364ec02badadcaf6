"""The node as an operator meets it: command line, configuration, health, headers and logs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from onionchat import config

from conftest import NodeProcess, connect, login, onionchat, register, user

ROOT = Path(__file__).resolve().parent.parent


def test_help_documents_every_option() -> None:
    top = onionchat("--help")
    assert top.returncode == 0 and "serve" in top.stdout and "connect" in top.stdout
    serve = onionchat("serve", "--help").stdout
    for option in ("--host", "--port", "--data-dir", "--config", "--log-level", "--log-format"):
        assert option in serve
    connect_help = onionchat("connect", "--help").stdout
    for option in (
        "--user",
        "--room",
        "--password-file",
        "--register",
        "--key",
        "--pipe",
        "--bell",
        "--socks",
        "--ca",
        "--timeout",
        "URL",
    ):
        assert option in connect_help


@pytest.mark.parametrize(
    ("args", "env", "toml", "says"),
    [
        (
            (),
            {"ONIONCHAT_SERVER_PORT": "eighty"},
            "",
            "ONIONCHAT_SERVER_PORT: expected an integer, got 'eighty'",
        ),
        (("--port", "70000"), {}, "", "--port: must be at most 65535"),
        (
            (),
            {},
            "[limits]\nsend_queue_bytes = 2\n",
            "limits.send_queue_bytes: must be at least 65536",
        ),
        ((), {}, "[log]\nformat = 'xml'\n", "log.format: must be one of text, json"),
        ((), {}, "[server]\nprot = 1\n", "unknown key server.prot"),
        ((), {}, "[servers]\n", "unknown section [servers]"),
        ((), {}, "[server\n", "not valid TOML"),
        ((), {"ONIONCHAT_SERVER_PROT": "1"}, "", "ONIONCHAT_SERVER_PROT: unknown setting"),
        ((), {}, '[server]\nport = "8080"\n', "server.port: expected an integer, got '8080'"),
        (
            (),
            {"ONIONCHAT_LIMITS_MAX_TEXT_CHARS": "20000"},
            "",
            "limits.max_text_chars: 20000 characters, sealed in a key-protected room, need frames",
        ),
    ],
)
def test_an_invalid_setting_exits_2_naming_the_key(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], toml: str, says: str
) -> None:
    (tmp_path / "onionchat.toml").write_text(toml)
    result = onionchat("serve", "--data-dir", str(tmp_path / "d"), *args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert says in result.stderr
    assert not (tmp_path / "d").exists()


def test_settings_layer_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "onionchat.toml"
    path.write_text('[server]\nport = 1111\nhost = "::1"\n[limits]\nrate = 3\nburst = 4\n')
    settings = config.load(
        path,
        env={"ONIONCHAT_SERVER_PORT": "2222", "ONIONCHAT_LIMITS_RATE": "5.5"},
        overrides={"server.port": "3333"},
    )
    assert settings.server.port == 3333
    assert settings.server.host == "::1"
    assert settings.limits.rate == 5.5
    assert settings.limits.burst == 4
    assert settings.auth == config.Auth()


def test_every_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    for dotted, env_name, _, _ in config.documented_keys():
        assert f"`{dotted}`" in docs, dotted
        assert env_name in docs, env_name


async def test_the_node_reads_its_config_file(node_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text("[limits]\nhistory_page = 3\n")
    node: NodeProcess = node_factory("--config", str(path))
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        for i in range(5):
            await alice.say("lobby", f"m{i}", ref=str(i))
        await alice.send(type="leave", room="lobby")
        await alice.expect("left")
        joined = await alice.join("lobby")
        assert [m["text"] for m in joined["history"]] == ["m2", "m3", "m4"]


async def test_health_reports_version_uptime_clients_and_database(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with connect(node, token), connect(node, token):
        health = httpx.get(f"{node.url}/api/health").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert health["clients"] == 2 and health["uptime"] > 0
    assert re.fullmatch(r"\d+\.\d+\.\d+", health["version"]) and health["protocol"] == 1


async def test_the_websocket_never_compresses(node: NodeProcess) -> None:
    """Compressing secrets next to attacker-chosen text leaks them (CRIME/BREACH): the node
    declines per-message-deflate even when the client offers it."""
    token = await register(node, "alice")
    async with websockets.connect(node.ws_url, proxy=None, compression="deflate") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(f'{{"v":1,"type":"auth","token":"{token}"}}')
        assert '"ready"' in str(await ws.recv())


async def test_every_response_carries_the_security_headers(node: NodeProcess) -> None:
    for path in ("/", "/api/health", "/no/such/page"):
        headers = httpx.get(f"{node.url}{path}").headers
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        policy = headers["permissions-policy"]
        for feature in ("camera", "microphone", "geolocation", "usb", "clipboard-read"):
            assert f"{feature}=()" in policy
        assert "clipboard-write=(self)" in policy  # the one allowed: the Copy button's
        assert "server" not in headers


async def test_logs_are_json_events_without_contents_tokens_or_addresses(
    node_factory: Any,
) -> None:
    node = node_factory("--log-level", "debug")  # a line per message, too
    await register(node, "alice")
    token = (await login(node, "alice")).json()["token"]
    async with user(node, "bob") as bob, connect(node, token) as alice:
        await alice.join("lobby")
        await bob.join("lobby")
        await alice.say("lobby", "a confidential sentence")
        local_port = alice.ws.local_address[1]
        await alice.send(type="bogus")
        await alice.expect("error")
    node.stop()
    events = node.events()
    kinds = {e.get("event") for e in events}
    assert {
        "start",
        "stop",
        "register",
        "auth_success",
        "connect",
        "join",
        "message",
        "disconnect",
    } <= kinds
    message = next(e for e in events if e.get("event") == "message")
    assert message["room"] == "lobby" and message["size"] == len("a confidential sentence")
    assert len(message["id"]) == 26
    raw = node.log_path.read_text()
    assert "confidential" not in raw
    assert token not in raw
    assert f":{local_port}" not in raw and f" {local_port}" not in raw
    assert "127.0.0.1:" not in raw.replace(f"127.0.0.1:{node.port}", "")


def test_text_logs_for_people(node_factory: Any) -> None:
    node = node_factory("--log-format", "text")
    node.stop()
    first = node.log_path.read_text().splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00 INFO +OnionChat .* listening on", first)


def test_the_terminal_hint_is_a_command_to_paste(node_factory: Any) -> None:
    """The start's hint names the program as the operator can run it from where they are:
    by name on PATH, or by a path that does not climb out of the working directory."""
    node = node_factory()
    node.stop()
    hint = next(e for e in node.events() if e.get("event") == "hint")["msg"]
    program, rest = hint.removeprefix("chat from a terminal: ").split(" connect ", 1)
    assert not program.startswith("..")
    assert shutil.which(program) or (Path.cwd() / program).is_file()
    assert rest == f"{node.url}/ --user NAME --register"
