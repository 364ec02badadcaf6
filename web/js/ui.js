// Drawing: every piece of user or node text goes in with textContent, never as HTML.
import { toBase64 } from "./crypto.js";
import { locale, plural, t } from "./i18n.js";
import { linkify } from "./links.js";
import { IMAGES } from "./chat.js";
import { fingerprint, REACTIONS } from "./sealed.js";

const $ = (id) => document.getElementById(id);
const QUOTE_CHARS = 80; // of a quoted message, shown at most

// How a room is named on screen: #room, or @peer for a conversation.
export function label(room) {
  return room.direct ? `@${room.peer}` : `#${room.name}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A message's text (`text`: its latest edit's): a readable one with its links (links.js), a
// placeholder as it is.
function textOf(m, style, text) {
  if (m.failed || m.rejected || m.pending || m.deleted) return el("span", style, text);
  const span = el("span", style);
  span.append(...linkify(text));
  return span;
}

// Made again when the language changes: dates follow it.
let formats = null;
function format() {
  if (!formats || formats.locale !== locale()) {
    formats = {
      locale: locale(),
      day: new Intl.DateTimeFormat(locale(), { weekday: "long", year: "numeric", month: "long", day: "numeric" }),
      time: new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" }),
    };
  }
  return formats;
}

export class View {
  constructor(chat) {
    this.chat = chat;
  }

  status(state = this.state) {
    this.state = state;
    const text = { online: t("status.online"), connecting: t("status.connecting"), reconnecting: t("status.reconnecting") }[state] || "";
    $("status").textContent = text;
    $("status").className = state;
    $("offline").hidden = state !== "reconnecting";
  }

  // A line of news for the room in view: it goes when another room is opened.
  notice(text, isError = false) {
    $("notice").textContent = text;
    $("notice").classList.toggle("error", isError);
    this.noticeRoom = this.chat.current;
  }

  // Every command, the node's and this page's, one to a row.
  help(commands) {
    const rows = [...commands].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
      const row = el("tr");
      const usage = el("td");
      usage.append(el("code", "", c.usage));
      row.append(usage, el("td", "", c.help));
      return row;
    });
    $("help-list").replaceChildren(...rows);
    $("help").hidden = false;
  }

  rooms() {
    const list = $("rooms");
    list.replaceChildren();
    const rooms = [...this.chat.rooms.values()].sort((a, b) => label(a).localeCompare(label(b)));
    for (const room of rooms) {
      const button = el("button");
      button.type = "button";
      button.dataset.room = room.name;
      button.setAttribute("aria-current", String(room.name === this.chat.current));
      button.append(el("span", "", label(room)));
      // a conversation with messages sent in the clear wears no key
      const plain = room.direct && [...room.byId.values()].some((m) => m.plain);
      if (plain) button.append(el("span", "tag plain", t("tag.plain")));
      else if (room.protected || room.direct) button.append(el("span", "tag", t("tag.key")));
      if (room.invitedBy && !room.joined) button.append(el("span", "tag", t("tag.invited")));
      if (room.mentioned) {
        const badge = el("span", "badge mention", "@");
        badge.setAttribute("aria-label", t("rooms.mentioned"));
        button.append(badge);
      }
      if (room.unread) {
        const badge = el("span", "badge", String(room.unread));
        badge.setAttribute("aria-label", plural("rooms.unread", room.unread));
        button.append(badge);
      }
      const item = el("li");
      item.append(button);
      list.append(item);
    }
  }

  room() {
    const room = this.chat.rooms.get(this.chat.current);
    if (this.noticeRoom !== this.chat.current) this.notice("");
    this.header();
    if (!room || room.name !== $("invite").dataset.room) $("invite").hidden = true;
    this.members();
    this.messages(true);
  }

  // The room's title, mode, readers, topic and alerts.
  header() {
    const room = this.chat.rooms.get(this.chat.current);
    $("room-title").textContent = room ? label(room) : t("room.none");
    $("room-mode").hidden = !(room && (room.protected || room.direct));
    const plain = room && room.direct && [...room.byId.values()].some((m) => m.plain);
    $("room-mode").textContent = plain
      ? t("room.e2eMixed") : t("room.e2e");
    const readers = room ? [...room.readers] : [];
    $("room-readers").hidden = readers.length === 0;
    $("room-readers").textContent = readers.length ? t("room.readers", { names: readers.join(", ") }) : "";
    const topic = room ? this.chat.topicView(room) : { text: "", bad: false };
    $("topic").textContent = topic.text ? t("room.topic", { topic: topic.text }) : "";
    $("topic").classList.toggle("rejected", Boolean(topic.rejected));
    this.alerts(room);
  }

  // What the user must see in this room: a changed key, another key offered for it.
  alerts(room) {
    const list = $("alerts");
    list.replaceChildren();
    for (const alert of room ? room.alerts : []) {
      const item = el("li", "alert", alert.text);
      alert.actions.forEach((action, i) => {
        const button = el("button", "", action.label);
        button.type = "button";
        button.dataset.alert = alert.id;
        button.dataset.index = String(i);
        item.append(button);
      });
      list.append(item);
    }
  }

  // The account's identity key, or why this tab cannot use it.
  identity() {
    const chat = this.chat;
    const state = {
      ready: t("identity.ready"),
      publishing: t("identity.publishing"),
      locked: t("identity.locked"),
      wrong: t("identity.wrong"),
      guest: t("identity.guest"),
    }[chat.identityState] || "";
    $("identity-state").textContent = state;
    $("identity-state").classList.toggle("error", chat.identityState === "wrong");
    $("identity-state").classList.toggle("warn", ["wrong", "locked"].includes(chat.identityState));
    $("identity-key").textContent = chat.identity ? toBase64(chat.identity.publicKey) : "";
    $("identity-fingerprint").textContent = chat.identity && chat.signer
      ? t("identity.fingerprint", { fingerprint: fingerprint(chat.identity.publicKey, chat.signer.publicKey) }) : "";
    $("unlock").hidden = chat.identityState !== "locked";
  }

  invite(room, url) {
    $("invite").dataset.room = room.name;
    $("invite-link").value = url;
    $("invite").hidden = false;
  }

  members() {
    const room = this.chat.rooms.get(this.chat.current);
    const list = $("member-list");
    list.replaceChildren();
    // sorted loosely (cosmetic); who is us is the name the node gave us, exactly
    const names = room ? [...room.members].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase())) : [];
    for (const name of names) {
      // a conversation's two people, not who is online: the node does not say that of them
      const item = el("li", room && room.direct ? "person" : "", name);
      if (name !== this.chat.user && !(room && room.direct)) item.append(this.talkButton(name));
      list.append(item);
    }
    $("members-title").textContent = room && room.direct
      ? t("members.conversation") : t("members.online", { count: names.length });
  }

  // Opens an end-to-end encrypted conversation with a member.
  talkButton(name) {
    const button = el("button", "talk", t("members.dm"));
    button.type = "button";
    button.dataset.user = name;
    button.setAttribute("aria-label", t("members.dmLabel", { name }));
    return button;
  }

  // Draws the current room's messages. New ones at the end are appended (so a screen
  // reader's log announces only them); anything else redraws, keeping the reader's
  // place: at the bottom when they were there, on the same message when older ones arrive.
  messages(jump = false) {
    const room = this.chat.rooms.get(this.chat.current);
    const box = $("messages");
    $("older").hidden = !(room && room.loading);
    const ids = room ? room.ids.filter((id) => id > room.clearedAt) : [];
    const drawn = this.drawn || [];
    const fromBottom = box.scrollHeight - box.scrollTop;
    const atBottom = fromBottom - box.clientHeight < 40;
    const line = (room && room.unreadFrom) || ""; // the "new messages" line goes before it
    const appendOnly = !jump && this.drawnRoom === room && drawn.length > 0
      && ids.length >= drawn.length && ids[0] === drawn[0]
      && ids[drawn.length - 1] === drawn[drawn.length - 1]
      && (line === this.drawnLine || (!this.lined && line > drawn[drawn.length - 1]));
    if (!appendOnly) {
      box.replaceChildren();
      this.day = "";
      this.lined = false;
    }
    for (const id of ids.slice(appendOnly ? drawn.length : 0)) {
      const m = room.byId.get(id);
      const date = new Date(m.ts);
      const day = format().day.format(date);
      if (day !== this.day) {
        this.day = day;
        box.append(el("li", "day", day));
      }
      if (line && !this.lined && id >= line) {
        box.append(el("li", "new-line", t("messages.new")));
        this.lined = true;
      }
      box.append(this.message(m, date));
    }
    this.drawnRoom = room;
    this.drawn = ids;
    this.drawnLine = line;
    if (jump || atBottom) box.scrollTop = box.scrollHeight;
    else if (!appendOnly) box.scrollTop = box.scrollHeight - fromBottom;
  }

  // A bot's answer grew (or became its final message): redraw that one item in place.
  grown(m) {
    const item = [...$("messages").children].find((li) => li.dataset.id === m.id);
    if (!item) { this.messages(); return; }
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    item.replaceWith(this.message(m, new Date(m.ts)));
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  message(m, date) {
    const chat = this.chat;
    const room = chat.rooms.get(chat.current);
    const item = el("li", "message");
    item.dataset.id = m.id;
    if (m.reply && room && !m.deleted) item.append(this.quote(chat.quoted(room, m)));
    const time = el("time", "time", format().time.format(date));
    time.dateTime = date.toISOString();
    item.append(time);
    let style = "text";
    if (m.deleted) style = "text deleted";
    else if (m.failed) style = "text failed";
    else if (m.rejected) style = "text rejected";
    else if (m.pending) style = "text pending";
    const { text, edited } = m.deleted ? { text: t("message.deleted"), edited: false }
      : room ? chat.textOf(room, m) : { text: m.text, edited: false };
    const attached = m.file && room && chat.readable(m) ? this.attachment(room, m) : null;
    if (attached && text === m.file.name && !edited) {
      item.append(el("span", "sender", m.sender), attached); // the file says its name
    } else if (m.me && !m.rejected && !m.deleted) {
      item.classList.add("action");
      item.append(el("span", "", `* ${m.sender} `), textOf(m, style, text));
    } else {
      item.append(el("span", "sender", m.sender), textOf(m, style, text));
    }
    if (attached && !item.contains(attached)) item.append(attached);
    if (edited) item.append(el("span", "edited", t("message.edited")));
    if (room && chat.readable(m) && !m.growing) {
      const reactions = chat.reactionsTo(room, m);
      if (reactions.length) item.append(this.reactions(reactions));
      item.append(this.actions(m));
    }
    if (m.plain) {
      const mark = el("span", "tag plain", t("tag.plain"));
      mark.title = t("message.plainTitle");
      item.append(mark);
    }
    if (m.mentionsMe) item.classList.add("mention");
    if (m.growing) {
      item.classList.add("growing");
      item.setAttribute("aria-busy", "true");
    }
    return item;
  }

  // A message's file: an image shown from its decrypted bytes, anything else a button that
  // saves it; neither is ever fetched from anywhere but this node, nor run.
  attachment(room, m) {
    const file = m.file;
    const size = file.size < 1024 * 1024 ? t("file.kib", { n: Math.ceil(file.size / 1024) })
      : t("file.mib", { n: (file.size / 1048576).toFixed(1) });
    if (IMAGES.includes(file.type)) {
      const figure = el("span", "attachment image");
      const img = el("img");
      img.alt = file.name || t("file.image");
      figure.append(img);
      this.chat.fileUrl(room, m).then((url) => {
        if (url) img.src = url;
        else figure.replaceChildren(el("span", "gone", t("file.gone", { name: file.name })));
      });
      return figure;
    }
    const button = el("button", "attachment file", `⬇ ${file.name || t("file.file")} (${size})`);
    button.type = "button";
    button.dataset.file = m.id;
    button.setAttribute("aria-label", t("file.save", { name: file.name || t("file.file"), size }));
    return button;
  }

  // What a reply answers: the start of that message, a button that shows it.
  quote(q) {
    const button = el("button", "quote");
    button.type = "button";
    button.dataset.seek = q.id;
    let said = t("quote.earlier");
    if (q.deleted) said = t("quote.deleted", { sender: q.sender });
    else if (q.sender) said = `${q.sender}: ${[...q.text].slice(0, QUOTE_CHARS).join("")}${[...q.text].length > QUOTE_CHARS ? "…" : ""}`;
    button.textContent = `↪ ${said}`;
    button.setAttribute("aria-label", t("quote.label", { said }));
    return button;
  }

  reactions(reactions) {
    const row = el("span", "reactions");
    for (const r of reactions) {
      const button = el("button", "reaction", `${r.emoji} ${r.names.length}`);
      button.type = "button";
      button.dataset.emoji = r.emoji;
      button.title = r.names.join(", ");
      button.setAttribute("aria-pressed", String(Boolean(r.mine)));
      button.setAttribute("aria-label", t(r.mine ? "reaction.mine" : "reaction.label", { emoji: r.emoji, names: r.names.join(", ") }));
      row.append(button);
    }
    return row;
  }

  // Reply, react, and for one's own edit and delete: shown on hover, focus or a tap.
  actions(m) {
    const row = el("span", "actions");
    const button = (act, label, text) => {
      const b = el("button", "", text);
      b.type = "button";
      b.dataset.act = act;
      b.setAttribute("aria-label", label);
      b.title = label;
      return b;
    };
    row.append(button("reply", t("action.reply"), "↩"), button("react", t("action.react"), "☺"));
    if (m.sender === this.chat.user && !m.pending) {
      row.append(button("edit", t("action.edit"), "✎"), button("delete", t("action.delete"), "✕"));
    }
    const picker = el("span", "picker");
    picker.hidden = true;
    for (const emoji of REACTIONS) {
      const b = el("button", "", emoji);
      b.type = "button";
      b.dataset.emoji = emoji;
      b.setAttribute("aria-label", t("action.reactWith", { emoji }));
      picker.append(b);
    }
    row.append(picker);
    return row;
  }

  // A quote was pressed: its message in view, for a moment marked.
  seek(id) {
    const item = [...$("messages").children].find((li) => li.dataset.id === id);
    if (!item) return;
    item.scrollIntoView({ block: "center" });
    item.classList.add("sought");
    setTimeout(() => item.classList.remove("sought"), 2000);
    item.tabIndex = -1;
    item.focus({ preventScroll: true });
  }

  // The bar above the composer while a reply or an edit is being written.
  composing(state = this.composingState) {
    this.composingState = state;
    $("composing").hidden = !state;
    if (!state) return;
    const text = [...state.text].slice(0, QUOTE_CHARS).join("");
    $("composing-text").textContent = state.mode === "edit"
      ? t("composing.edit") : t("composing.reply", { sender: state.sender, text });
  }

  completions(items, selected) {
    const list = $("completions");
    list.replaceChildren();
    list.hidden = items.length === 0;
    items.forEach((item, i) => {
      const li = el("li");
      li.id = `completion-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === selected));
      li.dataset.index = String(i);
      li.append(el("span", "usage", item.label));
      if (item.help) li.append(el("span", "help", item.help));
      list.append(li);
    });
    const area = $("composer-text");
    if (items.length) area.setAttribute("aria-activedescendant", `completion-${selected}`);
    else area.removeAttribute("aria-activedescendant");
  }
}
