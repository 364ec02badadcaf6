// HTTP account endpoints and the password derivations (docs/protocol.md §2–3).
// The password never leaves this module: only the PBKDF2 login secret is sent. The wrapping
// key (another label, so unrelated to the login secret) is returned to the page, never sent.

import { language, t } from "./i18n.js";

const LOGIN_LABEL = new TextEncoder().encode("onionchat login\0");
const WRAP_LABEL = new TextEncoder().encode("onionchat wrap\0");

export function b64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromB64url(text) {
  const std = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(std + "=".repeat((4 - (std.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// PBKDF2-SHA256(password, label || salt, iterations) → 32 bytes, as crypto.py does.
async function derive(password, label, salt, iterations) {
  const key = await crypto.subtle.importKey(
    "raw", new TextEncoder().encode(password), "PBKDF2", false, ["deriveBits"]);
  const full = new Uint8Array(label.length + salt.length);
  full.set(label);
  full.set(salt, label.length);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt: full, iterations }, key, 256);
  return new Uint8Array(bits);
}

export function loginSecret(password, salt, iterations) {
  return derive(password, LOGIN_LABEL, salt, iterations);
}

export function wrappingKey(password, salt, iterations) {
  return derive(password, WRAP_LABEL, salt, iterations);
}

async function post(path, body) {
  const init = { method: "POST", credentials: "same-origin", headers: { "Accept-Language": language() } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new Error(t("api.unreachable"));
  }
  if (response.status === 204) return {};
  const text = await response.text();
  let data = {};
  try { data = JSON.parse(text); } catch { data = { message: text }; }
  if (!response.ok) {
    const error = new Error(data.message || t("api.status", { status: response.status }));
    error.code = data.error; // e.g. "invite_needed": the page then asks for a code
    throw error;
  }
  return data;
}

// A file for a message to carry (sealed already, for a sealed room): { id, size }.
export async function upload(room, bytes) {
  let response;
  try {
    response = await fetch(`/api/files?room=${encodeURIComponent(room)}`, {
      method: "POST", credentials: "same-origin", body: bytes,
      headers: { "Content-Type": "application/octet-stream", "Accept-Language": language() },
    });
  } catch {
    throw new Error(t("api.unreachable"));
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || t("api.status", { status: response.status }));
  return data;
}

// A file's bytes as uploaded, or null when it is gone (deleted, expired).
export async function download(room, id) {
  const response = await fetch(`/api/files/${encodeURIComponent(id)}?room=${encodeURIComponent(room)}`,
    { credentials: "same-origin" });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(t("api.status", { status: response.status }));
  return new Uint8Array(await response.arrayBuffer());
}

// Both resolve to the wrapping key, for the page to keep in this tab only.
export async function register(username, password, invite, answer) {
  // prelogin on a new name reveals the node's iteration count
  const { iterations } = await post("/api/prelogin", { username });
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const [secret, wrap] = await Promise.all([
    loginSecret(password, salt, iterations), wrappingKey(password, salt, iterations)]);
  await post("/api/register", {
    username, salt: b64url(salt), iterations, secret: b64url(secret),
    ...(invite ? { invite } : {}), ...(answer ? { answer } : {}),
  });
  return wrap;
}

// A guest's session: no account, no password, so no wrapping key (none is returned).
export async function guest() {
  await post("/api/guest");
  return null;
}

export async function guestsWelcome() {
  try {
    const response = await fetch("/api/guest", { credentials: "same-origin" });
    return response.ok && (await response.json()).guests === true;
  } catch {
    return false;
  }
}

export async function login(username, password) {
  const { salt, iterations } = await post("/api/prelogin", { username });
  const raw = fromB64url(salt);
  const [secret, wrap] = await Promise.all([
    loginSecret(password, raw, iterations), wrappingKey(password, raw, iterations)]);
  await post("/api/login", { username, secret: b64url(secret) });
  return wrap;
}

// The wrapping key alone, for a tab that has the session but not the key (another tab
// logged in): the same derivation as login, nothing sent but the prelogin.
export async function wrappingKeyFor(username, password) {
  const { salt, iterations } = await post("/api/prelogin", { username });
  return wrappingKey(password, fromB64url(salt), iterations);
}

// The session cookie is HttpOnly: ask the node whether it still holds (null when not).
export async function session() {
  try {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    return response.ok ? await response.json() : null;
  } catch {
    return undefined;  // the node is unreachable: let the socket retry
  }
}

export async function logout() {
  try { await post("/api/logout"); } catch { /* the session may be gone already */ }
}
