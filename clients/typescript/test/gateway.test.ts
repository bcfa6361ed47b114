/**
 * The client against the real gateway: a `mesaya-realtime serve` process started here, on the
 * real Kafka broker (`KAFKA_BROKERS`, else `scripts/kafka-local start`), real sockets over TCP
 * (the `ws` package), a REST upstream on loopback, and a TCP proxy in between that can cut
 * every connection at once (a network blip).
 */

import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from "node:net";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

import { connect, RealtimeError, type Message, type WebSocketFactory } from "../src/index.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const PYTHON = process.env["MESAYA_PYTHON"] ?? resolve(ROOT, ".venv/bin/python");
const SECRET = "sdk-test-secret-0123456789-abcdefghijkl";
const TOPIC = "mesa-ya.tables.events";

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

function token(sub: string, ttlSeconds = 3600): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, roles: ["USER"], exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const signature = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${signature}`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as AddressInfo;
  await new Promise((done) => server.close(done));
  return port;
}

function brokers(): string {
  const configured = process.env["KAFKA_BROKERS"];
  if (configured) return configured;
  const out = execFileSync(resolve(ROOT, "scripts/kafka-local"), ["start"], { encoding: "utf8" });
  return out.trim().split("\n").at(-1)!.trim();
}

/** Produce table events with confluent-kafka (the gateway's own Python environment). */
function produce(events: { id: string; section: string; partition: number; status?: string; updatedAt?: string }[]): void {
  const script = `
import json, sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all"})
for e in json.loads(sys.argv[2]):
    value = {"event_type": "updated", "entity_id": e["id"], "timestamp": "2026-12-02T00:00:00.000Z",
             "data": {"id": e["id"], "sectionId": e["section"], "status": e.get("status", "OCCUPIED"),
                      "updatedAt": e.get("updatedAt", "2026-12-02T00:00:00.000Z")}}
    p.produce("${TOPIC}", json.dumps(value).encode(), partition=e["partition"])
assert p.flush(30) == 0
`;
  execFileSync(PYTHON, ["-c", script, kafka, JSON.stringify(events)], { stdio: "inherit" });
}

/** A TCP proxy to the gateway whose connections can all be cut at once. */
class Blip {
  readonly server: Server;
  readonly sockets = new Set<Socket>();
  port = 0;

  constructor(target: number) {
    this.server = createServer((client) => {
      const upstream = tcpConnect(target, "127.0.0.1");
      client.pipe(upstream).pipe(client);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => undefined);
      }
    });
  }

  async start(): Promise<void> {
    await new Promise<void>((done) => this.server.listen(0, "127.0.0.1", done));
    this.port = (this.server.address() as AddressInfo).port;
  }

  cut(): void {
    for (const socket of this.sockets) socket.resetAndDestroy();
  }
}

let kafka = "";
/** The upstream's tables, by section: what its REST API answers (the "database"). */
const tables = new Map<string, Map<string, Row>>();
interface Row {
  id: string;
  sectionId: string;
  status: string;
  updatedAt: string;
}
let gateway: ChildProcess;
let gatewayPort = 0;
let upstream: HttpServer;
let blip: Blip;
let log = "";

before(async () => {
  kafka = brokers();
  upstream = createHttpServer((request, response) => {
    const slow = request.url?.includes("slow") ?? false;
    // A USER's list of a section: GET /api/v1/tables?sectionId=<section>&page=..&limit=..
    const url = new URL(request.url ?? "/", "http://upstream");
    const section = url.searchParams.get("sectionId") ?? /\/tables\/section\/([^/?]+)/.exec(url.pathname)?.[1];
    const rows = section ? [...(tables.get(decodeURIComponent(section))?.values() ?? [])] : [];
    setTimeout(() => {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify({ data: rows, meta: { total: rows.length } }));
    }, slow ? 3000 : 0);
  });
  await new Promise<void>((done) => upstream.listen(0, "127.0.0.1", done));
  gatewayPort = await freePort();
  gateway = spawn(PYTHON, ["-m", "mesaya_realtime", "serve"], {
    cwd: ROOT,
    env: {
      ...process.env,
      HOST: "127.0.0.1",
      PORT: String(gatewayPort),
      JWT_SECRET: SECRET,
      KAFKA_ENABLED: "true",
      KAFKA_BROKERS: kafka,
      REST_BASE_URL: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      WORKERS: "1",
      LOG_LEVEL: "warn",
      TABLE_SELECTION_RATE_LIMIT: "1000",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  gateway.stdout?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  gateway.stderr?.on("data", (chunk: Buffer) => (log += chunk.toString()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const response = await fetch(`http://127.0.0.1:${gatewayPort}/ready`);
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`gateway not ready:\n${log.slice(-3000)}`);
    await new Promise((done) => setTimeout(done, 200));
  }
  blip = new Blip(gatewayPort);
  await blip.start();
});

after(async () => {
  gateway?.kill("SIGTERM");
  blip?.server.close();
  upstream?.close();
});

const unique = (label: string) => `${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;

function open(section: string, sub: string, extra: Partial<Parameters<typeof connect>[0]> = {}) {
  return connect({
    url: `ws://127.0.0.1:${blip.port}`,
    entity: "tables",
    section,
    getToken: () => token(sub),
    WebSocket: WebSocket as unknown as WebSocketFactory,
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    ...extra,
  });
}

function until<T>(check: () => T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  return new Promise((done, fail) => {
    const poll = () => {
      const found = check();
      if (found !== undefined) return done(found);
      if (Date.now() > deadline) return fail(new Error("timed out waiting"));
      setTimeout(poll, 20);
    };
    poll();
  });
}

