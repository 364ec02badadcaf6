// Whom the page believes: other users' keys, asked of the node and pinned on first sight
// (trust on first use), a changed key warned of in every room shared with its owner and not
// used until /trust takes it, fingerprints for /whois; and every signed box checked against
// its envelope, its sender's signing key and replays.
import * as box from "./crypto.js";
import { t } from "./i18n.js";
import * as sealed from "./sealed.js";

export const PENDING = Symbol("pending"); // a signature waiting for the sender's key, or its turn
const CHECK_BUDGET_MS = 30; // signature checks in one go, before the page answers again

// Who is who is the node's to say: it compares names by NFKC + casefold, which JavaScript
// cannot reproduce (toLowerCase keeps "ß", casefold makes it "ss"). So the page never
// derives a name key or a conversation's room: it uses `ready.key`, `key.direct` and the
// room names of the frames. This loose form serves only where nothing is decided: whether
// to highlight a mention, or which known name a typed one means.
export function looseKey(name) {
  return String(name || "").normalize("NFKC").toUpperCase().toLowerCase();
}

export class Trust {
  // `keyring`: where pins are kept. `host`: the chat, as far as keys need it (user, signer,
  // identity, typed, rooms, directOf, publicKeys, socket, fetchKey, redecode, redecodeOne,
  // redecodeAll, alert, dismiss, changed, identityProblem); passed in, never imported.
  constructor(keyring, host) {
    this.keyring = keyring;
    this.host = host;
    this.reset();
  }

  reset() {
    this.asked = new Set(); // users whose keys were asked on this connection
    this.reasked = new Set(); // asked again after a signature failed (once per live message)
    this.noSigning = new Set(); // users the node has no signing key for
    this.changedKeys = new Map(); // user → { box, signing } that differ from the pinned ones
    this.verified = new Map(); // signing key + signed body → whether the signature holds
    this.recheck = new Set(); // rooms with signatures left to check (see verifies)
    this.verifying = new Set(); // signatures WebCrypto is checking now
    this.fastVerify = false; // WebCrypto's Ed25519, once the browser is known to have it
    sealed.hasWebEd25519().then((yes) => { this.fastVerify = yes; });
    this.recheckTimer = null;
    this.turnTimer = null;
    this.spent = 0;
  }

  // A new connection: every key is asked again once (whether it changed).
  reconnected() {
    this.asked.clear();
  }

  // A live message from `sender`: a failed signature may ask for their key again.
  live(sender) {
    this.reasked.delete(sender);
  }

  // The node has no identity key for the user, so no signing key either.
  noKeyFor(name) {
    this.noSigning.add(name);
  }

  // The node answered with the user's keys: the box key to use is the pinned one.
  answered(name, pub, signing) {
    this.asked.add(name);
    this.learnKey(name, pub, signing);
    // The key first seen is the one used: a changed key waits for /trust.
    const pin = this.keyring.peers.get(name);
    return pin ? pin.box : pub;
  }

  // -- checking signed boxes ---------------------------------------------------------------

  // Why an opened body is not what the envelope shows it as: null when it is, PENDING while
  // the sender's signing key is on its way. `id`: the message's (the replay check).
  judge(room, body, sender, kind, ts, id, re = undefined) {
    const wrong = sealed.checkBody(body, room.name, sender, kind, ts, re);
    if (wrong) return wrong;
    const signing = this.signingOf(sender);
    if (signing === undefined) return PENDING;
    if (!signing) return t("trust.noSigning", { sender });
    const holds = this.verifies(room, body, signing);
    if (holds === undefined) return PENDING;
    if (!holds) {
      if (!this.reasked.has(sender)) { // perhaps their key changed: ask the node again
        this.reasked.add(sender);
        this.asked.delete(sender);
        this.askKey(sender);
      }
      return this.changedKeys.has(sender)
        ? t("trust.notTheirsChanged", { sender })
        : t("trust.notTheirs", { sender });
    }
    if (!id) return null;
    const first = room.bodyIds.get(body.id);
    if (first && first < id) return t("trust.replay");
    room.bodyIds.set(body.id, id);
    if (first && first !== id) this.host.redecodeOne(room, first); // that one came later: the replay
    return null;
  }

  // Whether the signature holds: true, false, or undefined when it is checked later. An
  // Ed25519 check costs about 9 ms in tweetnacl (60 without JIT, Tor Browser's "Safer"): a
  // room's history is checked a few at a time, the page answering in between. Each answer is
  // kept, by the whole signed body (a message is decoded again whenever a key arrives).
  verifies(room, body, signing) {
    const memo = `${box.toBase64(signing)} ${box.toBase64(body.signed)}`;
    if (this.verified.has(memo)) return this.verified.get(memo);
    if (this.fastVerify) {
      // WebCrypto's Ed25519 answers asynchronously: the message is shown once it has.
      if (!this.verifying.has(memo)) {
        this.verifying.add(memo);
        sealed.verifyBodyFast(body, signing).then((ok) => {
          this.verifying.delete(memo);
          this.verified.set(memo, ok);
          this.recheck.add(room.name);
          if (!this.recheckTimer) this.recheckTimer = setTimeout(() => this.checkLater(), 0);
        });
      }
      return undefined;
    }
    if (this.spentThisTurn() >= CHECK_BUDGET_MS) {
      this.recheck.add(room.name);
      if (!this.recheckTimer) this.recheckTimer = setTimeout(() => this.checkLater(), 0);
      return undefined;
    }
    const start = performance.now();
    const ok = sealed.verifyBody(body, signing);
    this.spent += performance.now() - start;
    this.verified.set(memo, ok);
    return ok;
  }

