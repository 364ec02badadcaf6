"""`onionchat doctor`: each part `onionchat serve` would use, tried now and said in plain words.

A node that cannot reach its broker or its model server still starts, and says so later in a
log line or a room; an operator setting one up wants to know before. So each part is tried as
the node would use it (the same settings, the same tor, the same TLS and proxies), with nothing
of the node's changed: tor runs in a directory of its own that is removed after, the brokers
see a client of another name that keeps no session, and the model servers are only asked what
models they have. Every check is bounded in time. Nothing secret is printed: no password, key
or token, only the names of the files and variables that hold them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import ssl
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiomqtt

from onionchat import backup, bots, config, models, onion_keys
from onionchat.federation import network
from onionchat.federation.link import socks_settings, tls_context
from onionchat.server import DATABASE
from onionchat.tor import FIELD, OnionService, TorError, find_tor, resolve_mode

OK, WARN, FAIL = "ok", "warn", "FAIL"
TOR_TIMEOUT = 30.0  # to launch tor and reach the Tor network, or to reach anything through it
TIMEOUT = 10.0  # for each other check
MAX_TIMEOUT = 3600.0
# A password written in a URL, as a config error may quote it (mqtt://USER:PASSWORD@HOST).
URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:)[^\s/@'\"]*@", re.IGNORECASE)

SECRETS = {
    DATABASE: "the database (accounts, sessions, messages)",
    f"{DATABASE}-wal": "the database's write-ahead log",
    f"{DATABASE}-shm": "the database's shared-memory index",
    onion_keys.KEY_FILE: "the onion address's private key",
    onion_keys.CLIENTS_FILE: "the keys of the onion's authorized clients",
    network.KEY_FILE: "the node's federation identity key",
    bots.BOT_KEY_FILE: "the key that wraps the bots' identity keys",
}
# A key a backup keeps is a secret even before a description is written for it here.
SECRETS |= {name: "a key of the node" for name in backup.KEYS if name not in SECRETS}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, how it went, and what to do when it failed."""

    check: str
    level: str  # OK, WARN or FAIL
    said: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.level:<4}  {self.check}: {self.said}"
        return f"{text}; to fix: {self.fix}" if self.fix else text


Say = Callable[[Finding], None]


