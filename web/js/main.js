// Wiring: login screen, socket, chat state, view, composer, invite links.
import * as api from "./api.js";
import * as box from "./crypto.js";
import { Chat } from "./chat.js";
import { available, browserLanguage, LANGUAGES, onLanguage, remember, setLanguage, stored, t } from "./i18n.js";
import { Notifier } from "./notify.js";
import { Socket } from "./socket.js";
import { View } from "./ui.js";

const $ = (id) => document.getElementById(id);
const USER = "onionchat.user"; // only the name: the session itself is an HttpOnly cookie

const socket = new Socket({
  onFrame: (frame) => chat.handle(frame),
  onState: (state) => {
    view.status(state);
    if (state === "reconnecting") keepUnacked();
  },
  onAuthLost: (reason) => showLogin(reason ? t("login.againBecause", { reason }) : ""),
});
const chat = new Chat(socket, changed);
const view = new View(chat);
const notifier = new Notifier(chat, { open: openRoom, redraw: () => view.messages() });
let readyJoined = false; // the first-room join happens once per login
let pendingInvite = null; // an invite link opened before the socket was ready

function changed(what, arg) {
  notifier.changed(what, arg); // first: it says where the "new messages" line goes
  if (what === "rooms") view.rooms();
  else if (what === "room") { view.room(); fillScreen(); }
  else if (what === "members" && arg?.name === chat.current) view.members();
  else if ((what === "messages" || what === "older") && arg?.name === chat.current) {
    view.messages();
    fillScreen();
  }
  else if (what === "grown" && arg.room.name === chat.current) view.grown(arg.m);
  else if (what === "header" && arg?.name === chat.current) view.header();
  else if (what === "notice") view.notice(arg);
  else if (what === "help") view.help(arg);
  else if (what === "error") view.notice(arg, true);
  else if (what === "identity") view.identity();
  else if (what === "invite") view.invite(arg, inviteUrl(arg.name, chat.keysOf(arg.name)[0]));
  else if (what === "line") answered(arg);
  else if (what === "composing") composing(arg);
  else if (what === "seek" && arg.room.name === chat.current) view.seek(arg.id);
  else if (what === "language") speak(arg);
  else if (what === "ready") {
    speak(arg.lang || "");
    $("me").textContent = chat.user;
    localStorage.setItem(USER, chat.user);
    notifier.load(chat.user);
    if (!arg.rooms.length && !chat.rooms.size && !pendingInvite && !readyJoined) {
      readyJoined = true;
      chat.join("lobby", { create: true }); // a first room to land in
    }
    openPendingInvite();
  }
}

// A message in flight when the connection dropped may or may not be stored: keep it in the
// message box and say so, rather than lose it or send it twice behind the user's back.
function keepUnacked() {
  const lines = chat.takeUnacked();
  if (!lines.length) return;
  for (const { tag, text } of lines.reverse()) { // each goes in front: the first ends first
    sending.delete(tag);
    putBack(text);
  }
  showSending();
  view.notice(t("notice.unacked"), true);
}

// -- language -------------------------------------------------------------------------------

// The account's language ("" for the browser's): spoken here, and kept on this device for
// its login screen.
function speak(lang) {
  const chosen = available(lang) ? lang : "";
  remember(chosen);
  $("language").value = chosen;
  setLanguage(chosen || browserLanguage());
}

for (const [code, name] of Object.entries(LANGUAGES)) {
  const option = document.createElement("option");
  option.value = code;
  option.lang = code;
  option.textContent = name;
  $("language").append(option);
}
$("language").value = stored();
$("language").addEventListener("change", () => {
  const lang = $("language").value;
  // The node first, so that what the page asks it again (its /help) comes in the new language.
  socket.send(lang ? { type: "language", lang, ref: "language" } : { type: "language", ref: "language" });
  speak(lang);
});

// Everything drawn says it again in the new language (what was said before stays as it was).
onLanguage(() => {
  chat.relanguage();
  view.status();
  view.rooms();
  view.room();
  view.identity();
  view.composing();
  if (!$("login").hidden) showStrength();
});

// -- login ----------------------------------------------------------------------------------

function showLogin(message = "") {
  socket.stop();
  chat.reset();
  notifier.reset();
  sending.clear();
  showSending();
  refused("");
  localStorage.removeItem(USER);
  box.forgetWrap(); // the identity key stays locked until the password is typed again
  $("chat").hidden = true;
  $("whoami").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  view.status("");
  $("username").focus();
}

