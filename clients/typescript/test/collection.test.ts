/** Live collections over an in-memory socket: snapshot, buffered events, refreshes, deletes. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { isAfter, type Item } from "../src/index.js";
import { client, tick } from "./fake.js";

/** A cursor of one topic with three partitions at these offsets. */
const at = (p0: number, p1 = 0, p2 = 0) => `1.abc.t:0:${p0.toString(36)};t:1:${p1.toString(36)};t:2:${p2.toString(36)}`;
const time = (n: number) => new Date(Date.UTC(2026, 11, 2, 0, 0, n)).toISOString();

function event(id: string, status: string, n: number, cursor: string, action = "updated") {
  return { topic: `tables.${action}`, entity: "tables", action, resourceId: id, data: { id, status, updatedAt: time(n) }, cursor };
}

async function started() {
  const made = client();
  made.socket().open();
  await tick();
  made.socket().connected();
  const live = made.rt.collection<Item & { status: string }>({ limit: 100 });
  await tick();
  const list = made.socket().last();
  assert.equal(list["action"], "list");
  return { ...made, live, listId: String(list["requestId"]) };
}

test("cursor order: an event is after a watermark when some partition moved on", () => {
  assert.equal(isAfter(at(5), at(4)), true);
  assert.equal(isAfter(at(4, 2), at(4, 2)), false);
  assert.equal(isAfter(at(3, 9), at(4, 2)), true);
  assert.equal(isAfter(undefined, at(4)), true);
});

test("events that arrive while the snapshot is in flight are applied after it, if they are newer", async () => {
  const { rt, socket, live, listId } = await started();
  socket().reply(event("a", "OCCUPIED", 5, at(3))); // before the watermark: in the snapshot already
  socket().reply(event("b", "OCCUPIED", 6, at(6))); // after it
  socket().reply({
    topic: "tables.list",
    entity: "tables",
    action: "list",
    data: { data: [
      { id: "a", status: "RESERVED", updatedAt: time(5) },
      { id: "b", status: "AVAILABLE", updatedAt: time(4) },
    ] },
    metadata: { requestId: listId, origin: "request" },
    cursor: at(5),
  });
  await tick();
  assert.deepEqual(live.items.map((i) => [i.id, i.status]), [["a", "RESERVED"], ["b", "OCCUPIED"]]);
  rt.close();
});

test("no item goes back to an older state: late events and stale refreshes are ignored", async () => {
  const { rt, socket, live, listId } = await started();
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [{ id: "a", status: "AVAILABLE", updatedAt: time(1) }], metadata: { requestId: listId }, cursor: at(1) });
  socket().reply(event("a", "OCCUPIED", 10, at(2)));
  const seen: string[] = [];
  live.onChange((items) => seen.push(items[0]?.status ?? "-"));
  socket().reply(event("a", "RESERVED", 9, at(3))); // written before the OCCUPIED one
  // A refresh whose REST call read the row before the last change.
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [{ id: "a", status: "AVAILABLE", updatedAt: time(1) }], metadata: { origin: "refresh" }, cursor: at(1) });
  assert.equal(live.get("a")?.status, "OCCUPIED");
  assert.ok(!seen.includes("RESERVED") && !seen.includes("AVAILABLE"), seen.join(","));
  rt.close();
});

test("a delete removes the item and an older update does not bring it back", async () => {
  const { rt, socket, live, listId } = await started();
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [{ id: "a", status: "AVAILABLE", updatedAt: time(1) }, { id: "b", status: "AVAILABLE", updatedAt: time(1) }], metadata: { requestId: listId }, cursor: at(1) });
  socket().reply(event("a", "AVAILABLE", 5, at(2), "deleted"));
  socket().reply(event("a", "OCCUPIED", 4, at(3)));
  await tick(); // the snapshot is applied when its promise settles; the events were buffered
  assert.deepEqual(live.items.map((i) => i.id), ["b"]);
  socket().reply(event("c", "OCCUPIED", 6, at(4), "created"));
  assert.deepEqual(live.items.map((i) => i.id), ["b", "c"]);
  rt.close();
});

