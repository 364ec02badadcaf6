// Chat state: rooms, messages (deduplicated by id, kept in id order), unread counts,
// and what each node frame does to them. No DOM here: ui.js draws, this module decides.
// Keys are another module's each: keyring.js (room keys, on the node), trust.js (peers'
// keys, signed boxes checked) and invitations.js (which key a room is given).
import * as api from "./api.js";
import * as box from "./crypto.js";
import { t } from "./i18n.js";
import { Invitations } from "./invitations.js";
import { Keyring } from "./keyring.js";
import * as sealed from "./sealed.js";
import { looseKey, PENDING, Trust } from "./trust.js";

const PAGE = 50;
const SEEK = 20; // pages a click on a quote looks back for the message, at most
// Images the page shows inline (decrypted here, shown from a blob: URL); any other file is
// saved, never opened by the page.
export const IMAGES = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const FILE_URLS = 100; // blob: URLs kept at once (each holds a file's bytes)
const TOPIC_CHARS = 300; // the node's topic limit (docs/protocol.md, topic)
const offline = () => t("chat.offline");
// Commands this page handles itself: they seal with identity keys the node never sees.
const LOCAL_COMMANDS = ["/msg", "/invite", "/whois", "/trust", "/rotate"];
const LOCAL_NAMES = new Set(LOCAL_COMMANDS);
// Their usage and help in the current language (the node says its own in the account's).
function localCommands() {
  return LOCAL_COMMANDS.map((name) => {
    const key = name.replace("/", ".");
    return { name, usage: t(`usage${key}`), help: t(`command${key}`) };
  });
}
// The node's mention syntax (docs/protocol.md, Mentions).
const MENTION = /(?<![\p{L}\p{N}_@])@([\p{L}\p{N}_.-]+)/gu;

// Code points, as the node counts characters (a UTF-16 length counts emoji twice).
function chars(text) {
  return [...text].length;
}

// Which bot a message calls ("Olga, ...", "ольга: ...", or "@Olga" anywhere), as the node
// decides it (onionchat/addressing.py); "" for none. Only for a hint (a bot that cannot read
// a key-protected room): the node decides the call itself.
export function botCaller(bots) {
  const byLabel = new Map();
  for (const [name, aliases] of Object.entries(bots)) {
    for (const label of [name, ...aliases]) byLabel.set(label.toLowerCase(), name);
  }
  if (!byLabel.size) return () => "";
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const labels = [...byLabel.keys()].sort((a, b) => b.length - a.length).map(escape).join("|");
  const start = new RegExp(`^\\s*@?(${labels})(?:\\s*[,:]|\\s)`, "iu");
  const anywhere = new RegExp(`(?<![\\p{L}\\p{N}_@])@(${labels})(?![\\p{L}\\p{N}_])`, "iu");
  return (text) => {
    const match = text.match(start) || text.match(anywhere);
    return match ? byLabel.get(match[1].toLowerCase()) : "";
  };
}

// Whether `text` mentions the user (named `user`, with the node's key `key`): a highlight.
export function mentions(text, user, key = "") {
  if (!text || !user) return false;
  const me = looseKey(user);
  for (const m of text.matchAll(MENTION)) {
    const named = looseKey(m[1].replace(/[.-]+$/, ""));
    if (named === me || named === key) return true;
  }
  return false;
}

function newRoom(name) {
  return {
    name, protected: false, topic: "", topicBox: "", members: new Set(),
    byId: new Map(), ids: [], more: false, loading: false, joined: false,
    unread: 0, mentioned: false, clearedAt: "",
    unreadFrom: "", // the first unread message's id: the "new messages" line goes before it
    direct: false, peer: "", spelled: false, loaded: false, invitedBy: "", readers: new Set(),
    topicBy: "", topicTs: 0,
    bodyIds: new Map(), // a box's own id → the id of the first message that carried it
    // Edits and reactions: kept apart from the lines (`ids`), each by the message it is about.
    related: new Map(), // id → the edit or reaction as shown (decoded)
    editsOf: new Map(), // message id → Set of its edits' ids
    reactionsOf: new Map(), // message id → Set of its reactions' ids
    candidates: [], // keys from invitations, until the room's boxes say which one opens them
    alerts: [], // what the user must see in this room: { id, text, actions: [{ label, run }] }
  };
}

export class Chat {
  constructor(socket, onChange) {
    this.socket = socket;
    this.changed = onChange; // (what, room?) → redraw
    this.user = "";
    this.userKey = ""; // the node's key of our name (ready.key)
    this.limits = {};
    this.rooms = new Map();
    this.current = "";
    this.commands = [];
    this.pendingKeys = new Map(); // join ref → { key, share, fresh } for a room joined with a key
    this.creating = new Map(); // join ref → { name, focus }: create it if it does not exist
    this.seq = 0;
    // Typed lines the node has not answered yet: ref of the frame whose answer settles the
    // line → { text, tag }. The answer becomes a "line" change: { tag, reason } ("" when
    // the node took it, else why it refused it).
    this.lines = new Map();
    this.typed = null; // the line being submitted
    // The keys: room keys (keyring.js), whom we believe (trust.js), invitations.
    this.keyring = new Keyring(socket, () => this.redecodeAll());
    this.trust = new Trust(this.keyring, this);
    this.invites = new Invitations(this.keyring, this.trust, this);
    this.resetIdentity();
  }

  // The account's key pair (null until unwrapped or made) and what the user is told of it.
  resetIdentity() {
    this.identity = null;
    this.identityState = "";
    this.pendingIdentity = null;
    this.bots = null; // the node's bots: a function text → the name of the bot it calls, or ""
    this.publicKeys = new Map(); // conversation room (`key.direct`) → the other user's key
    this.directOf = new Map(); // a user's name, as typed or as the node spells it → room
    this.nameOf = new Map(); // conversation room → the other user's name as the node spells it
    this.keyWaits = new Map(); // key ref → { user, then, room }
    this.fetching = new Set(); // rooms whose peer's key is being fetched
    this.signer = null; // the Ed25519 key pair that goes with the identity (sealed.signingKeys)
    this.published = null; // ready.identity, to unlock this tab later
    this.keyring.reset();
    this.trust.reset();
    this.invites.reset();
  }

