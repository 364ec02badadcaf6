"""The node's onion service: its own tor (launched) or a running one (attached), a v3 onion
published with ADD_ONION, and tor's SOCKS port for the node's other outgoing connections.

stem is frozen upstream and blocking: this is the only module that imports it, every call into
it runs in a worker thread, and its one known deprecation warning is filtered here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import stem
import stem.connection
import stem.control
import stem.response
import stem.response.add_onion

from onionchat.config import ConfigError, Settings
from onionchat.onion_keys import Client, Clients, OnionKey

# stem 1.8 starts its reader threads with Thread.setDaemon(), deprecated since Python 3.10.
warnings.filterwarnings(
    "ignore", message=r"setDaemon\(\) is deprecated", category=DeprecationWarning
)

log = logging.getLogger("onionchat.tor")
logging.getLogger("stem").setLevel(logging.WARNING)  # else every control command at DEBUG

START_TIMEOUT = 30.0  # for a launched tor to open its control port
PUBLISH_TIMEOUT = 120.0  # before saying the descriptor is not uploaded yet (tor keeps trying)
POLL = 0.5
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


class TorError(Exception):
    """tor cannot be started or reached; the message says why, in tor's words when it has any."""


def find_tor(configured: str = "") -> str | None:
    """Debian installs tor in /usr/sbin, which a user's PATH often lacks."""
    if configured:
        return shutil.which(configured)
    return shutil.which("tor") or shutil.which("tor", path="/usr/sbin:/usr/local/sbin")


def resolve_mode(settings: Settings) -> str:
    mode = settings.tor.mode
    if mode == "auto":
        return "launch" if find_tor(settings.tor.binary) else "off"
    return mode


SOCKET = "web.sock"
UNIX_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less its terminating NUL


def web_socket(settings: Settings) -> Path | None:
    """The unix socket the web app listens on for tor, or None when it listens on TCP.

    The path is absolute (tor opens it from its own working directory) and plain: ADD_ONION
    cannot take a quoted target, so a path with a space or a quote is refused, as is one too
    long for a socket address."""
    listen = settings.server.listen
    if listen == "tcp" or (listen == "auto" and resolve_mode(settings) != "launch"):
        return None
    path = (settings.server.data_dir / SOCKET).resolve()
    if re.search(r'[\s"\\]', str(path)):
        raise ConfigError(
            f"server.listen: the socket path {path} has a space or a quote, which tor's "
            "ADD_ONION cannot take: choose another server.data_dir, or server.listen = tcp"
        )
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigError(
            f"server.listen: the socket path {path} is longer than the {UNIX_PATH_MAX} bytes "
            "a unix socket can have: choose a shorter server.data_dir, or server.listen = tcp"
        )
    return path


@dataclasses.dataclass
class Bootstrap:
    progress: int = 0
    summary: str = "Starting"
    warning: str = ""

    @classmethod
    def parse(cls, line: str) -> Bootstrap:
        """`NOTICE BOOTSTRAP PROGRESS=45 TAG=... SUMMARY="..." [WARNING="..."]`"""
        fields = {k: v.strip('"').replace('\\"', '"') for k, v in FIELD.findall(line)}
        try:
            progress = int(fields.get("PROGRESS", "0"))
        except ValueError:
            progress = 0
        return cls(progress, fields.get("SUMMARY", ""), fields.get("WARNING", ""))