def run(config_path: Path | None, data_dir: str | None, timeout: float | None) -> int:
    """Print one line per check as each ends; 0 when none failed, 1 otherwise (2: bad usage)."""
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
        print(
            f"onionchat doctor: --timeout: give seconds, more than 0 and at most {MAX_TIMEOUT:g}",
            file=sys.stderr,
        )
        return 2
    found: list[Finding] = []

    def say(finding: Finding) -> None:
        found.append(finding)
        print(finding.line(), flush=True)

    with _quiet():
        settings = load_settings(config_path, data_dir, say)
        if settings is not None:
            for finding in data_directory(settings.server.data_dir):
                say(finding)
            asyncio.run(connections(settings, timeout, say))
    failed = sum(f.level == FAIL for f in found)
    warned = sum(f.level == WARN for f in found)
    if failed:
        print(f"{failed} check(s) failed, {warned} warning(s): see the FAIL lines above")
    else:
        print(f"nothing failed ({warned} warning(s))" if warned else "everything checked is fine")
    return 1 if failed else 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The findings say everything: the node's own log lines (tor started, broker down) would
    only repeat them, out of order."""
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


# -- the config -------------------------------------------------------------------------------


def load_settings(path: Path | None, data_dir: str | None, say: Say) -> config.Settings | None:
    """As `serve` loads it: --config, else ./onionchat.toml if it exists; then the
    environment; then the flags."""
    if path is None and Path("onionchat.toml").exists():
        path = Path("onionchat.toml")
    try:
        settings = config.load(path, overrides={"server.data_dir": data_dir})
    except config.ConfigError as exc:
        say(
            Finding(
                "config",
                FAIL,
                URL_PASSWORD.sub(r"\1(password)@", str(exc)),
                "correct it (docs/config.md lists every key); nothing else is checked until "
                "the config is valid",
            )
        )
        return None
    variables = sorted(name for name in os.environ if name.startswith("ONIONCHAT_"))
    sources = [str(path)] if path else ["no config file"]
    if variables:
        sources.append(f"{len(variables)} ONIONCHAT_* variable(s)")
    bots_ = ", ".join(b.name for b in settings.bots.values()) or "none"
    say(
        Finding(
            "config",
            OK,
            f"valid ({' and '.join(sources)}): tor {settings.tor.mode}, "
            f"{len(settings.brokers)} broker(s), bots: {bots_}",
        )
    )
    return settings


# -- the data directory -----------------------------------------------------------------------


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def data_directory(data_dir: Path) -> list[Finding]:
    """The directory 0700 and the current user's, each secret in it 0600: the keys and the
    database are the node itself (its address, its identity, its accounts)."""
    check = "data directory"
    path = data_dir.absolute()
    shown = shlex.quote(str(path))
    me = os.geteuid()
    try:
        st = path.stat()
    except FileNotFoundError:
        parent = next(p for p in path.parents if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            return [
                Finding(
                    check,
                    FAIL,
                    f"{path} does not exist, and cannot be made: {parent} is not writable by you",
                    f"mkdir -m 700 -p {shown} as a user who can, then chown it to "
                    f"{_user(me)}; or choose another server.data_dir",
                )
            ]
        return [Finding(check, OK, f"{path} does not exist yet: the node makes it (0700) at start")]
    except OSError as exc:
        return [Finding(check, FAIL, f"{path}: {exc.strerror}")]
    if not stat.S_ISDIR(st.st_mode):
        return [Finding(check, FAIL, f"{path} is not a directory", "choose another data_dir")]
    if st.st_uid != me:
        return [
            Finding(
                check,
                FAIL,
                f"{path} belongs to {_user(st.st_uid)}, not to you ({_user(me)})",
                f"run the node as {_user(st.st_uid)}, or: chown -R {_user(me)} {shown}",
            )
        ]
    found = []
    if st.st_mode & 0o022:
        found.append(
            Finding(
                check,
                FAIL,
                f"{path} can be written by others (mode {_mode(st)}): they could replace the "
                "node's keys or database",
                f"chmod 700 {shown}, and check that every file in it is the node's",
            )
        )
    elif st.st_mode & 0o077:
        found.append(
            Finding(
                check,
                WARN,
                f"{path} can be listed by others (mode {_mode(st)}); the node makes it 0700 "
                "when it starts",
                f"chmod 700 {shown}",
            )
        )
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        found.append(
            Finding(check, FAIL, f"{path} is yours but closed to you", f"chmod 700 {shown}")
        )
        return found
    held = []
    for name, what in SECRETS.items():
        finding = _secret(path / name, what, me)
        if finding is None:
            if (path / name).exists():
                held.append(name)
        else:
            found.append(finding)
    tor_dir = path / "tor"  # tor's own state (its cookie, its consensus): tor wants it 0700
    with contextlib.suppress(FileNotFoundError):
        tor_st = tor_dir.stat()
        if tor_st.st_uid != me:
            found.append(
                Finding(
                    check,
                    FAIL,
                    f"{tor_dir} (the launched tor's directory) belongs to {_user(tor_st.st_uid)}",
                    f"chown -R {_user(me)} {shlex.quote(str(tor_dir))}",
                )
            )
        elif tor_st.st_mode & 0o077:
            found.append(
                Finding(
                    check,
                    WARN,
                    f"{tor_dir} (the launched tor's directory) is open to others "
                    f"(mode {_mode(tor_st)}); the node makes it 0700 when it launches tor",
                    f"chmod 700 {shlex.quote(str(tor_dir))}",
                )
            )
    if not found:
        secrets_ = f"; {', '.join(held)} 0600" if held else "; no secrets in it yet"
        found.append(Finding(check, OK, f"{path} is yours and private (0700){secrets_}"))
    return found


def _secret(path: Path, what: str, me: int) -> Finding | None:
    shown = shlex.quote(str(path))
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Finding("data directory", FAIL, f"{path} ({what}): {exc.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return Finding(
            "data directory", FAIL, f"{path} ({what}) is not a file", f"move {shown} away"
        )
    if st.st_uid != me:
        return Finding(
            "data directory",
            FAIL,
            f"{path} ({what}) belongs to {_user(st.st_uid)}, not to you ({_user(me)})",
            f"chown {_user(me)} {shown}",
        )
    if st.st_mode & 0o077:
        return Finding(
            "data directory",
            FAIL,
            f"{path} ({what}) can be read by others (mode {_mode(st)})",
            f"chmod 600 {shown}; and if others could read it, treat it as known to them",
        )
    if not os.access(path, os.R_OK | os.W_OK):
        return Finding(
            "data directory",
            FAIL,
            f"{path} ({what}) cannot be read and written by you (mode {_mode(st)})",
            f"chmod 600 {shown}",
        )
    return None


# -- tor, the brokers and the model servers ---------------------------------------------------


async def connections(settings: config.Settings, within: float | None, say: Say) -> None:
    """Tor first: a broker or a bot reached through tor is tried through the tor it
    bootstrapped (stopped once they are tried). The brokers and bots are tried together."""
    async with contextlib.AsyncExitStack() as stack:
        proxy = await check_tor(settings, within or TOR_TIMEOUT, stack, say)
        checks = [
            check_broker(b, proxy, within or (TOR_TIMEOUT if b.tor else TIMEOUT))
            for b in settings.brokers
        ] + [
            check_bot(bot_id, bot, proxy, within or (TOR_TIMEOUT if bot.via_tor else TIMEOUT))
            for bot_id, bot in settings.bots.items()
        ]
        for finding in await asyncio.gather(*checks, return_exceptions=True):
            if isinstance(finding, BaseException):  # a bug here: said, the other checks kept
                finding = Finding("doctor", FAIL, f"a check failed unexpectedly: {finding!r}")
            say(finding)


async def _tor_says(binary: str, option: str, within: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        binary,
        option,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode("utf-8", "replace")


async def check_tor(
    settings: config.Settings, within: float, stack: contextlib.AsyncExitStack, say: Say
) -> str | None:
    """Per tor.mode: the binary, its version and modules, and a bootstrap of a tor launched
    as the node would (its torrc, the lines of tor.torrc) but in a temporary directory; or the
    attached tor's bootstrap. Returns tor's SOCKS proxy while it runs, for the later checks."""
    tor = settings.tor
    mode = resolve_mode(settings)
    if mode == "off":
        if tor.mode == "off":
            say(Finding("tor", WARN, "tor.mode is off: the node publishes no onion service"))
        else:
            say(
                Finding(
                    "tor",
                    WARN,
                    "no tor program found, so tor.mode auto means off: no onion service",
                    "apt-get install tor, or set tor.binary to its path",
                )
            )
        return None
    if mode == "attach":
        return await _attached(settings, within, stack, say)
    binary = find_tor(tor.binary)
    if binary is None:
        where = f"at tor.binary = {tor.binary}" if tor.binary else "on PATH nor in /usr/sbin"
        say(
            Finding(
                "tor",
                FAIL,
                f"tor.mode is {tor.mode}, and no tor program is found {where}",
                "apt-get install tor, or set tor.binary to its path",
            )
        )
        return None
    try:
        code, said = await _tor_says(binary, "--version", within)
    except (OSError, TimeoutError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror
        say(Finding("tor", FAIL, f"{binary} cannot be run: {reason}", "reinstall tor"))
        return None
    version = said.splitlines()[0].strip().rstrip(".") if said.strip() else "no version said"
    if code != 0:
        say(Finding("tor", FAIL, f"{binary} --version failed: {version}", "reinstall tor"))
        return None
    say(Finding("tor", OK, f"{binary}: {version}"))
    say(await _modules(binary, within))
    return await _launched(settings, binary, within, stack, say)


async def _modules(binary: str, within: float) -> Finding:
    """Without the pow module tor cannot defend the onion against introduction floods."""
    try:
        code, said = await _tor_says(binary, "--list-modules", within)
    except (OSError, TimeoutError):
        code, said = 1, ""
    modules = dict(line.partition(": ")[::2] for line in said.splitlines() if ": " in line)
    if code == 0 and modules.get("pow") == "yes":
        return Finding("tor modules", OK, "pow: yes (the onion's proof-of-work defence is there)")
    why = "has no pow module" if code == 0 else "cannot list its modules (too old)"
    return Finding(
        "tor modules",
        WARN,
        f"this tor {why}: the onion's proof-of-work defence against introduction floods "
        "will be off",
        "install tor 0.4.9 or later built with it (`tor --list-modules` says `pow: yes`)",
    )


async def _stuck(service: OnionService, seconds: float, extra: str = "") -> str:
    """Where the bootstrap stopped, in tor's own words: the WARNING of its bootstrap phase
    (with the relay it could not reach), else the last warning it wrote."""
    fields: dict[str, str] = {}
    with contextlib.suppress(Exception):  # tor gone, or slow to answer: said without it
        async with asyncio.timeout(2):
            phase = await service.info("status/bootstrap-phase") or ""
        fields = {k: v.strip('"') for k, v in FIELD.findall(phase)}
    boot = service.bootstrap
    said = (
        f"tor{extra} did not reach the Tor network in {seconds:g} s "
        f"({boot.progress}%: {boot.summary})"
    )
    warning = fields.get("WARNING") or boot.warning
    if warning:
        where = [fields["HOSTADDR"]] if fields.get("HOSTADDR") else []
        if fields.get("COUNT", "1") != "1":
            where.append(f"{fields['COUNT']} times")
        return said + f"; tor says: {warning}" + (f" ({', '.join(where)})" if where else "")
    if service.problems:
        return said + f"; tor says: {service.problems[-1]}"
    return said


async def _launched(
    settings: config.Settings,
    binary: str,
    within: float,
    stack: contextlib.AsyncExitStack,
    say: Say,
) -> str | None:
    check = "tor bootstrap"
    extra = f" (with the lines of {settings.tor.torrc})" if settings.tor.torrc else ""
    directory = Path(tempfile.mkdtemp(prefix="onionchat-doctor-"))  # 0700
    stack.callback(_remove, directory)
    # The node's own torrc, in the temporary directory: its log there too, and no warning of
    # its own about a slow bootstrap (the timeout here says it).
    tor = dataclasses.replace(
        settings.tor, binary=binary, log_file="", bootstrap_timeout=MAX_TIMEOUT
    )
    server = dataclasses.replace(settings.server, data_dir=directory, listen="tcp")
    try:
        service = OnionService(dataclasses.replace(settings, server=server, tor=tor))
    except config.ConfigError as exc:
        say(Finding(check, FAIL, str(exc)))
        return None
    started = time.monotonic()
    try:
        async with asyncio.timeout(within):
            await service.reach()
    except TimeoutError:
        said = await _stuck(service, within, extra)
        await service.close()
        say(
            Finding(
                check,
                FAIL,
                said,
                "check that this machine reaches the Tor network, or give tor.torrc the lines "
                "it needs to (Bridge, UseBridges, HTTPSProxy); a slow network may need a "
                "longer --timeout",
            )
        )
        return None
    except TorError as exc:
        await service.close()
        say(Finding(check, FAIL, f"tor{extra}: {exc}", "correct tor.torrc or tor.binary"))
        return None
    except Exception as exc:  # stem's errors (only tor.py imports stem): tor refused us
        await service.close()
        say(Finding(check, FAIL, f"tor{extra} refused: {exc}"))
        return None
    stack.push_async_callback(service.close)
    seconds = time.monotonic() - started
    say(Finding(check, OK, f"tor{extra} reached the Tor network in {seconds:.1f} s"))
    return service.proxy


async def _attached(
    settings: config.Settings, within: float, stack: contextlib.AsyncExitStack, say: Say
) -> str | None:
    check = f"tor (attached at {settings.tor.control})"
    try:
        service = OnionService(settings)
    except config.ConfigError as exc:
        say(Finding(check, FAIL, str(exc)))
        return None
    stack.push_async_callback(service.close)  # the connection only: that tor is not ours
    try:
        async with asyncio.timeout(within):
            await service.reach()
            version = await service.info("version") or "unknown"
    except TimeoutError:
        if service.state == "starting":  # the control port never answered
            said = f"no answer from its control port in {within:g} s"
        else:
            said = await _stuck(service, within)
        say(Finding(check, FAIL, said, "check that tor and the Tor network are reachable"))
        return None
    except TorError as exc:
        say(
            Finding(
                check,
                FAIL,
                str(exc),
                "start tor with a ControlPort (and CookieAuthentication 1), or set tor.control "
                "and tor.control_password",
            )
        )
        return None
    except Exception as exc:  # stem's errors: tor refused a command
        say(Finding(check, FAIL, f"tor refused: {exc}"))
        return None
    say(Finding(check, OK, f"Tor {version.split()[0]}, on the Tor network (100%)"))
    return service.proxy


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


# -- brokers ------------------------------------------------------------------------------------


def _mqtt_client(b: config.Broker, proxy: str | None, within: float) -> aiomqtt.Client:
    """The federation link's TLS, version, user and proxy, but a client of its own name with
    no session: the node's session (and the messages queued in it) is left alone."""
    v5 = b.version == "5"
    url = b.proxy or proxy
    client = aiomqtt.Client(
        b.host,
        b.port,
        identifier=f"onionchat-doctor-{secrets.token_hex(6)}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        username=b.username,
        password=b.password,
        tls_context=tls_context(b) if b.tls else None,
        proxy=socks_settings(url) if url and (b.tor or b.proxy) else None,
        timeout=within,
        keepalive=60 if b.tor else 20,
    )
    client._client.connect_timeout = within  # paho's own connect, in aiomqtt's thread
    return client