  // The room's keys, newest first.
  keysOf(name) {
    return this.keyring.keysOf(name);
  }

  ref(prefix) {
    this.seq += 1;
    return `${prefix}:${this.seq}`;
  }

  room(name) {
    if (!this.rooms.has(name)) this.rooms.set(name, newRoom(name));
    return this.rooms.get(name);
  }

  reset() {
    this.rooms.clear();
    this.current = "";
    this.user = "";
    this.userKey = "";
    this.lines.clear();
    this.resetIdentity();
  }

  // -- requests ---------------------------------------------------------------------------

  // `key`: the room key, kept under the name the node answers with (`share`: then show the
  // invite link, for a room made here).
  // `fresh`: a new room only (its key was just made here: never over an existing room's).
  // `create: "missing"`: join the room whatever its mode, or create an open one.
  join(name, { create = false, protect = false, fresh = false, key = null, share = true, focus = false } = {}) {
    const ref = this.ref("join");
    if (focus) this.wantFocus = ref;
    if (key) this.pendingKeys.set(ref, { key, share, fresh });
    const frame = { type: "join", room: name, ref };
    if (create === "missing") this.creating.set(ref, { name, focus });
    else if (create) frame.create = true;
    if (protect) frame.protected = true;
    if (fresh) frame.new = true;
    return this.socket.send(frame);
  }

  older(room) {
    if (!room.more || room.loading || !room.ids.length) return;
    room.loading = true;
    this.socket.send({ type: "history", room: room.name, before: room.ids[0], limit: PAGE,
      ref: this.ref("older") });
  }

  // A typed line. Returns { error } when it is refused here (nothing went out: the reason
  // is for the user), else { pending }: whether frames went out whose answer settles the
  // line (a "line" change with this `tag` then tells how), or it was done here at once.
  submit(line, tag) {
    const room = this.rooms.get(this.current);
    const text = line.replace(/\s+$/, "");
    if (!text.trim()) return { error: "", pending: false };
    if (!this.socket.ready) return { error: offline(), pending: false };
    this.typed = { text, tag, pending: false };
    try {
      let error;
      if (text.startsWith("/") && !text.startsWith("//")) error = this.command(text, room);
      else if (!room) error = t("chat.joinFirst");
      else error = this.say(room, text.startsWith("//") ? text.slice(1) : text, false);
      return { error, pending: !error && this.typed.pending };
    } finally {
      this.typed = null;
    }
  }

  tooLong(text, what = "message", max = this.limits.max_text_chars) {
    const n = chars(text);
    return max && n > max ? t(`chat.tooLong.${what}`, { count: n, max }) : "";
  }

  // Sends a frame for a typed line, which then waits for its answer; "" or why not.
  sendLine(frame, typed = this.typed) {
    const max = this.limits.max_frame_bytes;
    const size = max ? new TextEncoder().encode(JSON.stringify({ v: 1, ...frame })).length : 0;
    if (size > max) return t("chat.tooBig", { size, max });
    if (!this.socket.send(frame)) return offline();
    this.waitFor(frame.ref, typed);
    return "";
  }

  waitFor(ref, typed) {
    if (!typed) return;
    this.lines.set(ref, typed);
    typed.pending = true;
  }

  // The node answered the frame of a typed line: refused (`reason`) or done.
  settle(ref, reason = "") {
    const typed = this.lines.get(ref);
    if (!typed) return false;
    this.lines.delete(ref);
    if (reason && typed.composing && !this.composing) this.compose(typed.composing.mode, typed.composing.id, true);
    this.changed("line", { tag: typed.tag, reason });
    return true;
  }

  // A line refused after it left submit (say, once a key came): tell it like an answer.
  refuse(typed, reason) {
    if (typed) this.changed("line", { tag: typed.tag, reason });
    else this.changed("error", reason);
  }

  // `about`: { reply | edit | react: id } (a line typed while composing a reply or an edit
  // takes the composer's).
  say(room, text, me, about = null) {
    const long = this.tooLong(text);
    if (long) return long;
    about = about || this.composed(room);
    if (about && "me" in about) me = about.me; // an edit keeps what the message was
    if (room.direct) return this.sayDirect(room.peer, text, me, false, about);
    const frame = { type: "send", room: room.name, ref: this.ref("send"), ...about };
    if (me) frame.me = true;
    if (room.protected) {
      const sealedBox = this.sealFor(room, sealed.kindOf({ me, ...about }), text);
      if (sealedBox.error) return sealedBox.error;
      frame.box = sealedBox.box;
      const bot = me || !this.bots ? "" : this.bots(text);
      if (bot && !room.readers.has(bot)) {
        // The node cannot read this room, so neither can the bot: say so here.
        this.changed("notice", t("chat.botCannotRead", { bot, room: room.name }));
      }
    } else {
      frame.text = text;
    }
    return this.sendLine(frame);
  }

  // A box for a key-protected room: signed, and bound to the room, us, its kind (and the
  // message it is about: `{ kind, re }`, or a kind alone) and now.
  sealFor(room, kind, text, file = undefined) {
    const key = this.keysOf(room.name)[0];
    if (!key) return { error: t("chat.noKey", { room: room.name, reason: this.keyring.noKeyReason() }) };
    if (!this.signer) return { error: this.identityProblem() };
    const { kind: k, re } = typeof kind === "string" ? { kind } : kind;
    return { box: sealed.sealBody(key, this.signer, { room: room.name, sender: this.user, kind: k, re, text, file }) };
  }

  // -- files ---------------------------------------------------------------------------------