class Reporter:
    """Where the onion service tells its progress; the terminal's version draws a bar."""

    def progress(self, bootstrap: Bootstrap) -> None:
        log.info(
            "tor bootstrap %d%%: %s",
            bootstrap.progress,
            bootstrap.summary,
            extra={"event": "tor_bootstrap", "progress": bootstrap.progress},
        )

    def published(self, url: str, seconds: float) -> None:
        log.info(
            "onion service published after %.1f s: %s",
            seconds,
            url,
            extra={"event": "onion_published", "url": url, "seconds": round(seconds, 3)},
        )

    def defended(self, defences: dict[str, object]) -> None:
        pow_ = (
            f"proof of work on (queue {defences['pow_queue_rate']}/s, "
            f"burst {defences['pow_queue_burst']})"
            if defences["pow"]
            else "proof of work OFF"
        )
        streams = (
            f"at most {defences['max_streams']} streams per visitor's circuit"
            + (", then the circuit is closed" if defences["max_streams_close_circuit"] else "")
            if defences["max_streams"]
            else "no limit on streams per circuit"
        )
        target = (
            "the web app on a unix socket only tor reaches"
            if defences["target"] == "unix"
            else "the web app on a TCP port any local process can reach"
        )
        log.info(
            "onion defences: %s; %s; %s",
            pow_,
            streams,
            target,
            extra={"event": "onion_defences", **defences},
        )

    def private(self, clients: list[Client], address: str) -> None:
        names = ", ".join(c.name for c in clients)
        log.info(
            "private onion: only %d authorized client(s) can reach it (%s); "
            "`onionchat onion-auth show NAME` prints a client's key",
            len(clients),
            names,
            extra={"event": "onion_private", "clients": len(clients)},
        )


