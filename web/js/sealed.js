// Signed, bound boxes, signed invitations and sealed keyrings: byte-compatible with
// onionchat/sealed.py (docs/protocol.md §8 has the formats and test vectors). A box says who
// wrote what, where, as what and when, signed with the writer's Ed25519 key; a client shows it
// only when all of that matches the envelope the node delivered it in.
import { b64url } from "./api.js";
import { decodeKey, fromBase64, openBytes, toBase64 } from "./crypto.js";
import { t } from "./i18n.js";

const nacl = window.nacl;
const VERSION = 2;
const utf8 = new TextEncoder();
const SIGN_LABEL = utf8.encode("onionchat sign\0");
const BOX_DOMAIN = utf8.encode("onionchat box\0");
const INVITE_DOMAIN = utf8.encode("onionchat invite\0");
const FINGERPRINT_LABEL = utf8.encode("onionchat fingerprint\0");
const SIG = nacl.sign.signatureLength; // 64
export const KINDS = ["message", "action", "topic", "edit", "reaction"];
// What a reaction may be (docs/protocol.md, Replies, edits and reactions): the node checks an
// open room's, each client a sealed one's.
export const REACTIONS = ["👍", "👎", "❤️", "😂", "😮", "😢", "🎉"];
export const SKEW_MS = 10 * 60 * 1000;

function join(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// The Ed25519 key pair that goes with an identity secret: one wrapped secret restores both.
export function signingKeys(identitySecret) {
  const seed = nacl.hash(join(SIGN_LABEL, identitySecret)).subarray(0, 32);
  return nacl.sign.keyPair.fromSeed(seed);
}

// Eight groups of four hex digits, the same as the CLI's /whois.
export function fingerprint(boxPublic, signingPublic) {
  const digest = nacl.hash(join(FINGERPRINT_LABEL, boxPublic, signingPublic)).subarray(0, 16);
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
  return hex.match(/.{4}/g).join(" ");
}

export function newId() {
  return b64url(nacl.randomBytes(12));
}

function signed(domain, body, secretKey) {
  return join(nacl.sign.detached(join(domain, body), secretKey), body);
}

function verify(domain, bytes, signingPublic) {
  return Boolean(signingPublic) && bytes.length > SIG &&
    nacl.sign.detached.verify(join(domain, bytes.subarray(SIG)), bytes.subarray(0, SIG), signingPublic);
}

function secretbox(key, plain, nonce) {
  const n = nonce || nacl.randomBytes(nacl.secretbox.nonceLength);
  return toBase64(join(n, nacl.secretbox(plain, n, key)));
}

function parse(bytes) {
  if (bytes.length <= SIG) return null;
  try {
    const data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(SIG)));
    return data && typeof data === "object" && !Array.isArray(data) ? data : null;
  } catch {
    return null;
  }
}

// opts: { room, sender, kind, text, re?, file?, id?, ts?, nonce? } (`re`: the message a reply,
// an edit or a reaction is about; `file`: { id, name, type, size, key } of the file it
// carries); signer: nacl.sign key pair.
export function sealBody(key, signer, opts) {
  if (!KINDS.includes(opts.kind)) throw new Error(`kind must be one of ${KINDS}`);
  const fields = {
    v: VERSION, room: opts.room, sender: opts.sender, kind: opts.kind,
    id: opts.id || newId(), ts: opts.ts ?? Date.now(), text: opts.text,
  };
  if (opts.re) fields.re = opts.re;
  if (opts.file) fields.file = opts.file;
  const body = utf8.encode(JSON.stringify(fields));
  return secretbox(key, signed(BOX_DOMAIN, body, signer.secretKey), opts.nonce);
}

const isInt = (x) => Number.isSafeInteger(x);