  // Send a file to the room in view: sealed here first with a key of its own in a key-protected
  // room or a conversation (that key goes in the message's box), then uploaded, then carried
  // by a message named after it. Resolves to "" or why not.
  async sendFile(file) {
    const room = this.rooms.get(this.current);
    if (!room) return t("chat.joinFirst");
    const max = this.limits.max_file_bytes;
    if (!max) return t("file.none");
    const hidden = room.protected || room.direct;
    const size = file.size + (hidden ? 40 : 0); // a secretbox's nonce and tag
    if (size > max) return t("file.tooLarge", { size: size.toLocaleString("en"), max: max.toLocaleString("en") });
    if (room.direct && !room.ids.length) return t("file.firstMessage");
    if (!this.socket.ready) return OFFLINE;
    const name = (file.name || "file").slice(0, 255);
    const type = /^[a-z0-9.+-]{1,40}\/[a-z0-9.+-]{1,80}$/.test(file.type) ? file.type : "application/octet-stream";
    let bytes = new Uint8Array(await file.arrayBuffer());
    const key = hidden ? box.newKey() : null;
    if (key) bytes = box.sealFile(key, bytes);
    let sent;
    try {
      sent = await api.upload(room.name, bytes);
    } catch (error) {
      return error.message;
    }
    if (!hidden) {
      return this.sendLine({ type: "send", room: room.name, text: name, ref: this.ref("send"),
        file: { id: sent.id, size: sent.size, name, type } }, null);
    }
    const descriptor = { id: sent.id, name, type, size: sent.size, key: box.encodeKey(key) };
    if (room.direct) return this.sayDirect(room.peer, name, false, false, null, descriptor);
    const sealedBox = this.sealFor(room, "message", name, descriptor);
    if (sealedBox.error) return sealedBox.error;
    return this.sendLine({ type: "send", room: room.name, box: sealedBox.box, ref: this.ref("send"),
      file: { id: sent.id, size: sent.size } }, null);
  }

  // A blob: URL of a message's file as it was before it was sealed, or null when it is gone
  // or does not open. Made once per message; the oldest let go past FILE_URLS.
  fileUrl(room, m) {
    this.fileUrls = this.fileUrls || new Map();
    if (!this.fileUrls.has(m.id)) {
      this.fileUrls.set(m.id, this.fetchFile(room, m));
      if (this.fileUrls.size > FILE_URLS) {
        const [oldest, url] = this.fileUrls.entries().next().value;
        this.fileUrls.delete(oldest);
        url.then((u) => u && URL.revokeObjectURL(u));
      }
    }
    return this.fileUrls.get(m.id);
  }

  async fetchFile(room, m) {
    const raw = await api.download(room.name, m.file.id).catch(() => null);
    if (!raw) return null;
    const key = m.file.key ? box.decodeKey(m.file.key) : null;
    const bytes = m.file.key ? box.openFile(key, raw) : raw;
    if (!bytes) return null;
    // shown inline only as an image the browser decodes, never as a page or a script
    const type = IMAGES.includes(m.file.type) ? m.file.type : "application/octet-stream";
    return URL.createObjectURL(new Blob([bytes], { type }));
  }

  // The relation of the line being typed in this room: { reply: id } or { edit: id }, taken
  // (the composer is done with it once the line goes).
  composed(room) {
    const c = this.composing;
    if (!c || c.room !== room.name || !this.typed) return null;
    this.typed.composing = c; // back in the composer if the node refuses the line
    this.composing = null;
    this.changed("composing", null);
    return c.mode === "edit" ? { edit: c.id, me: c.me } : { reply: c.id };
  }

  // Lines sent but not answered when the connection dropped: maybe stored, maybe not.
  takeUnacked() {
    const lines = [...new Set(this.lines.values())];
    this.lines.clear();
    return lines;
  }

  command(line, room) {
    const [word, ...rest] = line.slice(1).split(" ");
    const name = word.toLowerCase(); // a command's name, not a user's
    const args = rest.join(" ").trim();
    if (name === "clear") {
      // Local only: the node keeps everything.
      if (room) { room.clearedAt = room.ids[room.ids.length - 1] || ""; this.changed("messages", room); }
      return "";
    }
    if (name === "help" && !args && this.commands) { this.changed("help", this.commands); return ""; }
    if (name === "msg") return this.msgCommand(args);
    if (name === "invite") return this.invites.inviteCommand(room, args);
    if (name === "rotate") return this.invites.rotateCommand(room);
    if (name === "whois") return this.trust.whoisCommand(args);
    if (name === "trust") return this.trust.trustCommand(args);
    if (name === "me" && args) {
      const long = this.tooLong(args);
      if (long) return long;
    }
    if (room && room.direct && (name === "me" || name === "topic")) {
      if (name === "me") return args ? this.say(room, args, true) : t("chat.usage", { usage: t("usage.me") });
      return t("chat.noTopic");
    }
    if (room && room.protected && (name === "me" || name === "topic")) {
      // The node refuses plain text in a key-protected room: seal here.
      if (name === "me") return args ? this.say(room, args, true) : t("chat.usage", { usage: t("usage.me") });
      if (!args) { this.changed("notice", t("chat.topicOf", { room: room.name, topic: this.topicText(room) || t("chat.none") })); return ""; }
      const long = this.tooLong(args, "topic", TOPIC_CHARS);
      if (long) return long;
      const sealedBox = this.sealFor(room, "topic", args);
      if (sealedBox.error) return sealedBox.error;
      return this.sendLine({ type: "topic", room: room.name, box: sealedBox.box, ref: this.ref("topic") });
    }
    const frame = { type: "command", line, ref: this.ref("cmd") };
    if (room && !room.direct) frame.room = room.name;
    return this.sendLine(frame);
  }

  // -- frames from the node ---------------------------------------------------------------

  handle(frame) {
    const handler = this[`on_${frame.type}`];
    if (handler) handler.call(this, frame);
    // An answer with a line's ref settles it (errors and keys see to their own).
    if (frame.ref !== undefined && frame.type !== "error" && frame.type !== "key") this.settle(frame.ref);
  }

  on_ready(frame) {
    this.user = frame.user;
    this.userKey = frame.key || "";
    this.limits = frame.limits || {};
    this.bots = botCaller(frame.bots || {});
    this.socket.send({ type: "command", line: "/help", ref: "help" });
    // Re-enter every room we were in (a reconnect), then those the account keeps.
    const names = new Set([...this.rooms.values()].filter((r) => r.joined).map((r) => r.name));
    for (const name of frame.rooms) names.add(name);
    for (const r of this.rooms.values()) r.joined = false;
    for (const name of names) this.join(name);
    for (const name of frame.direct || []) this.makeDirect(this.room(name), this.peerOf(name));
    for (const r of this.rooms.values()) {
      if (r.direct && r.loaded) this.catchUp(r);
    }
    this.invites.ready(frame.invitations);
    this.keyWaits.clear(); // answers lost with the old connection
    this.fetching.clear();
    this.trust.reconnected();
    this.published = frame.identity || null;
    this.keyring.ready(frame.keyring);
    this.role = frame.role || "member";
    if (this.role === "guest") { // no password: no keys to open
      this.identityState = "guest";
      this.changed("identity");
    } else this.setupIdentity(frame.identity);
    this.changed("rooms");
    this.changed("ready", frame);
  }

