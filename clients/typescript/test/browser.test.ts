/**
 * The demo's floor plan in a real browser: Debian's Chromium (`CHROMIUM`, default
 * /usr/bin/chromium) driven by playwright-core, two pages on `mesaya-realtime demo`. A click in
 * one shows the hold in the other within a second; a demo event changes a table's colour; a
 * screenshot of each page is kept (`SCREENSHOTS`, default ../../build/screenshots).
 */

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium, type Browser, type Page } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const PYTHON = process.env["MESAYA_PYTHON"] ?? resolve(ROOT, ".venv/bin/python");
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
const SHOTS = resolve(process.env["SCREENSHOTS"] ?? resolve(ROOT, "build/screenshots"));

let demo: ChildProcess;
let browser: Browser;
let base = "";
let output = "";

before(async () => {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, "127.0.0.1", done));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((done) => probe.close(done));
  demo = spawn(PYTHON, ["-m", "mesaya_realtime", "demo", "--port", String(port), "--interval", "0.5"], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  demo.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  demo.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/ready`)).status === 200) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`demo not ready:\n${output.slice(-2000)}`);
    await new Promise((done) => setTimeout(done, 200));
  }
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  demo?.kill("SIGTERM");
});

async function floor(user: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 620 } });
  page.on("pageerror", (error) => (output += `\n[${user}] ${error.message}`));
  await page.goto(`${base}/?section=main-hall&user=${user}`);
  await page.waitForSelector("#state[data-state=connected]", { timeout: 15_000 });
  await page.waitForSelector(".table", { timeout: 15_000 });
  return page;
}

test("two pages on the floor plan: a click in one shows the hold in the other within a second", async () => {
  const ada = await floor("ada");
  const bob = await floor("bob");
  const first = ada.locator(".table").first();
  const id = await first.getAttribute("id");
  assert.ok(id);
  await first.click();
  await ada.waitForSelector(`#${id}.mine`, { timeout: 5000 });
  const clicked = Date.now();
  await bob.waitForSelector(`#${id}.theirs`, { timeout: 1000 });
  assert.ok(Date.now() - clicked < 1000);
  assert.match((await bob.locator(`#${id}`).textContent()) ?? "", /ada choosing/);
  await ada.screenshot({ path: resolve(SHOTS, "floor-plan-ada.png") });
  await bob.screenshot({ path: resolve(SHOTS, "floor-plan-bob.png") });
  // The holder lets it go: the other page sees it free again.
  await first.click();
  await bob.waitForSelector(`#${id}:not(.theirs)`, { timeout: 2000 });
  await ada.close();
  await bob.close();
});

test("a demo event changes a table's colour on the page", async () => {
  const page = await floor("carl");
  const before = await page.$$eval(".table", (boxes) => boxes.map((box) => `${box.id}=${(box as HTMLElement).dataset["status"]}`));
  const changed = await page.waitForFunction(
    (was) => {
      const now = [...document.querySelectorAll<HTMLElement>(".table")].map((box) => `${box.id}=${box.dataset["status"]}`);
      return now.find((entry) => !was.includes(entry)) ?? false;
    },
    before,
    { timeout: 15_000 },
  );
  const entry = (await changed.jsonValue()) as string;
  const [id] = entry.split("=");
  const colour = await page.$eval(`#${id}`, (box) => getComputedStyle(box).backgroundColor);
  assert.match(colour, /^rgb/);
  await page.screenshot({ path: resolve(SHOTS, "floor-plan-live.png") });
  await page.close();
});