function showChat() {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("whoami").hidden = false;
  $("members").querySelector("details").open = !matchMedia("(max-width: 700px)").matches;
  readyJoined = false;
  socket.start();
  $("composer-text").focus();
}

// The weakest passwords are refused here (the node never sees one to judge it).
const COMMON = new Set(["password", "password1", "12345678", "123456789", "1234567890", "qwerty123",
  "qwertyuiop", "iloveyou", "11111111", "00000000", "abcdefgh", "abc12345", "parol123", "пароль123",
  "йцукенгш", "qwerty12", "letmein1", "admin123", "welcome1", "onionchat"]);

function strength(password, name) {
  const p = password.toLowerCase();
  if ([...password].length < 8) return { ok: false, text: t("password.short"), why: t("password.refusedShort") };
  if (COMMON.has(p) || p === name.toLowerCase() || /^(.)\1*$/u.test(p)) {
    return { ok: false, text: t("password.easy"), why: t("password.refusedEasy") };
  }
  const kinds = [/\p{Ll}/u, /\p{Lu}/u, /\p{N}/u, /[^\p{L}\p{N}]/u].filter((k) => k.test(password)).length;
  const n = [...password].length;
  if (n >= 16 || (n >= 12 && kinds >= 3)) return { ok: true, text: t("password.strong") };
  if (n >= 12) return { ok: true, text: t("password.good") };
  return { ok: true, text: t("password.fair") };
}

function showStrength() {
  $("login-error").textContent = ""; // what it said was of the password before this one
  const again = $("password-again").value;
  $("strength").textContent = again || document.activeElement === $("password-again")
    ? strength($("password").value, $("username").value.trim()).text : "";
}
$("password").addEventListener("input", showStrength);
$("password-again").addEventListener("input", showStrength);

// Why this browser cannot derive a login secret, or "".
function noWebCrypto() {
  if (globalThis.crypto?.subtle) return "";
  return t("login.noWebCrypto");
}

async function account(action) {
  const form = $("login-form");
  if (action !== api.guest && !form.reportValidity()) return;
  const unable = action === api.guest ? "" : noWebCrypto();
  if (unable) { $("login-error").textContent = unable; return; }
  if (action === api.register) {
    const judged = strength($("password").value, $("username").value.trim());
    const why = !$("password-again").value ? t("login.typeAgain")
      : $("password-again").value !== $("password").value ? t("login.differ")
      : judged.ok ? "" : judged.why;
    if (why) {
      $("login-error").textContent = why;
      $(judged.ok && $("password-again").value ? "password-again" : "password").focus();
      return;
    }
  }
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  $("login-error").textContent = action === api.register ? t("login.creating") : t("login.loggingIn");
  try {
    const wrap = await action(
      $("username").value.trim(), $("password").value, $("invite-code").value.trim(), $("answer").value);
    if (wrap) box.rememberWrap(wrap); // this tab only: it unlocks the identity key, never sent
    $("password").value = "";
    $("password-again").value = "";
    $("strength").textContent = "";
    $("login-error").textContent = "";
    showChat();
  } catch (error) {
    $("login-error").textContent = error.message;
    const field = { invite_needed: "invite-code", wrong_answer: "answer" }[error.code];
    if (field) { // this node asks newcomers for a code, or to answer its question
      $(`${field}-field`).hidden = false;
      $(field).focus();
    }
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

$("login-form").addEventListener("submit", (e) => { e.preventDefault(); account(api.login); });
$("do-register").addEventListener("click", () => account(api.register));
$("do-guest").addEventListener("click", () => account(api.guest));
api.guestsWelcome().then((welcome) => { $("do-guest").hidden = !welcome; });
// Another tab logged in: this one has the session but not the wrapping key. The password,
// typed again here, derives it in place (nothing is sent but the usual prelogin).
$("unlock").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("unlock-password");
  $("unlock-error").textContent = t("unlock.busy");
  try {
    const wrap = await api.wrappingKeyFor(chat.user, input.value);
    const error = chat.unlock(wrap);
    $("unlock-error").textContent = error;
    if (!error) input.value = "";
  } catch (error) {
    $("unlock-error").textContent = error.message;
  }
});

$("logout").addEventListener("click", async () => {
  socket.stop();
  await api.logout();
  showLogin(t("login.loggedOut"));
});

// -- rooms ----------------------------------------------------------------------------------

function inviteUrl(room, key) {
  return `${location.origin}/#room=${encodeURIComponent(room)}&key=${box.encodeKey(key)}`;
}

