"""`onionchat doctor` (issue 13), run as an operator runs it (`python -m onionchat doctor` in a
subprocess) against real parts: data directories written by the node's own code, a real
mosquitto (tests/brokers.py), the small model servers of tests/model_servers.py (which speak
the Ollama, OpenAI and Anthropic wire formats on 127.0.0.1), and real tors: on the private test
network (the `testnet` fixture), attached to the session's client tor, and on a network of one
authority nobody runs. Every check must end within its --timeout."""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import trustme
from brokers import Socks5, brokers, free_port, password_file

from onionchat import backup, config, doctor
from onionchat.bots import load_bot_key
from onionchat.federation.network import node_key
from onionchat.onion_keys import Clients, OnionKey
from onionchat.server import DATABASE
from onionchat.tor import find_tor

from conftest import NodeProcess, Tor, onionchat
from model_servers import ModelServer

QUIET = {"ONIONCHAT_TOR_MODE": "off", "ONIONCHAT_BOTS_OLGA_ENABLED": "false"}
LINE = re.compile(r"^(ok|warn|FAIL)\s+(.+?): (.*)$")


def run_doctor(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return onionchat("doctor", *args, env={**QUIET, **(env or {})}, cwd=cwd)


def findings(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str, str]]:
    """(level, check, what it said) of each line; the summary line is not one."""
    found = []
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        if match:
            found.append((match[1], match[2], match[3]))
    return found


def the(result: subprocess.CompletedProcess[str], check: str) -> list[tuple[str, str]]:
    """(level, said) of each line of this check."""
    return [(level, said) for level, name, said in findings(result) if name == check]


def those(result: subprocess.CompletedProcess[str], prefix: str) -> list[tuple[str, str]]:
    """(level, said) of each line of the checks whose name starts so (`broker `)."""
    return [(level, said) for level, name, said in findings(result) if name.startswith(prefix)]


def federation_env(brokers_: list[str], **extra: str) -> dict[str, str]:
    return {
        "ONIONCHAT_FEDERATION_NAME": "north",
        "ONIONCHAT_FEDERATION_SECRET": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ONIONCHAT_FEDERATION_BROKERS": ",".join(brokers_),
        **extra,
    }


# -- the data directory -----------------------------------------------------------------------


@pytest.fixture
def data_dir(node: NodeProcess) -> Path:
    """A running node's data directory (its database, with -wal and -shm, and the bots' key),
    with every other secret the node makes, made by the node's own code."""
    OnionKey.load_or_create(node.data_dir)
    Clients(node.data_dir).add("alice")
    node_key(node.data_dir)
    load_bot_key(node.data_dir)
    return node.data_dir