// { body } when one of `keys` opens the box and it holds a signed body; { locked: true } when
// none opens it; { rejected: WHY } when it opens but is not a signed body.
export function openBody(keys, box) {
  let bytes = null;
  for (const key of keys || []) {
    bytes = openBytes(key, box);
    if (bytes) break;
  }
  if (!bytes) return { locked: true };
  const d = parse(bytes);
  const strings = ["room", "sender", "kind", "id", "text"];
  if (!d || d.v !== VERSION || !strings.every((k) => typeof d[k] === "string") || !isInt(d.ts)) {
    return { rejected: t("sealed.notBox") };
  }
  if (!KINDS.includes(d.kind)) return { rejected: t("sealed.unknownKind", { kind: d.kind }) };
  const file = d.file;
  const aFile = (f) => f && ["id", "name", "type", "key"].every((k) => typeof f[k] === "string") && isInt(f.size);
  if ((d.re !== undefined && typeof d.re !== "string") || (file !== undefined && !aFile(file))) {
    return { rejected: t("sealed.notBox") };
  }
  return { body: { room: d.room, sender: d.sender, kind: d.kind, id: d.id, ts: d.ts, text: d.text, re: d.re, file, signed: bytes } };
}

export function verifyBody(body, signingPublic) {
  return verify(BOX_DOMAIN, body.signed, signingPublic);
}

// The same check through WebCrypto's Ed25519 (about 100 times faster than tweetnacl here), or
// tweetnacl where the browser lacks it. Resolves to whether the signature holds.
export async function verifyBodyFast(body, signingPublic) {
  if (!signingPublic || body.signed.length <= SIG) return false;
  const key = await webKey(signingPublic);
  if (!key) return verifyBody(body, signingPublic);
  const data = join(BOX_DOMAIN, body.signed.subarray(SIG));
  try {
    return await crypto.subtle.verify("Ed25519", key, body.signed.subarray(0, SIG), data);
  } catch {
    return verifyBody(body, signingPublic);
  }
}

// Whether this browser's WebCrypto has Ed25519 (Chromium 137+, Firefox 129+, so Tor Browser
// 14.5+), asked once.
let webEd25519 = null;
export function hasWebEd25519() {
  if (!webEd25519) webEd25519 = webKey(signingKeys(new Uint8Array(32)).publicKey).then(Boolean);
  return webEd25519;
}

const webKeys = new Map(); // base64 of a signing public key -> Promise of a CryptoKey or null

function webKey(signingPublic) {
  const name = toBase64(signingPublic);
  if (!webKeys.has(name)) {
    if (webKeys.size > 1000) webKeys.clear();
    const imported = globalThis.crypto?.subtle
      ? crypto.subtle.importKey("raw", signingPublic, "Ed25519", false, ["verify"]).catch(() => null)
      : Promise.resolve(null);
    webKeys.set(name, imported);
  }
  return webKeys.get(name);
}

// Whether a body signed as from `signed` may be shown as from `shown`: the same name, or, on
// another node than the writer's, `signed@node` (a name never holds an @ of its own). The
// signature is checked with the key the reader's node gives for `shown`.
export function writtenBy(signed, shown) {
  if (shown === signed) return true;
  const at = shown.lastIndexOf("@");
  return at > 0 && at < shown.length - 1 && shown.slice(0, at) === signed && !signed.includes("@");
}

// The kind a message's box must say it is, and the message it must be about, from its
// envelope (sealed.py's kind_of).
export function kindOf(m) {
  if (m.edit) return { kind: "edit", re: m.edit };
  if (m.react) return { kind: "reaction", re: m.react };
  return { kind: m.me ? "action" : "message", re: m.reply };
}

// Why the body is not what the envelope shows it as, or null when it is.
export function checkBody(body, room, sender, kind, ts, re = undefined) {
  if (body.room !== room) return t("sealed.otherRoom", { room: body.room });
  if (!writtenBy(body.sender, sender)) return t("sealed.otherSender", { signed: body.sender, sender });
  if (body.kind !== kind) return t("sealed.otherKind", { signed: t(`kind.${body.kind}`), kind: t(`kind.${kind}`) });
  if (Math.abs(body.ts - ts) > SKEW_MS) return t("sealed.otherTime");
  if ((body.re || undefined) !== (re || undefined)) return t("sealed.otherMessage");
  return null;
}

// Why the box's file is not the one the envelope carries, or null when it is (or neither has).
export function checkFile(body, file) {
  if (!body.file !== !file) return t("sealed.otherFile");
  if (file && (body.file.id !== file.id || body.file.size !== file.size)) return t("sealed.otherFile");
  return null;
}

// -- invitations -------------------------------------------------------------------------------

