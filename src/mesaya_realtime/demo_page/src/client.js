/**
 * A protocol v2 socket of the mesa-ya realtime gateway that stays up: it authenticates in its
 * first frame, renews its token before it expires, reconnects with exponential back-off and
 * jitter (never after a refusal that would repeat), resumes with its last cursor, re-issues its
 * list and detail commands when the gateway could not resume, and answers every command as a
 * promise matched by `requestId`.
 */
import { LiveCollection } from "./collection.js";
import { LiveSelections } from "./selections.js";
import { CloseCode, FINAL_CLOSE_CODES, } from "./messages.js";
/** A refused command (the gateway's `data.code`), a timeout, or a dropped socket. */
export class RealtimeError extends Error {
    code;
    field;
    reply;
    constructor(code, message, field, reply) {
        super(message);
        this.name = "RealtimeError";
        this.code = code;
        this.field = field;
        this.reply = reply;
    }
}
const PROTOCOL = "mesaya.v2";
const OPEN = 1;
/**
 * Open a socket that keeps itself connected until {@link RealtimeClient.close}.
 *
 * ```ts
 * const rt = connect({ url: "wss://rt.mesaya.example", entity: "tables", section, getToken });
 * rt.on("tables.updated", (event) => redraw(event.data));
 * const first = await rt.list({ limit: 50 });
 * ```
 */
