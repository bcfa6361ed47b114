/** An in-memory WebSocket and a client on it, for the unit tests. */

import assert from "node:assert/strict";

import { connect, type StateChange, type WebSocketLike } from "../src/index.js";

export class FakeSocket implements WebSocketLike {
  static sockets: FakeSocket[] = [];
  protocol = "mesaya.v2";
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  closedWith: [number | undefined, string | undefined] | null = null;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeSocket.sockets.push(this);
  }

  send(data: string): void {
    this.sent.push(JSON.parse(data) as Record<string, unknown>);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = [code, reason];
    this.readyState = 3;
  }

  // -- the server's side
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  reply(message: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify({ timestamp: "2026-12-02T00:00:00Z", ...message }) });
  }

  drop(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  connected(expiresAt: string | null = null, cursor = "c0"): void {
    this.reply({
      topic: "system.connected",
      entity: "system",
      action: "connected",
      data: { allowedTopics: [], entity: "tables", roles: ["USER"], sectionId: "s1", expiresAt },
      metadata: { requestId: "hello" },
      ...(cursor ? { cursor } : {}),
    });
  }

  last(): Record<string, unknown> {
    const frame = this.sent.at(-1);
    assert.ok(frame, "nothing sent");
    return frame;
  }
}

export const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

export function client(overrides: Partial<Parameters<typeof connect>[0]> = {}) {
  FakeSocket.sockets = [];
  const tokens: string[] = [];
  let n = 0;
  const rt = connect({
    url: "ws://gw.test/",
    entity: "tables",
    section: "s1",
    getToken: () => {
      const token = `token-${++n}`;
      tokens.push(token);
      return token;
    },
    WebSocket: FakeSocket,
    backoffInitialMs: 10,
    backoffMaxMs: 40,
    random: () => 0.5,
    commandTimeoutMs: 200,
    ...overrides,
  });
  const states: StateChange[] = [];
  rt.onState((change) => states.push(change));
  return { rt, tokens, states, socket: () => FakeSocket.sockets.at(-1)! };
}

