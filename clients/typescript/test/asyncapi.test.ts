/**
 * The gateway's AsyncAPI document (docs/asyncapi.yaml, written by `mesaya-realtime asyncapi`
 * from the catalogue) is valid for the AsyncAPI parser, and the generated types agree with it.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { Parser } from "@asyncapi/parser";

import { CLOSE_CODES, ENTITIES, type Topic } from "../src/generated.js";
import { CloseCode } from "../src/index.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const text = readFileSync(resolve(ROOT, "docs/asyncapi.yaml"), "utf8");

test("docs/asyncapi.yaml is a valid AsyncAPI 3.0 document", async () => {
  const { document, diagnostics } = await new Parser().parse(text);
  const errors = diagnostics.filter((d) => d.severity === 0);
  assert.deepEqual(errors.map((d) => `${d.path.join(".")}: ${d.message}`), []);
  assert.ok(document);
  assert.equal(document.version(), "3.0.0");
  const addresses = document.channels().all().map((channel) => channel.address());
  assert.deepEqual(addresses.sort(), ["/ws/analytics/{scope}/{entity}", "/ws/notifications", "/ws/{entity}/{section}"]);
  const entity = document.channels().get("entitySocket")?.parameters().get("entity");
  assert.deepEqual((entity?.json() as { enum?: string[] } | undefined)?.enum?.slice().sort(), [...ENTITIES].sort());
});

test("the generated types are those of the document", () => {
  const topic: Topic<"tables"> = "tables.selecting";
  assert.match(text, new RegExp(`- ${topic.replace(".", "\\.")}\\b`));
  for (const [name, code] of Object.entries(CLOSE_CODES)) {
    assert.equal((CloseCode as Record<string, number>)[name], code, name);
  }
});
