/**
 * The demo's floor plan (served by `mesaya-realtime demo` at `/`): one section's tables drawn at
 * their positions and sizes, coloured by status and changing live, a click holds or releases a
 * table, holds by others shown, the connection state visible. Built on the SDK only.
 */

import { connect, RealtimeError, type Hold, type Item } from "../src/index.js";

interface Table extends Item {
  number?: number;
  capacity?: number;
  posX?: number;
  posY?: number;
  width?: number;
  height?: number;
  status?: string;
}

const params = new URLSearchParams(location.search);
const section = params.get("section") ?? "main-hall";
const user = params.get("user") ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
const $ = (id: string) => document.getElementById(id)!;
$("section").textContent = section;
$("who").textContent = `you are ${user}`;

function log(text: string): void {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $("log").prepend(line);
}

const rt = connect({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}`,
  entity: "tables",
  section,
  getToken: async () => (await (await fetch(`/demo/token?user=${encodeURIComponent(user)}`)).json()).token as string,
});
rt.onState(({ state, code }) => {
  const badge = $("state");
  badge.dataset["state"] = state;
  badge.textContent = code ? `${state} (${code})` : state;
});

const tables = rt.collection<Table>({ limit: 100 });
const holds = rt.selections();
const floor = $("floor");

function draw(): void {
  const seen = new Set<string>();
  for (const table of tables.items) {
    seen.add(table.id);
    let box = document.getElementById(`table-${table.id}`);
    if (box === null) {
      box = document.createElement("div");
      box.id = `table-${table.id}`;
      box.className = "table";
      box.addEventListener("click", () => void toggle(table.id));
      floor.append(box);
    }
    const scale = 2.5; // the platform's floor-plan units to pixels
    box.style.left = `${(table.posX ?? 0) * scale + 40}px`;
    box.style.top = `${(table.posY ?? 0) * scale + 50}px`;
    box.style.width = `${(table.width ?? 32) * scale}px`;
    box.style.height = `${(table.height ?? 32) * scale}px`;
    box.dataset["status"] = table.status ?? "AVAILABLE";
    const hold = holds.get(table.id);
    box.classList.toggle("mine", hold?.selectedBy === user);
    box.classList.toggle("theirs", hold !== undefined && hold.selectedBy !== user);
    box.title = hold ? `held by ${hold.selectedBy} until ${new Date(hold.expiresAt).toLocaleTimeString()}` : (table.status ?? "");
    box.innerHTML = "";
    const name = document.createElement("span");
    name.textContent = `T${table.number ?? ""}`;
    const detail = document.createElement("small");
    detail.textContent = hold ? `${hold.selectedBy === user ? "you" : hold.selectedBy} choosing` : `${table.capacity ?? ""} seats`;
    box.append(name, detail);
  }
  for (const box of [...floor.querySelectorAll<HTMLElement>(".table")]) {
    if (!seen.has(box.id.slice("table-".length))) box.remove();
  }
}

async function toggle(tableId: string): Promise<void> {
  const hold: Hold | undefined = holds.get(tableId);
  try {
    if (hold?.selectedBy === user) {
      await rt.releaseTable(tableId);
      log(`you released ${tableId}`);
    } else {
      await rt.selectTable(tableId);
      log(`you hold ${tableId}`);
    }
  } catch (error) {
    log(error instanceof RealtimeError ? `${tableId}: ${error.message} (${error.code})` : String(error));
  }
}

tables.onChange(draw);
holds.onChange(draw);
rt.on("tables.updated", (event) => log(`${event.resourceId ?? ""} is ${(event.data as Table | undefined)?.status ?? "updated"}`));
(window as unknown as { mesaya: unknown }).mesaya = { rt, tables, holds, user };
