"""The client's two modes, and the entry point that runs one: log in, connect, chat, log out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout

from onionchat.client.account import Login, login, logout
from onionchat.client.errors import ChatError, ClientError
from onionchat.client.options import Options, read_password
from onionchat.client.session import Chat, State, View
from onionchat.client.transport import open_websocket, probe
from onionchat.client.views import PipeView, TerminalView, printable, toolbar


async def main(options: Options) -> int:
    """Run the client to its end; the exit code is 0 (fine), 1 (failed) or 2 (bad options)."""
    task = asyncio.create_task(_run(options))
    with _interrupts(task):
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return 1 if options.pipe else 0


async def run_pipe(chat: Chat) -> int:
    """Send stdin's lines; at its end, wait for the node to answer them all, then leave."""
    lines = _stdin_lines(asyncio.get_running_loop())

    async def feed() -> None:
        while (line := await lines.get()) is not None:
            if not await chat.line(line):
                break
        await chat.settle()

    await chat.guard(feed())
    if chat.failures:
        raise ChatError(f"{chat.failures} line(s) were refused (see the error lines)")
    return 0


async def run_interactive(chat: Chat) -> int:
    """A prompt at the bottom, the room scrolling above it; Ctrl-D, Ctrl-C or /quit leave."""

    def growing() -> FormattedText | None:
        if not chat.state.growing:
            return None  # no toolbar at all
        return toolbar(chat.state, shutil.get_terminal_size().columns)

    session: PromptSession[str] = PromptSession(bottom_toolbar=growing)

    def prompt() -> str:
        return f"#{chat.state.current}> " if chat.state.current else "> "

    async def typing() -> None:
        while True:
            try:
                line = await session.prompt_async(prompt, handle_sigint=False)
            except (EOFError, KeyboardInterrupt):
                return
            if not await chat.line(line):
                return

    await chat.guard(typing())
    return 0


async def _run(options: Options) -> int:
    if not options.pipe and not sys.stdin.isatty():
        _fail("standard input is not a terminal: use --pipe to chat from a script")
        return 2
    if options.socks and not options.pipe:
        # An onion can take seconds to answer: say what is going on meanwhile.
        print(f"connecting to {options.where} through {options.socks}…", file=sys.stderr)
    try:
        # Before the password is asked for: no use typing it if tor is not even running.
        await probe(options)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    try:
        password = read_password(options)
    except ClientError as exc:
        _fail(str(exc))
        return 2
    except ChatError as exc:
        _fail(str(exc))
        return 1
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        _fail("no password given")
        return 1
    try:
        session = await login(options, password)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    del password
    try:
        return await _chat(options, session)
    finally:
        await logout(options, session)


async def _chat(options: Options, session: Login) -> int:
    try:
        ws = await open_websocket(options)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    state = State(user=session.user)
    view: View = PipeView() if options.pipe else TerminalView(state, options.bell)
    chat = Chat(ws, view, state, options, wrapping=session.wrapping)
    reader = asyncio.create_task(chat.read())
    try:
        with contextlib.nullcontext() if options.pipe else patch_stdout():
            await chat.guard(chat.start(session.token))
            if options.pipe:
                return await run_pipe(chat)
            view.note(f"connected to {options.where} as {chat.state.user}")
            view.note("/help lists the commands, /quit (or Ctrl-D) leaves")
            return await run_interactive(chat)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    finally:
        await chat.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, options.timeout)


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """stdin line by line (None at its end), read by a daemon thread: files, pipes and
    terminals all work, and a blocked read never stalls the event loop."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=256)

    def put(item: str | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except Exception:  # the loop is gone: nobody is listening any more
            return False
        return True

    def run() -> None:
        buffer = b""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        while fd >= 0:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                if not put(raw.decode("utf-8", "replace").removesuffix("\r")):
                    return
        if buffer and not put(buffer.decode("utf-8", "replace").removesuffix("\r")):
            return
        put(None)

    threading.Thread(target=run, name="onionchat-stdin", daemon=True).start()
    return queue


@contextlib.contextmanager
def _interrupts(task: asyncio.Task[int]) -> Iterator[None]:
    """Ctrl-C cancels the session, which then closes cleanly (not a traceback)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _fail(message: str) -> None:
    print(f"onionchat: {printable(message)}", file=sys.stderr, flush=True)