// opts: { room, sender, to, ts?, ephemeral? (secret key bytes), nonce? }
export function sealInvitation(roomKey, theirPublic, signer, opts) {
  const body = utf8.encode(JSON.stringify({
    v: VERSION, kind: "invite", room: opts.room, from: opts.sender, to: opts.to,
    key: b64url(roomKey), ts: opts.ts ?? Date.now(),
  }));
  const mine = opts.ephemeral ? nacl.box.keyPair.fromSecretKey(opts.ephemeral) : nacl.box.keyPair();
  const nonce = opts.nonce || nacl.randomBytes(nacl.box.nonceLength);
  const box = nacl.box(signed(INVITE_DOMAIN, body, signer.secretKey), nonce, theirPublic, mine.secretKey);
  return toBase64(join(mine.publicKey, nonce, box));
}

// { invitation } | { locked: true } (not sealed to this identity) | { rejected: WHY }
export function openInvitation(sealed, secretKey) {
  const raw = fromBase64(sealed);
  if (!raw || raw.length < 32 + nacl.box.nonceLength + nacl.box.overheadLength + SIG) return { locked: true };
  const bytes = nacl.box.open(raw.subarray(56), raw.subarray(32, 56), raw.subarray(0, 32), secretKey);
  if (!bytes) return { locked: true };
  const d = parse(bytes);
  const strings = ["room", "from", "to", "key"];
  if (!d || d.v !== VERSION || d.kind !== "invite" || !strings.every((k) => typeof d[k] === "string") || !isInt(d.ts)) {
    return { rejected: t("sealed.notInvitation") };
  }
  const key = decodeKey(d.key);
  if (!key) return { rejected: t("sealed.damagedKey") };
  return { invitation: { room: d.room, sender: d.from, to: d.to, key, ts: d.ts, signed: bytes } };
}

export function verifyInvitation(invitation, signingPublic) {
  return verify(INVITE_DOMAIN, invitation.signed, signingPublic);
}

export function checkInvitation(invitation, room, sender, me) {
  if (invitation.room !== room) return t("sealed.inviteRoom", { signed: invitation.room, room });
  // across nodes the inviter signs as `name`, shown as `name@node`, and names us `me@node`
  if (!writtenBy(invitation.sender, sender)) return t("sealed.inviteSender", { signed: invitation.sender, sender });
  if (!writtenBy(me, invitation.to)) return t("sealed.inviteTo", { to: invitation.to });
  return null;
}

// -- keyrings: { rooms: Map(room -> [key, ...] newest first), peers: Map(name -> {box, signing}) }

export function newKeyring() {
  return { rooms: new Map(), peers: new Map() };
}

export function sealKeyring(wrap, ring, nonce) {
  const rooms = {};
  for (const [room, keys] of ring.rooms) rooms[room] = keys.map((k) => b64url(k));
  const peers = {};
  for (const [name, pin] of ring.peers) peers[name] = { box: toBase64(pin.box), signing: toBase64(pin.signing) };
  return secretbox(wrap, utf8.encode(JSON.stringify({ v: 1, rooms, peers })), nonce);
}

// The keyring, or null when the wrapping key does not open it.
export function openKeyring(wrap, sealed) {
  const bytes = openBytes(wrap, sealed);
  if (!bytes) return null;
  try {
    const d = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    const ring = newKeyring();
    for (const [room, keys] of Object.entries(d.rooms)) {
      const decoded = keys.map((k) => decodeKey(k));
      if (decoded.some((k) => !k)) return null;
      ring.rooms.set(room, decoded);
    }
    for (const [name, pin] of Object.entries(d.peers)) {
      ring.peers.set(name, { box: fromBase64(pin.box), signing: fromBase64(pin.signing) });
    }
    return ring;
  } catch {
    return null;
  }
}

// Keep `key` for `room`, newest first; false when it was kept already.
export function addKey(ring, room, key) {
  const keys = ring.rooms.get(room) || [];
  if (keys.some((k) => sameKey(k, key))) return false;
  ring.rooms.set(room, [key, ...keys]);
  return true;
}

// Another device's keyring into this one: every key of both, first-seen peers kept.
export function mergeKeyring(ring, other) {
  for (const [room, keys] of other.rooms) {
    const mine = ring.rooms.get(room) || [];
    for (const key of keys) if (!mine.some((k) => sameKey(k, key))) mine.push(key);
    ring.rooms.set(room, mine);
  }
  for (const [name, pin] of other.peers) if (!ring.peers.has(name)) ring.peers.set(name, pin);
}

function sameKey(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

