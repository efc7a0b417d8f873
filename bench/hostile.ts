/**
 * What hostile bodies cost the service, started as the README starts it (not NODE_ENV=production):
 * /healthz latency while 8 clients send hostile requests back to back, and the process's RSS
 * after them, beside the same run with ordinary valid commands of the same size.
 *
 *   bun run bench:hostile [--requests 400]
 */
import { parseArgs } from "node:util";
import { startServiceProcess } from "./support/service-process.ts";

const { values } = parseArgs({ options: { requests: { type: "string", default: "400" } } });
const total = Number(values.requests);
const CLIENTS = 8;

function rssMb(pid: number): number {
  const status = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

const nested = (depth: number) => `${"[".repeat(depth)}${"]".repeat(depth)}`;
const valid = (padding: number) =>
  JSON.stringify({
    requestType: "document.ocr",
    tenantId: "bench",
    payload: { documentId: "d1", documentUri: "https://files.example/d1.pdf", contentType: "application/pdf", pad: "x".repeat(padding) },
  });

const workloads: [string, () => string][] = [
  ["valid commands, 40 KB", () => valid(40_000)],
  ["[ x20000 ] x20000 (40 KB)", () => nested(20_000)],
  ["payload nested 30,000 deep (60 KB)", () => valid(0).replace('"pad":""', `"pad":${nested(30_000)}`)],
  ["lone surrogates, 1e400", () => valid(0).replace('"pad":""', '"pad":"\\ud800","n":1e400')],
];

async function run(name: string, body: () => string) {
  const service = await startServiceProcess();
  const before = rssMb(service.pid);
  const statuses = new Map<number, number>();
  let sent = 0;
  let done = false;
  const healthMs: number[] = [];
  const probe = (async () => {
    while (!done) {
      const started = performance.now();
      await fetch(`${service.url}/healthz`);
      healthMs.push(performance.now() - started);
      await Bun.sleep(10);
    }
  })();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (sent < total) {
        sent++;
        const response = await fetch(`${service.url}/v1/commands`, { method: "POST", headers: { "content-type": "application/json" }, body: body() });
        await response.arrayBuffer();
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  done = true;
  await probe;
  const after = rssMb(service.pid);
  await service.stop();
  healthMs.sort((a, b) => a - b);
  const max = healthMs.at(-1) ?? 0;
  const p99 = healthMs[Math.floor(healthMs.length * 0.99)] ?? 0;
  const answers = [...statuses].map(([status, count]) => `${count}×${status}`).join(" ");
  console.log(
    `${name.padEnd(36)} ${(total / seconds).toFixed(0).padStart(6)} req/s  answers ${answers.padEnd(8)}  /healthz p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms  RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB`,
  );
  return { max, growth: after - before };
}

console.log(`hostile bodies: ${total} requests per workload from ${CLIENTS} clients, /healthz probed every 10 ms, Bun ${Bun.version}`);
const results = [];
for (const [name, body] of workloads) results.push(await run(name, body));
const [baseline, ...hostile] = results;
console.log(
  `worst /healthz max under hostile bodies: ${Math.max(...hostile.map((r) => r.max)).toFixed(1)} ms vs ${baseline!.max.toFixed(1)} ms under valid ones; worst RSS growth ${Math.max(...hostile.map((r) => r.growth)).toFixed(0)} MB vs ${baseline!.growth.toFixed(0)} MB`,
);
