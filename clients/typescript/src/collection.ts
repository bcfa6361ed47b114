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

import type { RealtimeClient } from "./client.js";
import type { ListQuery, Message } from "./messages.js";

/** An item of a collection: its `id`, and `updatedAt` where the payload has one. */
export interface Item {
  id: string;
  updatedAt?: string;
  [field: string]: unknown;
}

/** The positions a cursor stands for, by partition (`<topic tag>:<partition>`). */
export function cursorPositions(cursor: string): Map<string, number> | null {
  const [version, , parts] = cursor.split(".", 3) as [string?, string?, string?];
  if (version !== "1" || parts === undefined) return null;
  const positions = new Map<string, number>();
  for (const part of parts ? parts.split(";") : []) {
    const [tag, partition, offset] = part.split(":");
    if (tag === undefined || partition === undefined || offset === undefined) return null;
    positions.set(`${tag}:${partition}`, parseInt(offset, 36));
  }
  return positions;
}

/** True when the event with cursor `event` came after the snapshot with watermark `mark`: the
 * node had read further in some partition (positions only grow on a node). */
export function isAfter(event: string | undefined, mark: string | undefined): boolean {
  if (!event || !mark) return true; // no positions to compare: apply (updatedAt still guards)
  const a = cursorPositions(event);
  const b = cursorPositions(mark);
  if (a === null || b === null) return true;
  for (const [key, offset] of a) {
    if (offset > (b.get(key) ?? -1)) return true;
  }
  return false;
}

function newer(candidate: Item, current: Item | undefined): boolean {
  if (current === undefined) return true;
  if (candidate.updatedAt && current.updatedAt) return Date.parse(candidate.updatedAt) >= Date.parse(current.updatedAt);
  return true;
}

function itemsOf(data: unknown): Item[] {
  const rows = Array.isArray(data) ? data : (data as { data?: unknown } | null)?.data;
  return Array.isArray(rows) ? rows.filter((row): row is Item => typeof (row as Item)?.id === "string") : [];
}

export interface CollectionOptions {
  /** The actions that remove an item (default: `deleted`). */
  removals?: readonly string[];
  /** Events kept to re-apply over a newer snapshot (default 1,000). */
  keep?: number;
}

/** A list of the client's entity in its section, kept right live (see the module docs). */
export class LiveCollection<T extends Item = Item> {
  readonly #client: RealtimeClient;
  readonly #query: ListQuery;
  readonly #removals: ReadonlySet<string>;
  readonly #keep: number;
  readonly #items = new Map<string, T>();
  /** Ids removed, with the `updatedAt` of their removal: an older update cannot revive them. */
  readonly #removed = new Map<string, string | undefined>();
  #mark: string | undefined = undefined;
  #loading = true;
  #buffered: Message[] = [];
  #recent: Message[] = [];
  #handlers = new Set<(items: T[]) => void>();
  #stop: (() => void)[] = [];

  constructor(client: RealtimeClient, query: ListQuery = {}, options: CollectionOptions = {}) {
    this.#client = client;
    this.#query = query;
    this.#removals = new Set(options.removals ?? ["deleted"]);
    this.#keep = options.keep ?? 1000;
    const entity = client.entity;
    this.#stop.push(
      client.on("*", (message) => {
        if (message.entity !== entity || message.action === "error") return;
        if (message.action === "list") {
          if (message.metadata?.["origin"] === "refresh") this.#snapshot(message);
          return;
        }
        // Only the log's events move the list: they carry a cursor (table holds, replies and
        // other pushes of the entity do not).
        if (message.cursor === undefined || message.action === "detail" || message.action === "snapshot") return;
        this.#event(message);
      }),
    );
    // A resume that could not replay the gap, or a new socket that had no cursor to resume
    // from: the snapshot is stale, read it again.
    this.#stop.push(
      client.on("system.resumed", (message) => {
        if (!message.data?.recovered) void this.reload();
      }),
    );
    let previous = client.state;
    let connections = 0;
    this.#stop.push(
      client.onState((change) => {
        if (change.state === "connected" && previous === "connecting" && connections++ > 0) void this.reload();
        previous = change.state;
      }),
    );
    if (client.state === "connected") connections = 1;
    void this.reload();
  }

  /** The items now, in the order of their ids. */
  get items(): T[] {
    return [...this.#items.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  get(id: string): T | undefined {
    return this.#items.get(id);
  }

  /** Called with the items after every change; returns the unsubscribe. */
  onChange(handler: (items: T[]) => void): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  /** Read the snapshot again (done by itself when a resume fails). */
  async reload(): Promise<void> {
    this.#loading = true;
    try {
      const reply = await this.#client.list(this.#query);
      this.#snapshot(reply);
    } catch {
      this.#loading = false; // events still apply; the next refresh or reload sets things right
    }
  }

  close(): void {
    for (const stop of this.#stop) stop();
    this.#stop = [];
  }

  #snapshot(reply: Message): void {
    const mark = reply.cursor;
    const fresh = new Map<string, T>();
    for (const item of itemsOf(reply.data) as T[]) {
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
    for (const [id, item] of fresh) this.#items.set(id, item);
    this.#mark = mark;
    this.#loading = false;
    const replay = [...this.#recent, ...this.#buffered];
    this.#buffered = [];
    for (const event of replay) {
      if (isAfter(event.cursor, mark)) this.#apply(event);
    }
    this.#changed();
  }

  #event(message: Message): void {
    this.#recent.push(message);
    if (this.#recent.length > this.#keep) this.#recent.splice(0, this.#recent.length - this.#keep);
    if (this.#loading) {
      this.#buffered.push(message);
      return;
    }
    if (!isAfter(message.cursor, this.#mark)) return;
    if (this.#apply(message)) this.#changed();
  }

  #apply(message: Message): boolean {
    const data = message.data as Item | undefined;
    const id = (typeof data?.id === "string" ? data.id : undefined) ?? message.resourceId;
    if (!id) return false;
    const current = this.#items.get(id);
    if (this.#removals.has(message.action)) {
      if (current !== undefined && data?.updatedAt && current.updatedAt && !newer(data as Item, current)) return false;
      this.#removed.set(id, data?.updatedAt);
      return this.#items.delete(id);
    }
    if (data === undefined || typeof data !== "object") return false;
    const item = { ...data, id } as T;
    if (!newer(item, current)) return false;
    const removedAt = this.#removed.get(id);
    if (removedAt && item.updatedAt && Date.parse(item.updatedAt) <= Date.parse(removedAt)) return false;
    this.#removed.delete(id);
    this.#items.set(id, item);
    return true;
  }

  #changed(): void {
    const items = this.items;
    for (const handler of this.#handlers) handler(items);
  }
}
