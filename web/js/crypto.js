// Room keys and secretboxes, byte-compatible with onionchat/crypto.py:
// box = standard base64 of nonce (24 bytes) || secretbox; keys = base64url, unpadded.
import { b64url, fromB64url } from "./api.js";

const nacl = window.nacl;
const STORE = "onionchat.key.";

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
  const nonce = nacl.randomBytes(nacl.secretbox.nonceLength);
  const sealed = nacl.secretbox(nacl.util.decodeUTF8(text), nonce, key);
  const out = new Uint8Array(nonce.length + sealed.length);
  out.set(nonce);
  out.set(sealed, nonce.length);
  return nacl.util.encodeBase64(out);
}

// The text, or null when the box does not open (wrong key, damaged, not base64).
export function open(key, box) {
  if (!key) return null;
  try {
    const raw = nacl.util.decodeBase64(box);
    if (raw.length < nacl.secretbox.nonceLength + nacl.secretbox.overheadLength) return null;
    const plain = nacl.secretbox.open(
      raw.subarray(nacl.secretbox.nonceLength), raw.subarray(0, nacl.secretbox.nonceLength), key);
    return plain ? new TextDecoder("utf-8", { fatal: true }).decode(plain) : null;
  } catch {
    return null;
  }
}

// Keys stay on this device only (localStorage), never sent to the node.
export function saveKey(room, key) {
  localStorage.setItem(STORE + room, encodeKey(key));
}

export function loadKey(room) {
  return decodeKey(localStorage.getItem(STORE + room));
}
