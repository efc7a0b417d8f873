/**
 * 1,000 concurrent streams on one instance (memory backend, the service as its own process):
 * the service's RSS before and with the streams open (and per stream), and the time from a
 * step event's 202 to its change arriving on the job's stream, p50 and p99, beside the same
 * figure for a poll of GET /v1/jobs/{id} every 100 ms (the baseline a client has without
 * streams).
 *
 *   bun run bench:streams [--streams 1000] [--changes 500]
 *
 * (The script raises BUN_CONFIG_MAX_HTTP_REQUESTS: Bun's fetch holds 256 connections at once by default.)
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { startScriptProcess } from "./support/service-process.ts";

const { values } = parseArgs({ options: { streams: { type: "string", default: "1000" }, changes: { type: "string", default: "500" } } });
const STREAMS = Number(values.streams);
const CHANGES = Math.min(Number(values.changes), STREAMS);

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

const service = await startScriptProcess("src/main.ts", {
  LUCIUS_LOG_LEVEL: "warn",
  LUCIUS_MAX_STREAMS: String(STREAMS + 10),
  LUCIUS_MEMORY_MAX_JOBS: "100000",
});
const base = service.url;
const pid = service.pid;
const json = { "content-type": "application/json" };

async function submit(): Promise<string> {
  const response = await fetch(`${base}/v1/commands`, {
    method: "POST",
    headers: json,
    body: JSON.stringify({
      requestType: "document.ingest",
      tenantId: "bench",
      payload: { documentId: "d", documentUri: "https://files.example/d.pdf", contentType: "application/pdf" },
    }),
  });
  return ((await response.json()) as { jobId: string }).jobId;
}
const report = (jobId: string, eventId: string) =>
  fetch(`${base}/v1/jobs/${jobId}/steps/${jobId}.s0/events`, {
    method: "POST",
    headers: json,
    body: JSON.stringify({ eventId, status: "progress", percent: 1 }),
  });

const jobs: string[] = [];
for (let i = 0; i < STREAMS; i += 50) jobs.push(...(await Promise.all(Array.from({ length: Math.min(50, STREAMS - i) }, submit))));
await Bun.sleep(500);
const before = rssMiB(pid);

/** Each stream resolves `arrived[jobId]` when a progress event shows up on it. */
const waiting = new Map<string, (at: number) => void>();
const controllers: AbortController[] = [];
await Promise.all(
  jobs.map(async (jobId) => {
    const controller = new AbortController();
    controllers.push(controller);
    const response = await fetch(`${base}/v1/jobs/${jobId}/stream`, { signal: controller.signal });
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          if (value.includes("event: progress")) waiting.get(jobId)?.(performance.now());
        }
      } catch {
        // aborted at the end
      }
    })();
  }),
);
await Bun.sleep(1000);
const withStreams = rssMiB(pid);

const streamed: number[] = [];
for (const jobId of jobs.slice(0, CHANGES)) {
  const arrived = new Promise<number>((resolve, reject) => {
    waiting.set(jobId, resolve);
    setTimeout(() => reject(new Error(`no event on the stream of ${jobId} within 10 s`)), 10_000);
  });
  const sent = performance.now();
  await report(jobId, `s-${jobId}`);
  streamed.push((await arrived) - sent);
}

// Baseline: a client polling the job every 100 ms sees the same kind of change this late.
const polled: number[] = [];
for (const jobId of jobs.slice(0, Math.min(100, CHANGES))) {
  const sent = performance.now();
  await report(jobId, `p-${jobId}`);
  const phase = Math.random() * 100; // where the poll cycle stands when the change lands
  await Bun.sleep(phase);
  for (;;) {
    const view = (await (await fetch(`${base}/v1/jobs/${jobId}`)).json()) as { steps: { progress: unknown }[] };
    if (view.steps[0]!.progress) break;
    await Bun.sleep(100);
  }
  polled.push(performance.now() - sent);
}

for (const controller of controllers) controller.abort();
await service.stop();

const row = (name: string, xs: number[]) =>
  `${name.padEnd(26)} p50 ${percentile(xs, 50).toFixed(1).padStart(7)} ms   p99 ${percentile(xs, 99).toFixed(1).padStart(7)} ms`;
console.log(
  `streams open: ${STREAMS}; service RSS ${before.toFixed(1)} MiB before, ${withStreams.toFixed(1)} MiB with them (${(((withStreams - before) * 1024) / STREAMS).toFixed(1)} KiB per stream)`,
);
console.log(row("change → stream event", streamed));
console.log(row("change → 100 ms poll (base)", polled));
console.log(
  `ratio (poll / stream) p50 ${(percentile(polled, 50) / percentile(streamed, 50)).toFixed(1)}×, p99 ${(percentile(polled, 99) / percentile(streamed, 99)).toFixed(1)}×`,
);
process.exit(0);
