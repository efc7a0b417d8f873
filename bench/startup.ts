/**
 * The compiled binary beside `bun src/main.ts`, in the same run: time from spawn to the first
 * 202 of POST /v1/commands, idle RSS, and the binary's size. Builds dist/lucius first.
 *
 *   bun run bench:startup [--runs 7]
 */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { runs: { type: "string", default: "7" } } });
const runs = Number(values.runs);
const root = resolve(import.meta.dir, "..");
const binary = resolve(root, "dist/lucius");

const build = Bun.spawnSync(["bun", "run", "build"], { cwd: root, stdout: "ignore", stderr: "inherit" });
if (build.exitCode !== 0) throw new Error("build failed");

const body = JSON.stringify({
  requestType: "document.ocr",
  tenantId: "bench",
  payload: { documentId: "d1", documentUri: "https://files.example/d1.pdf", contentType: "application/pdf" },
});
let nextPort = 21000 + Math.floor(Math.random() * 10000);

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

async function once(command: string[]): Promise<{ firstMs: number; rss: number }> {
  const port = nextPort++;
  const started = performance.now();
  const proc = Bun.spawn(command, {
    cwd: root,
    env: { PATH: process.env.PATH ?? "", NODE_ENV: "production", LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: String(port), LUCIUS_LOG_LEVEL: "warn" },
    stdout: "ignore",
    stderr: "ignore",
  });
  try {
    for (;;) {
      try {
        const response = await fetch(`http://127.0.0.1:${port}/v1/commands`, { method: "POST", body });
        if (response.status === 202) break;
      } catch {
        // not listening yet
      }
      if (performance.now() - started > 10_000) throw new Error(`${command.join(" ")} did not answer within 10 s`);
      await Bun.sleep(2);
    }
    const firstMs = performance.now() - started;
    await Bun.sleep(1500); // idle
    return { firstMs, rss: await rssMb(proc.pid) };
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const results = { binary: [] as { firstMs: number; rss: number }[], source: [] as { firstMs: number; rss: number }[] };
for (let i = 0; i < runs; i++) {
  results.binary.push(await once([binary]));
  results.source.push(await once(["bun", "src/main.ts"]));
}
const summary = (name: string, xs: { firstMs: number; rss: number }[]) =>
  `  ${name.padEnd(18)} first 202 after ${median(xs.map((x) => x.firstMs))
    .toFixed(0)
    .padStart(4)} ms (median of ${runs}), idle RSS ${median(xs.map((x) => x.rss)).toFixed(1)} MB`;
console.log(`startup benchmark, Bun ${Bun.version}, memory backend, no broker`);
console.log(summary("dist/lucius", results.binary));
console.log(summary("bun src/main.ts", results.source));
console.log(
  `  ratio binary/source: start ${(median(results.binary.map((x) => x.firstMs)) / median(results.source.map((x) => x.firstMs))).toFixed(2)}, RSS ${(median(results.binary.map((x) => x.rss)) / median(results.source.map((x) => x.rss))).toFixed(2)}`,
);
console.log(`  binary size: ${(statSync(binary).size / 1024 / 1024).toFixed(1)} MB`);
