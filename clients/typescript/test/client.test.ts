/**
 * Unit tests of the client's logic over an in-memory WebSocket (the integration tests against
 * the real gateway are in gateway.test.ts).
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { RealtimeError } from "../src/index.js";
import { client, FakeSocket, tick } from "./fake.js";

test("asks for mesaya.v2 and authenticates in the first frame, not in the URL", async () => {
  const { rt, socket } = client();
  assert.equal(socket().url, "ws://gw.test/ws/tables/s1");
  assert.deepEqual(socket().protocols, ["mesaya.v2"]);
  socket().open();
  await tick();
  assert.deepEqual(socket().sent, [{ action: "authenticate", payload: { token: "token-1" }, requestId: "hello" }]);
  socket().connected();
  assert.equal(rt.state, "connected");
  rt.close();
});

test("commands are promises matched by requestId; errors carry the server's code and field", async () => {
  const { rt, socket } = client();
  socket().open();
  await tick();
  socket().connected();
  const listed = rt.list({ limit: 5 });
  const failed = rt.detail("");
  await tick();
  const [list, detail] = socket().sent.slice(1);
  assert.deepEqual(list, { action: "list", payload: { limit: 5 }, requestId: "r1" });
  assert.deepEqual(detail, { action: "detail", payload: { id: "" }, requestId: "r2" });
  socket().reply({
    topic: "tables.error",
    entity: "tables",
    action: "error",
    data: { error: "invalid payload", code: "invalid_payload", field: "payload.id" },
    metadata: { requestId: "r2" },
  });
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [1], metadata: { requestId: "r1" } });
  assert.deepEqual((await listed).data, [1]);
  await assert.rejects(failed, (error: unknown) => {
    assert.ok(error instanceof RealtimeError);
    assert.equal(error.code, "invalid_payload");
    assert.equal(error.field, "payload.id");
    return true;
  });
  rt.close();
});

test("a command without a reply times out; a command sent while connecting waits for the socket", async () => {
  const { rt, socket } = client();
  const early = rt.selectTable("t1"); // before the socket is open
  socket().open();
  await tick();
  socket().connected();
  await tick();
  assert.deepEqual(socket().last(), { action: "select_table", payload: { tableId: "t1" }, requestId: "r1" });
  socket().reply({ topic: "system.ack", entity: "system", action: "ack", metadata: { requestId: "r1" } });
  assert.equal((await early).topic, "system.ack");
  await assert.rejects(rt.ping(), (error: unknown) => error instanceof RealtimeError && error.code === "timeout");
  rt.close();
});

test("reconnects with back-off, resumes from the last event's cursor, and says so", async () => {
  const { rt, socket, states } = client();
  socket().open();
  await tick();
  socket().connected(null, "c1");
  socket().reply({ topic: "tables.updated", entity: "tables", action: "updated", resourceId: "t1", cursor: "c2" });
  // A list reply's watermark is older: it is not where a resume starts.
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", cursor: "c0-older" });
  assert.equal(rt.cursor, "c2");
  const first = socket();
  first.drop(1006);
  assert.deepEqual(states.at(-1), { state: "disconnected", code: 1006, reason: "", willReconnect: true });
  await tick(30);
  const second = socket();
  assert.notEqual(second, first);
  second.open();
  await tick();
  assert.deepEqual(second.sent[0], {
    action: "authenticate",
    payload: { token: "token-2", since: "c2" },
    requestId: "hello",
  });
  second.connected(null, "");
  assert.equal(rt.state, "resuming");
  second.reply({ topic: "system.resumed", entity: "system", action: "resumed", data: { recovered: true, replayed: 0 }, cursor: "c3" });
  assert.equal(rt.state, "connected");
  assert.equal(rt.cursor, "c3");
  rt.close();
});

test("a failed resume re-issues the socket's list and detail commands", async () => {
  const { rt, socket } = client();
  socket().open();
  await tick();
  socket().connected();
  void rt.list({ page: 2 }).catch(() => undefined);
  void rt.detail("t9").catch(() => undefined);
  await tick();
  socket().drop(1006);
  await tick(30);
  socket().open();
  await tick();
  socket().connected(null, "");
  socket().reply({ topic: "system.resumed", entity: "system", action: "resumed", data: { recovered: false } });
  await tick();
  const again = socket().sent.slice(1).map((frame) => [frame["action"], frame["payload"]]);
  assert.deepEqual(again, [
    ["list", { page: 2 }],
    ["detail", { id: "t9" }],
  ]);
  rt.close();
});

test("never reconnects after 4403 or 4404; after 4401 it asks for a new token at once", async () => {
  for (const code of [4403, 4404]) {
    const { rt, socket, states } = client();
    socket().open();
    socket().drop(code, "forbidden");
    await tick(60);
    assert.equal(FakeSocket.sockets.length, 1, `reconnected after ${code}`);
    assert.equal(states.at(-1)?.willReconnect, false);
    rt.close();
  }
  const { rt, socket, tokens } = client();
  socket().open();
  await tick();
  socket().drop(4401, "invalid token");
  await tick(1);
  socket().open();
  await tick();
  assert.equal(FakeSocket.sockets.length, 2);
  assert.deepEqual(tokens, ["token-1", "token-2"]);
  rt.close();
});

test("renews the token in-band before it expires", async () => {
  const { rt, socket, tokens } = client({ renewBeforeMs: 1000, commandTimeoutMs: 500 });
  socket().open();
  await tick();
  socket().connected(new Date(Date.now() + 1050).toISOString());
  await tick(120);
  assert.deepEqual(socket().last(), { action: "authenticate", payload: { token: "token-2" }, requestId: "r1" });
  assert.deepEqual(tokens, ["token-1", "token-2"]);
  rt.close();
});

test("handlers get their topic's messages; close() rejects what is pending and stops", async () => {
  const { rt, socket, states } = client();
  socket().open();
  await tick();
  socket().connected();
  const seen: string[] = [];
  const off = rt.on("tables.updated", (message) => seen.push(message.resourceId ?? ""));
  rt.on("*", () => seen.push("*"));
  socket().reply({ topic: "tables.updated", entity: "tables", action: "updated", resourceId: "t1" });
  off();
  socket().reply({ topic: "tables.updated", entity: "tables", action: "updated", resourceId: "t2" });
  assert.deepEqual(seen, ["t1", "*", "*"]);
  const pending = rt.releaseTable("t1");
  await tick();
  rt.close();
  await assert.rejects(pending, (error: unknown) => error instanceof RealtimeError && error.code === "closed");
  assert.equal(states.at(-1)?.state, "closed");
  await tick(60);
  assert.equal(FakeSocket.sockets.length, 1);
});

test("topics and their fixed payloads are typed (checked by tsc when the tests build)", async () => {
  const { rt, socket } = client();
  socket().open();
  await tick();
  const got: boolean[] = [];
  rt.on("system.resumed", (message) => {
    const recovered: boolean | undefined = message.data?.recovered;
    // @ts-expect-error: recovered is a boolean, not a number
    const wrong: number | undefined = message.data?.recovered;
    void wrong;
    got.push(recovered ?? false);
  });
  rt.on("tables.error", (message) => {
    const code: string | undefined = message.data?.code;
    void code;
  });
  socket().connected();
  socket().reply({ topic: "system.resumed", entity: "system", action: "resumed", data: { recovered: true } });
  assert.deepEqual(got, [true]);
  rt.close();
});