  // The account's language changed (on this device or another): "" for the browser's.
  on_language(frame) {
    this.changed("language", frame.lang || "");
  }

  on_joined(frame) {
    const info = frame.room;
    const room = this.room(info.name);
    const fresh = room.ids.length === 0;
    const lastSeen = room.ids[room.ids.length - 1] || "";
    room.joined = true;
    room.protected = Boolean(info.protected);
    room.topic = info.topic || "";
    room.topicBox = info.topic_box || "";
    room.topicBy = info.topic_by || "";
    room.topicTs = info.topic_ts || 0;
    room.members = new Set(frame.members);
    room.readers = new Set(info.readers || []);
    this.creating.delete(frame.ref);
    const pending = this.pendingKeys.get(frame.ref);
    this.pendingKeys.delete(frame.ref);
    // Back after a drop, what arrived meanwhile counts as unread like live messages.
    this.merge(room, frame.history, fresh ? null : lastSeen);
    // kept under the room's name as the node spells it, whatever the link or form said
    if (pending) this.invites.keyFromLink(room, pending);
    this.invites.settleCandidates(room);
    if (fresh) room.more = Boolean(frame.more);
    // After a drop: page back until we meet the last message we saw, so nothing is missed.
    else this.fillGap(room, frame.history, frame.more, lastSeen);
    // Show the room the user asked for (form, link or /join), or the first one.
    if (!this.current || frame.ref === this.wantFocus || frame.ref?.startsWith("cmd:")) {
      this.current = room.name;
      room.unread = 0;
      room.mentioned = false;
    }
    this.changed("rooms");
    this.changed("room", room);
  }

  alert(room, id, text, actions = []) {
    room.alerts = room.alerts.filter((a) => a.id !== id).concat([{ id, text, actions }]);
    this.changed("header", room);
  }

  dismiss(room, id) {
    room.alerts = room.alerts.filter((a) => a.id !== id);
    this.changed("header", room);
  }

  // A button of an alert was pressed.
  act(name, id, index) {
    const room = this.rooms.get(name);
    const found = room && room.alerts.find((a) => a.id === id);
    if (found && found.actions[index]) found.actions[index].run();
  }

  fillGap(room, page, more, lastSeen) {
    if (!lastSeen || !more || !page.length || page[0].id <= lastSeen) return;
    this.socket.send({ type: "history", room: room.name, before: page[0].id, limit: 200,
      ref: `gap:${lastSeen}` });
  }

  on_history(frame) {
    const room = this.room(frame.room);
    room.loaded = true;
    const spelled = room.spelled;
    if (room.direct) for (const m of frame.messages) this.spell(room, m);
    if (room.spelled !== spelled) { this.changed("rooms"); this.changed("header", room); }
    const gap = frame.ref?.startsWith("gap:") ? frame.ref.slice(4) : null;
    this.merge(room, frame.messages, gap);
    if (gap) {
      this.fillGap(room, frame.messages, frame.more, frame.ref.slice(4));
    } else {
      room.more = Boolean(frame.more);
      room.loading = false;
    }
    this.changed("older", room);
    if (room.seeking) {
      const { id } = room.seeking;
      room.seeking.pages -= 1;
      if (room.byId.has(id)) { room.seeking = null; this.changed("seek", { room, id }); }
      else if (!room.more || room.seeking.pages <= 0) { room.seeking = null; this.changed("notice", t("chat.notInHistory")); }
      else this.older(room);
    }
  }

  on_readers(frame) {
    const room = this.room(frame.room);
    room.readers = new Set(frame.bots);
    this.changed("room", room);
  }

  // Ours stored, or another device's keyring (keyring.js).
  on_keyring(frame) {
    this.keyring.got(frame);
  }

  on_invited(frame) {
    this.invites.got(frame);
  }

  // A bot's answer so far: shown in place, and replaced by the message once complete.
  on_delta(frame) {
    const room = this.room(frame.room);
    const shown = room.byId.get(frame.id);
    if (shown && !shown.growing) return;
    const m = { ...this.decode(room, frame, true), ts: shown?.ts || Date.now(), growing: true,
      mentionsMe: false };
    if (shown) {
      room.byId.set(frame.id, m);
      this.changed("grown", { room, m });
    } else {
      room.byId.set(frame.id, m);
      room.ids.splice(this.position(room.ids, frame.id), 0, frame.id);
      this.changed("messages", room);
    }
  }

  on_message(frame) {
    const room = this.room(frame.room);
    if (room.byId.get(frame.id)?.growing) {
      const m = this.decode(room, frame);
      room.byId.set(frame.id, m);
      this.changed("grown", { room, m });
      return;
    }
    this.trust.live(frame.sender);
    if (frame.to !== undefined) {
      this.makeDirect(room, "");
      this.spell(room, frame);
    }
    if (frame.edit || frame.react) {
      if (room.related.has(frame.id)) return;
      this.redrawAbout(room, [this.relate(room, this.decode(room, frame))]);
      return;
    }
    const added = this.merge(room, [frame], "");
    // live, never a page of history: notify.js tells the user (before it is drawn)
    if (added) this.changed("arrived", { room, m: room.byId.get(frame.id) });
    if (added && room.name !== this.current) this.changed("rooms");
    this.changed("messages", room);
    if (room.direct && frame.box === undefined) this.changed("header", room); // "not sealed" said
  }

  on_mention(frame) {
    const room = this.room(frame.room);
    room.mentioned = true;
    room.unread += 1;
    const m = { id: frame.id, sender: frame.sender, text: frame.text, mentionsMe: true };
    this.changed("arrived", { room, m }); // told like a live message (notify.js)
    this.changed("rooms");
  }

