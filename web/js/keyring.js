// The keyring: every room key and every first-seen peer key of this account, kept on the
// node sealed under the wrapping key (versions, conflicts, merges). Nothing of it is stored
// in this browser.
import * as box from "./crypto.js";
import { t } from "./i18n.js";
import * as sealed from "./sealed.js";

export class Keyring {
  // `socket`: where the keyring is stored; `redecodeAll()`: read again what new keys open.
  constructor(socket, redecodeAll) {
    this.socket = socket;
    this.redecodeAll = redecodeAll;
    this.reset();
  }

  reset() {
    this.stored = null; // the keyring as the node last sent it, to unlock this tab later
    this.ring = sealed.newKeyring();
    this.version = 0;
    this.state = "locked"; // "open", "locked" (no wrapping key in this tab), "wrong"
    this.saving = false;
    this.dirty = false;
  }

  keysOf(name) {
    return this.ring.rooms.get(name) || [];
  }

  // The peer keys first seen (trust on first use): user → { box, signing }.
  get peers() {
    return this.ring.peers;
  }

  // Keeps `key` for the room (newest first) and stores the keyring; false when kept already.
  addRoomKey(name, key) {
    if (!sealed.addKey(this.ring, name, key)) return false;
    this.save();
    return true;
  }

  size(ring) {
    let n = ring.peers.size;
    for (const keys of ring.rooms.values()) n += keys.length;
    return n;
  }

  // Stores the keyring on the node (version + 1): one request at a time, the latest wins.
  save() {
    const wrap = box.loadWrap();
    if (!wrap || this.state !== "open" || !this.socket.ready) return;
    if (this.saving) { this.dirty = true; return; }
    this.saving = true;
    this.dirty = false;
    this.socket.send({ type: "keyring", sealed: sealed.sealKeyring(wrap, this.ring),
      version: this.version + 1, ref: "keyring" });
  }

  // ready.keyring, on a new connection (nothing of ours is being stored any more).
  ready(stored) {
    this.saving = false;
    this.stored = stored || null;
    this.open(this.stored);
  }

  // What the node holds into what this tab holds.
  open(stored) {
    const wrap = box.loadWrap();
    if (!wrap) { this.state = "locked"; return; }
    if (stored) {
      const other = sealed.openKeyring(wrap, stored.sealed);
      if (!other) { this.state = "wrong"; return; }
      sealed.mergeKeyring(this.ring, other);
      this.version = stored.version;
      this.state = "open";
      this.redecodeAll();
      if (this.size(this.ring) > this.size(other)) this.save(); // ours had more
      return;
    }
    this.state = "open";
    this.version = 0;
    if (this.size(this.ring)) this.save();
  }

  // This tab got its wrapping key: open what the node sent last.
  unlock() {
    this.open(this.stored);
  }

  // Ours stored (with our ref), or another device's (pushed; also the latest before a
  // `conflict`): merged, every key of both.
  got(frame) {
    if (frame.ref === "keyring") {
      this.version = frame.version;
      this.saving = false;
      if (this.dirty) this.save();
      return;
    }
    this.stored = { sealed: frame.sealed, version: frame.version }; // for an unlock later
    const wrap = box.loadWrap();
    const other = wrap && sealed.openKeyring(wrap, frame.sealed);
    if (!other) return;
    sealed.mergeKeyring(this.ring, other);
    this.version = frame.version;
    this.state = "open";
    if (this.size(this.ring) > this.size(other) && !this.saving) this.save();
    this.redecodeAll();
  }

  // The node refused to store it; true when that is dealt with here.
  refused(frame) {
    this.saving = false;
    // the node sent the latest keyring just before (merged by got): send again
    if (frame.code === "conflict") { this.save(); return true; }
    return false;
  }

  noKeyReason() {
    if (this.state === "locked") return t("keyring.locked");
    if (this.state === "wrong") return t("keyring.wrong");
    return t("keyring.none");
  }
}