$("help-close").addEventListener("click", () => { $("help").hidden = true; });
$("invite-copy").addEventListener("click", async () => {
  const link = $("invite-link");
  try {
    await navigator.clipboard.writeText(link.value);
  } catch {
    link.select(); // no clipboard here (a page that is not a secure context): select to copy
    document.execCommand("copy");
  }
  $("invite-copy").textContent = t("invite.copied");
  setTimeout(() => { $("invite-copy").textContent = t("invite.copy"); }, 2000);
});
function openRoom(name) {
  const room = chat.rooms.get(name);
  // a mention elsewhere, or an invitation: join it (a conversation needs no join)
  if (room && !room.joined && !room.direct) chat.join(room.name, { focus: true });
  chat.select(name);
  $("composer-text").focus();
}
$("rooms").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-room]");
  if (button) openRoom(button.dataset.room);
});

// A choice an alert offers (another key for the room, say).
$("alerts").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-alert]");
  if (button) chat.act(chat.current, button.dataset.alert, Number(button.dataset.index));
});

$("member-list").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-user]");
  if (!button) return;
  // the conversation opens once the node has said which room it is (its answer to `key`)
  const error = chat.openDirect(button.dataset.user);
  if (error) view.notice(error, true);
  $("composer-text").focus();
});

// On a phone the join form folds away behind a button, and so do the members: the room's
// messages get the screen.
const PHONE = window.matchMedia("(max-width: 700px)");
function foldJoin(open) {
  $("new-room").classList.toggle("open", open);
  $("new-room-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("room-name-input").focus();
}
$("new-room-toggle").addEventListener("click", () => foldJoin(!$("new-room").classList.contains("open")));
if (PHONE.matches) $("members").querySelector("details").open = false;

$("new-room").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("room-name-input").value.trim().replace(/^#/, "");
  const protect = $("room-protected").checked;
  if (!name) return;
  // A key-protected room gets its key here, on this device; the node never sees it. It is
  // made only for a new room: a name that exists is refused (`new`), the key thrown away.
  const key = protect ? box.newKey() : null;
  const how = protect ? { create: true, protect, fresh: true, key } : { create: "missing" };
  if (!chat.join(name, { ...how, focus: true })) {
    view.notice(t("notice.offlineJoin"), true);
    return;
  }
  $("room-name-input").value = "";
  foldJoin(false);
  $("room-protected").checked = false;
});

// An invite link: #room=NAME&key=BASE64URL (the CLI client reads the same fragment). The
// room is joined as the link names it; its key is kept under the name the node answers with.
const INVITE = "onionchat.invite"; // this tab only, until the room is joined (a reload)