  on_topic(frame) {
    const room = this.room(frame.room);
    room.topic = frame.text || "";
    room.topicBox = frame.box || "";
    room.topicBy = frame.by || "";
    room.topicTs = frame.ts || 0;
    this.changed("room", room);
  }

  on_presence(frame) {
    const room = this.room(frame.room);
    if (frame.state === "join") room.members.add(frame.user);
    else room.members.delete(frame.user);
    this.changed("members", room);
  }

  on_who(frame) {
    if (this.invites.rotations.has(frame.ref)) { this.invites.rotated(frame); return; }
    const room = this.room(frame.room);
    room.members = new Set(frame.members);
    this.changed("members", room);
    this.changed("notice", t("chat.who", { room: room.name, members: frame.members.join(", ") }));
  }

  on_left(frame) {
    this.rooms.delete(frame.room);
    if (this.current === frame.room) this.current = this.rooms.keys().next().value || "";
    this.changed("rooms");
    this.changed("room", this.rooms.get(this.current));
    if (frame.reason) this.changed("notice", frame.reason); // staff took us out: say who and why
  }

  on_deleted(frame) {
    const room = this.rooms.get(frame.room);
    if (!room) return;
    const abouts = [];
    for (const id of frame.ids) {
      if (room.related.has(id)) { abouts.push(this.unrelate(room, id)); continue; }
      const m = room.byId.get(id);
      if (!m) continue;
      // its place kept, its words gone (and any quote of it says so)
      room.byId.set(id, { ...m, text: t("message.deleted"), deleted: true, box: undefined, mentionsMe: false });
      abouts.push(id);
      if (this.composing && this.composing.id === id) this.stopComposing();
    }
    this.redrawAbout(room, abouts);
  }

  on_clear(frame) {
    const room = this.rooms.get(frame.room || this.current);
    if (room) { room.clearedAt = room.ids[room.ids.length - 1] || ""; this.changed("messages", room); }
  }

  on_rooms(frame) {
    const names = frame.rooms.map((r) => (r.protected ? t("chat.roomProtected", { room: r.name }) : `#${r.name}`));
    this.changed("notice", t("chat.rooms", { rooms: names.join(", ") || t("chat.none") }));
  }

  on_notice(frame) {
    if (frame.ref === "help") {
      // The node's own table: one "/usage   help" line per command.
      this.commands = frame.text.split("\n").slice(1).map((line) => {
        const [usage, help] = line.split(/\s{2,}/);
        return { name: usage.split(" ")[0], usage, help: help || "" };
      }).filter((c) => !LOCAL_NAMES.has(c.name));
      this.nodeCommands = this.commands;
      this.commands = this.commands.concat(localCommands());
      return;
    }
    this.changed("notice", frame.text);
  }

  on_error(frame) {
    if (this.keyWaits.has(frame.ref)) { this.keyFailed(frame); return; }
    if (frame.ref === "identity") this.pendingIdentity = null;
    if (frame.ref === "keyring" && this.keyring.refused(frame)) return;
    const creating = this.creating.get(frame.ref);
    this.creating.delete(frame.ref);
    if (creating && frame.code === "unknown_room") {
      // not there yet: make it (an open room; a key-protected one is made with its key)
      const ref = this.ref("join");
      if (this.wantFocus === frame.ref) this.wantFocus = ref;
      this.socket.send({ type: "join", room: creating.name, create: true, ref });
      return;
    }
    if (frame.ref && this.pendingKeys.has(frame.ref)) {
      // a room that exists already: the key made for it is thrown away, never used
      this.pendingKeys.delete(frame.ref);
      if (frame.code === "room_exists") {
        this.changed("error", t("chat.roomExists", { message: frame.message }));
        return;
      }
    }
    if (frame.ref?.startsWith("older:") || frame.ref?.startsWith("dm:")) for (const r of this.rooms.values()) r.loading = false;
    // about a typed line: its reason is shown by the line, which stays in the box
    if (!this.settle(frame.ref, frame.message)) this.changed("error", frame.message);
  }

  // -- messages ---------------------------------------------------------------------------

  // Adds the messages not seen yet; returns how many were new. Those newer than
  // `unreadAfter` (an id; "" for all, null for none) count as unread outside the open room.
  merge(room, messages, unreadAfter) {
    let added = 0;
    for (const m of messages) {
      if (room.byId.has(m.id) || room.related.has(m.id)) continue;
      if (m.edit || m.react) { this.relate(room, this.decode(room, m)); continue; }
      room.byId.set(m.id, this.decode(room, m));
      added += 1;
      const last = room.ids[room.ids.length - 1];
      if (!last || m.id > last) room.ids.push(m.id);
      else room.ids.splice(this.position(room.ids, m.id), 0, m.id);
      const mine = m.sender === this.user; // written on another device: read already
      if (unreadAfter !== null && m.id > unreadAfter && room.name !== this.current && !mine) {
        if (!room.unreadFrom || m.id < room.unreadFrom) room.unreadFrom = m.id;
        room.unread += 1;
        if (room.byId.get(m.id).mentionsMe) room.mentioned = true;
      }
    }
    return added;
  }

  // An edit or a reaction, filed under the message it is about (which may come later).
  relate(room, shown) {
    room.related.set(shown.id, shown);
    const index = shown.edit ? room.editsOf : room.reactionsOf;
    const about = shown.edit || shown.react;
    if (!index.has(about)) index.set(about, new Set());
    index.get(about).add(shown.id);
    return about;
  }

  unrelate(room, id) {
    const shown = room.related.get(id);
    if (!shown) return "";
    room.related.delete(id);
    const about = shown.edit || shown.react;
    (shown.edit ? room.editsOf : room.reactionsOf).get(about)?.delete(id);
    return about;
  }

  readable(m) {
    return m && !m.failed && !m.rejected && !m.pending && !m.deleted;
  }

  // What a line shows of its message: the text of its latest edit by its own writer.
  textOf(room, m) {
    if (!this.readable(m)) return { text: m.text, edited: false };
    let latest = null;
    for (const id of room.editsOf.get(m.id) || []) {
      const e = room.related.get(id);
      if (this.readable(e) && e.sender === m.sender && (!latest || e.id > latest.id)) latest = e;
    }
    return latest ? { text: latest.text, edited: true } : { text: m.text, edited: false };
  }

