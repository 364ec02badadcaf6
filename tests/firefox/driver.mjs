// Drives Debian's firefox-esr over WebDriver BiDi for tests/firefox.py (Debian has no
// geckodriver). One JSON object per line each way: {"id", "cmd", ...} in, {"id", "value"} or
// {"id", "error"} out. The first line out is {"ready": {...}}. The driver ends, and Firefox with
// it, when its stdin closes.
//
// Waits poll from here (never from the page: with javascript.enabled=false a page runs no
// timers, so page-side waits and puppeteer's locators never finish), and every one is bounded.
import readline from "node:readline";
import puppeteer from "puppeteer-core";

const config = JSON.parse(process.argv[2] || "{}");
const TIMEOUT = config.timeout || 10000;
const POLL = 50;

// Runs before the page's own scripts, outside its CSP (a BiDi preload script).
const CSP_WATCH = `
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
`;

// In the page: the elements a selector names. CSS, or "label=TEXT" (the control a label or an
// aria-label names: the exact text if one has it, else those that start with it), or
// "button=TEXT"; parts joined by " >> " look inside the previous part's elements (inside its
// document, for an iframe). With `first`, the first such element itself if it can be acted on
// (visible, enabled: as Playwright waits for before an action), else null; without, a summary
// of them all.
function probe(selector, first) {
  const squash = (s) => (s || "").replace(/\s+/g, " ").trim();
  const byLabel = (root, text) => {
    const named = [];
    for (const label of root.querySelectorAll("label")) {
      if (label.control) named.push([squash(label.textContent), label.control]);
    }
    for (const el of root.querySelectorAll("[aria-label]")) {
      named.push([squash(el.getAttribute("aria-label")), el]);
    }
    const exact = named.filter(([name]) => name === text);
    const chosen = exact.length ? exact : named.filter(([name]) => name.startsWith(text));
    return [...new Set(chosen.map(([, el]) => el))];
  };
  const byButton = (root, text) =>
    [...root.querySelectorAll("button, input[type=submit]")].filter(
      (el) => squash(el.textContent || el.value) === text,
    );
  let found = [document];
  for (const part of selector.split(" >> ")) {
    const next = [];
    for (const outer of found) {
      const root = outer.contentDocument ?? outer;
      if (part.startsWith("label=")) next.push(...byLabel(root, part.slice(6)));
      else if (part.startsWith("button=")) next.push(...byButton(root, part.slice(7)));
      else next.push(...root.querySelectorAll(part));
    }
    found = [...new Set(next)];
  }
  // as Playwright sees it: a box, and rendered (not inside a closed <details>, say)
  const visible = (el) => {
    const rect = el.getBoundingClientRect();
    return rect.width > 0 && rect.height > 0 && el.checkVisibility({ visibilityProperty: true });
  };
  if (first) return found.length && visible(found[0]) && !found[0].disabled ? found[0] : null;
  return {
    count: found.length,
    texts: found.map((el) => squash(el.textContent)),
    values: found.map((el) => el.value ?? null),
    visible: found.length > 0 && visible(found[0]),
    checked: found.length > 0 && Boolean(found[0].checked),
    box: found.length
      ? (({ x, y, width, height }) => ({ x, y, width, height }))(found[0].getBoundingClientRect())
      : null,
  };
}

const pages = new Map(); // id -> {page, context, events}
let nextPage = 1;

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: config.executable || "/usr/bin/firefox-esr",
  protocol: "webDriverBiDi",
  headless: true,
  extraPrefsFirefox: config.prefs || {},
  timeout: 30000,
});

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function newPage({ width, height }) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.setDefaultNavigationTimeout(TIMEOUT);
  await page.setViewport({ width, height });
  const events = { requests: [], console_errors: [], dialogs: [], http_errors: [] };
  if (config.javascript !== false) await page.evaluateOnNewDocument(CSP_WATCH);
  page.on("request", (request) => events.requests.push(request.url()));
  page.on("console", (msg) => {
    if (msg.type() === "error") events.console_errors.push(msg.text());
  });
  page.on("pageerror", (error) => events.console_errors.push(String(error)));
  page.on("response", (response) => {
    if (response.status() >= 400) {
      events.http_errors.push(`${response.status()} ${response.url()}`);
    }
  });
  page.on("dialog", (dialog) => {
    events.dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  await page.bringToFront(); // a background tab types slowly
  const id = nextPage++;
  pages.set(id, { page, context, events });
  return id;
}

async function find(page, selector) {
  return page.evaluate(probe, selector);
}

// The first element of a selector, once it can be acted on (bounded).
async function element(page, selector, timeout) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const handle = await page.evaluateHandle(probe, selector, true);
    const found = handle.asElement();
    if (found) return found;
    await handle.dispose();
    if (Date.now() > deadline) throw new Error(`nothing visible and enabled matches ${selector}`);
    await new Promise((resolve) => setTimeout(resolve, POLL));
  }
}