async def check_broker(b: config.Broker, proxy: str | None, within: float) -> Finding:
    """Connect as the link would and say the broker's answer (its CONNACK) or why none came."""
    how = [f"MQTT {b.version}"] + (["TLS"] if b.tls else [])
    how += ["through tor"] if b.tor else [f"through {b.proxy}"] if b.proxy else []
    check = f"broker {b.url} ({', '.join(how)})"
    if b.tor and proxy is None:
        return Finding(
            check,
            FAIL,
            "it is reached through tor, and tor is not up (see the tor lines above)",
            "make the tor checks pass first",
        )
    started = time.monotonic()
    try:
        client = _mqtt_client(b, proxy, within)
    except (OSError, ValueError) as exc:  # the CA or the certificate cannot be loaded
        return Finding(
            check,
            FAIL,
            f"its TLS files cannot be used: {exc}",
            "check the files given as ca=, cert= and key=",
        )
    try:
        async with asyncio.timeout(within + 1):  # paho's connect is bounded by the same
            async with client:
                pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        said, fix = _broker_words(exc, b, within)
        return Finding(check, FAIL, said, fix)
    seconds = time.monotonic() - started
    return Finding(check, OK, f"the broker accepted us (CONNACK: success) in {seconds:.1f} s")


def _broker_words(exc: BaseException, b: config.Broker, within: float) -> tuple[str, str]:
    """What went wrong, and what to do, from aiomqtt's and paho's exceptions and texts."""
    who = f"the user {b.username}" if b.username else "a client with no user name"
    password = f"the password in ${b.password_env}" if b.password_env else "no password"
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc is not None:
        code = exc.rc if isinstance(exc.rc, int) else exc.rc.value
        if code in (4, 0x86):  # bad user name or password (3.1.1, 5)
            return (
                f"the broker refused {who} with {password} (bad user name or password)",
                f"check the user in the URL and {password}",
            )
        if code in (5, 0x87):  # not authorized
            if b.username is None:
                return (
                    "the broker refused a client with no user name (not authorized)",
                    "give a user and password: mqtt://USER@HOST?password_env=VAR",
                )
            return (
                f"the broker refused {who} with {password} (not authorized: a wrong password, "
                "or a user it does not know)",
                f"check the user in the URL, {password}, and the broker's password file",
            )
        if code in (1, 0x84):
            return (
                f"the broker does not speak MQTT {b.version}",
                "give the version it speaks: version=3.1.1 in the URL"
                if b.version == "5"
                else "remove version= from the URL",
            )
        return f"the broker refused the connection: {exc}", ""
    text = str(exc)
    lower = text.lower()
    where = f"{b.host}:{b.port}"
    slow = "; an onion broker can take a minute: try --timeout 120" if b.tor else ""
    if isinstance(exc, TimeoutError) or text == "Operation timed out":  # no CONNACK came
        if b.tls:
            fix = "is it an MQTT broker's port?"
        else:
            fix = "is it a TLS listener (it waits for a TLS handshake)? then the URL is mqtts://"
        return f"{where} took the connection but sent no MQTT answer in {within:g} s", fix + slow
    if "timed out" in lower:  # the TCP connection itself
        return (
            f"no answer from {where} within {within:g} s",
            "check the host and port, that the broker runs, and that no firewall drops the "
            "connection" + slow,
        )
    via = b.proxy or "tor's SOCKS port"
    if "error connecting to socks" in lower:  # PySocks: the proxy itself
        reason = text.rpartition("] ")[2] if "] " in text else text
        return (
            f"the proxy ({via}) is not reachable: {reason}",
            "start the proxy, or correct proxy= in the URL" if b.proxy else "see the tor lines",
        )
    if (b.proxy or b.tor) and "0x0" in lower:  # the proxy's SOCKS reply: "0x04: Host unreachable"
        reply = text.partition(": ")[2] if text.lower().startswith("socket error") else text
        return (
            f"the proxy ({via}) could not reach {where}: {reply}",
            "check the host and port, and that the broker runs",
        )
    if "refused" in lower:
        return (
            f"nothing listens at {where} (connection refused)",
            "start the broker, or correct the host and port in federation.brokers",
        )
    if "certificate verify failed" in lower:
        detail = text.partition("certificate verify failed:")[2].split("(_ssl")[0].strip()
        if "mismatch" in detail or "hostname" in detail:
            return (
                f"TLS failed: the broker's certificate is for another name ({detail})",
                "use the name its certificate is for, or give the broker one for this name",
            )
        return (
            f"TLS failed: the broker's certificate is not trusted ({detail})",
            "give the CA that signed it as ca=FILE in the URL",
        )
    if isinstance(exc, ssl.SSLError) or "ssl" in lower or "tls" in lower:
        return (
            f"TLS failed: {text}",
            f"is {where} a TLS listener? mqtts:// is for TLS, mqtt:// for plain MQTT",
        )
    if "name or service not known" in lower or "name resolution" in lower:
        return f"{b.host} does not resolve", "correct the host in federation.brokers"
    if "disconnect" in lower or "connection lost" in lower or "reset" in lower or "eof" in lower:
        if b.tls:
            return (
                f"{where} closed the connection in the TLS handshake ({text})",
                "is it a TLS listener? mqtts:// is for TLS, mqtt:// for plain MQTT",
            )
        return (
            f"{where} closed the connection before the broker answered ({text})",
            "is it a TLS listener? then the URL is mqtts://",
        )
    return f"cannot connect to {where}: {text}", ""