  // Its reactions: [{ emoji, names, mine }] in the order of sealed.REACTIONS, one per writer.
  reactionsTo(room, m) {
    const by = new Map();
    for (const id of room.reactionsOf.get(m.id) || []) {
      const r = room.related.get(id);
      if (!this.readable(r) || !sealed.REACTIONS.includes(r.text)) continue;
      if (!by.has(r.text)) by.set(r.text, new Map());
      if (!by.get(r.text).has(r.sender)) by.get(r.text).set(r.sender, r.id);
    }
    return sealed.REACTIONS.filter((e) => by.has(e)).map((emoji) => {
      const writers = by.get(emoji);
      return { emoji, names: [...writers.keys()], mine: writers.get(this.user) || "" };
    });
  }

  // The message a reply quotes: { id, sender, text } ("" text when it is not loaded here).
  quoted(room, m) {
    const target = room.byId.get(m.reply);
    if (!target) return { id: m.reply, sender: "", text: "" };
    if (target.deleted) return { id: m.reply, sender: target.sender, text: "", deleted: true };
    return { id: m.reply, sender: target.sender, text: this.textOf(room, target).text };
  }

  // Lines to draw again: the messages these edits, reactions or deletions are about, and the
  // replies that quote them.
  redrawAbout(room, abouts) {
    if (room.name !== this.current) return;
    const changed = new Set(abouts);
    for (const id of room.ids) {
      const m = room.byId.get(id);
      if (changed.has(id) || changed.has(m.reply)) this.changed("grown", { room, m });
    }
  }

  // -- replies, edits, reactions, deletions --------------------------------------------------

  // The composer answers a message, or gives one of ours a new text (until sent or cancelled).
  // `again`: a refused line's, back (the composer keeps what it holds).
  compose(mode, id, again = false) {
    const room = this.rooms.get(this.current);
    const m = room && room.byId.get(id);
    if (!this.readable(m)) return;
    if (mode === "edit" && m.sender !== this.user) return;
    this.composing = { mode, room: room.name, id, me: m.me };
    this.changed("composing", { mode, sender: m.sender, text: this.textOf(room, m).text, again });
  }

  // Cancelled (or its room left): `false`, where a line sent with it is `null`.
  stopComposing() {
    if (!this.composing) return;
    this.composing = null;
    this.changed("composing", false);
  }

  // Our reaction with `emoji` taken back, or made.
  react(id, emoji) {
    const room = this.rooms.get(this.current);
    const m = room && room.byId.get(id);
    if (!this.readable(m) || !sealed.REACTIONS.includes(emoji)) return "";
    const mine = this.reactionsTo(room, m).find((r) => r.emoji === emoji)?.mine;
    if (mine) return this.remove(mine);
    return this.say(room, emoji, false, { react: id });
  }

  remove(id) {
    const room = this.rooms.get(this.current);
    if (!room || !this.socket.ready) return offline();
    this.socket.send({ type: "delete", room: room.name, id, ref: this.ref("delete") });
    return "";
  }

  // Pages back until the message is here (a reply's quote clicked), at most `SEEK` pages.
  seek(id) {
    const room = this.rooms.get(this.current);
    if (!room) return;
    if (room.byId.has(id)) { this.changed("seek", { room, id }); return; }
    room.seeking = { id, pages: SEEK };
    this.older(room);
  }

  position(ids, id) {
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ids[mid] < id) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // What the user sees of a message: its text, or why it cannot be read (`failed`: no key
  // opens it), or why it is not shown as what it claims (`rejected`), or that its writer's
  // key is on its way (`pending`). `delta`: a bot's answer still growing (no time, no id).
  decode(room, m, delta = false) {
    const shown = { id: m.id, ts: m.ts, sender: m.sender, me: Boolean(m.me), text: m.text,
      failed: false, rejected: false, pending: false, plain: false, box: m.box, mentionsMe: false,
      reply: m.reply, edit: m.edit, react: m.react, file: m.file };
    if (m.box === undefined) {
      shown.plain = room.direct; // a direct message sent in the clear (the no-JS /msg)
    } else {
      const keys = room.direct ? [this.directKey(room)].filter(Boolean) : this.keysOf(room.name);
      const opened = keys.length ? sealed.openBody(keys, m.box) : { locked: true };
      if (opened.locked) {
        shown.failed = true;
        shown.text = t("message.cannotDecrypt", { reason: this.lockedReason(room, keys.length > 0) });
      } else {
        const { kind, re } = sealed.kindOf(m);
        const why = opened.rejected
          || this.trust.judge(room, opened.body, m.sender, kind, delta ? opened.body.ts : m.ts, delta ? "" : m.id, re);
        if (why === PENDING) {
          shown.pending = true;
          shown.text = t("message.checking", { sender: m.sender });
        } else if (why || sealed.checkFile(opened.body, m.file)) {
          shown.rejected = true;
          shown.text = t("message.rejected", { why: why || sealed.checkFile(opened.body, m.file) });
        } else {
          shown.text = opened.body.text;
          if (opened.body.file) shown.file = { ...opened.body.file };
        }
      }
    }
    const readable = !shown.failed && !shown.rejected && !shown.pending;
    shown.mentionsMe = readable && !m.edit && !m.react && m.sender !== this.user
      && mentions(shown.text, this.user, this.userKey);
    return shown;
  }

  lockedReason(room, hasKeys) {
    if (room.direct) {
      return hasKeys ? t("locked.direct") : this.directProblem(room);
    }
    if (hasKeys) return t("locked.wrongKey");
    if (this.keyring.state === "open") return t("locked.noKey");
    return this.keyring.noKeyReason();
  }

  redecodeOne(room, id) {
    const related = room.related.get(id);
    if (related) {
      room.related.set(id, this.decode(room, related));
      this.redrawAbout(room, [related.edit || related.react]);
      return;
    }
    const m = room.byId.get(id);
    if (!m || m.growing || m.deleted) return;
    const again = this.decode(room, m);
    room.byId.set(id, again);
    if (again.text !== m.text) this.changed("grown", { room, m: again }); // redrawn in place
  }

