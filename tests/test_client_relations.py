"""Replies, edits, reactions and deletions in the command-line client (issue 15): at a real
terminal (tmux), where each shown message has a number to name it by, and in --pipe mode,
against a real node; the other side a raw client."""

from __future__ import annotations

from pathlib import Path

from onionchat import crypto, sealed

from conftest import NodeProcess, connect, pipe_client, register, upload, user
from test_client import keys, terminal_client, wait_for_screen
from test_web import publish_identity


async def test_at_a_terminal_messages_are_numbered_and_named_by_number(
    node: NodeProcess, password_file: Path
) -> None:
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        asked = await alice.say("lobby", "who brings the bread?", ref="q")
        with terminal_client(node, "bob", password_file) as session:
            screen = await wait_for_screen(session, "who brings the bread?")
            line = next(x for x in screen.splitlines() if "who brings the bread?" in x)
            assert "[1] <alice> who brings the bread?" in line
            await alice.expect("presence", user="bob", state="join")

            keys(session, "/reply 1 I do")
            reply = await alice.expect("message", sender="bob")
            assert (reply["text"], reply["reply"]) == ("I do", asked["id"])
            await wait_for_screen(session, "[2] <bob> ↪[1] I do")

            keys(session, "/react 1 👍")
            thumb = await alice.expect("message", sender="bob", react=asked["id"])
            assert thumb["text"] == "👍"
            await wait_for_screen(session, "* bob reacted 👍 to [1]")

            keys(session, "/edit 2 I do, and the cheese")
            edit = await alice.expect("message", sender="bob", edit=reply["id"])
            assert edit["text"] == "I do, and the cheese"
            await wait_for_screen(session, "* bob edited [2]: I do, and the cheese")

            keys(session, "/edit 1 not mine")
            await wait_for_screen(session, "you can edit your own messages only")
            keys(session, "/react 7 👍")
            await wait_for_screen(session, "usage: /react N EMOJI")

            await alice.send(type="send", room="lobby", text="bread!", edit=asked["id"], ref="e")
            await wait_for_screen(session, "* alice edited [1]: bread!")
            await alice.send(type="send", room="lobby", text="🎉", react=reply["id"], ref="t")
            party = await alice.expect("ack", ref="t")
            await wait_for_screen(session, "* alice reacted 🎉 to [2]")
            await alice.send(type="delete", room="lobby", id=party["id"], ref="d")
            await wait_for_screen(session, "alice took back a reaction in #lobby")

            keys(session, "/delete 2")
            gone = await alice.expect("deleted", by="bob")
            assert gone["ids"] == sorted([reply["id"], edit["id"]])  # the line and its edit
            await wait_for_screen(session, "bob deleted [2] in #lobby")
            keys(session, "/quit")
            await alice.expect("presence", user="bob", state="leave")


async def test_in_pipe_mode_sealed_replies_and_edits_are_checked(
    node: NodeProcess, password_file: Path
) -> None:
    """A key-protected room: the CLI seals what its reply is about, and rejects an edit that
    someone else signed of another's message, whatever the node passed on."""
    key = crypto.new_room_key()
    link = f"{node.url}/#room=vault&key={crypto.encode_key(key)}"
    async with user(node, "alice") as alice:
        _, signer = await publish_identity(alice)
        await alice.join("vault", protected=True)

        async def sealed_send(text: str, kind: str, ref: str, **about: str) -> dict[str, object]:
            re_ = next(iter(about.values()), None)
            box = sealed.seal_body(
                key, signer, room="vault", sender="alice", kind=kind, text=text, re=re_
            )
            await alice.send(type="send", room="vault", box=box, ref=ref, **about)
            return await alice.expect("ack", ref=ref)

        plan = await sealed_send("the plan", "message", "p")
        async with pipe_client(link, "bob", password_file, "--register") as bob:
            shown = await bob.next(type="message", text="the plan")
            assert shown["decrypted"] is True
            await bob.send("/reply 1 agreed")
            got = await alice.expect("message", sender="bob")
            body = sealed.open_body([key], str(got["box"]))
            body.check("vault", "bob", "message", int(got["ts"]), str(plan["id"]))
            assert (body.text, got["reply"]) == ("agreed", plan["id"])
            answer = await bob.next(type="message", text="agreed")
            assert answer["reply"] == plan["id"]

            await sealed_send("the new plan", "edit", "e", edit=str(plan["id"]))
            edited = await bob.next(type="message", text="the new plan")
            assert edited["edit"] == plan["id"] and "rejected" not in edited
            # alice's box, signed by her, as an "edit" of bob's message: the node refuses it
            # (and bob's client would reject it: an edit by someone who did not write it)
            forged = sealed.seal_body(
                key, signer, room="vault", sender="alice", kind="edit", text="bob agrees to all",
                re=str(got["id"]),
            )  # fmt: skip
            await alice.send(type="send", room="vault", box=forged, edit=got["id"], ref="f")
            assert (await alice.expect("error", ref="f"))["code"] == "forbidden"  # the node, too
            assert (await bob.finish())[0] == 0


async def test_files_at_a_terminal_and_sealed_in_pipe_mode(
    node: NodeProcess, password_file: Path, tmp_path: Path
) -> None:
    alice = await register(node, "alice")
    async with connect(node, alice) as raw, node.http() as http:
        await raw.join("shed")
        sent = await upload(http, alice, "shed", b"hammer\nsaw\n")
        file = {**sent.json(), "name": "../tools.txt", "type": "text/plain"}
        await raw.send(type="send", room="shed", text="../tools.txt", file=file, ref="f")
        await raw.expect("ack", ref="f")
        home = tmp_path / "bob"
        home.mkdir()
        (home / "plan.txt").write_bytes(b"dig here")
        with terminal_client(node, "bob", password_file, cwd=home) as session:
            await wait_for_screen(session, "you joined #lobby")
            keys(session, "/join shed")
            await wait_for_screen(session, "📎 ../tools.txt (1 KiB) · /save 1")
            keys(session, "/save 1")
            await wait_for_screen(session, "saved")
            assert (home / "__tools.txt").read_bytes() == b"hammer\nsaw\n"  # never outside
            keys(session, f"/file {home / 'plan.txt'}")
            got = await raw.expect("message", sender="bob")
            assert got["file"]["name"] == "plan.txt" and got["file"]["type"] == "text/plain"
            back = await http.get(f"/api/files/{got['file']['id']}", params={"room": "shed"},
                                  headers={"authorization": f"Bearer {alice}"})  # fmt: skip
            assert back.content == b"dig here"
            keys(session, "/quit")

    key = crypto.new_room_key()
    link = f"{node.url}/#room=vault&key={crypto.encode_key(key)}"
    async with pipe_client(link, "carol", password_file, "--register") as carol:
        await carol.next(type="joined")
        await carol.send(f"/file {home / 'plan.txt'}")
        shown = await carol.next(type="message")
        assert shown["file"]["name"] == "plan.txt" and "key" not in shown["file"]
        async with user(node, "dave") as dave:
            await dave.join("vault", protected=True)
            await dave.send(type="history", room="vault", ref="h")
            (stored,) = (await dave.expect("history", ref="h"))["messages"]
            assert set(stored["file"]) == {"id", "size"}
            body = sealed.open_body([key], stored["box"])
            assert body.file is not None and body.file["name"] == "plan.txt"
        assert (await carol.finish())[0] == 0