# -- model servers --------------------------------------------------------------------------


async def check_bot(bot_id: str, bot: config.Bot, proxy: str | None, within: float) -> Finding:
    """Ask the bot's model server what models it has (models.check, as /api/health does)."""
    check = f"bot {bot.name}"
    server = f"{bot.provider} at {models.shown(bot.base_url)}"
    if bot.via_tor:
        server += " through tor"
        if proxy is None:
            return Finding(
                check,
                FAIL,
                f"{server}: it is reached through tor (bots.{bot_id}.via_tor), and tor is not "
                "up (see the tor lines above)",
                "make the tor checks pass first",
            )
    key = os.environ.get(bot.api_key_env, "") if bot.api_key_env else ""
    model = models.ModelConfig(
        provider=bot.provider,
        base_url=bot.base_url,
        model=bot.model,
        api_key=key,
        proxy=proxy if bot.via_tor else None,
        first_token_timeout=within,
        idle_timeout=within,
    )
    reason = await models.check(model, timeout=within)
    if reason is None:
        return Finding(check, OK, f"{server} has the model '{bot.model}'")
    off = f"bots.{bot_id}.enabled = false turns the bot off"
    if reason.startswith(("not reachable", "the proxy")):
        fix = f"start the model server, or correct bots.{bot_id}.base_url; {off}"
    elif "API key" in reason:
        fix = (
            f"check the key in ${bot.api_key_env}"
            if bot.api_key_env
            else f"set bots.{bot_id}.api_key_env to the variable that holds the key"
        )
    elif "ollama pull" in reason:
        fix = ""
    elif reason.startswith("model "):
        fix = f"correct bots.{bot_id}.model to one the server has, or load it there"
    else:
        fix = f"is it a {bot.provider} server? check bots.{bot_id}.provider and base_url"
    return Finding(check, FAIL, f"{server}: {reason}", fix)
