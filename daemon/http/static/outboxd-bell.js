/*
 * <outboxd-bell server="https://notify.example.com" token="...">: the in-app inbox bell of
 * outboxd. No dependencies. Served by outboxd at /inbox/widget.js.
 *
 * - server: outboxd's base URL; defaults to the origin this script was loaded from.
 * - token:  a subscriber token minted by the application's backend; setting it (again)
 *           reconnects. When it is refused (expired), the element fires
 *           "outboxd-unauthorized": set a fresh token then.
 * The badge (part="badge") shows the unread count and is hidden at 0. The list opens with
 * the bell button; Escape closes it, arrow keys move between items. New items arrive live
 * (EventSource) and fire "outboxd-item" with the item as detail.
 * Theme with CSS custom properties (--outboxd-accent, --outboxd-badge-background, ...) or
 * ::part(button | badge | panel | list | item | mark-read | mark-all-read).
 */
(() => {
  "use strict";
  if (!("customElements" in window) || customElements.get("outboxd-bell")) return;

  const script = document.currentScript;
  const SCRIPT_ORIGIN =
    script && script.src ? new URL(script.src, location.href).origin : location.origin;

  const STYLE = `
:host { display: inline-block; position: relative; font-family: var(--outboxd-font-family, inherit);
  font-size: var(--outboxd-font-size, 0.9375rem); line-height: 1.4; }
:host([hidden]) { display: none; }
button { font: inherit; cursor: pointer; }
.bell { position: relative; display: inline-flex; align-items: center; justify-content: center;
  width: var(--outboxd-bell-size, 2.5rem); height: var(--outboxd-bell-size, 2.5rem); padding: 0;
  border: 0; border-radius: 50%; color: var(--outboxd-bell-color, currentColor);
  background: var(--outboxd-bell-background, transparent); }
.bell:hover { background: var(--outboxd-bell-hover-background, rgba(0, 0, 0, 0.06)); }
.bell svg { width: 60%; height: 60%; }
:focus-visible { outline: 2px solid var(--outboxd-accent, #2563eb); outline-offset: 2px; }
.badge { position: absolute; top: 0; right: 0; min-width: 1.25em; padding: 0 0.35em;
  box-sizing: border-box; border-radius: 999px; font-size: 0.75em; font-weight: 600;
  line-height: 1.25em; text-align: center; color: var(--outboxd-badge-color, #fff);
  background: var(--outboxd-badge-background, #dc2626); }
[hidden] { display: none !important; }
.panel { position: absolute; z-index: var(--outboxd-z-index, 1000); top: calc(100% + 0.25rem);
  right: 0; width: var(--outboxd-panel-width, 22rem); max-width: 90vw;
  max-height: var(--outboxd-panel-max-height, 28rem); overflow: auto; box-sizing: border-box;
  color: var(--outboxd-panel-color, #111827); background: var(--outboxd-panel-background, #fff);
  border: 1px solid var(--outboxd-border-color, #e5e7eb); border-radius: var(--outboxd-radius, 0.5rem);
  box-shadow: var(--outboxd-shadow, 0 10px 30px rgba(0, 0, 0, 0.15)); }
.head { display: flex; align-items: center; justify-content: space-between; gap: 0.5rem;
  padding: 0.5rem 0.75rem; border-bottom: 1px solid var(--outboxd-border-color, #e5e7eb); }
.head h2 { margin: 0; font-size: 1em; }
.link { border: 0; padding: 0.25rem; background: none; color: var(--outboxd-accent, #2563eb); }
.link:disabled { color: var(--outboxd-muted-color, #6b7280); cursor: default; }
ul { list-style: none; margin: 0; padding: 0; }
.item { display: flex; gap: 0.5rem; align-items: flex-start; padding: 0.625rem 0.75rem;
  border-bottom: 1px solid var(--outboxd-border-color, #e5e7eb); }
.item.unread { background: var(--outboxd-unread-background, #eff6ff); }
.main { flex: 1; min-width: 0; color: inherit; text-decoration: none; }
.title { display: block; font-weight: 600; overflow-wrap: anywhere; }
.item:not(.unread) .title { font-weight: 400; }
.body { display: block; margin-top: 0.125rem; overflow-wrap: anywhere; white-space: pre-line; }
time { display: block; margin-top: 0.25rem; font-size: 0.8em; color: var(--outboxd-muted-color, #6b7280); }
.empty, .more { display: block; width: 100%; margin: 0; padding: 0.75rem; text-align: center;
  box-sizing: border-box; color: var(--outboxd-muted-color, #6b7280); }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

  const TEMPLATE = `
<button class="bell" part="button" type="button" aria-haspopup="true" aria-expanded="false"
        aria-controls="panel" aria-label="Notifications">
  <svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"
       stroke-linejoin="round" aria-hidden="true" focusable="false">
    <path d="M6 8a6 6 0 0 1 12 0c0 7 3 9 3 9H3s3-2 3-9"/><path d="M10.3 21a1.94 1.94 0 0 0 3.4 0"/>
  </svg>
  <span class="badge" part="badge" hidden aria-hidden="true">0</span>
</button>
<div class="panel" part="panel" id="panel" role="region" aria-labelledby="heading" tabindex="-1" hidden>
  <div class="head">
    <h2 id="heading">Notifications</h2>
    <button class="link mark-all" part="mark-all-read" type="button">Mark all read</button>
  </div>
  <ul class="list" part="list" aria-labelledby="heading"></ul>
  <p class="empty" hidden>No notifications</p>
  <button class="link more" type="button" hidden>Load more</button>
</div>
<div class="sr" role="status" aria-live="polite"></div>
`;

  const relative = (() => {
    const format = "RelativeTimeFormat" in Intl ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
    const steps = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.345, "week"], [12, "month"], [Infinity, "year"]];
    return (iso) => {
      const date = new Date(iso);
      if (!format || Number.isNaN(date.getTime())) return date.toLocaleString();
      let value = (date.getTime() - Date.now()) / 1000;
      for (const [size, unit] of steps) {
        if (Math.abs(value) < size) return format.format(Math.round(value), unit);
        value /= size;
      }
      return date.toLocaleString();
    };
  })();

  const safeUrl = (raw) => {
    if (!raw) return null;
    try {
      const url = new URL(raw, location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (_) {
      return null;
    }
  };

  class OutboxdBell extends HTMLElement {
    static get observedAttributes() {
      return ["token", "server"];
    }

    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = `<style>${STYLE}</style>${TEMPLATE}`;
      this._button = root.querySelector(".bell");
      this._badge = root.querySelector(".badge");
      this._panel = root.querySelector(".panel");
      this._list = root.querySelector(".list");
      this._empty = root.querySelector(".empty");
      this._more = root.querySelector(".more");
      this._markAll = root.querySelector(".mark-all");
      this._status = root.querySelector("[role=status]");
      this._items = new Map(); // id -> { item, li }
      this._unread = 0;
      this._unseen = 0;
      this._source = null;
      this._generation = 0;
      this._lastId = null;
      this._retries = 0;
      this._retryTimer = null;
      this._loaded = false;
      this._loading = null;
      this._next = null;

      this._button.addEventListener("click", () => (this.open ? this.close() : this.show()));
      this._markAll.addEventListener("click", () => this.markAllRead());
      this._more.addEventListener("click", () => this._load(this._next));
      root.addEventListener("keydown", (event) => this._onKey(event));
      this._onOutside = (event) => {
        if (this.open && !event.composedPath().includes(this)) this.close(false);
      };
    }

    // Public API ------------------------------------------------------------------------

    get server() {
      return (this.getAttribute("server") || SCRIPT_ORIGIN).replace(/\/+$/, "");
    }
    set server(value) {
      this.setAttribute("server", value);
    }
    get token() {
      return this.getAttribute("token") || "";
    }
    set token(value) {
      this.setAttribute("token", value);
    }
    get unread() {
      return this._unread;
    }
    get open() {
      return !this._panel.hidden;
    }

    show() {
      this._panel.hidden = false;
      this._button.setAttribute("aria-expanded", "true");
      const loading = this._loaded ? Promise.resolve() : this._load(null);
      if (this._unseen > 0) this._post("/inbox/seen").catch(() => {});
      loading.finally(() => {
        if (!this.open) return;
        const first = this._focusables()[0];
        (first || this._panel).focus();
      });
    }

    close(returnFocus = true) {
      if (!this.open) return;
      this._panel.hidden = true;
      this._button.setAttribute("aria-expanded", "false");
      if (returnFocus) this._button.focus();
    }

    async markRead(id) {
      const entry = this._items.get(id);
      if (entry && entry.item.read_at) return;
      this._upsert(await this._post(`/inbox/${id}/read`));
      await this._refreshCounts();
    }

    async markAllRead() {
      await this._post("/inbox/read-all");
      const now = new Date().toISOString();
      for (const { item } of this._items.values()) {
        if (!item.read_at) this._upsert({ ...item, read_at: now, seen_at: item.seen_at || now });
      }
      await this._refreshCounts();
    }

    // Lifecycle -------------------------------------------------------------------------

    connectedCallback() {
      document.addEventListener("click", this._onOutside, true);
      this._connect();
    }

    disconnectedCallback() {
      document.removeEventListener("click", this._onOutside, true);
      this._disconnect();
    }

    attributeChangedCallback() {
      // A new token (or server) is another person or session: start over.
      if (!this.isConnected) return;
      this._disconnect();
      this._items.clear();
      this._list.replaceChildren();
      this._loaded = false;
      this._next = null;
      this._lastId = null;
      this._setCounts({ unread: 0, unseen: 0 });
      this._connect();
      if (this.open) this._load(null);
    }

    // The stream ------------------------------------------------------------------------

    _connect() {
      // An upgrade calls attributeChangedCallback and then connectedCallback: one stream.
      this._disconnect();
      if (!this.token) return;
      const generation = ++this._generation;
      const url = new URL(this.server + "/inbox/stream");
      url.searchParams.set("token", this.token);
      if (this._lastId) url.searchParams.set("last_event_id", this._lastId);
      const source = new EventSource(url.href);
      this._source = source;
      const current = () => generation === this._generation;
      source.addEventListener("open", () => {
        if (current()) this._retries = 0;
      });
      source.addEventListener("item", (event) => {
        if (!current()) return;
        if (event.lastEventId) this._lastId = event.lastEventId;
        const item = JSON.parse(event.data);
        const fresh = !this._items.has(item.id);
        this._upsert(item);
        if (fresh) {
          this._status.textContent = `New notification: ${item.title}`;
          this.dispatchEvent(new CustomEvent("outboxd-item", { detail: item, bubbles: true, composed: true }));
        }
      });
      source.addEventListener("count", (event) => {
        if (!current()) return;
        if (event.lastEventId) this._lastId = event.lastEventId;
        this._setCounts(JSON.parse(event.data));
      });
      source.addEventListener("error", () => {
        // The browser retries by itself after network errors; CLOSED means an HTTP error.
        if (current() && source.readyState === EventSource.CLOSED) this._closed(generation);
      });
    }

    _disconnect() {
      this._generation++;
      clearTimeout(this._retryTimer);
      if (this._source) this._source.close();
      this._source = null;
    }

    async _closed(generation) {
      if (this._source) this._source.close();
      this._source = null;
      let status = 0;
      try {
        status = (await fetch(this.server + "/inbox/count", { headers: this._headers() })).status;
      } catch (_) {
        // Unreachable: retry below.
      }
      if (generation !== this._generation) return;
      if (status === 401) return this._unauthorized();
      const delay = Math.min(30000, 1000 * 2 ** this._retries++) * (0.5 + Math.random() / 2);
      this._retryTimer = setTimeout(() => {
        if (generation === this._generation) this._connect();
      }, delay);
    }

    _unauthorized() {
      this._disconnect();
      this.dispatchEvent(new CustomEvent("outboxd-unauthorized", { bubbles: true, composed: true }));
    }

    // The list --------------------------------------------------------------------------

    _headers() {
      return { Authorization: `Bearer ${this.token}` };
    }

    async _request(method, path) {
      const response = await fetch(this.server + path, { method, headers: this._headers(), cache: "no-store" });
      if (response.status === 401) {
        this._unauthorized();
        throw new Error("outboxd-bell: the token was refused");
      }
      if (!response.ok) throw new Error(`outboxd-bell: ${method} ${path}: HTTP ${response.status}`);
      return response.json();
    }

    _post(path) {
      return this._request("POST", path);
    }

    _load(before) {
      if (this._loading) return this._loading;
      const generation = this._generation;
      const query = before ? `?before=${encodeURIComponent(before)}` : "";
      this._loading = this._request("GET", "/inbox" + query)
        .then((page) => {
          if (generation !== this._generation) return;
          for (const item of page.items) this._upsert(item);
          this._loaded = true;
          this._next = page.next;
          this._more.hidden = page.next === null;
          this._empty.hidden = this._items.size > 0;
        })
        .catch((error) => console.warn(error))
        .finally(() => {
          this._loading = null;
        });
      return this._loading;
    }

    async _refreshCounts() {
      // A live stream sends the new counts itself, before or after this request's answer:
      // arithmetic on the badge here would count the change twice.
      if (this._source && this._source.readyState === EventSource.OPEN) return;
      this._setCounts(await this._request("GET", "/inbox/count"));
    }

    _setCounts({ unread, unseen }) {
      this._unread = unread;
      this._unseen = unseen;
      this._badge.textContent = unread > 99 ? "99+" : String(unread);
      this._badge.hidden = unread === 0;
      this._button.setAttribute("aria-label", unread ? `Notifications, ${unread} unread` : "Notifications");
      this._markAll.disabled = unread === 0;
    }

    _upsert(item) {
      const known = this._items.get(item.id);
      const li = this._render(item);
      if (known) {
        known.li.replaceWith(li);
      } else {
        // Newest first, by id.
        const after = [...this._items.keys()].filter((id) => id < item.id).sort((a, b) => b - a)[0];
        this._list.insertBefore(li, after === undefined ? null : this._items.get(after).li);
      }
      this._items.set(item.id, { item, li });
      this._empty.hidden = true;
    }

    _render(item) {
      const li = document.createElement("li");
      li.className = item.read_at ? "item" : "item unread";
      li.setAttribute("part", "item");
      li.dataset.id = String(item.id);
      const href = safeUrl(item.url);
      const main = document.createElement(href ? "a" : "div");
      main.className = "main";
      if (href) {
        main.href = href;
        main.addEventListener("click", () => {
          if (!item.read_at) this.markRead(item.id).catch((error) => console.warn(error));
        });
      }
      const title = document.createElement("span");
      title.className = "title";
      title.textContent = item.title;
      main.append(title);
      if (item.body) {
        const body = document.createElement("span");
        body.className = "body";
        body.textContent = item.body;
        main.append(body);
      }
      const time = document.createElement("time");
      time.dateTime = item.created_at;
      time.textContent = relative(item.created_at);
      time.title = new Date(item.created_at).toLocaleString();
      main.append(time);
      li.append(main);
      if (!item.read_at) {
        const read = document.createElement("button");
        read.type = "button";
        read.className = "link mark-read";
        read.setAttribute("part", "mark-read");
        read.textContent = "Mark read";
        read.setAttribute("aria-label", `Mark read: ${item.title}`);
        read.addEventListener("click", () => {
          const next = this._neighbour(read);
          this.markRead(item.id)
            .then(() => (next || this._panel).focus())
            .catch((error) => console.warn(error));
        });
        li.append(read);
      }
      return li;
    }

    // Keyboard --------------------------------------------------------------------------

    _focusables() {
      return [...this._list.querySelectorAll("a.main, button")];
    }

    _neighbour(element) {
      const all = this._focusables();
      const index = all.indexOf(element);
      return all[index + 1] || all[index - 1] || null;
    }

    _onKey(event) {
      if (event.key === "Escape" && this.open) {
        event.preventDefault();
        this.close();
        return;
      }
      if (!this._panel.contains(this.shadowRoot.activeElement)) return;
      const all = this._focusables();
      if (!all.length || !["ArrowDown", "ArrowUp", "Home", "End"].includes(event.key)) return;
      event.preventDefault();
      const index = all.indexOf(this.shadowRoot.activeElement);
      const target =
        event.key === "Home" ? 0
        : event.key === "End" ? all.length - 1
        : event.key === "ArrowDown" ? Math.min(all.length - 1, index + 1)
        : Math.max(0, index - 1);
      all[target].focus();
    }
  }

  customElements.define("outboxd-bell", OutboxdBell);
})();
