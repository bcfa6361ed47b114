// The demo page that `mesaya-realtime demo` serves, built from demo/ and src/ (after tsc):
//   node scripts-page.mjs write   copies it into the Python package (src/mesaya_realtime/demo_page)
//   node scripts-page.mjs check   fails when the package's copy differs from a fresh build
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "../../src/mesaya_realtime/demo_page");
const files = [["demo/index.html", "index.html"], ["dist/demo/app.js", "demo/app.js"]];
for (const name of readdirSync(join(here, "dist/src"))) {
  if (name.endsWith(".js")) files.push([`dist/src/${name}`, `src/${name}`]);
}
const mode = process.argv[2];
if (mode === "write") {
  rmSync(target, { recursive: true, force: true });
  for (const [from, to] of files) {
    mkdirSync(dirname(join(target, to)), { recursive: true });
    copyFileSync(join(here, from), join(target, to));
  }
  console.log(`demo page written to ${relative(process.cwd(), target)} (${files.length} files)`);
} else if (mode === "check") {
  const stale = files.filter(([from, to]) => !existsSync(join(target, to)) || !readFileSync(join(here, from)).equals(readFileSync(join(target, to))));
  const expected = new Set(files.map(([, to]) => to));
  const walk = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [relative(target, join(dir, e.name))]));
  const extra = existsSync(target) ? walk(target).filter((name) => !expected.has(name)) : [];
  if (stale.length || extra.length) {
    console.error(`the demo page in the Python package is stale: ${[...stale.map(([, to]) => to), ...extra].join(", ")}\nrun: cd clients/typescript && npm run page`);
    process.exit(1);
  }
  console.log("demo page up to date");
} else {
  console.error("usage: node scripts-page.mjs write|check");
  process.exit(2);
}
