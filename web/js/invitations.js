// Invitations and invite links: which key a room is given. A key offered never replaces one
// held without the user's choice ("use X's key"), and with none held, an invitation's key is
// taken only once it proves to open the room's boxes.
import * as box from "./crypto.js";
import { t } from "./i18n.js";
import * as sealed from "./sealed.js";

export class Invitations {
  // `keyring`: the room keys; `trust`: inviters' signing keys. `host`: the chat, as far as
  // invitations need it (user, identity, signer, typed, room, redecode, alert, dismiss,
  // changed, identityProblem, withKey, sendLine, ref); passed in, never imported.
  constructor(keyring, trust, host) {
    this.keyring = keyring;
    this.trust = trust;
    this.host = host;
    this.reset();
  }

  reset() {
    this.invitations = [];
    this.waiting = []; // invitations waiting for their inviter's signing key
    this.told = new Set(); // what was said once already (invitations come at every ready)
    this.rotations = new Map(); // ref of a `who` for a new key's members -> room
  }

  // ready.invitations, on a new connection (the keys asked on the old one are lost).
  ready(invitations) {
    this.invitations = invitations || [];
    this.waiting = [];
  }

  // The identity key is usable now: every invitation held is considered.
  considerAll() {
    for (const invitation of this.invitations) this.considerInvitation(invitation, false);
  }

  // -- invite links ------------------------------------------------------------------------

  // An invite link's key (or the key of a room made here): never over another key for the
  // room without the user's choice.
  keyFromLink(room, { key, share, fresh }) {
    const host = this.host;
    const keys = this.keyring.keysOf(room.name);
    if (fresh || !keys.length || keys.some((k) => box.sameBytes(k, key))) {
      if (this.keyring.addRoomKey(room.name, key)) host.redecode(room.name);
      if (share) host.changed("invite", room);
      return;
    }
    const text = t("invite.linkDiffers", { room: room.name });
    host.alert(room, "link", text, [
      { label: t("invite.useLink"), run: () => this.useKey(room, "link", key, t("invite.linkKey")) },
      { label: t("invite.keepMine"), run: () => {
        host.dismiss(room, "link");
        host.changed("notice", t("invite.kept", { room: room.name }));
      } },
    ]);
    host.changed("error", text);
  }

  // The user chose another key for the room: the newest, the old ones still open older boxes.
  useKey(room, alertId, key, whose) {
    const host = this.host;
    host.dismiss(room, alertId);
    this.keyring.addRoomKey(room.name, key);
    host.redecode(room.name);
    host.changed("notice", t("invite.used", { room: room.name, whose }));
  }

  // -- sealed invitations ------------------------------------------------------------------

  got(frame) {
    const host = this.host;
    this.invitations = this.invitations
      .filter((i) => i.room !== frame.room || i.sender !== frame.sender).concat([frame]);
    if (host.identity) this.considerInvitation(frame, true);
    else host.changed("error", t("invite.butLocked", { sender: frame.sender, room: frame.room, problem: host.identityProblem() }));
  }

  // Said once: invitations come again at every ready.
  tell(text, isError = true) {
    if (this.told.has(text)) return;
    this.told.add(text);
    this.host.changed(isError ? "error" : "notice", text);
  }

  // Opened with the identity secret, signed by the inviter, for us, for this room: then
  // offered as a key (offerKey), else said, with who and why, and nothing used.
  considerInvitation(invitation, live) {
    const host = this.host;
    const { room: name, sender } = invitation;
    const opened = sealed.openInvitation(invitation.sealed, host.identity.secretKey);
    const refused = (why) => this.tell(t("invite.refused", { sender, room: name, why }));
    if (opened.locked && box.openRoomKey(invitation.sealed, host.identity.secretKey)) {
      refused(t("invite.unsigned", { sender }));
      return;
    }
    if (opened.locked) {
      this.tell(t("invite.otherIdentity", { sender, room: name }));
      return;
    }
    if (opened.rejected) { refused(opened.rejected); return; }
    const wrong = sealed.checkInvitation(opened.invitation, name, sender, host.user);
    if (wrong) { refused(wrong); return; }
    const signing = this.trust.signingOf(sender);
    if (signing === undefined) { this.waiting.push({ invitation, live }); return; }
    if (!signing) { refused(t("trust.noSigning", { sender })); return; }
    if (!sealed.verifyInvitation(opened.invitation, signing)) { refused(t("trust.notTheirs", { sender })); return; }
    this.offerKey(name, sender, opened.invitation.key, live, invitation.staff === true);
  }