class OnionService:
    """Runs beside the web app: the node serves locally at once and is published when tor is
    ready, so a tor without a network never stops the chat on 127.0.0.1."""

    def __init__(self, settings: Settings, reporter: Reporter | None = None) -> None:
        self.settings = settings
        self.tor = settings.tor
        self.mode = resolve_mode(settings)
        self.reporter = reporter or Reporter()
        self.data_dir = settings.server.data_dir
        self.tor_dir = self.data_dir / "tor"
        self.state = "off" if self.mode == "off" else "starting"
        self.bootstrap = Bootstrap()
        self.address = ""  # without .onion, once added
        socket = web_socket(settings)
        host = settings.server.host  # loopback: the config refuses any other with tor on
        host = "[::1]" if host == "::1" else host if host.startswith("127.") else "127.0.0.1"
        self.target = f"unix:{socket}" if socket else f"{host}:{settings.server.port}"
        self.pow: bool | None = None  # whether tor took the proof-of-work defence, once added
        self.socks: tuple[str, int] | None = None
        self.problems: collections.deque[str] = collections.deque(maxlen=3)  # tor's own words
        self._controller: stem.control.Controller | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._output: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()

    # -- what other parts use ---------------------------------------------------------------

    @property
    def proxy(self) -> str | None:
        """tor's SOCKS port as a proxy URL (remote DNS) for federation and bots."""
        return f"socks5h://{self.socks[0]}:{self.socks[1]}" if self.socks else None

    @property
    def url(self) -> str:
        port = self.tor.onion_port
        return f"http://{self.address}.onion" + ("/" if port == 80 else f":{port}/")

    def defences(self) -> dict[str, object]:
        """What /api/health says of the onion's defences (`pow` is None until it is added)."""
        return {
            "pow": self.pow,
            "pow_queue_rate": self.tor.pow_queue_rate,
            "pow_queue_burst": self.tor.pow_queue_burst,
            "max_streams": self.tor.max_streams,
            "max_streams_close_circuit": bool(
                self.tor.max_streams and self.tor.max_streams_close_circuit
            ),
            "target": "unix" if self.target.startswith("unix:") else "tcp",
        }

    def start(self) -> None:
        if self.mode == "off":
            return
        self._task = asyncio.create_task(self._run(), name="onion service")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        controller, self._controller = self._controller, None
        if controller is not None:
            await asyncio.to_thread(self._close_controller, controller)
        await self._stop_process()
        if self._output is not None:
            self._output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._output
        self.state = "off"

    # -- the life of the service ------------------------------------------------------------

    async def reach(self, local: str = "") -> None:
        """Launch or attach to tor, as the mode says, until it is on the Tor network (for ever:
        the caller bounds it). `onionchat doctor` tries tor with this alone."""
        if self.mode == "launch":
            await self._launch()
        else:
            await self._attach()
        await self._await_bootstrap(local)

    async def info(self, key: str) -> str | None:
        """tor's GETINFO answer, or None when there is no controller yet."""
        if self._controller is None:
            return None
        return str(await asyncio.to_thread(self._controller.get_info, key))

    async def _run(self) -> None:
        local = self.target if self.target.startswith("unix:") else f"http://{self.target}/"
        try:
            await self.reach(local)
            await self._publish()
        except TorError as exc:
            self.state = "failed"
            log.error(
                "no onion service: %s; the node still serves locally at %s",
                exc,
                local,
                extra={"event": "tor_error"},
            )
        except stem.ControllerError as exc:
            self.state = "failed"
            log.error(
                "no onion service: tor refused: %s; the node still serves locally at %s",
                exc,
                local,
                extra={"event": "tor_error"},
            )

    async def _launch(self) -> None:
        binary = find_tor(self.tor.binary)
        if binary is None:
            raise TorError(
                f"tor not found ({self.tor.binary or 'tor'}): install it (apt-get install tor) "
                "or start the node with --no-tor"
            )
        self.tor_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tor_dir.chmod(0o700)
        await asyncio.to_thread(_stop_leftover, self.tor_dir)
        port_file = self.tor_dir / "control-port"
        port_file.unlink(missing_ok=True)
        torrc = (self.tor_dir / "torrc").resolve()
        torrc.write_text(self._torrc(port_file))
        torrc.chmod(0o600)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-f",
            str(torrc),
            "--defaults-torrc",
            os.devnull,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # stopped by us, after DEL_ONION, not by the terminal's ^C
        )
        log.info(
            "tor started (pid %d), its data in %s",
            self._process.pid,
            self.tor_dir,
            extra={"event": "tor_start", "pid": self._process.pid},
        )
        self._output = asyncio.create_task(self._read_output(self._process), name="tor output")
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if self._process.returncode is not None:
                await asyncio.sleep(0.1)  # let the reader take tor's last words
                raise TorError(self._exited())
            if time.monotonic() > deadline:
                raise TorError(f"tor did not open its control port in {START_TIMEOUT:g} s")
            await asyncio.sleep(0.05)
        control = port_file.read_text().strip().removeprefix("PORT=")
        self._controller = await asyncio.to_thread(self._connect, control, True)
        self.socks = await asyncio.to_thread(self._socks_listener)

    def _exited(self) -> str:
        assert self._process is not None
        said = [p for p in self.problems if "see warnings above" not in p]
        return f"tor exited with code {self._process.returncode}: " + (
            " / ".join(said) or "no message (see tor.log_file)"
        )

    def _torrc(self, port_file: Path) -> str:
        log_file = Path(self.tor.log_file or self.tor_dir / "tor.log").expanduser().resolve()
        lines = [
            "# Written by OnionChat at each start; edit tor.torrc in onionchat.toml instead.",
            f"DataDirectory {_quote(self.tor_dir.resolve())}",
            "SocksPort 127.0.0.1:auto ExtendedErrors",
            "ControlPort 127.0.0.1:auto",
            f"ControlPortWriteToFile {_quote(port_file.resolve())}",
            "CookieAuthentication 1",
            f"PidFile {_quote((self.tor_dir / 'tor.pid').resolve())}",
            f"Log {_quote(f'{self.tor.log_level} file {log_file}')}",
            "Log warn stdout",
            # If the node dies without stopping tor, tor notices and exits by itself.
            f"__OwningControllerProcess {os.getpid()}",
        ]
        if self.tor.torrc:
            extra = Path(self.tor.torrc).expanduser().resolve()
            lines += ["", f"# From {extra}:", extra.read_text(encoding="utf-8")]
        return "\n".join(lines) + "\n"

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            # "Nov 24 10:00:00.000 [warn] message": keep tor's words, not its timestamp.
            level, marker, message = line.partition("] ")
            if marker and level.endswith(("[warn", "[err")):
                self.problems.append(message)
            log.debug("tor: %s", line, extra={"event": "tor_log"})

    async def _attach(self) -> None:
        control = self.tor.control
        self._controller = await asyncio.to_thread(self._connect, control, False)
        self.socks = await asyncio.to_thread(self._socks_listener)
        log.info(
            "attached to tor at %s",
            control,
            extra={"event": "tor_attach"},
        )

    def _connect(self, control: str, own: bool) -> stem.control.Controller:
        """`HOST:PORT` or `unix:PATH`; cookie or password authentication, as tor offers."""
        path = control.removeprefix("unix:") if control.startswith("unix:") else None
        host, _, port = control.rpartition(":")
        if path is None and not port.isdigit():
            raise TorError(f"tor.control: expected HOST:PORT or unix:PATH, got {control!r}")
        where = f"control socket {path}" if path else f"control port at {control}"
        try:
            if path is not None:
                controller = stem.control.Controller.from_socket_file(path)
            else:
                controller = stem.control.Controller.from_port(
                    address=host.strip("[]") or "127.0.0.1", port=int(port)
                )
            controller.authenticate(password=self.tor.control_password or None)
            if own:
                # tor exits when this connection closes, however the node ends.
                controller.msg("TAKEOWNERSHIP")
        except stem.SocketError as exc:
            raise TorError(f"cannot reach tor's {where}: {exc}") from None
        except stem.connection.AuthenticationFailure as exc:
            raise TorError(f"tor's {where} refused us: {exc}") from None
        return controller

    def _socks_listener(self) -> tuple[str, int] | None:
        assert self._controller is not None
        listeners = self._controller.get_listeners(stem.control.Listener.SOCKS, [])
        return (str(listeners[0][0]), int(listeners[0][1])) if listeners else None

    async def _await_bootstrap(self, local: str) -> None:
        self.state = "bootstrapping"
        started = time.monotonic()
        said = False
        shown: tuple[int, str] | None = None
        while True:
            assert self._controller is not None
            line = await asyncio.to_thread(self._controller.get_info, "status/bootstrap-phase")
            self.bootstrap = Bootstrap.parse(line)
            if (self.bootstrap.progress, self.bootstrap.summary) != shown:
                shown = (self.bootstrap.progress, self.bootstrap.summary)
                self.reporter.progress(self.bootstrap)
            if self.bootstrap.progress >= 100:
                return
            waited = time.monotonic() - started
            if not said and waited > self.tor.bootstrap_timeout:
                said = True
                last = self.problems[-1] if self.problems else ""
                why = self.bootstrap.warning or last or self.bootstrap.summary
                log.warning(
                    "tor cannot reach the Tor network after %.0f s (%d%%: %s); tor says: %s. "
                    "The node serves locally at %s meanwhile, and tor keeps trying",
                    waited,
                    self.bootstrap.progress,
                    self.bootstrap.summary,
                    why,
                    local,
                    extra={"event": "tor_no_network", "progress": self.bootstrap.progress},
                )
            if self._process is not None and self._process.returncode is not None:
                raise TorError(self._exited())
            await asyncio.sleep(POLL)

    async def _publish(self) -> None:
        key = OnionKey.generate() if self.tor.ephemeral else OnionKey.load_or_create(self.data_dir)
        clients = []
        if self.tor.private:
            book = Clients(self.data_dir)
            clients = book.all() or [book.add("default")]
        loop = asyncio.get_running_loop()

        def on_event(event: Any) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, event)

        assert self._controller is not None
        controller = self._controller
        await asyncio.to_thread(controller.add_event_listener, on_event, "HS_DESC")
        started = time.monotonic()
        try:
            response = await self._add_onion(controller, key.tor_blob, [c.public for c in clients])
            self.address = str(response.service_id)
            self.state = "publishing"
            if await self._uploaded(started):
                self.state = "published"
                self.reporter.published(self.url, time.monotonic() - started)
                self.reporter.defended(self.defences())
                if clients:
                    self.reporter.private(clients, self.address)
            else:
                log.warning(
                    "the onion service is not published after %.0f s; tor keeps trying: %s",
                    PUBLISH_TIMEOUT,
                    self.url,
                    extra={"event": "onion_unpublished"},
                )
        finally:
            await asyncio.to_thread(controller.remove_event_listener, on_event)

    async def _add_onion(
        self, controller: stem.control.Controller, key: str, clients: list[str]
    ) -> stem.response.add_onion.AddOnionResponse:
        """With the proof-of-work defence if asked; a tor that refuses it (one without the pow
        module, or older than 0.4.9) is asked again without it, and the operator told."""
        pow_ = self.tor.pow
        response = await asyncio.to_thread(
            controller.msg, self._add_onion_request(key, clients, pow_)
        )
        if pow_ and not response.is_ok() and "pow" in str(response).lower():
            log.warning(
                "tor refused the proof-of-work defence (%s): the onion is published without "
                "it, open to introduction floods; tor 0.4.9 or later with `pow: yes` in "
                "`tor --list-modules` has it",
                response,
                extra={"event": "onion_no_pow"},
            )
            pow_ = False
            response = await asyncio.to_thread(
                controller.msg, self._add_onion_request(key, clients, pow_)
            )
        stem.response.convert("ADD_ONION", response)
        self.pow = pow_
        return response

    def _add_onion_request(self, key: str, clients: list[str], pow_: bool) -> str:
        # Built by hand: stem 1.8's create_ephemeral_hidden_service takes one v3 client at most,
        # and knows neither unix targets nor the proof-of-work defence.
        tor = self.tor
        flags = ["DiscardPK"] + (["V3Auth"] if clients else [])
        options = []
        if tor.max_streams:
            options.append(f"MaxStreams={tor.max_streams}")
            if tor.max_streams_close_circuit:
                flags.append("MaxStreamsCloseCircuit")
        if pow_:
            options.append("PoWDefensesEnabled=1")
            if tor.pow_queue_rate:
                options.append(f"PoWQueueRate={tor.pow_queue_rate}")
            if tor.pow_queue_burst:
                options.append(f"PoWQueueBurst={tor.pow_queue_burst}")
        request = " ".join(
            [f"ADD_ONION {key}", f"Flags={','.join(flags)}", *options]
            + [f"Port={tor.onion_port},{self.target}"]
            + [f"ClientAuthV3={c}" for c in clients]
        )
        return request

    async def _uploaded(self, started: float) -> bool:
        """True once one HSDir has our descriptor: then clients can find the onion."""
        directories: set[str] = set()
        while (left := PUBLISH_TIMEOUT - (time.monotonic() - started)) > 0:
            try:
                event = await asyncio.wait_for(self._events.get(), left)
            except TimeoutError:
                return False
            if event.action == stem.HSDescAction.UPLOAD and event.address == self.address:
                directories.add(event.directory_fingerprint)
            elif (
                event.action == stem.HSDescAction.UPLOADED
                and event.directory_fingerprint in directories
            ):
                return True
        return False

    # -- stopping ---------------------------------------------------------------------------

    def _close_controller(self, controller: stem.control.Controller) -> None:
        if self.address:
            with contextlib.suppress(stem.ControllerError, stem.SocketClosed):
                controller.remove_ephemeral_hidden_service(self.address)
        controller.close()

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        log.info("tor stopped", extra={"event": "tor_stop"})


def _quote(value: Path | str) -> str:
    """torrc takes C-style quoted values, so any path can be written."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _stop_leftover(tor_dir: Path) -> None:
    """A tor left by a node that was killed (it exits by itself soon, but holds the data
    directory's lock until then): ours only if it runs this data directory's torrc."""
    try:
        pid = int((tor_dir / "tor.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return
    if str((tor_dir / "torrc").resolve()).encode() not in cmdline:
        return
    log.warning(
        "stopping a tor (pid %d) left running by an earlier node",
        pid,
        extra={"event": "tor_leftover"},
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