  // A key arrived: read again what could not be read, or not yet be checked.
  redecode(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    for (const [id, m] of [...room.byId, ...room.related]) {
      if ((m.failed || m.rejected || m.pending) && !m.growing) this.redecodeOne(room, id);
    }
    if (room.topicBox) this.changed("header", room);
  }

  redecodeAll() {
    for (const name of this.rooms.keys()) this.redecode(name);
  }

  // Another language: what this page says of messages and commands is said again in it.
  relanguage() {
    if (this.nodeCommands) this.commands = this.nodeCommands.concat(localCommands());
    if (this.user) this.socket.send({ type: "command", line: "/help", ref: "help" }); // the node's help, in it too
    this.redecodeAll();
  }

  // The topic as shown: { text, bad, rejected } (`bad`: it could not be read or is rejected).
  topicView(room) {
    if (!room.topicBox) return { text: room.topic, bad: false };
    const keys = this.keysOf(room.name);
    const opened = keys.length ? sealed.openBody(keys, room.topicBox) : { locked: true };
    if (opened.locked) return { text: t("topic.cannotDecrypt"), bad: true };
    const why = opened.rejected || this.trust.judge(room, opened.body, room.topicBy, "topic", room.topicTs, "");
    if (why === PENDING) return { text: t("message.checking", { sender: room.topicBy }), bad: true };
    if (why) return { text: t("message.rejected", { why }), bad: true, rejected: true };
    return { text: opened.body.text, bad: false };
  }

  topicText(room) {
    return this.topicView(room).text;
  }

  select(name) {
    if (name !== this.current) this.stopComposing();
    this.current = name;
    const room = this.rooms.get(name);
    if (room) { room.unread = 0; room.mentioned = false; }
    if (room && room.direct && !room.loaded) this.loadDirect(room);
    this.changed("rooms");
    this.changed("room", room);
  }

  // -- identity key ------------------------------------------------------------------------

  // Unwrap the account's key pair with this tab's wrapping key, or make and publish one; the
  // signing key goes with it (published again when the node lacks it).
  setupIdentity(published) {
    this.identity = null;
    this.signer = null;
    const wrap = box.loadWrap();
    if (!wrap) {
      this.identityState = "locked";
    } else if (published) {
      const pair = box.unwrapIdentity(wrap, published.wrapped);
      const match = pair && box.toBase64(pair.publicKey) === published.public;
      this.identity = match ? pair : null;
      this.identityState = match ? "ready" : "wrong";
      if (match) {
        this.signer = sealed.signingKeys(pair.secretKey);
        const signing = box.toBase64(this.signer.publicKey);
        if (published.signing !== signing) {
          this.socket.send({ type: "identity", public: published.public, wrapped: published.wrapped,
            signing, ref: "identity-signing" });
        }
      }
    } else {
      const pair = box.newIdentity();
      this.pendingIdentity = pair;
      this.identityState = "publishing";
      this.socket.send({ type: "identity", public: box.toBase64(pair.publicKey),
        wrapped: box.wrapIdentity(wrap, pair.secretKey),
        signing: box.toBase64(sealed.signingKeys(pair.secretKey).publicKey), ref: "identity" });
    }
    this.changed("identity");
    if (this.identity) this.identityReady();
  }

  on_identity(frame) {
    if (frame.ref === "identity-signing") this.published = { ...this.published, signing: frame.signing };
    if (!this.pendingIdentity) return;
    this.identity = this.pendingIdentity;
    this.signer = sealed.signingKeys(this.identity.secretKey);
    this.published = { public: frame.public, wrapped: frame.wrapped, signing: frame.signing };
    this.pendingIdentity = null;
    this.identityState = "ready";
    this.changed("identity");
    this.identityReady();
  }

  identityReady() {
    this.invites.considerAll();
    this.redecodeAll(); // our own boxes can be checked now, and direct messages opened
  }

  // This tab had no wrapping key (another tab logged in): the password typed again unlocks
  // the identity and the keyring in place. "" or why not.
  unlock(wrap) {
    if (this.published) {
      const pair = box.unwrapIdentity(wrap, this.published.wrapped);
      if (!pair || box.toBase64(pair.publicKey) !== this.published.public) {
        return t("unlock.wrong");
      }
    }
    box.rememberWrap(wrap);
    this.keyring.unlock();
    this.setupIdentity(this.published);
    this.redecodeAll();
    this.changed("rooms");
    return "";
  }

  // Why this tab cannot use the identity key (for messages and notices).
  identityProblem() {
    if (this.identityState === "wrong") {
      return t("identity.problem.wrong");
    }
    if (this.identityState === "publishing") return t("identity.problem.publishing");
    return t("identity.problem.locked");
  }

  // -- public keys -------------------------------------------------------------------------

  // Runs send(publicKey, room, name) once the user's key (and so the room of our
  // conversation, and the name as the node spells it) is known: at once, its error the
  // line's; or when the node answers, a failure refusing the line being typed.
  // `noKey`: what to do instead when the user has no identity key ("" or why not).
  withKey(user, send, noKey = null) {
    const direct = this.directOf.get(user);
    const known = direct && this.publicKeys.get(direct);
    if (known) return send(known, direct, this.nameOf.get(direct) || user);
    const typed = this.typed;
    this.fetchKey(user, (theirs, room, frame) => {
      const error = send(theirs, room, frame.user);
      if (error) this.refuse(typed, error);
    }, typed, "", noKey && (() => {
      const error = noKey();
      if (error) this.refuse(typed, error);
    }));
    return "";
  }

  // `room`: the conversation whose messages wait for this key, if that is why.
  fetchKey(user, then = null, typed = null, room = "", noKey = null) {
    const ref = this.ref("key");
    if (room) this.fetching.add(room);
    this.keyWaits.set(ref, { user, then, room, noKey });
    this.socket.send({ type: "key", user, ref });
    this.waitFor(ref, typed);
    return ref;
  }