def test_a_good_data_dir_passes(data_dir: Path) -> None:
    result = run_doctor("--data-dir", str(data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    [(level, said)] = the(result, "data directory")
    assert level == "ok" and "private (0700)" in said
    for name in doctor.SECRETS:
        assert (data_dir / name).exists(), name  # each secret was there, and was checked
        assert name in said
    assert result.stdout.splitlines()[-1] == "nothing failed (1 warning(s))"  # tor is off
    assert the(result, "tor") == [("warn", "tor.mode is off: the node publishes no onion service")]


def test_the_secrets_checked_are_those_a_backup_keeps() -> None:
    assert set(doctor.SECRETS) >= {DATABASE, *backup.KEYS}
    assert {f"{DATABASE}-wal", f"{DATABASE}-shm"} <= set(doctor.SECRETS)


def test_a_data_dir_or_secret_open_to_others_is_named_with_the_chmod(data_dir: Path) -> None:
    data_dir.chmod(0o755)
    listed = run_doctor("--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stdout  # the node makes it 0700 itself when it starts
    assert the(listed, "data directory") == [
        (
            "warn",
            f"{data_dir} can be listed by others (mode 0755); the node makes it 0700 when it "
            f"starts; to fix: chmod 700 {data_dir}",
        )
    ]

    opened = {
        data_dir / "onion_key": ("0644", "the onion address's private key"),
        data_dir / DATABASE: ("0640", "the database (accounts, sessions, messages)"),
        data_dir / "node_key": ("0604", "the node's federation identity key"),
    }
    for path, (mode, _) in opened.items():
        path.chmod(int(mode, 8))
    data_dir.chmod(0o777)
    result = run_doctor("--data-dir", str(data_dir))
    assert result.returncode == 1
    said = the(result, "data directory")
    assert said[0] == (
        "FAIL",
        f"{data_dir} can be written by others (mode 0777): they could replace the node's keys "
        f"or database; to fix: chmod 700 {data_dir}, and check that every file in it is the "
        "node's",
    )
    for path, (mode, what) in opened.items():
        assert (
            "FAIL",
            f"{path} ({what}) can be read by others (mode {mode}); to fix: chmod 600 {path}; "
            "and if others could read it, treat it as known to them",
        ) in said
    assert len(said) == 1 + len(opened)  # the secrets still 0600 are not named


def test_a_data_dir_not_made_yet_is_fine(tmp_path: Path) -> None:
    [fresh] = doctor.data_directory(tmp_path / "new" / "data")
    assert fresh.level == doctor.OK and "does not exist yet" in fresh.said
    assert not (tmp_path / "new").exists()  # the doctor makes nothing


# -- the config -------------------------------------------------------------------------------


def test_a_bad_config_is_said_in_its_own_words_with_exit_1(tmp_path: Path) -> None:
    toml = tmp_path / "onionchat.toml"
    toml.write_text('[server]\nport = "eighty"\n')
    with pytest.raises(config.ConfigError) as error:
        config.load(toml, env={})
    result = run_doctor(cwd=tmp_path)  # ./onionchat.toml is read as serve reads it
    assert result.returncode == 1
    [(level, check, said)] = findings(result)  # nothing else is tried on a bad config
    assert (level, check) == ("FAIL", "config")
    assert said.startswith(str(error.value)) and "docs/config.md" in said

    unknown = run_doctor("--config", str(toml), env={"ONIONCHAT_SERVER_PROT": "1"})
    assert unknown.returncode == 1
    assert "ONIONCHAT_SERVER_PROT: unknown setting" in unknown.stdout

    missing = run_doctor("--config", str(tmp_path / "nowhere.toml"))
    assert missing.returncode == 1 and "nowhere.toml: cannot read" in missing.stdout

    # config.py quotes a broker URL that holds a password; the doctor does not repeat it
    written = federation_env(["mqtt://north:hunter2hunter2@127.0.0.1:1883"])
    leaked = run_doctor("--data-dir", str(tmp_path / "data"), env=written)
    assert leaked.returncode == 1
    assert "mqtt://north:(password)@127.0.0.1:1883" in leaked.stdout
    assert "hunter2" not in leaked.stdout + leaked.stderr


def test_a_bad_timeout_is_refused(tmp_path: Path) -> None:
    result = run_doctor("--data-dir", str(tmp_path / "d"), "--timeout", "0")
    assert result.returncode == 2 and "--timeout" in result.stderr


# -- brokers ----------------------------------------------------------------------------------


def test_a_broker_is_ok_and_a_wrong_password_or_a_closed_port_is_said_plainly(
    tmp_path: Path,
) -> None:
    files = tmp_path / "mqtt"
    files.mkdir()
    good, wrong = secrets.token_hex(8), secrets.token_hex(8)
    users = password_file(files / "passwd", {"north": good, "south": secrets.token_hex(8)})
    lines = ["allow_anonymous false", f"password_file {users}"]
    closed = free_port()
    with brokers(tmp_path, 1, lines) as (broker,):
        port = broker.port
        urls = [
            f"mqtt://north@127.0.0.1:{port}?password_env=GOOD",
            f"mqtt://south@127.0.0.1:{port}?password_env=WRONG&version=3.1.1",
            f"mqtt://127.0.0.1:{port}",
            f"mqtt://127.0.0.1:{closed}",
        ]
        started = time.monotonic()
        result = run_doctor(
            "--data-dir",
            str(tmp_path / "data"),
            "--timeout",
            "5",
            env=federation_env(urls, GOOD=good, WRONG=wrong),
        )
        took = time.monotonic() - started
    assert result.returncode == 1
    said = those(result, "broker ")
    assert said[0][0] == "ok" and "the broker accepted us (CONNACK: success)" in said[0][1]
    assert said[1] == (
        "FAIL",
        "the broker refused the user south with the password in $WRONG (not authorized: a "
        "wrong password, or a user it does not know); to fix: check the user in the URL, the "
        "password in $WRONG, and the broker's password file",
    )
    assert said[2][0] == "FAIL" and "refused a client with no user name" in said[2][1]
    assert said[3] == (
        "FAIL",
        f"nothing listens at 127.0.0.1:{closed} (connection refused); to fix: start the broker, "
        "or correct the host and port in federation.brokers",
    )
    assert f"broker mqtt://north@127.0.0.1:{port} (MQTT 5)" in result.stdout
    assert f"broker mqtt://south@127.0.0.1:{port} (MQTT 3.1.1)" in result.stdout
    for secret in (good, wrong):
        assert secret not in result.stdout + result.stderr
    assert took < 20


def test_a_broker_behind_a_socks5_proxy_is_tried_through_it(tmp_path: Path) -> None:
    proxy = Socks5(tmp_path / "socks")
    proxy.start()
    try:
        with brokers(tmp_path, 1) as (broker,):
            down = f"socks5://127.0.0.1:{free_port()}"
            urls = [
                f"mqtt://127.0.0.1:{broker.port}?proxy={proxy.url}",
                f"mqtt://localhost:{broker.port}?proxy={down}",
            ]
            result = run_doctor(
                "--data-dir", str(tmp_path / "data"), "--timeout", "5", env=federation_env(urls)
            )
    finally:
        proxy.stop()
    assert result.returncode == 1
    through, unreachable = those(result, "broker ")
    assert through[0] == "ok", through
    assert f"broker mqtt://127.0.0.1:{broker.port} (MQTT 5, through {proxy.url})" in result.stdout
    assert any(f"127.0.0.1:{broker.port}" in c for c in proxy.connections())  # it went through
    assert unreachable == (
        "FAIL",
        f"the proxy ({down}) is not reachable: Connection refused; to fix: start the proxy, or "
        "correct proxy= in the URL",
    )


def test_a_tls_broker_is_trusted_through_its_ca_and_said_untrusted_without(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    files = tmp_path / "tls"
    files.mkdir()
    ca.cert_pem.write_to_path(str(files / "ca.pem"))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(files / "server.pem")
    )
    lines = [
        f"cafile {files / 'ca.pem'}",
        f"certfile {files / 'server.pem'}",
        f"keyfile {files / 'server.pem'}",
        "allow_anonymous true",
    ]
    with brokers(tmp_path, 1, lines) as (tls,), brokers(tmp_path / "plain", 1) as (plain,):
        urls = [
            f"mqtts://127.0.0.1:{tls.port}?ca={files / 'ca.pem'}",
            f"mqtts://localhost:{tls.port}",  # the system's CAs do not know the test's
            f"mqtts://127.0.0.1:{plain.port}",
            f"mqtt://127.0.0.1:{tls.port}",
        ]
        result = run_doctor(
            "--data-dir", str(tmp_path / "data"), "--timeout", "5", env=federation_env(urls)
        )
    assert result.returncode == 1
    trusted, untrusted, not_tls, plain_to_tls = those(result, "broker ")
    assert f"broker mqtts://127.0.0.1:{tls.port} (MQTT 5, TLS)" in result.stdout
    assert trusted[0] == "ok", trusted
    assert untrusted[0] == "FAIL"
    assert "TLS failed: the broker's certificate is not trusted" in untrusted[1]
    assert "give the CA that signed it as ca=FILE" in untrusted[1]
    assert not_tls[0] == "FAIL" and "TLS" in not_tls[1], not_tls
    assert plain_to_tls[0] == "FAIL" and "mqtts://" in plain_to_tls[1], plain_to_tls
    print(result.stdout)


# -- model servers ----------------------------------------------------------------------------


def test_a_model_server_with_the_model_is_ok_and_a_missing_model_is_named(
    tmp_path: Path,
) -> None:
    """The servers of tests/model_servers.py speak each provider's wire format: Ollama's
    /api/tags, OpenAI's /v1/models with a bearer key, Anthropic's /v1/models/ID with x-api-key
    and anthropic-version."""
    key = "sk-" + secrets.token_hex(16)
    with (
        ModelServer("ollama", "llama3.2") as ollama,
        ModelServer("openai", "gpt-4o-mini", api_key=key) as openai,
        ModelServer("anthropic", "claude-sonnet-4-5", api_key=key) as anthropic,
    ):
        anthropic.installed = False
        env = {
            "ONIONCHAT_BOTS_OLGA_ENABLED": "true",
            "ONIONCHAT_BOTS_OLGA_BASE_URL": ollama.url,
            "ONIONCHAT_BOTS_GPT_PROVIDER": "openai",
            "ONIONCHAT_BOTS_GPT_BASE_URL": f"{openai.url}/v1",
            "ONIONCHAT_BOTS_GPT_MODEL": "gpt-4o-mini",
            "ONIONCHAT_BOTS_GPT_API_KEY_ENV": "MODEL_KEY",
            "ONIONCHAT_BOTS_CLAUDE_PROVIDER": "anthropic",
            "ONIONCHAT_BOTS_CLAUDE_BASE_URL": anthropic.url,
            "ONIONCHAT_BOTS_CLAUDE_MODEL": "claude-sonnet-4-5",
            "ONIONCHAT_BOTS_CLAUDE_API_KEY_ENV": "MODEL_KEY",
            "ONIONCHAT_BOTS_GONE_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "MODEL_KEY": key,
        }
        result = run_doctor("--data-dir", str(tmp_path / "data"), "--timeout", "5", env=env)
        assert ollama.paths == ["GET /api/tags"]
        assert openai.paths == ["GET /v1/models"]
        assert anthropic.paths == ["GET /v1/models/claude-sonnet-4-5"]
    assert result.returncode == 1
    assert the(result, "bot Olga") == [("ok", f"ollama at {ollama.url} has the model 'llama3.2'")]
    assert the(result, "bot Gpt") == [
        ("ok", f"openai at {openai.url}/v1 has the model 'gpt-4o-mini'")
    ]
    [(level, said)] = the(result, "bot Claude")
    assert level == "FAIL"
    assert "model 'claude-sonnet-4-5' is not available on the model server" in said
    assert "bots.claude.model" in said
    [(level, said)] = the(result, "bot Gone")
    assert level == "FAIL" and "not reachable: connection refused" in said
    assert key not in result.stdout + result.stderr

    with ModelServer("ollama", "llama3.2") as ollama:
        ollama.installed = False
        env = {"ONIONCHAT_BOTS_OLGA_ENABLED": "true", "ONIONCHAT_BOTS_OLGA_BASE_URL": ollama.url}
        missing = run_doctor("--data-dir", str(tmp_path / "data"), env=env)
    assert missing.returncode == 1
    assert the(missing, "bot Olga") == [
        (
            "FAIL",
            f"ollama at {ollama.url}: model 'llama3.2' is not installed: run `ollama pull "
            "llama3.2`",
        )
    ]


async def test_a_bot_that_goes_through_tor_is_never_asked_around_it() -> None:
    with ModelServer("ollama", "llama3.2") as ollama:
        bot = config.Bot(base_url=ollama.url, via_tor=True)
        found = await doctor.check_bot("olga", bot, None, 5)
        assert ollama.paths == []
    assert found.level == doctor.FAIL and "tor is not up" in found.said


# -- tor --------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_tor_on_the_test_network_bootstraps(tmp_path: Path, testnet: Path) -> None:
    assert find_tor(), "tor is missing: scripts/system-packages installs it"
    scratch = tmp_path / "tmp"  # where the doctor's tor keeps its directory, removed after
    scratch.mkdir()
    env = {"ONIONCHAT_TOR_MODE": "launch", "ONIONCHAT_TOR_TORRC": str(testnet)}
    result = run_doctor(
        "--data-dir", str(tmp_path / "data"), "--timeout", "50", env={**env, "TMPDIR": str(scratch)}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [(level, said)] = the(result, "tor")
    assert level == "ok" and re.search(r"Tor version 0\.4\.\d+", said)
    assert the(result, "tor modules") == [
        ("ok", "pow: yes (the onion's proof-of-work defence is there)")
    ]
    [(level, said)] = the(result, "tor bootstrap")
    assert level == "ok" and f"with the lines of {testnet}" in said
    assert "reached the Tor network" in said
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "data").exists()  # the node's own directory is left alone


@pytest.mark.timeout(300)
def test_attached_to_a_running_tor_its_bootstrap_is_read(tmp_path: Path, client_tor: Tor) -> None:
    env = {
        "ONIONCHAT_TOR_MODE": "attach",
        "ONIONCHAT_TOR_CONTROL": f"127.0.0.1:{client_tor.control_port}",
    }
    result = run_doctor("--data-dir", str(tmp_path / "data"), "--timeout", "20", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [(level, said)] = those(result, "tor (attached at ")
    assert level == "ok" and "on the Tor network (100%)" in said
    assert client_tor.proc.poll() is None  # a tor the doctor did not start is left running

    closed = free_port()
    env["ONIONCHAT_TOR_CONTROL"] = f"127.0.0.1:{closed}"
    result = run_doctor("--data-dir", str(tmp_path / "data"), "--timeout", "5", env=env)
    assert result.returncode == 1
    [(level, said)] = those(result, "tor (attached at ")
    assert level == "FAIL" and f"cannot reach tor's control port at 127.0.0.1:{closed}" in said


def test_without_a_tor_network_tors_words_are_said_within_the_timeout(tmp_path: Path) -> None:
    assert find_tor(), "tor is missing: scripts/system-packages installs it"
    torrc = tmp_path / "empty.torrc"  # an empty network: one authority that nobody runs
    torrc.write_text(
        "TestingTorNetwork 1\n"
        f"DirAuthority nobody orport=9 no-v2 v3ident={'A' * 40} 127.0.0.1:9 {'B' * 40}\n"
    )
    env = {"ONIONCHAT_TOR_MODE": "launch", "ONIONCHAT_TOR_TORRC": str(torrc)}
    started = time.monotonic()
    result = run_doctor("--data-dir", str(tmp_path / "data"), "--timeout", "5", env=env)
    took = time.monotonic() - started
    assert result.returncode == 1
    [(level, said)] = the(result, "tor bootstrap")
    assert level == "FAIL"
    assert f"tor (with the lines of {torrc}) did not reach the Tor network in 5 s" in said
    assert "tor says: Connection refused (127.0.0.1:9" in said
    assert took < 20, took
