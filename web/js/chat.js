// Chat state: rooms, messages (deduplicated by id, kept in id order), unread counts,
// and what each node frame does to them. No DOM here: ui.js draws, this module decides.
import * as box from "./crypto.js";

const PAGE = 50;
// The node's mention syntax (docs/protocol.md, Mentions).
const MENTION = /(?<![\p{L}\p{N}_@])@([\p{L}\p{N}_.-]+)/gu;

export function mentions(text, user) {
  if (!text || !user) return false;
  const me = user.toLowerCase();
  for (const m of text.matchAll(MENTION)) {
    if (m[1].replace(/[.-]+$/, "").toLowerCase() === me) return true;
  }
  return false;
}

function newRoom(name) {
  return {
    name, protected: false, topic: "", topicBox: "", members: new Set(),
    byId: new Map(), ids: [], more: false, loading: false, joined: false,
    unread: 0, mentioned: false, clearedAt: "",
  };
}

export class Chat {
  constructor(socket, onChange) {
    this.socket = socket;
    this.changed = onChange; // (what, room?) → redraw
    this.user = "";
    this.rooms = new Map();
    this.current = "";
    this.commands = [];
    this.pendingKeys = new Map(); // join ref → key for a room being created
    this.seq = 0;
    this.unacked = new Map(); // send ref → the line typed, until the node stores it
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
  }

  // -- requests ---------------------------------------------------------------------------

  join(name, { create = false, protect = false, key = null, focus = false } = {}) {
    const ref = this.ref("join");
    if (focus) this.wantFocus = ref;
    if (key) this.pendingKeys.set(ref, key);
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

  // Returns an error text for the user, or "" when the line went out.
  submit(line) {
    const room = this.rooms.get(this.current);
    const text = line.replace(/\s+$/, "");
    if (!text.trim()) return "";
    if (!this.socket.ready) return "not connected: your message is kept until the node is back";
    if (text.startsWith("/") && !text.startsWith("//")) return this.command(text, room);
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (!room) return "join a room first";
    return this.say(room, body, false);
  }

  say(room, text, me, line = text) {
    const frame = { type: "send", room: room.name, ref: this.ref("send") };
    if (me) frame.me = true;
    if (room.protected) {
      const key = box.loadKey(room.name);
      if (!key) return `#${room.name} is key-protected and this device has no key for it`;
      frame.box = box.seal(key, text);
    } else {
      frame.text = text;
    }
    this.socket.send(frame);
    this.unacked.set(frame.ref, me ? `/me ${text}` : line);
    return "";
  }

  // Lines sent but not acknowledged when the connection dropped: maybe stored, maybe not.
  takeUnacked() {
    const lines = [...this.unacked.values()];
    this.unacked.clear();
    return lines;
  }

  on_ack(frame) {
    this.unacked.delete(frame.ref);
  }

  command(line, room) {
    const [word, ...rest] = line.slice(1).split(" ");
    const name = word.toLowerCase();
    const args = rest.join(" ").trim();
    if (name === "clear") {
      // Local only: the node keeps everything.
      if (room) { room.clearedAt = room.ids[room.ids.length - 1] || ""; this.changed("messages", room); }
      return "";
    }
    if (room && room.protected && (name === "me" || name === "topic")) {
      // The node refuses plain text in a key-protected room: seal here.
      if (name === "me") return args ? this.say(room, args, true) : "usage: /me ACTION";
      if (!args) { this.changed("notice", `topic of #${room.name}: ${this.topicText(room) || "(none)"}`); return ""; }
      const key = box.loadKey(room.name);
      if (!key) return `#${room.name} is key-protected and this device has no key for it`;
      this.socket.send({ type: "topic", room: room.name, box: box.seal(key, args), ref: this.ref("topic") });
      return "";
    }
    const frame = { type: "command", line, ref: this.ref("cmd") };
    if (room) frame.room = room.name;
    this.socket.send(frame);
    return "";
  }

  // -- frames from the node ---------------------------------------------------------------

  handle(frame) {
    const handler = this[`on_${frame.type}`];
    if (handler) handler.call(this, frame);
  }

  on_ready(frame) {
    this.user = frame.user;
    this.socket.send({ type: "command", line: "/help", ref: "help" });
    // Re-enter every room we were in (a reconnect), then those the account keeps.
    const names = new Set([...this.rooms.values()].filter((r) => r.joined).map((r) => r.name));
    for (const name of frame.rooms) names.add(name);
    for (const r of this.rooms.values()) r.joined = false;
    for (const name of names) this.join(name);
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
    const key = this.pendingKeys.get(frame.ref);
    if (key) {
      box.saveKey(room.name, key);
      this.pendingKeys.delete(frame.ref);
      this.changed("invite", room);
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

  on_message(frame) {
    if (frame.to !== undefined) {
      // Direct messages have no window here yet: show them as a notice, never drop them.
      const text = frame.text ?? "[a sealed direct message: open it with the CLI client]";
      this.changed("notice", `${frame.sender} → ${frame.to}: ${text}`);
      return;
    }
    const room = this.room(frame.room);
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
      });
      return;
    }
    this.changed("notice", frame.text);
  }

  on_error(frame) {
    this.unacked.delete(frame.ref);
    if (frame.ref && this.pendingKeys.has(frame.ref)) this.pendingKeys.delete(frame.ref);
    if (frame.ref?.startsWith("older:")) for (const r of this.rooms.values()) r.loading = false;
    this.changed("error", frame.message);
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
    if (m.box !== undefined) {
      text = box.open(box.loadKey(room.name), m.box);
      if (text === null) {
        failed = true;
        text = box.loadKey(room.name)
          ? "[cannot decrypt: wrong room key or damaged message]"
          : "[cannot decrypt: this device has no key for this room]";
      }
    }
    return { id: m.id, ts: m.ts, sender: m.sender, me: Boolean(m.me), text, failed, box: m.box,
      mentionsMe: !failed && m.sender !== this.user && mentions(text, this.user) };
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
    this.changed("rooms");
    this.changed("room", room);
  }
}