  on_key(frame) {
    const wait = this.keyWaits.get(frame.ref);
    this.keyWaits.delete(frame.ref);
    if (wait) this.fetching.delete(wait.room);
    const typed = this.lines.get(frame.ref);
    this.lines.delete(frame.ref); // the line now waits for what `then` sends
    const key = box.fromBase64(frame.public);
    const signing = frame.signing ? box.fromBase64(frame.signing) : null;
    if (!key || key.length !== 32 || !frame.direct || (frame.signing && (!signing || signing.length !== 32))) {
      this.refuse(typed, t("key.damaged", { user: frame.user }));
      return;
    }
    const theirs = this.trust.answered(frame.user, key, signing); // the pinned box key
    // The node names our conversation with this user: `direct`, never derived here.
    this.publicKeys.set(frame.direct, theirs);
    this.nameOf.set(frame.direct, frame.user);
    this.directOf.set(frame.user, frame.direct);
    if (wait) this.directOf.set(wait.user, frame.direct);
    const room = this.rooms.get(frame.direct);
    if (room && room.direct) {
      room.peer = frame.user;
      room.spelled = true;
      room.noKey = false;
      this.redecode(room.name);
      this.changed("rooms");
      this.changed("header", room); // the peer's name as the node spells it
    }
    this.invites.retry();
    if (wait && wait.then) wait.then(theirs, frame.direct, frame);
  }

  keyFailed(frame) {
    const wait = this.keyWaits.get(frame.ref);
    this.keyWaits.delete(frame.ref);
    this.fetching.delete(wait.room);
    const typed = this.lines.get(frame.ref);
    this.lines.delete(frame.ref);
    if (frame.code === "no_key") {
      const room = this.rooms.get(wait.room || this.directOf.get(wait.user));
      if (room) room.noKey = true;
      this.trust.noKeyFor(wait.user);
      this.redecodeAll();
      this.invites.retry();
    }
    if (frame.code === "no_key" && wait.noKey) { wait.noKey(); return; }
    if (!wait.then) return; // a key fetched to read old messages: they say why themselves
    const text = frame.code === "no_key"
      ? t("key.none", { user: wait.user })
      : frame.message;
    this.refuse(typed, text);
  }

  // -- direct messages ---------------------------------------------------------------------

  // The other user of a conversation the node named `@a+b`: the part that is not our key.
  peerOf(name) {
    const parts = name.slice(1).split("+");
    return parts[0] === this.userKey ? parts[1] : parts[0];
  }

  // `peer`: a name for the other user until the node spells it (see spell).
  makeDirect(room, peer) {
    if (!room.direct && !room.peer) room.peer = peer || this.peerOf(room.name);
    room.direct = true;
    room.members = new Set([this.user, room.peer]);
    this.directOf.set(room.peer, room.name);
  }

  // A direct message names both users as the node spells them: the one that is not us is the
  // peer (both are us in a note to oneself).
  spell(room, m) {
    if (m.to === undefined) return;
    const peer = m.sender === this.user ? m.to : m.sender;
    if (room.spelled && room.peer === peer) return;
    room.peer = peer;
    room.spelled = true;
    room.members = new Set([this.user, peer]);
    this.directOf.set(peer, room.name);
  }

  directKey(room) {
    if (!this.identity) return null;
    const theirs = this.publicKeys.get(room.name);
    if (!theirs) {
      if (!this.fetching.has(room.name) && !room.noKey && this.socket.ready) {
        this.fetchKey(room.peer, null, null, room.name);
      }
      return null;
    }
    return box.directKey(theirs, this.identity.secretKey);
  }

  directProblem(room) {
    if (!this.identity) return this.identityProblem();
    if (room.noKey) return t("key.peerNone", { user: room.peer });
    return t("key.fetching");
  }

  msgCommand(args) {
    const match = args.match(/^@?(\S+)\s+([\s\S]+)$/);
    if (!match) return t("chat.usage", { usage: t("usage.msg") });
    const [, user, text] = match;
    return this.sayDirect(user, text, false, true);
  }

  // Shows the conversation with a user, once the node has said which room it is (an empty
  // one when there is none yet). "" or why not.
  openDirect(user) {
    if (!this.identity) return this.identityProblem();
    if (!this.socket.ready) return offline();
    return this.withKey(user, (theirs, name) => { this.showDirect(name, user); return ""; });
  }

  showDirect(name, user) {
    const room = this.room(name);
    if (!room.direct) {
      this.makeDirect(room, user);
      room.loaded = true; // not in ready.direct: there is nothing older to fetch
    }
    this.select(name);
  }

  // Sealed with the conversation key: box.before(their public, my secret). `show`: open the
  // conversation too (/msg).
  sayDirect(user, text, me, show = false, about = null, file = undefined) {
    if (!this.identity) return this.identityProblem();
    const long = this.tooLong(text);
    if (long) return long;
    const typed = this.typed;
    if (!this.signer) return this.identityProblem();
    const { kind, re } = sealed.kindOf({ me, ...about });
    return this.withKey(user, (theirs, name) => {
      if (show) this.showDirect(name, user);
      const frame = { type: "send", to: user, ref: this.ref("send"), ...about,
        box: sealed.sealBody(box.directKey(theirs, this.identity.secretKey), this.signer,
          { room: name, sender: this.user, kind, re, text, file }) };
      if (file) frame.file = { id: file.id, size: file.size };
      if (me) frame.me = true;
      return this.sendLine(frame, typed);
    }, () => {
      // No identity key (the pages without JavaScript make none): said, sent in the clear,
      // and shown marked "not sealed", rather than a reply the other can never read.
      if (file) return t("file.noKey", { user });
      const frame = { type: "send", to: user, text, ref: this.ref("send"), ...about };
      if (me) frame.me = true;
      this.changed("error", t("chat.inTheClear", { user }));
      return this.sendLine(frame, typed);
    });
  }

  loadDirect(room) {
    room.loading = true;
    this.socket.send({ type: "history", room: room.name, limit: PAGE, ref: this.ref("dm") });
  }

  // Back after a drop: what the conversation got meanwhile, paging back to the last seen.
  catchUp(room) {
    const last = room.ids[room.ids.length - 1] || "";
    this.socket.send({ type: "history", room: room.name, limit: PAGE, ref: `gap:${last}` });
  }
}
