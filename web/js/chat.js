// Chat state: rooms, messages (deduplicated by id, kept in id order), unread counts,
// and what each node frame does to them. No DOM here: ui.js draws, this module decides.
import * as box from "./crypto.js";

const PAGE = 50;
const TOPIC_CHARS = 300; // the node's topic limit (docs/protocol.md, topic)
const OFFLINE = "not connected: your message is kept until the node is back";
// Commands this page handles itself: they seal with identity keys the node never sees.
const LOCAL_COMMANDS = [
  { name: "/msg", usage: "/msg USER MESSAGE", help: "send an end-to-end encrypted direct message" },
  { name: "/invite", usage: "/invite USER", help: "seal this key-protected room's key to USER" },
];
// The node's mention syntax (docs/protocol.md, Mentions).
const MENTION = /(?<![\p{L}\p{N}_@])@([\p{L}\p{N}_.-]+)/gu;

// Who is who is the node's to say: it compares names by NFKC + casefold, which JavaScript
// cannot reproduce (toLowerCase keeps "ß", casefold makes it "ss"). So the page never
// derives a name key or a conversation's room: it uses `ready.key`, `key.direct` and the
// room names of the frames. This loose form serves only where nothing is decided: whether
// to highlight a mention.
function looseKey(name) {
  return String(name || "").normalize("NFKC").toUpperCase().toLowerCase();
}

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
    direct: false, peer: "", spelled: false, loaded: false, invitedBy: "", readers: new Set(),
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
    this.pendingKeys = new Map(); // join ref → { key, share } for a room joined with a key
    this.seq = 0;
    // Typed lines the node has not answered yet: ref of the frame whose answer settles the
    // line → { text, tag }. The answer becomes a "line" change: { tag, reason } ("" when
    // the node took it, else why it refused it).
    this.lines = new Map();
    this.typed = null; // the line being submitted
    this.resetIdentity();
  }

  // The account's key pair (null until unwrapped or made) and what the user is told of it.
  resetIdentity() {
    this.identity = null;
    this.identityState = "";
    this.pendingIdentity = null;
    this.invitations = [];
    this.bots = null; // the node's bots: a function text → the name of the bot it calls, or ""
    this.publicKeys = new Map(); // conversation room (`key.direct`) → the other user's key
    this.directOf = new Map(); // a user's name, as typed or as the node spells it → room
    this.keyWaits = new Map(); // key ref → { user, then, room }
    this.fetching = new Set(); // rooms whose peer's key is being fetched
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
  join(name, { create = false, protect = false, key = null, share = true, focus = false } = {}) {
    const ref = this.ref("join");
    if (focus) this.wantFocus = ref;
    if (key) this.pendingKeys.set(ref, { key, share });
    const frame = { type: "join", room: name, ref };
    if (create) frame.create = true;
    if (protect) frame.protected = true;
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
    if (!this.socket.ready) return { error: OFFLINE, pending: false };
    this.typed = { text, tag, pending: false };
    try {
      let error;
      if (text.startsWith("/") && !text.startsWith("//")) error = this.command(text, room);
      else if (!room) error = "join a room first";
      else error = this.say(room, text.startsWith("//") ? text.slice(1) : text, false);
      return { error, pending: !error && this.typed.pending };
    } finally {
      this.typed = null;
    }
  }

  tooLong(text, what = "message", max = this.limits.max_text_chars) {
    const n = chars(text);
    return max && n > max ? `the ${what} is too long (${n} characters, at most ${max})` : "";
  }

  // Sends a frame for a typed line, which then waits for its answer; "" or why not.
  sendLine(frame, typed = this.typed) {
    const max = this.limits.max_frame_bytes;
    const size = max ? new TextEncoder().encode(JSON.stringify({ v: 1, ...frame })).length : 0;
    if (size > max) return `this is too long to send (${size} bytes, at most ${max})`;
    if (!this.socket.send(frame)) return OFFLINE;
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
    this.changed("line", { tag: typed.tag, reason });
    return true;
  }

  // A line refused after it left submit (say, once a key came): tell it like an answer.
  refuse(typed, reason) {
    if (typed) this.changed("line", { tag: typed.tag, reason });
    else this.changed("error", reason);
  }

  say(room, text, me) {
    const long = this.tooLong(text);
    if (long) return long;
    if (room.direct) return this.sayDirect(room.peer, text, me);
    const frame = { type: "send", room: room.name, ref: this.ref("send") };
    if (me) frame.me = true;
    if (room.protected) {
      const key = box.loadKey(room.name);
      if (!key) return `#${room.name} is key-protected and this device has no key for it`;
      frame.box = box.seal(key, text);
      const bot = me || !this.bots ? "" : this.bots(text);
      if (bot && !room.readers.has(bot)) {
        // The node cannot read this room, so neither can the bot: say so here.
        this.changed("notice", `${bot} cannot read #${room.name}: the room is key-protected and its key was never shared with ${bot}. /invite ${bot} seals the key to it (every member is told); then it can answer here.`);
      }
    } else {
      frame.text = text;
    }
    return this.sendLine(frame);
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
    if (name === "msg") return this.msgCommand(args);
    if (name === "invite") return this.inviteCommand(room, args);
    if (name === "me" && args) {
      const long = this.tooLong(args);
      if (long) return long;
    }
    if (room && room.direct && (name === "me" || name === "topic")) {
      if (name === "me") return args ? this.say(room, args, true) : "usage: /me ACTION";
      return "a conversation has no topic";
    }
    if (room && room.protected && (name === "me" || name === "topic")) {
      // The node refuses plain text in a key-protected room: seal here.
      if (name === "me") return args ? this.say(room, args, true) : "usage: /me ACTION";
      if (!args) { this.changed("notice", `topic of #${room.name}: ${this.topicText(room) || "(none)"}`); return ""; }
      const long = this.tooLong(args, "topic", TOPIC_CHARS);
      if (long) return long;
      const key = box.loadKey(room.name);
      if (!key) return `#${room.name} is key-protected and this device has no key for it`;
      return this.sendLine({ type: "topic", room: room.name, box: box.seal(key, args), ref: this.ref("topic") });
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
    this.invitations = frame.invitations || [];
    this.keyWaits.clear(); // answers lost with the old connection
    this.fetching.clear();
    this.setupIdentity(frame.identity);
    this.changed("rooms");
    this.changed("ready", frame);
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
    room.members = new Set(frame.members);
    room.readers = new Set(info.readers || []);
    const pending = this.pendingKeys.get(frame.ref);
    if (pending) {
      // kept under the room's name as the node spells it, whatever the link or form said
      box.saveKey(room.name, pending.key);
      this.pendingKeys.delete(frame.ref);
      if (pending.share) this.changed("invite", room);
      else this.redecode(room.name);
    }
    // Back after a drop, what arrived meanwhile counts as unread like live messages.
    this.merge(room, frame.history, fresh ? null : lastSeen);
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
    if (room.spelled !== spelled) this.changed("rooms");
    const gap = frame.ref?.startsWith("gap:") ? frame.ref.slice(4) : null;
    this.merge(room, frame.messages, gap);
    if (gap) {
      this.fillGap(room, frame.messages, frame.more, frame.ref.slice(4));
    } else {
      room.more = Boolean(frame.more);
      room.loading = false;
    }
    this.changed("older", room);
  }

  on_readers(frame) {
    const room = this.room(frame.room);
    room.readers = new Set(frame.bots);
    this.changed("room", room);
  }

  // A bot's answer so far: shown in place, and replaced by the message once complete.
  on_delta(frame) {
    const room = this.room(frame.room);
    const shown = room.byId.get(frame.id);
    if (shown && !shown.growing) return;
    const m = { ...this.decode(room, frame), ts: shown?.ts || Date.now(), growing: true,
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
    if (frame.to !== undefined) {
      this.makeDirect(room, "");
      this.spell(room, frame);
    }
    const added = this.merge(room, [frame], "");
    if (added && room.name !== this.current) this.changed("rooms");
    this.changed("messages", room);
  }

  on_mention(frame) {
    const room = this.room(frame.room);
    room.mentioned = true;
    room.unread += 1;
    this.changed("rooms");
  }

  on_topic(frame) {
    const room = this.room(frame.room);
    room.topic = frame.text || "";
    room.topicBox = frame.box || "";
    this.changed("room", room);
  }

  on_presence(frame) {
    const room = this.room(frame.room);
    if (frame.state === "join") room.members.add(frame.user);
    else room.members.delete(frame.user);
    this.changed("members", room);
  }

  on_who(frame) {
    const room = this.room(frame.room);
    room.members = new Set(frame.members);
    this.changed("members", room);
    this.changed("notice", `in #${room.name}: ${frame.members.join(", ")}`);
  }

  on_left(frame) {
    this.rooms.delete(frame.room);
    if (this.current === frame.room) this.current = this.rooms.keys().next().value || "";
    this.changed("rooms");
    this.changed("room", this.rooms.get(this.current));
  }

  on_clear(frame) {
    const room = this.rooms.get(frame.room || this.current);
    if (room) { room.clearedAt = room.ids[room.ids.length - 1] || ""; this.changed("messages", room); }
  }

  on_rooms(frame) {
    const names = frame.rooms.map((r) => `#${r.name}${r.protected ? " (key-protected)" : ""}`);
    this.changed("notice", `rooms on this node: ${names.join(", ") || "(none)"}`);
  }

  on_notice(frame) {
    if (frame.ref === "help") {
      // The node's own table: one "/usage   help" line per command.
      this.commands = frame.text.split("\n").slice(1).map((line) => {
        const [usage, help] = line.split(/\s{2,}/);
        return { name: usage.split(" ")[0], usage, help: help || "" };
      }).filter((c) => c.name !== "/msg").concat(LOCAL_COMMANDS);
      return;
    }
    this.changed("notice", frame.text);
  }

  on_error(frame) {
    if (this.keyWaits.has(frame.ref)) { this.keyFailed(frame); return; }
    if (frame.ref === "identity") this.pendingIdentity = null;
    if (frame.ref && this.pendingKeys.has(frame.ref)) this.pendingKeys.delete(frame.ref);
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
      if (room.byId.has(m.id)) continue;
      room.byId.set(m.id, this.decode(room, m));
      added += 1;
      const last = room.ids[room.ids.length - 1];
      if (!last || m.id > last) room.ids.push(m.id);
      else room.ids.splice(this.position(room.ids, m.id), 0, m.id);
      if (unreadAfter !== null && m.id > unreadAfter && room.name !== this.current) {
        room.unread += 1;
        if (room.byId.get(m.id).mentionsMe) room.mentioned = true;
      }
    }
    return added;
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

  // What the user sees of a message: its text, or why it cannot be read.
  decode(room, m) {
    let text = m.text;
    let failed = false;
    if (m.box !== undefined && room.direct) {
      const key = this.directKey(room);
      text = box.open(key, m.box);
      if (text === null) {
        failed = true;
        text = key ? "[cannot decrypt: not sealed for these identity keys, or damaged]"
          : `[cannot decrypt: ${this.directProblem(room)}]`;
      }
    } else if (m.box !== undefined) {
      text = box.open(box.loadKey(room.name), m.box);
      if (text === null) {
        failed = true;
        text = box.loadKey(room.name)
          ? "[cannot decrypt: wrong room key or damaged message]"
          : "[cannot decrypt: this device has no key for this room]";
      }
    }
    return { id: m.id, ts: m.ts, sender: m.sender, me: Boolean(m.me), text, failed, box: m.box,
      mentionsMe: !failed && m.sender !== this.user && mentions(text, this.user, this.userKey) };
  }

  // A key arrived (an invite link): read again what could not be read before.
  redecode(name) {
    const room = this.rooms.get(name);
    if (!room) return;
    for (const [id, m] of room.byId) {
      if (m.failed) room.byId.set(id, this.decode(room, m));
    }
    this.changed("room", room);
  }

  topicText(room) {
    if (!room.topicBox) return room.topic;
    const text = box.open(box.loadKey(room.name), room.topicBox);
    return text === null ? "[cannot decrypt the topic]" : text;
  }

  select(name) {
    this.current = name;
    const room = this.rooms.get(name);
    if (room) { room.unread = 0; room.mentioned = false; }
    if (room && room.direct && !room.loaded) this.loadDirect(room);
    this.changed("rooms");
    this.changed("room", room);
  }

  // -- identity key ------------------------------------------------------------------------

  // Unwrap the account's key pair with this tab's wrapping key, or make and publish one.
  setupIdentity(published) {
    this.identity = null;
    const wrap = box.loadWrap();
    if (!wrap) {
      this.identityState = "locked";
    } else if (published) {
      const pair = box.unwrapIdentity(wrap, published.wrapped);
      const match = pair && box.toBase64(pair.publicKey) === published.public;
      this.identity = match ? pair : null;
      this.identityState = match ? "ready" : "wrong";
    } else {
      const pair = box.newIdentity();
      this.pendingIdentity = pair;
      this.identityState = "publishing";
      this.socket.send({ type: "identity", public: box.toBase64(pair.publicKey),
        wrapped: box.wrapIdentity(wrap, pair.secretKey), ref: "identity" });
    }
    this.changed("identity");
    if (this.identity) this.identityReady();
  }

  on_identity() {
    if (!this.pendingIdentity) return;
    this.identity = this.pendingIdentity;
    this.pendingIdentity = null;
    this.identityState = "ready";
    this.changed("identity");
    this.identityReady();
  }

  identityReady() {
    for (const invitation of this.invitations) this.openInvitation(invitation, false);
    for (const room of this.rooms.values()) if (room.direct) this.redecode(room.name);
  }

  // Why this tab cannot use the identity key (for messages and notices).
  identityProblem() {
    if (this.identityState === "wrong") {
      return "your identity key does not open with this password: invitations and direct messages cannot be read";
    }
    if (this.identityState === "publishing") return "your identity key is being published: try again in a moment";
    return "your identity key is locked in this tab: log out and log in again to unlock it";
  }

  // -- sealed invitations ------------------------------------------------------------------

  on_invited(frame) {
    this.invitations = this.invitations.filter((i) => i.room !== frame.room).concat([frame]);
    if (this.identity) this.openInvitation(frame, true);
    else this.changed("error", `${frame.sender} invited you to #${frame.room}, but ${this.identityProblem()}`);
  }

  openInvitation({ room: name, sender, sealed }, live) {
    const key = box.openRoomKey(sealed, this.identity.secretKey);
    if (!key) {
      this.changed("error", `${sender}'s invitation to #${name} cannot be opened: it was sealed to another identity key`);
      return;
    }
    const known = box.sameBytes(box.loadKey(name), key);
    box.saveKey(name, key);
    const room = this.room(name);
    room.protected = true;
    room.invitedBy = sender;
    if (!known || live) {
      const how = room.joined ? "" : ": it is in your room list, open it to join";
      this.changed("notice", `${sender} invited you to #${name}${how}`);
    }
    this.redecode(name);
    this.changed("rooms");
  }

  inviteCommand(room, args) {
    const user = args.replace(/^@/, "").trim();
    if (!user || /\s/.test(user)) return "usage: /invite USER";
    if (!room || room.direct) return "open the key-protected room to invite someone into first";
    if (!room.protected) return `#${room.name} is open: anyone may /join it, there is no key to share`;
    const key = box.loadKey(room.name);
    if (!key) return `#${room.name} is key-protected and this device has no key for it`;
    const typed = this.typed;
    return this.withKey(user, (theirs) => this.sendLine({ type: "invite", room: room.name,
      to: user, sealed: box.sealRoomKey(key, theirs), ref: this.ref("invite") }, typed));
  }

  // -- public keys -------------------------------------------------------------------------

  // Runs send(publicKey, room) once the user's key (and so the room of our conversation) is
  // known: at once, its error the line's; or when the node answers, a failure refusing the
  // line being typed.
  withKey(user, send) {
    const direct = this.directOf.get(user);
    const known = direct && this.publicKeys.get(direct);
    if (known) return send(known, direct);
    const typed = this.typed;
    this.fetchKey(user, (theirs, room) => {
      const error = send(theirs, room);
      if (error) this.refuse(typed, error);
    }, typed);
    return "";
  }

  // `room`: the conversation whose messages wait for this key, if that is why.
  fetchKey(user, then = null, typed = null, room = "") {
    const ref = this.ref("key");
    if (room) this.fetching.add(room);
    this.keyWaits.set(ref, { user, then, room });
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
    if (!key || key.length !== 32 || !frame.direct) {
      this.refuse(typed, `the node sent a damaged public key for ${frame.user}`);
      return;
    }
    // The node names our conversation with this user: `direct`, never derived here.
    this.publicKeys.set(frame.direct, key);
    this.directOf.set(frame.user, frame.direct);
    if (wait) this.directOf.set(wait.user, frame.direct);
    const room = this.rooms.get(frame.direct);
    if (room && room.direct) {
      room.peer = frame.user;
      room.spelled = true;
      room.noKey = false;
      this.redecode(room.name);
      this.changed("rooms");
    }
    if (wait && wait.then) wait.then(key, frame.direct);
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
    }
    if (!wait.then) return; // a key fetched to read old messages: they say why themselves
    const text = frame.code === "no_key"
      ? `${wait.user} has not logged in with a browser/CLI that made an identity key yet`
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
    if (room.noKey) return `${room.peer} has no identity key`;
    return "fetching the identity key…";
  }

  msgCommand(args) {
    const match = args.match(/^@?(\S+)\s+([\s\S]+)$/);
    if (!match) return "usage: /msg USER MESSAGE";
    const [, user, text] = match;
    return this.sayDirect(user, text, false, true);
  }

  // Shows the conversation with a user, once the node has said which room it is (an empty
  // one when there is none yet). "" or why not.
  openDirect(user) {
    if (!this.identity) return this.identityProblem();
    if (!this.socket.ready) return OFFLINE;
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
  sayDirect(user, text, me, show = false) {
    if (!this.identity) return this.identityProblem();
    const long = this.tooLong(text);
    if (long) return long;
    const typed = this.typed;
    return this.withKey(user, (theirs, name) => {
      if (show) this.showDirect(name, user);
      const frame = { type: "send", to: user, ref: this.ref("send"),
        box: box.seal(box.directKey(theirs, this.identity.secretKey), text) };
      if (me) frame.me = true;
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