  // Time spent checking signatures since the page last let other work run.
  spentThisTurn() {
    if (!this.turnTimer) {
      this.spent = 0;
      this.turnTimer = setTimeout(() => { this.turnTimer = null; }, 0);
    }
    return this.spent;
  }

  checkLater() {
    this.recheckTimer = null;
    const names = [...this.recheck];
    this.recheck.clear();
    for (const name of names) this.host.redecode(name);
  }

  // The signing key of a user: ours, the one first seen (pinned), null when the node has
  // none, or undefined while it is being asked for.
  signingOf(name) {
    const host = this.host;
    if (name === host.user && host.signer) return host.signer.publicKey;
    const pin = this.keyring.peers.get(name);
    this.askKey(name); // once a connection: whether it changed
    if (pin) return pin.signing;
    if (this.noSigning.has(name)) return null;
    return undefined;
  }

  askKey(name) {
    if (this.asked.has(name) || !this.host.socket.ready) return;
    this.asked.add(name);
    this.host.fetchKey(name);
  }

  // -- fingerprints and first-seen keys ----------------------------------------------------

  // What the node answered for a user, against the key first seen for them (trust on first
  // use): pinned when new, a visible warning in every shared room when changed.
  learnKey(name, pub, signing) {
    if (!signing) {
      this.noSigning.add(name);
      this.host.redecodeAll();
      return;
    }
    this.noSigning.delete(name);
    const pin = this.keyring.peers.get(name);
    if (!pin) {
      this.keyring.peers.set(name, { box: pub, signing });
      this.keyring.save();
    } else if (!box.sameBytes(pin.box, pub) || !box.sameBytes(pin.signing, signing)) {
      const seen = this.changedKeys.get(name);
      if (!seen || !box.sameBytes(seen.signing, signing) || !box.sameBytes(seen.box, pub)) {
        this.changedKeys.set(name, { box: pub, signing });
        this.warnChanged(name, pin, { box: pub, signing });
      }
    } else if (this.changedKeys.delete(name)) {
      this.unwarn(name);
    }
    this.host.redecodeAll();
  }

  sharesWith(room, name) {
    if (room.direct) return room.peer === name;
    if (room.members.has(name)) return true;
    for (const m of room.byId.values()) if (m.sender === name) return true;
    return false;
  }

  warnChanged(name, old, now) {
    const text = t("trust.changed", { name, old: sealed.fingerprint(old.box, old.signing),
      now: sealed.fingerprint(now.box, now.signing) });
    for (const room of this.host.rooms.values()) {
      if (this.sharesWith(room, name)) this.host.alert(room, `changed:${name}`, text);
    }
    this.host.changed("error", text);
  }

  unwarn(name) {
    for (const room of this.host.rooms.values()) {
      if (room.alerts.some((a) => a.id === `changed:${name}`)) this.host.dismiss(room, `changed:${name}`);
    }
  }

  // A user as the node spells them among those we know, whatever the case typed.
  knownName(typed, names) {
    const loose = looseKey(typed);
    return [...names].find((n) => n === typed) || [...names].find((n) => looseKey(n) === loose) || typed;
  }

  whoisCommand(args) {
    const host = this.host;
    const user = args.replace(/^@/, "").trim();
    if (/\s/.test(user)) return t("chat.usage", { usage: t("usage.whois") });
    if (!user) {
      if (!host.identity) return host.identityProblem();
      host.changed("notice", t("trust.yours", { fingerprint: sealed.fingerprint(host.identity.publicKey, host.signer.publicKey) }));
      return "";
    }
    const typed = host.typed;
    host.fetchKey(user, (pinned, direct, frame) => {
      const name = frame.user;
      const signing = frame.signing ? box.fromBase64(frame.signing) : null;
      if (!signing) {
        host.changed("notice", t("trust.noSigningYet", { name }));
      } else {
        const now = sealed.fingerprint(box.fromBase64(frame.public), signing); // the node's, now
        const pin = this.keyring.peers.get(name);
        const old = pin && sealed.fingerprint(pin.box, pin.signing);
        if (name === host.user) host.changed("notice", t("trust.yours", { fingerprint: now }));
        else if (!old || old === now) host.changed("notice", t("trust.theirs", { name, fingerprint: now }));
        else host.changed("error", t("trust.notFirst", { name, fingerprint: now, old }));
      }
      this.settleTyped(typed);
      return "";
    }, typed);
    return "";
  }

  trustCommand(args) {
    const host = this.host;
    const typedName = args.replace(/^@/, "").trim();
    if (!typedName || /\s/.test(typedName)) return t("chat.usage", { usage: t("usage.trust") });
    const name = this.knownName(typedName, this.changedKeys.keys());
    const now = this.changedKeys.get(name);
    if (!now) return t("trust.unchanged", { name: typedName });
    this.keyring.peers.set(name, now);
    this.changedKeys.delete(name);
    const direct = host.directOf.get(name);
    if (direct) host.publicKeys.set(direct, now.box);
    this.keyring.save();
    this.unwarn(name);
    host.redecodeAll();
    host.changed("notice", t("trust.trusted", { name, fingerprint: sealed.fingerprint(now.box, now.signing) }));
    return "";
  }

  settleTyped(typed) {
    if (typed) this.host.changed("line", { tag: typed.tag, reason: "" });
  }
}
