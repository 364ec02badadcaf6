// Links in a message: http(s) addresses and bare .onion names become links, the rest stays
// text. A link to the open internet opens only once the user has read where it leads: its
// site sees the visit, which an onion link keeps inside Tor.
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

// An address with its scheme, or a bare onion name (not the tail of a longer name or of an
// e-mail address), with a path if it has one.
const LINK = /\bhttps?:\/\/[^\s<>"]+|(?<![\p{L}\p{N}_@.:/-])(?:[a-z0-9-]+\.)+onion(?!\.?[\p{L}\p{N}_-])(?:[/?#][^\s<>"]*)?/giu;
const TRAILING = ".,;:!?'\"’”]}*…"; // the sentence's, not the link's

// The link without the punctuation that ends the sentence around it; a ")" stays when the
// link opened it (a Wikipedia address).
function trim(raw) {
  let end = raw.length;
  while (end > 0) {
    const c = raw[end - 1];
    if (c === ")") {
      const part = raw.slice(0, end);
      if (part.split("(").length >= part.split(")").length) break;
    } else if (!TRAILING.includes(c)) {
      break;
    }
    end -= 1;
  }
  return raw.slice(0, end);
}

// What a link opens: an http(s) URL with a host, or null (then it stays text).
function target(raw) {
  let url;
  try {
    url = new URL(/^https?:\/\//i.test(raw) ? raw : `http://${raw}`);
  } catch {
    return null;
  }
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname ? url : null;
}

export function isOnion(url) {
  return url.hostname.replace(/\.$/, "").endsWith(".onion");
}

let asked = null; // { url, from }: the open-internet link the warning is about

function ask(event, url) {
  if (event.type === "auxclick" && event.button !== 1) return; // only the middle button opens
  event.preventDefault();
  asked = { url, from: event.currentTarget };
  $("leave-text").textContent = t("leave.text", { host: url.hostname });
  $("leave-url").textContent = url.href;
  $("leave").hidden = false;
  $("leave-cancel").focus(); // the safe choice is the one Enter takes
}

function close() {
  $("leave").hidden = true;
  if (asked && asked.from.isConnected) asked.from.focus();
  asked = null;
}

$("leave-cancel").addEventListener("click", close);
$("leave-open").addEventListener("click", () => {
  if (asked) window.open(asked.url.href, "_blank", "noopener,noreferrer");
  close();
});
$("leave").addEventListener("keydown", (e) => {
  if (e.key === "Escape") close();
});

function anchor(text, url) {
  const a = document.createElement("a");
  a.textContent = text;
  a.href = url.href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  if (!isOnion(url)) {
    a.className = "clearnet";
    a.title = t("leave.title", { host: url.hostname });
    a.addEventListener("click", (e) => ask(e, url));
    a.addEventListener("auxclick", (e) => ask(e, url));
  }
  return a;
}

// The nodes that show `text`: text nodes, and a link for each address in it.
export function linkify(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    const raw = trim(match[0]);
    const url = raw && target(raw);
    if (!url) continue;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    nodes.push(anchor(raw, url));
    at = match.index + raw.length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}
