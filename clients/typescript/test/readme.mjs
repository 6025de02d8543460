// README.md's "Use it from an app" TypeScript block, as pasted: type-checked
// by tsc against this package (as `camsig`, built in dist/), then run with
// Node against a fresh dev-mode node, `localhost:8080` taken to its port,
// from the repository root. It must print the candidate, then `hangup`.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = path.resolve(HERE, "../..");
const BIN = process.env.CAMSIG_BIN ?? path.join(ROOT, "target/debug/camsig");

const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
const section = readme.slice(readme.indexOf("## Use it from an app"));
const code = /```ts\n([\s\S]*?)```/.exec(section)[1];
const lines = code.trim().split("\n").length;
if (lines >= 30) throw new Error(`README's TypeScript block is ${lines} lines, not under 30`);

const port = await new Promise((resolve) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});
const dir = mkdtempSync(path.join(os.tmpdir(), "camsig-readme-"));
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CAMSIG__")));
const node = spawn(BIN, [], { env: { ...env, CAMSIG__SERVER__BIND: `127.0.0.1:${port}`, CAMSIG__SERVER__DATA_DIR: path.join(dir, "data"), RUST_LOG: "warn" }, stdio: "ignore" });
try {
  // An app's project: the block as its module, this package and its ws as dependencies.
  mkdirSync(path.join(dir, "node_modules/@types"), { recursive: true });
  symlinkSync(HERE, path.join(dir, "node_modules/camsig"));
  for (const dep of ["ws", "@types/ws", "@types/node"]) symlinkSync(path.join(HERE, "node_modules", dep), path.join(dir, "node_modules", dep));
  writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(path.join(dir, "flow.ts"), code.replaceAll("localhost:8080", `127.0.0.1:${port}`));
  writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
    compilerOptions: { target: "ES2022", module: "ES2022", moduleResolution: "bundler", lib: ["ES2022", "DOM"], strict: true, skipLibCheck: true, types: ["node"], outDir: "out" },
    files: ["flow.ts"],
  }));
  execFileSync(path.join(HERE, "node_modules/.bin/tsc"), ["-p", dir], { stdio: "inherit" });
  writeFileSync(path.join(dir, "out/package.json"), JSON.stringify({ type: "module" }));
  const end = Date.now() + 30000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) break;
    } catch {}
    if (Date.now() > end) throw new Error("the node never got ready");
    await new Promise((r) => setTimeout(r, 100));
  }
  // Run from the repository root, as the README says; `camsig` resolves from the app's node_modules.
  const out = execFileSync(process.execPath, [path.join(dir, "out/flow.js")], { cwd: ROOT, timeout: 60000 }).toString();
  const want = "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host\nhangup\n";
  if (out !== want) throw new Error(`README's TypeScript block printed ${JSON.stringify(out)}`);
  console.log(`ok  README's TypeScript block (${lines} lines)`);
} finally {
  node.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