test("a resume that could not replay the gap reads the snapshot again", async () => {
  const { rt, socket, live, listId } = await started();
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [{ id: "a", status: "AVAILABLE", updatedAt: time(1) }], metadata: { requestId: listId }, cursor: at(1) });
  socket().reply(event("a", "OCCUPIED", 2, at(2)));
  socket().drop(1006);
  await tick(30);
  socket().open();
  await tick();
  socket().connected(null, "");
  socket().reply({ topic: "system.resumed", entity: "system", action: "resumed", data: { recovered: false } });
  await tick();
  const lists = socket().sent.filter((frame) => frame["action"] === "list");
  assert.ok(lists.length >= 1);
  const reread = lists.at(-1)!;
  socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [{ id: "a", status: "RESERVED", updatedAt: time(3) }], metadata: { requestId: String(reread["requestId"]) }, cursor: at(9) });
  await tick();
  assert.equal(live.get("a")?.status, "RESERVED");
  rt.close();
});

test("randomised: whatever the interleaving, the collection ends equal to the source and never regresses", async () => {
  let seed = 7;
  const random = () => ((seed = (seed * 48271) % 2147483647) / 2147483647);
  for (let round = 0; round < 20; round++) {
    const { rt, socket, live, listId } = await started();
    const truth = new Map<string, { id: string; status: string; updatedAt: string }>();
    const offsets = [0, 0, 0];
    const log: ReturnType<typeof event>[] = [];
    let n = 0;
    const change = () => {
      const id = `t${Math.floor(random() * 10)}`;
      const status = ["AVAILABLE", "OCCUPIED", "RESERVED"][Math.floor(random() * 3)]!;
      const item = { id, status, updatedAt: time(++n) };
      truth.set(id, item);
      const p = Number(id.slice(1)) % 3; // one table, one partition (the topic is keyed by table)
      offsets[p] = offsets[p]! + 1;
      log.push(event(id, status, n, at(offsets[0]!, offsets[1]!, offsets[2]!)));
    };
    for (let i = 0; i < 20; i++) change();
    // The snapshot's REST call reads the truth as of some event; events keep coming meanwhile.
    const mark = at(offsets[0]!, offsets[1]!, offsets[2]!);
    const snapshot = [...truth.values()].map((item) => ({ ...item }));
    for (let i = 0; i < 30; i++) change();
    const regressions: string[] = [];
    const last = new Map<string, number>();
    live.onChange((items) => {
      for (const item of items) {
        const t = Date.parse(item.updatedAt!);
        if (t < (last.get(item.id) ?? 0)) regressions.push(item.id);
        last.set(item.id, t);
      }
    });
    // Every event after the first 20 is delivered; some before the snapshot reply, some after.
    const split = 20 + Math.floor(random() * 30);
    for (const message of log.slice(20, split)) socket().reply(message);
    socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: snapshot, metadata: { requestId: listId }, cursor: mark });
    for (const message of log.slice(split)) socket().reply(message);
    // A refresh of the final truth, with its own watermark.
    socket().reply({ topic: "tables.list", entity: "tables", action: "list", data: [...truth.values()], metadata: { origin: "refresh" }, cursor: at(offsets[0]!, offsets[1]!, offsets[2]!) });
    assert.deepEqual(live.items.map((i) => [i.id, i.status]), [...truth.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map((i) => [i.id, i.status]));
    assert.deepEqual(regressions, []);
    rt.close();
  }
});

test("selections: holds added, extended and released live, and dropped past their expiry", async () => {
  const { rt, socket } = client();
  socket().open();
  await tick();
  socket().connected();
  const holds = rt.selections();
  const hold = (table: string, by: string, ms: number) => ({
    topic: "tables.selecting",
    entity: "tables",
    action: "selecting",
    resourceId: table,
    data: { tableId: table, sectionId: "s1", selectedBy: by, selectedAt: time(0), expiresAt: new Date(Date.now() + ms).toISOString() },
  });
  socket().reply(hold("t1", "ada", 60_000));
  socket().reply(hold("t2", "bob", 40));
  assert.deepEqual(holds.holds.map((h) => [h.tableId, h.selectedBy]), [["t1", "ada"], ["t2", "bob"]]);
  socket().reply({ topic: "tables.released", entity: "tables", action: "released", data: { tableId: "t1", reason: "released" } });
  assert.equal(holds.get("t1"), undefined);
  await tick(80);
  assert.deepEqual(holds.holds, []); // t2 expired with no release
  holds.close();
  rt.close();
});