function readInvite() {
  const params = new URLSearchParams(location.hash.slice(1));
  const room = (params.get("room") || "").replace(/^#/, "").trim();
  if (!room) return;
  const key = box.decodeKey(params.get("key") || "");
  // Keep the key out of the address bar: it stays in this tab until the room is joined.
  history.replaceState(null, "", location.pathname);
  if (params.has("key") && !key) {
    view.notice(t("invite.damaged"), true);
    return;
  }
  pendingInvite = { room, key: key ? box.encodeKey(key) : "" };
  sessionStorage.setItem(INVITE, JSON.stringify(pendingInvite));
  openPendingInvite();
}

function openPendingInvite() {
  if (!pendingInvite || !socket.ready) return;
  const { room, key } = pendingInvite;
  pendingInvite = null;
  sessionStorage.removeItem(INVITE);
  const roomKey = key ? box.decodeKey(key) : null;
  if (roomKey) chat.join(room, { create: true, protect: true, key: roomKey, share: false, focus: true });
  else chat.join(room, { create: "missing", focus: true });
}
window.addEventListener("hashchange", readInvite);

// -- scrolling back -------------------------------------------------------------------------

// Too few messages to scroll: no scroll event would ever ask for older ones, so ask now.
function fillScreen() {
  const room = chat.rooms.get(chat.current);
  const list = $("messages");
  if (room && room.more && list.scrollHeight <= list.clientHeight) chat.older(room);
}

$("messages").addEventListener("scroll", () => {
  const room = chat.rooms.get(chat.current);
  if (room && $("messages").scrollTop < 80) {
    chat.older(room);
    $("older").hidden = !room.loading;
  }
});

// -- what one does to a message --------------------------------------------------------------

// Reply, react, edit, delete (asked twice), a quote shown, a reaction taken back; a tap on a
// message shows its buttons (a phone has no hover).
$("messages").addEventListener("click", (e) => {
  const item = e.target.closest("li.message");
  if (!item) return;
  const id = item.dataset.id;
  const button = e.target.closest("button");
  if (!button) {
    if (!e.target.closest("a")) {
      for (const other of $("messages").querySelectorAll("li.selected")) if (other !== item) other.classList.remove("selected");
      item.classList.toggle("selected");
    }
    return;
  }
  if (button.dataset.seek) { chat.seek(button.dataset.seek); return; }
  if (button.dataset.file) { saveFile(id); return; }
  if (button.dataset.emoji) { chat.react(id, button.dataset.emoji); return; }
  const act = button.dataset.act;
  if (act === "reply" || act === "edit") chat.compose(act, id);
  else if (act === "react") {
    const picker = item.querySelector(".picker");
    picker.hidden = !picker.hidden;
    if (!picker.hidden) picker.querySelector("button").focus();
  } else if (act === "delete") {
    if (button.dataset.sure) { chat.remove(id); return; }
    button.dataset.sure = "1";
    button.textContent = t("action.deleteSure");
    button.setAttribute("aria-label", t("action.deleteSureLabel"));
    button.classList.add("sure");
  }
});

// A file saved where the browser saves downloads, under its own name (decrypted here).
async function saveFile(id) {
  const room = chat.rooms.get(chat.current);
  const m = room && room.byId.get(id);
  if (!m || !m.file) return;
  const url = await chat.fileUrl(room, m);
  if (!url) { view.notice(t("file.goneLong", { name: m.file.name }), true); return; }
  const link = document.createElement("a");
  link.href = url;
  link.download = m.file.name || "file";
  link.rel = "noopener";
  document.body.append(link);
  link.click();
  link.remove();
}

// Files by the button, by dropping them on the room, or by pasting them in the message box.
async function sendFiles(files) {
  for (const file of files) {
    view.notice(t("file.sending", { name: file.name }));
    const error = await chat.sendFile(file);
    view.notice(error ? `${file.name}: ${error}` : "", Boolean(error));
    if (error) return;
  }
}
$("attach").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", () => {
  const files = [...$("attach-input").files];
  $("attach-input").value = "";
  sendFiles(files);
});
$("room").addEventListener("dragover", (e) => {
  if ([...e.dataTransfer.types].includes("Files")) e.preventDefault();
});
$("room").addEventListener("drop", (e) => {
  if (!e.dataTransfer.files.length) return;
  e.preventDefault();
  sendFiles([...e.dataTransfer.files]);
});
$("composer-text").addEventListener("paste", (e) => {
  const files = [...(e.clipboardData?.files || [])];
  if (!files.length) return;
  e.preventDefault();
  sendFiles(files);
});

// The composer while a reply or an edit is written: the bar says which, an edit starts from
// the message's text, and a cancelled edit (`false`; a line sent with it is `null`) takes it
// out again.
let editing = false;
function composing(state) {
  view.composing(state);
  if (state && state.mode === "edit" && !state.again) {
    area.value = state.text;
    area.setSelectionRange(area.value.length, area.value.length);
  } else if (state === false && editing) {
    area.value = "";
  }
  editing = Boolean(state && state.mode === "edit");
  if (state) area.focus();
}
$("composing-cancel").addEventListener("click", () => chat.stopComposing());

// -- composer -------------------------------------------------------------------------------

const area = $("composer-text");
let choices = [];
let selected = 0;

// What is being completed: a command at the start, or an @name before the cursor.
function completionsFor() {
  const before = area.value.slice(0, area.selectionStart);
  if (/^\/\S*$/.test(before)) {
    const word = before.slice(1).toLowerCase();
    return chat.commands
      .filter((c) => c.name.slice(1).startsWith(word))
      .map((c) => ({ label: c.usage, help: c.help, insert: `${c.name} `, from: 0 }));
  }
  const at = before.match(/(?:^|[^\p{L}\p{N}_@])@([\p{L}\p{N}_.-]*)$/u);
  const room = chat.rooms.get(chat.current);
  if (at && room) {
    const word = at[1].toLowerCase();
    return [...room.members]
      .filter((n) => n.toLowerCase().startsWith(word))
      .sort()
      .map((n) => ({ label: `@${n}`, help: "", insert: `@${n} `, from: before.length - at[1].length - 1 }));
  }
  return [];
}

function refresh() {
  choices = completionsFor();
  selected = Math.min(selected, Math.max(choices.length - 1, 0));
  view.completions(choices, selected);
}

function pick(i) {
  const choice = choices[i];
  const end = area.selectionStart;
  area.value = area.value.slice(0, choice.from) + choice.insert + area.value.slice(end);
  const caret = choice.from + choice.insert.length;
  area.setSelectionRange(caret, caret);
  choices = [];
  view.completions([], 0);
  area.focus();
}

