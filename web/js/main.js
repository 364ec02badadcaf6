// Wiring: login screen, socket, chat state, view, composer, invite links.
import * as api from "./api.js";
import * as box from "./crypto.js";
import { Chat } from "./chat.js";
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
  onAuthLost: (reason) => showLogin(reason ? `Please log in again (${reason}).` : ""),
});
const chat = new Chat(socket, changed);
const view = new View(chat);
let readyJoined = false; // the first-room join happens once per login
let pendingInvite = null; // an invite link opened before the socket was ready

function changed(what, arg) {
  if (what === "rooms") view.rooms();
  else if (what === "room") { view.room(); fillScreen(); }
  else if (what === "members" && arg?.name === chat.current) view.members();
  else if ((what === "messages" || what === "older") && arg?.name === chat.current) {
    view.messages();
    fillScreen();
  }
  else if (what === "grown" && arg.room.name === chat.current) view.grown(arg.m);
  else if (what === "notice") view.notice(arg);
  else if (what === "error") view.notice(arg, true);
  else if (what === "identity") view.identity();
  else if (what === "invite") view.invite(arg, inviteUrl(arg.name, box.loadKey(arg.name)));
  else if (what === "ready") {
    $("me").textContent = chat.user;
    localStorage.setItem(USER, chat.user);
    if (!arg.rooms.length && !chat.rooms.size && !pendingInvite && !readyJoined) {
      readyJoined = true;
      chat.join("lobby", { create: true }); // a first room to land in
    }
    openPendingInvite();
  }
}

// A message in flight when the connection dropped may or may not be stored: put it back
// in the message box and say so, rather than lose it or send it twice behind the user's back.
function keepUnacked() {
  const lines = chat.takeUnacked();
  if (!lines.length) return;
  const area = $("composer-text");
  if (!area.value.trim()) area.value = lines.join("\n");
  view.notice("The connection dropped before the node confirmed your last message. If it does "
    + "not appear once reconnected, send it again: it is back in the message box.", true);
}

// -- login ----------------------------------------------------------------------------------

function showLogin(message = "") {
  socket.stop();
  chat.reset();
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

async function account(action) {
  const form = $("login-form");
  if (!form.reportValidity()) return;
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  $("login-error").textContent = action === api.register ? "Creating the account…" : "Logging in…";
  try {
    const wrap = await action($("username").value.trim(), $("password").value);
    box.rememberWrap(wrap); // this tab only: it unlocks the identity key, never sent
    $("password").value = "";
    $("login-error").textContent = "";
    showChat();
  } catch (error) {
    $("login-error").textContent = error.message;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

$("login-form").addEventListener("submit", (e) => { e.preventDefault(); account(api.login); });
$("do-register").addEventListener("click", () => account(api.register));
$("logout").addEventListener("click", async () => {
  socket.stop();
  await api.logout();
  showLogin("You are logged out.");
});

// -- rooms ----------------------------------------------------------------------------------

function inviteUrl(room, key) {
  return `${location.origin}/#room=${encodeURIComponent(room)}&key=${box.encodeKey(key)}`;
}

$("rooms").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-room]");
  if (!button) return;
  const room = chat.rooms.get(button.dataset.room);
  // a mention elsewhere, or an invitation: join it (a conversation needs no join)
  if (room && !room.joined && !room.direct) chat.join(room.name, { focus: true });
  chat.select(button.dataset.room);
  $("composer-text").focus();
});

$("member-list").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-user]");
  if (!button) return;
  chat.openDirect(button.dataset.user);
  $("composer-text").focus();
});

$("new-room").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("room-name-input").value.trim().replace(/^#/, "");
  const protect = $("room-protected").checked;
  if (!name) return;
  // A key-protected room gets its key here, on this device; the node never sees it.
  const key = protect ? box.newKey() : null;
  if (!chat.join(name, { create: true, protect, key, focus: true })) {
    view.notice("not connected: try again when the node is back", true);
    return;
  }
  $("room-name-input").value = "";
  $("room-protected").checked = false;
});

// An invite link: #room=NAME&key=BASE64URL (the CLI client reads the same fragment).
function readInvite() {
  const params = new URLSearchParams(location.hash.slice(1));
  const room = (params.get("room") || "").replace(/^#/, "").toLowerCase();
  if (!room) return;
  const key = box.decodeKey(params.get("key") || "");
  // Keep the key out of the address bar once it is stored on this device.
  history.replaceState(null, "", location.pathname);
  if (params.has("key") && !key) {
    view.notice("the invite link's key is damaged: ask for the link again", true);
    return;
  }
  if (key) {
    box.saveKey(room, key);
    chat.redecode(room);
  }
  pendingInvite = { room, protect: Boolean(key) };
  openPendingInvite();
}

function openPendingInvite() {
  if (!pendingInvite || !socket.ready) return;
  const { room, protect } = pendingInvite;
  pendingInvite = null;
  chat.join(room, { create: true, protect, focus: true });
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

function send() {
  view.notice(""); // what sending says (a hint, an error) replaces the last notice
  const error = chat.submit(area.value);
  if (error) { view.notice(error, true); return; }
  area.value = "";
  choices = [];
  view.completions([], 0);
}

area.addEventListener("input", () => { selected = 0; refresh(); });
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

readInvite();
if (!localStorage.getItem(USER)) showLogin();
else api.session().then((found) => (found === null ? showLogin("Please log in again.") : showChat()));