test("commands are promises: list, a table hold's ack, typed errors, timeouts", async () => {
  const section = unique("cmd");
  const rt = open(section, "ada", { commandTimeoutMs: 1500 });
  const listed = await rt.list({ limit: 5 });
  assert.equal(listed.topic, "tables.list");
  assert.ok(listed.cursor, "a list reply carries its watermark");
  assert.equal((await rt.selectTable("t-1")).topic, "system.ack");
  assert.equal((await rt.releaseTable("t-1")).topic, "system.ack");
  await assert.rejects(rt.detail(""), (error: unknown) => {
    assert.ok(error instanceof RealtimeError);
    assert.deepEqual([error.code, error.field], ["invalid_payload", "payload.id"]);
    return true;
  });
  await assert.rejects(rt.detail("slow"), (error: unknown) => error instanceof RealtimeError && error.code === "timeout");
  rt.close();
});

test("after a network blip the client resumes: every missed event once, in partition order, then live", async () => {
  const section = unique("blip");
  const rt = open(section, "bob");
  const events: Message[] = [];
  const states: string[] = [];
  rt.on("tables.updated", (message) => events.push(message));
  rt.onState((change) => states.push(change.state));
  await rt.ping();
  produce([0, 1, 2].map((n) => ({ id: `${section}-t${n}`, section, partition: n % 3 })));
  await until(() => (events.length === 3 ? true : undefined));
  blip.cut();
  await until(() => (rt.state === "disconnected" || rt.state === "connecting" ? true : undefined));
  produce([3, 4, 5, 6, 7, 8].map((n) => ({ id: `${section}-t${n}`, section, partition: n % 3 })));
  await until(() => (events.length === 9 ? true : undefined));
  assert.ok(states.includes("resuming"), `states: ${states.join(",")}`);
  await until(() => (rt.state === "connected" ? true : undefined));
  produce([{ id: `${section}-t9`, section, partition: 0 }]);
  await until(() => (events.length === 10 ? true : undefined));
  await rt.ping();
  const numbers = events.map((m) => Number(m.resourceId?.split("-t").at(-1)));
  assert.deepEqual([...numbers].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const partition of [0, 1, 2]) {
    const mine = numbers.filter((n) => n % 3 === partition);
    assert.deepEqual(mine, [...mine].sort((a, b) => a - b));
  }
  rt.close();
});

test("the token is renewed in-band before it expires: the socket stays open", async () => {
  const section = unique("renew");
  let issued = 0;
  const states: string[] = [];
  const rt = connect({
    url: `ws://127.0.0.1:${gatewayPort}`,
    entity: "tables",
    section,
    getToken: () => {
      issued += 1;
      return token("carl", 4); // four seconds each
    },
    WebSocket: WebSocket as unknown as WebSocketFactory,
    renewBeforeMs: 2500,
  });
  rt.onState((change) => states.push(change.state));
  await rt.ping();
  await new Promise((done) => setTimeout(done, 6000)); // past the first token's expiry
  assert.equal((await rt.ping()).topic, "system.pong");
  assert.ok(issued >= 3, `tokens issued: ${issued}`);
  assert.deepEqual(states, ["connected"]); // never dropped (1008) nor reconnected
  rt.close();
});

test("a live collection stays equal to the upstream through 1,000 events, refreshes and two blips", async () => {
  const section = unique("live");
  const rows = new Map<string, Row>();
  tables.set(section, rows);
  const start = Date.parse("2026-12-02T00:00:00.000Z");
  let n = 0;
  for (let k = 0; k < 50; k++) {
    const id = `${section}-t${k}`;
    rows.set(id, { id, sectionId: section, status: "AVAILABLE", updatedAt: new Date(start + n++).toISOString() });
  }
  const rt = open(section, "dora");
  const live = rt.collection<Row & { [field: string]: unknown }>({ limit: 100 });
  const regressions: string[] = [];
  const shown = new Map<string, number>();
  live.onChange((items) => {
    for (const item of items) {
      const at = Date.parse(item.updatedAt);
      if (at < (shown.get(item.id) ?? 0)) regressions.push(`${item.id} went back to ${item.updatedAt}`);
      shown.set(item.id, at);
    }
  });
  await until(() => (live.items.length === 50 ? true : undefined));
  let seed = 11;
  const random = () => ((seed = (seed * 48271) % 2147483647) / 2147483647);
  for (let batch = 0; batch < 10; batch++) {
    const events = [];
    for (let i = 0; i < 100; i++) {
      const k = Math.floor(random() * 50);
      const id = `${section}-t${k}`;
      const row = { id, sectionId: section, status: ["AVAILABLE", "OCCUPIED", "RESERVED"][Math.floor(random() * 3)]!, updatedAt: new Date(start + n++).toISOString() };
      rows.set(id, row); // the database first, then its event (as the platform's services do)
      events.push({ id, section, partition: k % 3, status: row.status, updatedAt: row.updatedAt });
    }
    produce(events);
    if (batch === 3 || batch === 6) blip.cut(); // a blip: the socket drops and resumes
  }
  const same = () =>
    [...rows.values()].every((row) => {
      const item = live.get(row.id);
      return item !== undefined && item.status === row.status && item.updatedAt === row.updatedAt;
    }) && live.items.length === rows.size;
  await until(() => (same() ? true : undefined), 30_000);
  assert.deepEqual(regressions, []);
  rt.close();
});
