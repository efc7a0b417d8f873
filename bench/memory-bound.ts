/**
 * The memory backend's bound under sustained peak load: `wrk` (one thread, 32 connections) posts
 * document.ocr commands for `--seconds` (default 300) at the service on `memory` with the default
 * LUCIUS_MEMORY_MAX_JOBS and log level; the service's RSS is sampled every 5 s from /proc. Nothing
 * ends the jobs here (no broker, no workers), so once the bound is full of open jobs the service
 * answers 503 storage-full: the point is that memory stops growing. The bare Bun.serve baseline's
 * RSS under the same load is printed beside it.
 *
 *   bun run bench:memory [--seconds 300]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startScriptProcess } from "./support/service-process.ts";
import { ensureWrk, wrk } from "./support/wrk.ts";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "300" } } });
const seconds = Number(values.seconds);
await ensureWrk();

const body = JSON.stringify({
  requestType: "document.ocr",
  tenantId: "bench",
  payload: { documentId: "d1", documentUri: "https://files.example/y.pdf", contentType: "application/pdf", language: "en" },
});

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

async function run(name: string, script: string) {
  const proc = await startScriptProcess(script, { LUCIUS_LOG_LEVEL: "info" });
  const port = new URL(proc.url).port;
  const samples: number[] = [rssMb(proc.pid)];
  const sampler = setInterval(() => samples.push(rssMb(proc.pid)), 5000);
  const result = await wrk(`http://127.0.0.1:${port}/v1/commands`, { body, connections: 32, seconds });
  clearInterval(sampler);
  samples.push(rssMb(proc.pid));
  await proc.stop();
  console.log(
    `${name.padEnd(34)} RSS idle ${samples[0]!.toFixed(0)} MB, max ${Math.max(...samples).toFixed(0)} MB, last ${samples.at(-1)!.toFixed(0)} MB; ${result.requests} answers (${result.errors} not 2xx) at ${result.perSecond.toFixed(0)}/s`,
  );
  console.log(`${"".padEnd(34)} RSS every 5 s: ${samples.map((s) => s.toFixed(0)).join(" ")}`);
}

console.log(`wrk -t1 -c32 -d${seconds}s, POST document.ocr; RSS from /proc`);
await run("bare Bun.serve", "bench/support/bare-server.ts");
await run("lucius, memory, default bound", "src/main.ts");
