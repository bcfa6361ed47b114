/**
 * The table holds of the client's section, kept live: `tables.selecting` (the greeting's
 * `origin: current` ones and live ones) adds or extends a hold, `tables.released` ends it, and a
 * hold past its `expiresAt` is dropped even if no release came.
 */

import type { RealtimeClient } from "./client.js";
import type { HoldData, Message } from "./messages.js";

export interface Hold {
  tableId: string;
  sectionId: string;
  selectedBy: string;
  selectedAt: string;
  expiresAt: string;
}

export class LiveSelections {
  readonly #holds = new Map<string, Hold>();
  readonly #handlers = new Set<(holds: Hold[]) => void>();
  readonly #stop: (() => void)[] = [];
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(client: RealtimeClient) {
    this.#stop.push(client.on("tables.selecting", (message) => this.#selecting(message)));
    this.#stop.push(client.on("tables.released", (message) => this.#released(message)));
    // A new socket greets with the current holds: those it does not list again are over.
    this.#stop.push(
      client.on("system.connected", () => {
        this.#holds.clear();
        this.#changed();
      }),
    );
  }

  /** The live holds, by table id. */
  get holds(): Hold[] {
    const now = Date.now();
    return [...this.#holds.values()].filter((hold) => Date.parse(hold.expiresAt) > now);
  }

  get(tableId: string): Hold | undefined {
    const hold = this.#holds.get(tableId);
    return hold !== undefined && Date.parse(hold.expiresAt) > Date.now() ? hold : undefined;
  }

  onChange(handler: (holds: Hold[]) => void): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  close(): void {
    for (const stop of this.#stop) stop();
    if (this.#timer !== null) clearTimeout(this.#timer);
  }

  #selecting(message: Message<HoldData>): void {
    const data = message.data;
    if (data?.tableId === undefined || data.expiresAt === undefined) return;
    const hold: Hold = {
      tableId: data.tableId,
      sectionId: data.sectionId,
      selectedBy: data.selectedBy,
      selectedAt: data.selectedAt ?? "",
      expiresAt: data.expiresAt,
    };
    this.#holds.set(hold.tableId, hold);
    this.#changed();
  }

  #released(message: Message<HoldData>): void {
    const tableId = message.data?.tableId;
    if (tableId !== undefined && this.#holds.delete(tableId)) this.#changed();
  }

  #changed(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    const live = this.holds;
    const next = Math.min(...live.map((hold) => Date.parse(hold.expiresAt)));
    if (Number.isFinite(next)) this.#timer = setTimeout(() => this.#changed(), Math.max(0, next - Date.now()) + 5);
    for (const handler of this.#handlers) handler(live);
  }
}
