// Telling the user something arrived: the unread count in the tab's title, where the
// "new messages" line goes, and, only if the user asked for them, a beep and desktop
// notifications. What the user chose is kept per account on this device, never any text.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const TITLE = "OnionChat";
const SETTINGS = "onionchat.notify."; // + the user's name
const OFF = { sound: false, desktop: false, text: false };
const WAIT = 5000; // ms a message may take to have its signature checked before it is told
const SHOWN = 200; // characters of a message a notification shows, at most

export class Notifier {
  // `open(name)`: show that room (a click on a notification); `redraw()`: the messages again.
  constructor(chat, { open, redraw }) {
    this.chat = chat;
    this.open = open;
    this.redraw = redraw;
    this.user = "";
    this.settings = { ...OFF };
    this.hidden = 0; // messages that came into the open room while the tab was hidden
    this.hiddenMention = false;
    this.waiting = new Map(); // id → timer: a message told once it can be read, or given up on
    this.shown = ""; // the room on screen: leaving it takes its "new messages" line away
    this.audio = null;
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      this.hidden = 0;
      this.hiddenMention = false;
      this.title();
    });
    // Browsers start sound only on a gesture: one unlocks it for the beeps that follow.
    const unlock = () => { if (this.settings.sound && this.audio?.state !== "running") this.context(); };
    document.addEventListener("pointerdown", unlock);
    document.addEventListener("keydown", unlock);
    $("notify-sound").addEventListener("change", (e) => this.soundTicked(e.target.checked));
    $("notify-desktop").addEventListener("change", (e) => this.desktopTicked(e.target));
    $("notify-text").addEventListener("change", (e) => this.choose({ text: e.target.checked }));
  }

  // -- what the user chose -----------------------------------------------------------------

  load(user) {
    this.user = user;
    let stored = {};
    try {
      stored = JSON.parse(localStorage.getItem(SETTINGS + user)) || {};
    } catch {
      stored = {};
    }
    for (const name of Object.keys(OFF)) this.settings[name] = stored[name] === true;
    // the browser may have withdrawn its permission since
    if (this.settings.desktop && !granted()) this.settings.desktop = false;
    this.show();
  }

  reset() {
    this.user = "";
    this.settings = { ...OFF };
    this.hidden = 0;
    this.hiddenMention = false;
    for (const timer of this.waiting.values()) clearTimeout(timer);
    this.waiting.clear();
    this.shown = "";
    $("notify-error").textContent = "";
    this.show();
    this.title();
  }

  choose(changes) {
    Object.assign(this.settings, changes);
    if (this.user) {
      const key = SETTINGS + this.user;
      if (Object.values(this.settings).some(Boolean)) localStorage.setItem(key, JSON.stringify(this.settings));
      else localStorage.removeItem(key); // all off: nothing of it is left on the device
    }
    this.show();
  }

  show() {
    $("notify-sound").checked = this.settings.sound;
    $("notify-desktop").checked = this.settings.desktop;
    $("notify-text").checked = this.settings.text;
    $("notify-text").disabled = !this.settings.desktop;
  }

  soundTicked(on) {
    this.choose({ sound: on });
    if (on) this.beep(1); // what it will sound like; the tick is the gesture that allows it
  }

  // Permission is asked here, on the user's tick, and only here.
  async desktopTicked(box) {
    $("notify-error").textContent = "";
    if (!box.checked) { this.choose({ desktop: false }); return; }
    const why = await permission();
    $("notify-error").textContent = why;
    this.choose({ desktop: !why });
  }

  // -- what the chat says ------------------------------------------------------------------

  // Called for every change the chat reports, before the view draws it.
  changed(what, arg) {
    if (this.shown !== this.chat.current) {
      const left = this.chat.rooms.get(this.shown);
      if (left) left.unreadFrom = "";
      this.shown = this.chat.current;
    }
    if (what === "arrived") this.arrived(arg.room, arg.m);
    else if (what === "grown" && this.waiting.has(arg.m.id) && !arg.m.pending) this.tell(arg.room, arg.m);
    this.title();
  }

  // The user wrote in the open room: what was new is read.
  wrote() {
    const room = this.chat.rooms.get(this.chat.current);
    if (!room || !room.unreadFrom) return;
    room.unreadFrom = "";
    this.redraw();
  }

  // A live message (never a page of history): told when the user is not looking at it.
  arrived(room, m) {
    if (m.sender === this.chat.user) return;
    const open = room.name === this.chat.current;
    if (open && !document.hidden) return;
    if (open) { // the tab is hidden: the line goes before the first they have not seen
      if (!this.hidden) room.unreadFrom = m.id;
      this.hidden += 1;
    }
    // its writer's key is on its way: told once it can be read, or without its text if not
    const later = m.pending || (m.failed && room.direct);
    if (!later) { this.tell(room, m); return; }
    this.waiting.set(m.id, setTimeout(() => this.tell(room, m), WAIT));
  }

  tell(room, m) {
    clearTimeout(this.waiting.get(m.id));
    this.waiting.delete(m.id);
    if (!this.chat.rooms.has(room.name)) return; // left meanwhile
    const mention = Boolean(m.mentionsMe);
    if (mention && room.name === this.chat.current && document.hidden) this.hiddenMention = true;
    if (this.settings.sound) this.beep(mention ? 2 : 1);
    if (this.settings.desktop) this.notification(room, m, mention);
    this.title();
  }

  // "(3) OnionChat", "(3) @ OnionChat" when someone mentioned the user.
  title() {
    let count = this.hidden;
    let mention = this.hiddenMention;
    for (const room of this.chat.rooms.values()) {
      count += room.unread;
      mention ||= room.mentioned;
    }
    const marks = [count ? `(${count})` : "", mention ? "@" : ""].filter(Boolean).join(" ");
    document.title = marks ? `${marks} ${TITLE}` : TITLE;
  }

  // -- sound and desktop notifications ----------------------------------------------------

  // The AudioContext, started if the browser allows it now: a promise of it, or null.
  context() {
    try {
      this.audio ||= new (window.AudioContext || window.webkitAudioContext)();
    } catch {
      return null; // no WebAudio here: no beep
    }
    if (this.audio.state === "running") return Promise.resolve(this.audio);
    const asked = Date.now();
    // a start the browser holds back until a later gesture would beep for old news then
    return this.audio.resume().then(() => (Date.now() - asked < 1000 ? this.audio : null), () => null);
  }

  beep(times) {
    this.context()?.then((audio) => { if (audio) play(audio, times); });
  }

  // Names the room and the writer; the text only of an open room, or where the user allowed it.
  notification(room, m, mention) {
    if (!granted()) return;
    const readable = !m.failed && !m.rejected && !m.pending && m.text;
    const secret = room.protected || room.direct;
    const text = readable && (!secret || this.settings.text) ? clip(m.text) : "";
    const where = room.direct ? t("notify.direct") : `#${room.name}`;
    let body = text || t("notify.new");
    if (mention) body = text ? t("notify.mentionedText", { text }) : t("notify.mentioned");
    try {
      const shown = new Notification(`${m.sender}, ${where}`, {
        body, tag: `onionchat:${room.name}`, silent: this.settings.sound,
      });
      shown.onclick = () => {
        window.focus();
        this.open(room.name);
        shown.close();
      };
    } catch {
      // some browsers (Chrome on Android) show them only from a service worker, which this page has not
      $("notify-error").textContent = t("notify.noWorker");
    }
  }
}

// Short beeps made here (no sound file): one for a message, two rising for a mention.
function play(audio, times) {
  let at = audio.currentTime + 0.02;
  for (let i = 0; i < times; i += 1) {
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = i ? 1175 : 880;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.15, at + 0.01); // no click at either end
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.14);
    tone.connect(gain).connect(audio.destination);
    tone.start(at);
    tone.stop(at + 0.15);
    at += 0.2;
  }
}

function granted() {
  return "Notification" in window && Notification.permission === "granted";
}

function clip(text) {
  const chars = [...text];
  return chars.length > SHOWN ? `${chars.slice(0, SHOWN).join("")}…` : text;
}

// "" once the browser lets this page show notifications, or why not.
async function permission() {
  if (!("Notification" in window)) return t("notify.unsupported");
  let answer = Notification.permission;
  try {
    if (answer === "default") answer = await Notification.requestPermission();
  } catch {
    answer = "default";
  }
  if (answer === "granted") return "";
  if (answer === "denied") {
    return t("notify.denied");
  }
  return t("notify.notGiven");
}