// Nothing typed is lost: a line stays in the box until the node has taken it (its `ack`, or
// whatever answers a command). Refused, here or by the node, it stays there, editable, with
// the reason next to it. Meanwhile the box may be edited and more sent: an answer takes out
// of the box, or puts back, only the text it is about.
const sending = new Map(); // line tag → the text sent, until the node answers
let tags = 0;

// Where `text` stands in the box on lines of its own: its index, or -1.
function findLine(value, text) {
  for (let at = value.indexOf(text); at >= 0; at = value.indexOf(text, at + 1)) {
    const end = at + text.length;
    const alone = (at === 0 || value[at - 1] === "\n")
      && (value[end] === "\n" || !value.slice(end).trim());
    if (alone) return at;
  }
  return -1;
}

// Replaces `removed` characters at `start` with `inserted`, the caret and the selection
// staying on the characters they were on.
function edit(start, removed, inserted) {
  const moved = (p) => {
    if (p < start) return p;
    if (p >= start + removed) return p - removed + inserted.length;
    return start + inserted.length;
  };
  const [from, to] = [moved(area.selectionStart), moved(area.selectionEnd)];
  area.value = area.value.slice(0, start) + inserted + area.value.slice(start + removed);
  area.setSelectionRange(from, to);
}

// The node took `text`: out of the box, if it is still there as sent (an edit is kept).
function takeOut(text) {
  const value = area.value;
  const at = findLine(value, text);
  if (at < 0) return;
  let start = at;
  let end = at + text.length;
  if (!value.slice(end).trim()) end = value.length;
  else end += 1; // its line's newline
  if (end === value.length && start > 0) start -= 1; // the newline before the last line
  edit(start, end - start, "");
}

// `text` was refused: it stays in the box, or goes back in front of what is there now.
function putBack(text) {
  if (findLine(area.value, text) >= 0) return;
  if (!area.value.trim()) edit(0, area.value.length, text);
  else edit(0, 0, `${text}\n`);
}

function refused(reason) {
  $("composer-error").textContent = reason;
  $("composer-error").hidden = !reason;
  if (reason) area.setAttribute("aria-invalid", "true");
  else area.removeAttribute("aria-invalid");
}

function showSending() {
  $("composer").classList.toggle("sending", sending.size > 0);
}

function send() {
  const text = area.value.replace(/\s+$/, "");
  if (!text.trim()) return;
  if ([...sending.values()].includes(text)) return; // on its way already: not twice
  view.notice(""); // what sending says (a hint, an error) replaces the last notice
  tags += 1;
  const { error, pending } = chat.submit(area.value, tags);
  refused(error);
  if (error) return;
  notifier.wrote();
  if (pending) sending.set(tags, text);
  else takeOut(text); // done here (/clear): nothing to wait for
  showSending();
  choices = [];
  view.completions([], 0);
}

// The node answered a line: taken (out of the box), or refused (it stays, with the reason).
function answered({ tag, reason }) {
  const text = sending.get(tag);
  if (text === undefined) return; // given back already, when the connection dropped
  sending.delete(tag);
  if (reason) {
    putBack(text);
    refused(reason);
  } else {
    takeOut(text);
  }
  showSending();
}

area.addEventListener("input", () => {
  selected = 0;
  refresh();
  if (!area.value.trim()) refused(""); // nothing left that the reason was about
});
area.addEventListener("keydown", (e) => {
  if (choices.length) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      selected = (selected + (e.key === "ArrowDown" ? 1 : choices.length - 1)) % choices.length;
      view.completions(choices, selected);
      return;
    }
    if (e.key === "Tab" || (e.key === "Enter" && !e.shiftKey && choices[selected].insert.trim() !== area.value.trim())) {
      e.preventDefault();
      pick(selected);
      return;
    }
    if (e.key === "Escape") { e.preventDefault(); choices = []; view.completions([], 0); return; }
  }
  if (e.key === "Escape" && chat.composing) { e.preventDefault(); chat.stopComposing(); return; }
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});
$("completions").addEventListener("mousedown", (e) => {
  const li = e.target.closest("li[data-index]");
  if (li) { e.preventDefault(); pick(Number(li.dataset.index)); }
});
$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });

// -- start ----------------------------------------------------------------------------------

try {
  pendingInvite = JSON.parse(sessionStorage.getItem(INVITE)) || null;
} catch {
  pendingInvite = null;
}
box.forgetStoredKeys();
readInvite();
if (!localStorage.getItem(USER)) showLogin();
else api.session().then((found) => (found === null ? showLogin(t("login.again")) : showChat()));
