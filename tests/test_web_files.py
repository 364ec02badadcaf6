"""Files in the browser client (issue 15), in Debian's Chromium against a real node: sent by the
button, by dropping and by pasting; images shown inline from their bytes (decrypted in the page
in a key-protected room) with no request beyond the node; other files saved; the other side a
raw client over the same HTTP API."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, FilePayload, Page, expect

from onionchat import crypto, sealed

from conftest import NodeProcess, connect, register, upload
from test_web import open_page, open_room, publish_identity, say, shot, sign_up


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (what a browser must decode to show)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\0" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


async def fetch(node: NodeProcess, token: str, room: str, id_: str) -> httpx.Response:
    async with node.http() as http:
        return await http.get(
            f"/api/files/{id_}", params={"room": room}, headers={"authorization": f"Bearer {token}"}
        )


async def attach(page: Page, name: str, kind: str, data: bytes) -> None:
    """A file chosen with the page's button."""
    payload: FilePayload = {"name": name, "mimeType": kind, "buffer": data}
    await page.locator("#attach-input").set_input_files(files=[payload])


async def drop_or_paste(page: Page, how: str, name: str, data: bytes, kind: str) -> None:
    """A file dropped on the room, or pasted into the message box, as a browser hands it."""
    await page.evaluate(
        """([how, name, bytes, kind]) => {
          const data = new DataTransfer();
          data.items.add(new File([new Uint8Array(bytes)], name, { type: kind }));
          if (how === "drop") {
            document.getElementById("room").dispatchEvent(
              new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
          } else {
            document.getElementById("composer-text").dispatchEvent(
              new ClipboardEvent("paste", { clipboardData: data, bubbles: true }));
          }
        }""",
        [how, name, list(data), kind],
    )


async def shown_image(page: Page, name: str) -> dict[str, Any]:
    image = page.locator(f"#messages img[alt='{name}']")
    await expect(image).to_have_attribute("src", re.compile("^blob:"))
    await page.wait_for_function(
        "(name) => { const i = document.querySelector(`#messages img[alt='${name}']`);"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=name,
    )
    size: dict[str, Any] = await image.evaluate("(i) => ({w: i.naturalWidth, h: i.naturalHeight})")
    return size


async def test_files_in_an_open_room(node: NodeProcess, browser: Browser, tmp_path: Path) -> None:
    bob = await register(node, "bob")
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "photos")
        async with connect(node, bob) as raw:
            await raw.join("photos")
            picture = png(40, 30, (200, 30, 60))
            await attach(page, "red.png", "image/png", picture)
            got = await raw.expect("message", sender="alice")
            assert got["file"] == {"id": got["file"]["id"], "size": len(picture),
                                   "name": "red.png", "type": "image/png"}  # fmt: skip
            assert (await fetch(node, bob, "photos", got["file"]["id"])).content == picture
            assert await shown_image(page, "red.png") == {"w": 40, "h": 30}

            # dropped and pasted
            await drop_or_paste(page, "drop", "dropped.png", png(8, 8, (0, 0, 255)), "image/png")
            await raw.expect("message", text="dropped.png")
            await drop_or_paste(page, "paste", "notes.txt", b"buy milk\n", "text/plain")
            pasted = await raw.expect("message", text="notes.txt")
            assert pasted["file"]["type"] == "text/plain"
            await shown_image(page, "dropped.png")

            # a file that is no image is saved, under its name, never shown
            async with node.http() as http:
                sent = (await upload(http, bob, "photos", b"a,b\n1,2\n")).json()
            file = {**sent, "name": "table.csv", "type": "text/csv"}
            await raw.send(type="send", room="photos", text="table.csv", file=file, ref="f")
            await raw.expect("ack", ref="f")
            save = page.get_by_role("button", name="Save table.csv, 1 KiB")
            async with page.expect_download() as waiting:
                await save.click()
            download = await waiting.value
            assert download.suggested_filename == "table.csv"
            saved = tmp_path / "table.csv"
            await download.save_as(saved)
            assert saved.read_bytes() == b"a,b\n1,2\n"
            await shot(page, "files")
        await watched.assert_clean()


async def test_a_file_in_a_key_protected_room_is_sealed_in_the_page(
    node: NodeProcess, browser: Browser
) -> None:
    key = crypto.new_room_key()
    bob = await register(node, "bob")
    async with connect(node, bob) as raw:
        _, signer = await publish_identity(raw)
        await raw.join("vault", protected=True)
        # bob's sealed image, for the page to open
        picture = png(16, 12, (10, 160, 90))
        file_key = crypto.new_room_key()
        async with node.http() as http:
            sent = (await upload(http, bob, "vault", crypto.seal_file(file_key, picture))).json()
        descriptor = {"id": sent["id"], "name": "green.png", "type": "image/png",
                      "size": sent["size"], "key": crypto.encode_key(file_key)}  # fmt: skip
        box = sealed.seal_body(key, signer, room="vault", sender="bob", kind="message",
                               text="green.png", file=descriptor)  # fmt: skip
        await raw.send(
            type="send",
            room="vault",
            box=box,
            file={"id": sent["id"], "size": sent["size"]},
            ref="m",
        )
        await raw.expect("ack", ref="m")
        async with open_page(browser, node) as watched:
            page = watched.page
            await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(key)}")
            await sign_up(page, "alice")
            assert await shown_image(page, "green.png") == {"w": 16, "h": 12}

            secret_words = b"the combination is 12-34-56"
            await attach(page, "combo.txt", "text/plain", secret_words)
            got = await raw.expect("message", sender="alice")
            assert set(got["file"]) == {"id", "size"}  # no name, no type for the node
            body = sealed.open_body([key], got["box"])
            assert body.file is not None and body.file["name"] == "combo.txt"
            stored = (await fetch(node, bob, "vault", got["file"]["id"])).content
            assert secret_words not in stored
            assert crypto.open_file(crypto.decode_key(body.file["key"]), stored) == secret_words
            await expect(page.get_by_role("button", name="Save combo.txt, 1 KiB")).to_be_visible()
            await shot(page, "files-sealed")
            await watched.assert_clean()
    raw_bytes = b"".join(p.read_bytes() for p in node.data_dir.rglob("*") if p.is_file())
    assert b"combination" not in raw_bytes and b"combo.txt" not in raw_bytes


async def test_a_file_too_large_is_refused_in_the_page(node_factory: Any, browser: Browser) -> None:
    node: NodeProcess = node_factory(env={"ONIONCHAT_FILES_MAX_BYTES": "2000"})
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "small")
        await attach(page, "big.bin", "application/octet-stream", b"x" * 3000)
        await expect(page.locator("#notice")).to_have_text(
            "big.bin: the file is too large (3,000 bytes, at most 2,000)"
        )
        await say(page, "still here")
        await watched.assert_clean()
