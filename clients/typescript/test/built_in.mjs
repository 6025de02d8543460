// What is committed equals what the tools make of the sources, as the
// OpenAPI document is kept equal to the code:
// - src/openapi.ts is what openapi-typescript makes of openapi/openapi.yaml;
// - src/http/static/client/*.js (built into camsig, loaded by the demo page)
//   is what tsc makes of src/ (run `npm run build` first; `npm run embed` copies it).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = path.resolve(HERE, "../..");
const tmp = mkdtempSync(path.join(os.tmpdir(), "camsig-types-"));
let stale = [];
try {
  const out = path.join(tmp, "openapi.ts");
  execFileSync(path.join(HERE, "node_modules/.bin/openapi-typescript"), [path.join(ROOT, "openapi/openapi.yaml"), "-o", out], { stdio: "ignore" });
  if (readFileSync(out, "utf8") !== readFileSync(path.join(HERE, "src/openapi.ts"), "utf8")) stale.push("src/openapi.ts (run `npm run types`)");
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
const built = readdirSync(path.join(HERE, "dist")).filter((f) => f.endsWith(".js")).sort();
const embedded = readdirSync(path.join(ROOT, "src/http/static/client")).sort();
if (JSON.stringify(built) !== JSON.stringify(embedded)) stale.push(`src/http/static/client holds ${embedded}, tsc makes ${built}`);
for (const f of built) {
  const e = path.join(ROOT, "src/http/static/client", f);
  if (embedded.includes(f) && readFileSync(e, "utf8") !== readFileSync(path.join(HERE, "dist", f), "utf8")) stale.push(`src/http/static/client/${f} (run \`npm run build && npm run embed\`)`);
}
if (stale.length) {
  console.error(`stale:\n  ${stale.join("\n  ")}`);
  process.exit(1);
}
console.log("ok  the committed types and the built-in client equal what the tools make");
