/**
 * Live collections: a list kept right over a REST snapshot and the live events after it.
 *
 * The snapshot (a `list` reply) carries its watermark, the cursor taken before its REST call;
 * events carry theirs. An event is applied when it is after the watermark of the snapshot it is
 * applied to; events that arrive while the snapshot is in flight are buffered, then applied if
 * they are after it. A refresh (`origin: refresh`) or a re-read replaces the snapshot and the
 * recent events after its watermark are applied again. An item never goes back to an older state:
 * a change whose `updatedAt` is older than the item's is ignored, whatever its source.
 */
/** The positions a cursor stands for, by partition (`<topic tag>:<partition>`). */
export function cursorPositions(cursor) {
    const [version, , parts] = cursor.split(".", 3);
    if (version !== "1" || parts === undefined)
        return null;
    const positions = new Map();
    for (const part of parts ? parts.split(";") : []) {
        const [tag, partition, offset] = part.split(":");
        if (tag === undefined || partition === undefined || offset === undefined)
            return null;
        positions.set(`${tag}:${partition}`, parseInt(offset, 36));
    }
    return positions;
}
/** True when the event with cursor `event` came after the snapshot with watermark `mark`: the
 * node had read further in some partition (positions only grow on a node). */
export function isAfter(event, mark) {
    if (!event || !mark)
        return true; // no positions to compare: apply (updatedAt still guards)
    const a = cursorPositions(event);
    const b = cursorPositions(mark);
    if (a === null || b === null)
        return true;
    for (const [key, offset] of a) {
        if (offset > (b.get(key) ?? -1))
            return true;
    }
    return false;
}
function newer(candidate, current) {
    if (current === undefined)
        return true;
    if (candidate.updatedAt && current.updatedAt)
        return Date.parse(candidate.updatedAt) >= Date.parse(current.updatedAt);
    return true;
}
function itemsOf(data) {
    const rows = Array.isArray(data) ? data : data?.data;
    return Array.isArray(rows) ? rows.filter((row) => typeof row?.id === "string") : [];
}
/** A list of the client's entity in its section, kept right live (see the module docs). */
export class LiveCollection {
    #client;
    #query;
    #removals;
    #keep;
    #items = new Map();
    /** Ids removed, with the `updatedAt` of their removal: an older update cannot revive them. */
    #removed = new Map();
    #mark = undefined;
    #loading = true;
    #buffered = [];
    #recent = [];
    #handlers = new Set();
    #stop = [];
    constructor(client, query = {}, options = {}) {
        this.#client = client;
        this.#query = query;
        this.#removals = new Set(options.removals ?? ["deleted"]);
        this.#keep = options.keep ?? 1000;
        const entity = client.entity;
        this.#stop.push(client.on("*", (message) => {
            if (message.entity !== entity || message.action === "error")
                return;
            if (message.action === "list") {
                if (message.metadata?.["origin"] === "refresh")
                    this.#snapshot(message);
                return;
            }
            // Only the log's events move the list: they carry a cursor (table holds, replies and
            // other pushes of the entity do not).
            if (message.cursor === undefined || message.action === "detail" || message.action === "snapshot")
                return;
            this.#event(message);
        }));
        // A resume that could not replay the gap, or a new socket that had no cursor to resume
        // from: the snapshot is stale, read it again.
        this.#stop.push(client.on("system.resumed", (message) => {
            if (!message.data?.recovered)
                void this.reload();
        }));
        let previous = client.state;
        let connections = 0;
        this.#stop.push(client.onState((change) => {
            if (change.state === "connected" && previous === "connecting" && connections++ > 0)
                void this.reload();
            previous = change.state;
        }));
        if (client.state === "connected")
            connections = 1;
        void this.reload();
    }
    /** The items now, in the order of their ids. */
    get items() {
        return [...this.#items.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    }
    get(id) {
        return this.#items.get(id);
    }
    /** Called with the items after every change; returns the unsubscribe. */
    onChange(handler) {
        this.#handlers.add(handler);
        return () => this.#handlers.delete(handler);
    }
    /** Read the snapshot again (done by itself when a resume fails). */
    async reload() {
        this.#loading = true;
        try {
            const reply = await this.#client.list(this.#query);
            this.#snapshot(reply);
        }
        catch {
            this.#loading = false; // events still apply; the next refresh or reload sets things right
        }
    }
    close() {
        for (const stop of this.#stop)
            stop();
        this.#stop = [];
    }
    #snapshot(reply) {
        const mark = reply.cursor;
        const fresh = new Map();
        for (const item of itemsOf(reply.data)) {
            const current = this.#items.get(item.id);
            // A snapshot never takes an item back to an older state than one already shown.
            fresh.set(item.id, current !== undefined && !newer(item, current) ? current : item);
        }
        for (const [id, removedAt] of this.#removed) {
            const item = fresh.get(id);
            if (item !== undefined && removedAt && item.updatedAt && Date.parse(item.updatedAt) <= Date.parse(removedAt)) {
                fresh.delete(id);
            }
        }
        this.#items.clear();
        for (const [id, item] of fresh)
            this.#items.set(id, item);
        this.#mark = mark;
        this.#loading = false;
        const replay = [...this.#recent, ...this.#buffered];
        this.#buffered = [];
        for (const event of replay) {
            if (isAfter(event.cursor, mark))
                this.#apply(event);
        }
        this.#changed();
    }
    #event(message) {
        this.#recent.push(message);
        if (this.#recent.length > this.#keep)
            this.#recent.splice(0, this.#recent.length - this.#keep);
        if (this.#loading) {
            this.#buffered.push(message);
            return;
        }
        if (!isAfter(message.cursor, this.#mark))
            return;
        if (this.#apply(message))
            this.#changed();
    }
    #apply(message) {
        const data = message.data;
        const id = (typeof data?.id === "string" ? data.id : undefined) ?? message.resourceId;
        if (!id)
            return false;
        const current = this.#items.get(id);
        if (this.#removals.has(message.action)) {
            if (current !== undefined && data?.updatedAt && current.updatedAt && !newer(data, current))
                return false;
            this.#removed.set(id, data?.updatedAt);
            return this.#items.delete(id);
        }
        if (data === undefined || typeof data !== "object")
            return false;
        const item = { ...data, id };
        if (!newer(item, current))
            return false;
        const removedAt = this.#removed.get(id);
        if (removedAt && item.updatedAt && Date.parse(item.updatedAt) <= Date.parse(removedAt))
            return false;
        this.#removed.delete(id);
        this.#items.set(id, item);
        return true;
    }
    #changed() {
        const items = this.items;
        for (const handler of this.#handlers)
            handler(items);
    }
}
//# sourceMappingURL=collection.js.map