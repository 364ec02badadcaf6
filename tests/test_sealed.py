"""Signed, bound boxes, signed invitations and keyrings: the test vectors of docs/protocol.md §8,
produced alike by onionchat/sealed.py (PyNaCl) and web/js/sealed.js (tweetnacl in Chromium), and
each check that stops a replayed, moved, re-attributed, re-kinded or forged box."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nacl.public
import pytest
from playwright.async_api import Browser

from onionchat import crypto, sealed

from conftest import NodeProcess
from test_web import open_page

DOCS = Path(__file__).parent.parent / "docs" / "protocol.md"


def seq(start: int, n: int = 32) -> bytes:
    return bytes(range(start, start + n))


ALICE, BOB, ROOM_KEY, WRAP = seq(0), seq(32), seq(64), seq(160)
NONCE, EPHEMERAL = seq(96, 24), seq(128)
TS = 1796000000000
ID = "AAECAwQFBgcICQoL"
TEXT = "Привет, bob"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def public(secret: bytes) -> bytes:
    return bytes(nacl.public.PrivateKey(secret).public_key)


def vectors() -> dict[str, str]:
    ring = sealed.Keyring()
    ring.add("vault", ROOM_KEY)
    ring.peers["bob"] = (public(BOB), sealed.signing_public(BOB))
    return {
        "alice signing public": b64(sealed.signing_public(ALICE)),
        "alice fingerprint": sealed.fingerprint(public(ALICE), sealed.signing_public(ALICE)),
        "box": sealed.seal_body(
            ROOM_KEY,
            sealed.signing_key(ALICE),
            room="vault",
            sender="alice",
            kind="message",
            text=TEXT,
            id=ID,
            ts=TS,
            nonce=NONCE,
        ),
        "invitation": sealed.seal_invitation(
            ROOM_KEY,
            public(BOB),
            sealed.signing_key(ALICE),
            room="vault",
            sender="alice",
            to="bob",
            ts=TS,
            ephemeral=EPHEMERAL,
            nonce=NONCE,
        ),
        "keyring": ring.seal(WRAP, NONCE),
    }


# (signed as, shown as): the same name, or on another node `name@node`, and nothing else
WRITERS = [
    ["alice", "alice"],
    ["alice", "alice@north"],
    ["alice", "mallory@north"],
    ["alice", "alice@"],
    ["alice", "@north"],
    ["alice@north", "alice@north@south"],
    ["alice", "alicia"],
]
WRITTEN_BY = [True, True, False, False, False, False, False]


def test_the_documented_vectors_are_what_the_python_side_makes() -> None:
    docs = DOCS.read_text()
    for name, value in vectors().items():
        found = re.search(rf"^\| {re.escape(name)} \| `([^`]+)` \|$", docs, re.M)
        assert found, f"docs/protocol.md has no test vector row for {name!r}"
        assert found.group(1) == value, name


def test_a_body_binds_room_sender_kind_and_time() -> None:
    box = vectors()["box"]
    body = sealed.open_body([crypto.new_room_key(), ROOM_KEY], box)  # the second key opens it
    assert (body.room, body.sender, body.kind, body.id, body.text) == (
        "vault",
        "alice",
        "message",
        ID,
        TEXT,
    )
    assert body.verify(sealed.signing_public(ALICE))
    assert not body.verify(sealed.signing_public(BOB))  # bob cannot pass as alice
    body.check("vault", "alice", "message", TS + 1000)
    for envelope, why in [
        (("other", "alice", "message", TS), "written for #vault"),
        (("vault", "mallory", "message", TS), "written by alice"),
        (("vault", "alice", "action", TS), "written as a message"),
        (("vault", "alice", "topic", TS), "written as a message"),
        (("vault", "alice", "message", TS + sealed.SKEW_MS + 1), "an old box sent again"),
    ]:
        with pytest.raises(sealed.Rejected, match=why):
            body.check(*envelope)


def test_what_is_not_a_signed_body_is_rejected_and_a_wrong_key_does_not_open() -> None:
    old = crypto.seal(ROOM_KEY, "an unsigned box of an old client")
    with pytest.raises(sealed.Rejected, match="not a signed box"):
        sealed.open_body([ROOM_KEY], old)
    with pytest.raises(crypto.CryptoError):
        sealed.open_body([crypto.new_room_key()], vectors()["box"])
    # A signature cut off and put back on another body does not verify.
    body = sealed.open_body([ROOM_KEY], vectors()["box"])
    other = sealed.open_body(
        [ROOM_KEY],
        sealed.seal_body(
            ROOM_KEY,
            sealed.signing_key(BOB),
            room="vault",
            sender="alice",
            kind="message",
            text="I owe bob 100",
            ts=TS,
        ),
    )
    assert not other.verify(sealed.signing_public(ALICE))
    spliced = body.signed[:64] + other.signed[64:]
    assert not sealed.Body(**{**other.__dict__, "signed": spliced}).verify(
        sealed.signing_public(ALICE)
    )


def test_an_invitation_is_signed_and_bound_to_room_inviter_and_invitee() -> None:
    invitation = sealed.open_invitation(vectors()["invitation"], BOB)
    assert invitation.key == ROOM_KEY
    assert invitation.verify(sealed.signing_public(ALICE))
    assert not invitation.verify(sealed.signing_public(BOB))
    invitation.check("vault", "alice", "bob")
    with pytest.raises(sealed.Rejected, match="signed as from alice"):
        invitation.check("vault", "mallory", "bob")
    with pytest.raises(sealed.Rejected, match="written for bob"):
        invitation.check("vault", "alice", "carol")
    with pytest.raises(sealed.Rejected, match="for #vault"):
        invitation.check("other", "alice", "bob")
    with pytest.raises(crypto.CryptoError):
        sealed.open_invitation(vectors()["invitation"], ALICE)  # sealed to bob only


def test_keyrings_merge_and_open_only_with_the_wrapping_key() -> None:
    ring = sealed.Keyring.open(WRAP, vectors()["keyring"])
    assert ring.rooms == {"vault": [ROOM_KEY]}
    newer = crypto.new_room_key()
    other = sealed.Keyring(rooms={"vault": [newer], "plans": [seq(1)]})
    ring.merge(other)
    assert ring.rooms == {"vault": [ROOM_KEY, newer], "plans": [seq(1)]}
    assert ring.add("vault", newer) is False
    with pytest.raises(crypto.CryptoError):
        sealed.Keyring.open(crypto.new_room_key(), vectors()["keyring"])


async def test_the_browser_makes_and_opens_the_same_bytes(
    node: NodeProcess, browser: Browser
) -> None:
    expected = vectors()
    async with open_page(browser, node) as watched:
        got = await watched.page.evaluate(
            """async ([alice, bob, roomKey, wrap, nonce, ephemeral, ts, id, text, fromPython]) => {
              const s = await import("/static/js/sealed.js");
              const b = (x) => Uint8Array.from(x);
              const A = s.signingKeys(b(alice));
              const aPub = nacl.box.keyPair.fromSecretKey(b(alice)).publicKey;
              const bPair = nacl.box.keyPair.fromSecretKey(b(bob));
              const ring = s.newKeyring();
              s.addKey(ring, "vault", b(roomKey));
              const bobSigning = s.signingKeys(b(bob)).publicKey;
              ring.peers.set("bob", {box: bPair.publicKey, signing: bobSigning});
              const opened = s.openBody([b(roomKey)], fromPython.box).body;
              const invited = s.openInvitation(fromPython.invitation, bPair.secretKey).invitation;
              const mine = s.sealBody(b(roomKey), A, {room: "vault", sender: "alice",
                kind: "action", text: "waves ☃"});
              return {
                vectors: {
                  "alice signing public": nacl.util.encodeBase64(A.publicKey),
                  "alice fingerprint": s.fingerprint(aPub, A.publicKey),
                  box: s.sealBody(b(roomKey), A, {room: "vault", sender: "alice",
                    kind: "message", text, id, ts, nonce: b(nonce)}),
                  invitation: s.sealInvitation(b(roomKey), bPair.publicKey, A, {room: "vault",
                    sender: "alice", to: "bob", ts, ephemeral: b(ephemeral), nonce: b(nonce)}),
                  keyring: s.sealKeyring(b(wrap), ring, b(nonce)),
                },
                opened: [opened.text, s.verifyBody(opened, A.publicKey),
                         s.checkBody(opened, "vault", "alice", "message", ts),
                         s.checkBody(opened, "vault", "mallory", "message", ts),
                         s.checkBody(opened, "vault", "alice", "topic", ts),
                         s.checkBody(opened, "vault", "alice", "message", ts + s.SKEW_MS + 1)],
                invited: [s.verifyInvitation(invited, A.publicKey),
                          s.checkInvitation(invited, "vault", "alice", "bob"),
                          s.checkInvitation(invited, "vault", "mallory", "bob")],
                notOpened: s.openBody([nacl.randomBytes(32)], fromPython.box),
                old: s.openBody([b(roomKey)], fromPython.old),
                ringRooms: [...s.openKeyring(b(wrap), fromPython.keyring).rooms.keys()],
                wrongWrap: s.openKeyring(nacl.randomBytes(32), fromPython.keyring),
                mine,
              };
            }""",
            [
                list(ALICE),
                list(BOB),
                list(ROOM_KEY),
                list(WRAP),
                list(NONCE),
                list(EPHEMERAL),
                TS,
                ID,
                TEXT,
                expected | {"old": crypto.seal(ROOM_KEY, "unsigned")},
            ],
        )
        got["writtenBy"] = await watched.page.evaluate(
            """async (writers) => {
              const s = await import("/static/js/sealed.js");
              return writers.map(([signed, shown]) => s.writtenBy(signed, shown));
            }""",
            WRITERS,
        )
    assert got["vectors"] == expected
    assert got["opened"] == [
        TEXT,
        True,
        None,
        "it was written by alice, not by mallory",
        "it was written as a message, not as a topic",
        "it was written at another time: an old box sent again",
    ]
    assert got["invited"] == [True, None, "it was signed as from alice, not mallory"]
    assert got["notOpened"] == {"locked": True}
    assert got["old"] == {"rejected": "it is not a signed box (an old client, or damaged)"}
    assert got["ringRooms"] == ["vault"]
    assert got["wrongWrap"] is None
    assert got["writtenBy"] == [sealed.written_by(a, b) for a, b in WRITERS] == WRITTEN_BY
    body = sealed.open_body([ROOM_KEY], got["mine"])  # what the page sealed, Python opens
    assert (body.kind, body.text) == ("action", "waves ☃")
    assert body.verify(sealed.signing_public(ALICE))
