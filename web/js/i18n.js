// The page's words: one file per language under web/i18n/ (web/i18n/index.js names each one),
// the language in use, and the static HTML translated from its data-i18n attributes.
// Importers wait for the first language (top-level await), so t() works at once.
import en from "../i18n/en.js";
import names from "../i18n/index.js";

const STORED = "onionchat.lang"; // the last language chosen on this device (not a secret)
const loaded = new Map([["en", en]]);
const listeners = [];
let current = "en";
let strings = en;

export const LANGUAGES = names; // code → the language's own name

export function available(code) {
  return typeof code === "string" && Object.hasOwn(names, code);
}

// The first of the browser's languages that has a file, else English.
export function browserLanguage() {
  for (const tag of navigator.languages || [navigator.language]) {
    const code = String(tag || "").toLowerCase().split("-")[0];
    if (available(code)) return code;
  }
  return "en";
}

// What this device chose last ("" for the browser's): the login screen speaks it.
export function stored() {
  const code = localStorage.getItem(STORED) || "";
  return available(code) ? code : "";
}

export function remember(code) {
  if (available(code)) localStorage.setItem(STORED, code);
  else localStorage.removeItem(STORED);
}

export function language() {
  return current;
}

// The locale of dates: the browser's own tag when it is of this language (en-GB keeps its
// day before the month), else the language itself.
export function locale() {
  const tags = navigator.languages || [navigator.language];
  return tags.find((tag) => String(tag).toLowerCase().split("-")[0] === current) || current;
}

function fill(text, vars) {
  return text.replace(/\{(\w+)\}/g, (all, name) => (vars && name in vars ? String(vars[name]) : all));
}

// The text of `key` in the current language (English when it has none), {name}s filled in.
export function t(key, vars) {
  return fill(strings[key] ?? en[key] ?? key, vars);
}

// A counted text: `key.one`, `key.few`, ... as Intl.PluralRules says, `key.other` otherwise.
export function plural(key, count, vars = {}) {
  const form = `${key}.${new Intl.PluralRules(current).select(count)}`;
  const found = strings[form] ?? strings[`${key}.other`] ?? en[form] ?? en[`${key}.other`] ?? key;
  return fill(found, { count, ...vars });
}

// An element's text; `code` between backquotes becomes <kbd> (never HTML from a file).
function setText(el, text) {
  const parts = text.split("`");
  if (parts.length === 1) { el.textContent = text; return; }
  el.replaceChildren(...parts.map((part, i) => {
    if (i % 2 === 0) return document.createTextNode(part);
    const kbd = document.createElement("kbd");
    kbd.textContent = part;
    return kbd;
  }));
}

// The static HTML: data-i18n (the text), data-i18n-placeholder, -aria-label and -title.
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) setText(el, t(el.dataset.i18n));
  for (const attr of ["placeholder", "aria-label", "title"]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}

// `fn()` after every change of language (the view redraws).
export function onLanguage(fn) {
  listeners.push(fn);
}

// Speaks `code` (a language without a file: the browser's) from now on.
export async function setLanguage(code) {
  const next = available(code) ? code : browserLanguage();
  if (!loaded.has(next)) loaded.set(next, (await import(`../i18n/${next}.js`)).default);
  current = next;
  strings = loaded.get(next);
  document.documentElement.lang = next;
  translatePage();
  for (const fn of listeners) fn();
}

await setLanguage(stored() || browserLanguage());