export function connect(options) {
    const client = new RealtimeClient(options);
    client.open();
    return client;
}
export class RealtimeClient {
    #options;
    #socket = null;
    #state = "disconnected";
    #cursor = "";
    #handlers = new Map();
    #stateHandlers = new Set();
    #pending = new Map();
    #requests = 0;
    #attempt = 0;
    #closed = false;
    #reconnectTimer = null;
    #renewTimer = null;
    #lastList;
    #listed = false;
    #details = new Set();
    #connected = null;
    /** The cursor the current socket resumes from ("" for none). */
    #resumeFrom = "";
    constructor(options) {
        const WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
        if (WebSocketImpl === undefined) {
            throw new TypeError("no WebSocket implementation: pass options.WebSocket (the ws package in Node < 22)");
        }
        this.#options = {
            commandTimeoutMs: 10_000,
            renewBeforeMs: 30_000,
            backoffInitialMs: 250,
            backoffMaxMs: 15_000,
            random: Math.random,
            ...options,
            WebSocket: WebSocketImpl,
        };
    }
    /** The socket's entity and section. */
    get entity() {
        return this.#options.entity;
    }
    get section() {
        return this.#options.section;
    }
    /** A live collection of this socket's list (see collection.ts). */
    collection(query = {}, options = {}) {
        return new LiveCollection(this, query, options);
    }
    /** The table holds of this socket's section, kept live (see selections.ts). */
    selections() {
        return new LiveSelections(this);
    }
    /** The connection's state now. */
    get state() {
        return this.#state;
    }
    /** The last cursor received: where a resume starts. */
    get cursor() {
        return this.#cursor;
    }
    /** The last `system.connected` data (topics, roles, token expiry). */
    get connected() {
        return this.#connected;
    }
    /**
     * Receive the messages of `topic` (`"*"`: every message). Topics are typed from the gateway's
     * catalogue (`Topic`, `SystemTopic`, generated.ts), and so is `data` where the protocol fixes
     * it (`DataOf`); any other string (a push's topic on the notifications socket) is accepted.
     * Returns the unsubscribe.
     */
    on(topic, handler) {
        let handlers = this.#handlers.get(topic);
        if (handlers === undefined) {
            handlers = new Set();
            this.#handlers.set(topic, handlers);
        }
        handlers.add(handler);
        return () => handlers.delete(handler);
    }
    /** Be told of every state change (`connecting`, `connected`, `resuming`, `disconnected`). */
    onState(handler) {
        this.#stateHandlers.add(handler);
        return () => this.#stateHandlers.delete(handler);
    }
    /** The list of the socket's section; remembered, and re-issued if a resume fails. */
    list(query = {}) {
        this.#lastList = query;
        this.#listed = true;
        return this.command("list", query);
    }
    /** One item; remembered, and re-issued if a resume fails. */
    detail(id) {
        this.#details.add(id);
        return this.command("detail", { id });
    }
    selectTable(tableId) {
        return this.command("select_table", { tableId });
    }
    releaseTable(tableId) {
        return this.command("release_table", { tableId });
    }
    ping() {
        return this.command("ping");
    }
    subscribe(topic) {
        return this.command("subscribe", undefined, topic);
    }
    unsubscribe(topic) {
        return this.command("unsubscribe", undefined, topic);
    }
    /**
     * Send a command; its one reply resolves the promise, an error reply rejects it with the
     * gateway's `code`. While the socket is (re)connecting, the command waits for it (within the
     * command timeout) and is sent once the socket is authenticated.
     */
    async command(action, payload, topic) {
        const deadline = Date.now() + this.#options.commandTimeoutMs;
        const socket = await this.#whenReady(this.#options.commandTimeoutMs);
        const requestId = `r${++this.#requests}`;
        const frame = { action, requestId };
        if (payload !== undefined)
            frame["payload"] = payload;
        if (topic !== undefined)
            frame["topic"] = topic;
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.#pending.delete(requestId);
                reject(new RealtimeError("timeout", `no reply to ${action} within ${this.#options.commandTimeoutMs} ms`));
            }, Math.max(0, deadline - Date.now()));
            this.#pending.set(requestId, { resolve, reject, timer });
            socket.send(JSON.stringify(frame));
        });
    }
    #whenReady(timeoutMs) {
        const ready = () => this.#socket !== null && this.#socket.readyState === OPEN && (this.#state === "connected" || this.#state === "resuming")
            ? this.#socket
            : null;
        const now = ready();
        if (now !== null)
            return Promise.resolve(now);
        if (this.#closed)
            return Promise.reject(new RealtimeError("closed", "the client is closed"));
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                stop();
                reject(new RealtimeError("timeout", `not connected within ${timeoutMs} ms`));
            }, timeoutMs);
            const stop = this.onState((change) => {
                const socket = ready();
                if (socket !== null) {
                    clearTimeout(timer);
                    stop();
                    resolve(socket);
                }
                else if (change.state === "closed" || (change.state === "disconnected" && !change.willReconnect)) {
                    clearTimeout(timer);
                    stop();
                    reject(new RealtimeError("disconnected", `the socket ended (${change.code ?? ""} ${change.reason ?? ""})`));
                }
            });
        });
    }
    /** Close for good: no reconnect; pending commands are rejected. */
    close() {
        this.#closed = true;
        this.#clearTimers();
        const socket = this.#socket;
        this.#socket = null;
        if (socket !== null) {
            socket.onclose = null;
            socket.close(1000, "client closed");
        }
        this.#failPending("closed");
        this.#setState({ state: "closed" });
    }
    /** Open (or reopen) the socket; {@link connect} calls it. */
    open() {
        if (this.#closed)
            return;
        this.#setState({ state: "connecting" });
        const { url, entity, section } = this.#options;
        const path = `${url.replace(/\/+$/, "")}/ws/${encodeURIComponent(entity)}/${encodeURIComponent(section)}`;
        const socket = new this.#options.WebSocket(path, [PROTOCOL]);
        this.#socket = socket;
        const since = (this.#resumeFrom = this.#cursor);
        socket.onopen = () => {
            void this.#authenticate(socket, since);
        };
        socket.onmessage = (event) => this.#receive(event.data);
        socket.onerror = () => undefined; // the close event follows and says what happened
        socket.onclose = (event) => this.#ended(socket, event.code, event.reason);
    }
    async #authenticate(socket, since) {
        let token;
        try {
            token = await this.#options.getToken();
        }
        catch {
            socket.close(4000, "no token");
            return;
        }
        if (socket !== this.#socket || socket.readyState !== OPEN)
            return;
        const payload = { token };
        if (since)
            payload["since"] = since;
        socket.send(JSON.stringify({ action: "authenticate", payload, requestId: "hello" }));
    }
    #receive(raw) {
        let message;
        try {
            message = JSON.parse(typeof raw === "string" ? raw : String(raw));
        }
        catch {
            return;
        }
        // A list or detail reply's cursor is its watermark, older than the events already here.
        if (message.cursor && message.action !== "list" && message.action !== "detail")
            this.#cursor = message.cursor;
        const requestId = message.metadata?.["requestId"];
        if (message.topic === "system.connected") {
            this.#onConnected(message);
        }
        else if (message.topic === "system.resumed") {
            this.#onResumed(message);
        }
        else if (message.topic === "system.authenticated") {
            const expiresAt = message.data?.expiresAt;
            if (this.#connected !== null)
                this.#connected = { ...this.#connected, expiresAt: expiresAt ?? null };
            this.#scheduleRenewal(expiresAt ?? null);
        }
        if (requestId !== undefined) {
            const pending = this.#pending.get(requestId);
            if (pending !== undefined) {
                this.#pending.delete(requestId);
                clearTimeout(pending.timer);
                if (message.action === "error") {
                    const data = (message.data ?? {});
                    pending.reject(new RealtimeError(data.code ?? "error", data.error ?? "error", data.field, message));
                }
                else {
                    pending.resolve(message);
                }
            }
        }
        this.#emit(message);
    }
    #onConnected(message) {
        this.#connected = message.data ?? null;
        this.#attempt = 0;
        this.#scheduleRenewal(this.#connected?.expiresAt ?? null);
        // With a cursor sent, the replay follows and system.resumed ends it.
        this.#setState({ state: this.#resumeFrom ? "resuming" : "connected" });
    }
    #onResumed(message) {
        this.#resumeFrom = "";
        this.#setState({ state: "connected" });
        if (message.data?.recovered)
            return;
        // The gap could not be replayed: the snapshots are stale. Read them again.
        if (this.#listed)
            this.list(this.#lastList).catch(() => undefined);
        for (const id of this.#details)
            this.detail(id).catch(() => undefined);
    }
    #scheduleRenewal(expiresAt) {
        if (this.#renewTimer !== null)
            clearTimeout(this.#renewTimer);
        this.#renewTimer = null;
        if (expiresAt === null)
            return;
        const delay = Date.parse(expiresAt) - Date.now() - this.#options.renewBeforeMs;
        this.#renewTimer = setTimeout(() => void this.#renew(), Math.max(0, delay));
    }
    async #renew() {
        try {
            const token = await this.#options.getToken();
            await this.command("authenticate", { token });
        }
        catch {
            // The socket will be closed with 1008 when the old token expires; then it reconnects.
        }
    }
    #ended(socket, code, reason) {
        if (socket !== this.#socket)
            return;
        this.#socket = null;
        this.#clearTimers();
        this.#failPending("disconnected");
        if (this.#closed)
            return;
        const willReconnect = !FINAL_CLOSE_CODES.has(code);
        this.#setState({ state: "disconnected", code, reason, willReconnect });
        if (!willReconnect)
            return;
        // 4401 and 1008 (token refused or expired): getToken is asked again on the next open.
        const delay = code === CloseCode.unauthorized || code === CloseCode.tokenExpired ? 0 : this.#backoff();
        this.#reconnectTimer = setTimeout(() => {
            this.#reconnectTimer = null;
            this.open();
        }, delay);
    }
    #backoff() {
        const { backoffInitialMs, backoffMaxMs, random } = this.#options;
        const ceiling = Math.min(backoffMaxMs, backoffInitialMs * 2 ** this.#attempt);
        this.#attempt += 1;
        return Math.round(ceiling / 2 + (random() * ceiling) / 2); // "equal jitter"
    }
    #failPending(code) {
        for (const [requestId, pending] of this.#pending) {
            clearTimeout(pending.timer);
            pending.reject(new RealtimeError(code, `socket ${code} before the reply to ${requestId}`));
        }
        this.#pending.clear();
    }
    #clearTimers() {
        if (this.#renewTimer !== null)
            clearTimeout(this.#renewTimer);
        if (this.#reconnectTimer !== null)
            clearTimeout(this.#reconnectTimer);
        this.#renewTimer = this.#reconnectTimer = null;
    }
    #setState(change) {
        this.#state = change.state;
        for (const handler of this.#stateHandlers)
            handler(change);
    }
    #emit(message) {
        for (const topic of [message.topic, "*"]) {
            const handlers = this.#handlers.get(topic);
            if (handlers === undefined)
                continue;
            for (const handler of handlers) {
                try {
                    handler(message);
                }
                catch (error) {
                    queueMicrotask(() => {
                        throw error;
                    });
                }
            }
        }
    }
}
//# sourceMappingURL=client.js.map