  // A key someone invited us with: never over a key we hold without the user's choice; with
  // none, only once it proves to open the room's boxes (settleCandidates).
  offerKey(name, sender, key, live, staff = false) {
    const host = this.host;
    const room = host.room(name);
    room.protected = true;
    const keys = this.keyring.keysOf(name);
    if (keys.some((k) => box.sameBytes(k, key))) {
      room.invitedBy = room.invitedBy || sender;
      if (live) host.changed("notice", t("invite.haveIt", { sender, room: name }));
      host.changed("rooms");
      return;
    }
    if (keys.length && staff) { // the room's staff made a new key (after a kick): ours now
      this.keyring.addRoomKey(name, key);
      host.redecode(name);
      this.tell(t("invite.rotated", { sender, room: name }), false);
      return;
    }
    if (keys.length) {
      const text = t("invite.differs", { sender, room: name });
      host.alert(room, `offer:${sender}`, text, [
        { label: t("invite.useTheirs", { sender }), run: () => this.useKey(room, `offer:${sender}`, key, t("invite.theirKey", { sender })) },
        { label: t("invite.keepMine"), run: () => host.dismiss(room, `offer:${sender}`) },
      ]);
      this.tell(text);
      return;
    }
    if (!room.candidates.some((c) => c.sender === sender && box.sameBytes(c.key, key))) {
      room.candidates.push({ sender, key });
    }
    room.invitedBy = sender;
    if (room.joined) {
      this.settleCandidates(room);
    } else {
      const text = t("invite.invited", { sender, room: name });
      if (live) host.changed("notice", text);
      else this.tell(text, false);
    }
    host.changed("rooms");
  }

  // The room's boxes are here (joined): an invitation's key is taken only if it opens them.
  // Any member may write boxes under a key of their own and then invite with it, so opening
  // the inviter's own boxes proves nothing: the key must open the oldest box shown (written
  // before the inviter's), or a box of someone other than the inviter. The rest are said and
  // not used. An empty room takes the first.
  settleCandidates(room) {
    if (!room.candidates.length || this.keyring.keysOf(room.name).length) {
      room.candidates = [];
      return;
    }
    const boxes = room.ids.map((id) => room.byId.get(id))
      .filter((m) => m.box !== undefined && !m.growing)
      .map((m) => ({ box: m.box, sender: m.sender }));
    const oldest = boxes[0];
    if (room.topicBox) boxes.push({ box: room.topicBox, sender: room.topicBy });
    const candidates = room.candidates;
    room.candidates = [];
    if (!boxes.length) {
      const [first] = candidates;
      this.keyring.addRoomKey(room.name, first.key);
      this.host.changed("notice", t("invite.emptyRoom", { room: room.name, sender: first.sender }));
      return;
    }
    const opens = (key, b) => !sealed.openBody([key], b.box).locked;
    const scored = candidates.map((c) => ({
      ...c,
      oldest: Boolean(oldest) && opens(c.key, oldest),
      others: new Set(boxes.filter((b) => b.sender !== c.sender && opens(c.key, b)).map((b) => b.sender)).size,
    }));
    const good = scored.filter((c) => c.oldest || c.others > 0)
      .sort((x, y) => Number(y.oldest) - Number(x.oldest) || y.others - x.others);
    for (const c of scored) {
      if (!good.includes(c)) this.tell(t("invite.doesNotOpen", { sender: c.sender, room: room.name }));
    }
    if (good.length) {
      this.keyring.addRoomKey(room.name, good[0].key);
      this.host.redecode(room.name);
    }
  }

  inviteCommand(room, args) {
    const host = this.host;
    const user = args.replace(/^@/, "").trim();
    if (!user || /\s/.test(user)) return t("chat.usage", { usage: t("usage.invite") });
    if (!room || room.direct) return t("invite.openFirst");
    if (!room.protected) return t("invite.openRoom", { room: room.name });
    const key = this.keyring.keysOf(room.name)[0];
    if (!key) return t("chat.noKey", { room: room.name, reason: this.keyring.noKeyReason() });
    if (!host.signer) return host.identityProblem();
    const typed = host.typed;
    return host.withKey(user, (theirs, direct, name) => host.sendLine({ type: "invite", room: room.name,
      to: user, sealed: sealed.sealInvitation(key, theirs, host.signer, { room: room.name, sender: host.user, to: name }),
      ref: host.ref("invite") }, typed));
  }

  // /rotate: a new key for the room, ours from now on; the node is asked for every member
  // (`who` with `all`), and each gets it sealed as an invitation (rotated, below).
  rotateCommand(room) {
    const host = this.host;
    if (!room || room.direct || !room.protected) return t("invite.rotateOpen");
    if (!this.keyring.keysOf(room.name).length) return t("chat.noKey", { room: room.name, reason: this.keyring.noKeyReason() });
    if (!host.signer) return host.identityProblem();
    this.keyring.addRoomKey(room.name, box.newKey());
    const ref = host.ref("rotate");
    this.rotations.set(ref, room.name);
    host.changed("notice", t("invite.rotating", { room: room.name }));
    return host.sendLine({ type: "who", room: room.name, all: true, ref });
  }

  rotated(frame) {
    const name = this.rotations.get(frame.ref);
    this.rotations.delete(frame.ref);
    const room = this.host.room(name);
    for (const member of frame.members) {
      if (member !== this.host.user) this.inviteCommand(room, member);
    }
  }

  // An inviter's key came (or the node has none): the invitations waiting for it go on.
  retry() {
    const waiting = this.waiting;
    this.waiting = [];
    if (this.host.identity) for (const { invitation, live } of waiting) this.considerInvitation(invitation, live);
  }
}
