// The WebSocket: authenticates by the HttpOnly cookie, splits node messages into frames
// (one message may carry several, one per line), reconnects with backoff.

const AUTH_LOST = new Set([4001, 4002]);

export class Socket {
  constructor({ onFrame, onState, onAuthLost }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.onAuthLost = onAuthLost;
    this.ws = null;
    this.delay = 0;
    this.timer = null;
    this.stopped = true;
    this.queue = [];
    this.limits = { rate: 20, burst: 60 };
  }

  start() {
    this.stopped = false;
    this.delay = 0;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }

  get ready() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.authed;
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.ws = ws;
    this.authed = false;
    this.onState(this.delay ? "reconnecting" : "connecting");
    ws.onmessage = (event) => {
      for (const line of String(event.data).split("\n")) {
        if (!line) continue;
        let frame;
        try { frame = JSON.parse(line); } catch { continue; }
        if (frame.type === "ready") {
          this.authed = true;
          if (frame.limits) this.limits = frame.limits;
          this.tokens = Math.max(1, this.limits.burst - 2); // a little below the node's count
          this.filled = performance.now();
          this.delay = 0; // a good connection resets the backoff
          this.onState("online");
        }
        this.onFrame(frame);
      }
    };
    ws.onclose = (event) => {
      if (ws !== this.ws || this.stopped) return;
      this.ws = null;
      this.queue = [];
      if (AUTH_LOST.has(event.code)) {
        this.stopped = true;
        this.onAuthLost(event.reason);
        return;
      }
      // Tor is slow and flaky: back off up to 8 s, slower after flooding (4008).
      const cap = event.code === 4008 ? 30000 : 8000;
      this.delay = Math.min(cap, this.delay ? this.delay * 2 : 500);
      this.onState("reconnecting");
      this.timer = setTimeout(() => this.open(), this.delay + Math.random() * 250);
    };
  }

  // Frames go out under the node's rate limit (ready.limits): a burst, then `rate` a
  // second, so rejoining many rooms or filling a gap never gets frames dropped.
  send(frame) {
    if (!this.ready) return false;
    this.queue.push(JSON.stringify({ v: 1, ...frame }));
    this.flush();
    return true;
  }

  flush() {
    const now = performance.now();
    this.tokens = Math.min(this.limits.burst - 2, this.tokens + ((now - this.filled) / 1000) * this.limits.rate);
    this.filled = now;
    while (this.queue.length && this.tokens >= 1 && this.ready) {
      this.tokens -= 1;
      this.ws.send(this.queue.shift());
    }
    if (this.queue.length && !this.flushing) {
      this.flushing = true;
      setTimeout(() => { this.flushing = false; this.flush(); }, 1000 / this.limits.rate);
    }
  }
}