// Runs an action that may navigate; with navigate, waits for the navigation too.
async function maybeNavigating(page, navigate, timeout, action) {
  if (!navigate) return action();
  const navigation = page.waitForNavigation({ timeout });
  navigation.catch(() => {});
  await action();
  await navigation;
}

const matchers = {
  equals: (got, want) => JSON.stringify(got) === JSON.stringify(want),
  contains: (got, want) =>
    Array.isArray(got) ? got.some((text) => text.includes(want)) : String(got).includes(want),
};

// Polls `property` of a selector until it matches (or, with negate, stops matching).
async function waitFor(page, { selector, property, op, expected, negate, timeout }) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    const found = await find(page, selector);
    last = property === "text" ? (found.texts[0] ?? null) : found[property];
    if (property === "value") last = found.values[0] ?? null;
    if (matchers[op](last, expected) !== Boolean(negate)) return last;
    if (Date.now() > deadline) {
      const want = `${negate ? "not " : ""}${op} ${JSON.stringify(expected)}`;
      throw new Error(`${selector}: ${property} ${want}, but it is ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL));
  }
}

const commands = {
  newPage,
  async goto({ page, url }) {
    const response = await page.goto(url, { waitUntil: "load" });
    return response ? response.status() : null;
  },
  async reload({ page }) {
    await page.reload({ waitUntil: "load" });
  },
  url: ({ page }) => page.url(),
  find: ({ page, selector }) => find(page, selector),
  waitFor: ({ page, ...args }) => waitFor(page, args),
  async fill({ page, selector, text, timeout }) {
    // as Playwright's fill: the whole text at once, with one input event
    const el = await element(page, selector, timeout);
    await el.evaluate((node, value) => {
      node.focus();
      node.value = value;
      node.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "insertText" }));
    }, text);
  },
  async type({ page, selector, text, timeout }) {
    if (selector) await (await element(page, selector, timeout)).focus();
    await page.keyboard.type(text);
  },
  async press({ page, selector, key, navigate, timeout }) {
    if (selector) await (await element(page, selector, timeout)).focus();
    await maybeNavigating(page, navigate, timeout, () => page.keyboard.press(key));
  },
  async click({ page, selector, navigate, timeout }) {
    const el = await element(page, selector, timeout);
    await maybeNavigating(page, navigate, timeout, () => el.click());
  },
  async evaluate({ page, source, arg }) {
    return page.evaluate(`(${source})(${JSON.stringify(arg ?? null)})`);
  },
  async screenshot({ page, path, fullPage }) {
    await page.screenshot({ path, fullPage: Boolean(fullPage) });
  },
  async events({ page, events }) {
    const csp =
      config.javascript === false ? null : await page.evaluate("window.__cspViolations ?? null");
    return { ...events, csp_violations: csp };
  },
  async closePage({ id, context }) {
    pages.delete(id);
    await context.close();
  },
};

async function handle(line) {
  let request;
  try {
    request = JSON.parse(line);
    const command = commands[request.cmd];
    if (!command) throw new Error(`unknown command ${request.cmd}`);
    const args = { ...request };
    if (request.page !== undefined) {
      const open = pages.get(request.page);
      if (!open) throw new Error(`no page ${request.page}`);
      Object.assign(args, open, { id: request.page });
    }
    const value = await command(args);
    send({ id: request.id, value: value ?? null });
  } catch (error) {
    send({ id: request?.id ?? null, error: String(error?.message ?? error) });
  }
}

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  const forced = setTimeout(() => {
    browser.process()?.kill("SIGKILL");
    process.exit(1);
  }, 10000);
  try {
    await browser.close();
  } finally {
    clearTimeout(forced);
    process.exit(0);
  }
}

process.on("unhandledRejection", (error) => process.stderr.write(`unhandled: ${error}\n`));
const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => void handle(line));
input.on("close", shutdown);
send({ ready: { version: await browser.version(), pid: browser.process()?.pid ?? null } });
