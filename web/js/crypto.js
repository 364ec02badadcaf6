// Room keys and secretboxes, byte-compatible with onionchat/crypto.py:
// box = standard base64 of nonce (24 bytes) || secretbox; keys = base64url, unpadded.
import { b64url, fromB64url } from "./api.js";

const nacl = window.nacl;
const STORE = "onionchat.key."; // where an older page kept room keys (forgetStoredKeys)

export function newKey() {
  return nacl.randomBytes(nacl.secretbox.keyLength);
}

export const encodeKey = b64url;

// Strict: a key that is not 32 bytes of base64url is refused, never padded or cut.
export function decodeKey(text) {
  if (!/^[A-Za-z0-9_-]{43}=?$/.test(text || "")) return null;
  const key = fromB64url(text.replace(/=$/, ""));
  return key.length === nacl.secretbox.keyLength ? key : null;
}

export function seal(key, text) {
  return sealBytes(key, nacl.util.decodeUTF8(text));
}

// The text, or null when the box does not open (wrong key, damaged, not base64).
export function open(key, box) {
  try {
    const plain = openBytes(key, box);
    return plain ? new TextDecoder("utf-8", { fatal: true }).decode(plain) : null;
  } catch {
    return null;
  }
}

// Room keys once lived in localStorage under the room's name, readable by the next account
// on the same browser. They live in the account's keyring now: drop what an older page left.
export function forgetStoredKeys() {
  for (const name of Object.keys(localStorage)) {
    if (name.startsWith(STORE)) localStorage.removeItem(name);
  }
}

// -- identity keys, sealed invitations, direct messages (docs/protocol.md §8) ---------------

const WRAP = "onionchat.wrap"; // this tab only: sessionStorage, never localStorage, never sent

// Standard base64 to bytes, or null when it is not base64.
export function fromBase64(text) {
  try {
    return nacl.util.decodeBase64(text || "");
  } catch {
    return null;
  }
}

export const toBase64 = (bytes) => nacl.util.encodeBase64(bytes);

// base64(nonce || secretbox(bytes)) — the same envelope as a message box.
export function sealBytes(key, bytes) {
  const nonce = nacl.randomBytes(nacl.secretbox.nonceLength);
  const sealed = nacl.secretbox(bytes, nonce, key);
  const out = new Uint8Array(nonce.length + sealed.length);
  out.set(nonce);
  out.set(sealed, nonce.length);
  return toBase64(out);
}

export function openBytes(key, sealed) {
  const raw = fromBase64(sealed);
  if (!key || !raw || raw.length < nacl.secretbox.nonceLength + nacl.secretbox.overheadLength) return null;
  return nacl.secretbox.open(
    raw.subarray(nacl.secretbox.nonceLength), raw.subarray(0, nacl.secretbox.nonceLength), key);
}

// A file sealed with a key of its own: nonce (24) || secretbox, raw bytes (crypto.seal_file).
export function sealFile(key, bytes) {
  const nonce = nacl.randomBytes(nacl.secretbox.nonceLength);
  const sealed = nacl.secretbox(bytes, nonce, key);
  const out = new Uint8Array(nonce.length + sealed.length);
  out.set(nonce);
  out.set(sealed, nonce.length);
  return out;
}

export function openFile(key, raw) {
  if (!key || raw.length < nacl.secretbox.nonceLength + nacl.secretbox.overheadLength) return null;
  return nacl.secretbox.open(
    raw.subarray(nacl.secretbox.nonceLength), raw.subarray(0, nacl.secretbox.nonceLength), key);
}

export function rememberWrap(key) {
  sessionStorage.setItem(WRAP, b64url(key));
}

export function loadWrap() {
  return decodeKey(sessionStorage.getItem(WRAP));
}

export function forgetWrap() {
  sessionStorage.removeItem(WRAP);
}

export function newIdentity() {
  return nacl.box.keyPair();
}

export function wrapIdentity(wrap, secretKey) {
  return sealBytes(wrap, secretKey);
}

// The key pair the wrapped secret holds, or null when the wrapping key does not open it.
export function unwrapIdentity(wrap, wrapped) {
  const secret = openBytes(wrap, wrapped);
  if (!secret || secret.length !== nacl.box.secretKeyLength) return null;
  return nacl.box.keyPair.fromSecretKey(secret);
}

// base64(ephemeral public 32 || nonce 24 || box(room key)) — onionchat/crypto.py seal_room_key.
export function sealRoomKey(roomKey, theirPublic) {
  const ephemeral = nacl.box.keyPair();
  const nonce = nacl.randomBytes(nacl.box.nonceLength);
  const sealed = nacl.box(roomKey, nonce, theirPublic, ephemeral.secretKey);
  const out = new Uint8Array(32 + nonce.length + sealed.length);
  out.set(ephemeral.publicKey);
  out.set(nonce, 32);
  out.set(sealed, 32 + nonce.length);
  return toBase64(out);
}

export function openRoomKey(sealed, secretKey) {
  const raw = fromBase64(sealed);
  if (!raw || raw.length !== 32 + nacl.box.nonceLength + nacl.box.overheadLength + 32) return null;
  const key = nacl.box.open(raw.subarray(56), raw.subarray(32, 56), raw.subarray(0, 32), secretKey);
  return key && key.length === nacl.secretbox.keyLength ? key : null;
}

// The key of a conversation: X25519(their public, my secret), the same from both sides.
export function directKey(theirPublic, mySecret) {
  return nacl.box.before(theirPublic, mySecret);
}

export function sameBytes(a, b) {
  return Boolean(a && b) && a.length === b.length && a.every((x, i) => x === b[i]);
}
