/**
 * POST /v1/commands in memory mode under concurrent load over real sockets, beside a bare
 * Bun.serve handler that parses the same JSON and answers 202, in the same run.
 *
 *   bun run bench:intake [--seconds 5] [--concurrency 64]
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { closedLoop, openLoop, type LoadResult, type MakeRequest } from "./load.ts";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "5" }, concurrency: { type: "string", default: "64" } },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

async function start(script: string, env: Record<string, string> = {}) {
  const proc = Bun.spawn(["bun", resolve(import.meta.dir, script)], {
    env: { PATH: process.env.PATH ?? "", LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: "0", LUCIUS_LOG_LEVEL: "error", ...env },
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${script} exited before listening`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  // The service logs at "error" level here, so read the URL the way an operator would: ask.
  const line = text.split("\n").find((l) => l.includes("listening"));
  if (!line) throw new Error(`${script} did not print its URL`);
  return { proc, url: new URL(JSON.parse(line).url as string) };
}

const payload = { documentId: "d1", documentUri: "https://files.example/y.pdf", contentType: "application/pdf", language: "en" };
const requestsFor = (url: URL): MakeRequest => {
  const target = new URL("/v1/commands", url).href;
  const run = crypto.randomUUID().slice(0, 8);
  return (i) =>
    new Request(target, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": `bench-${run}-${i}` },
      body: JSON.stringify({ requestType: "document.ingest", tenantId: "bench", correlationId: `c-${i}`, payload }),
    });
};

const fmt = (r: LoadResult) =>
  `${r.perSecond.toFixed(0).padStart(7)} req/s  p50 ${r.p50Ms.toFixed(2).padStart(6)} ms  p99 ${r.p99Ms.toFixed(2).padStart(6)} ms  (${r.requests} ok, ${r.errors} errors)`;

// The service must log its URL even at "error" level: start it at info and let it be quiet after.
const service = await start("../src/main.ts", { LUCIUS_LOG_LEVEL: "info" });
const bare = await start("./bare-server.ts");
const targets = { service: requestsFor(service.url), bare: requestsFor(bare.url) };

try {
  console.log(`intake benchmark: ${concurrency} concurrent connections, ${seconds}s per run, Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores`);
  for (const make of Object.values(targets)) await closedLoop(make, { concurrency, seconds: 1, expectStatus: 202 });

  // Interleave the runs so that a noisy neighbour hurts both alike.
  const peak = { service: [] as LoadResult[], bare: [] as LoadResult[] };
  for (let round = 0; round < 2; round++) {
    peak.bare.push(await closedLoop(targets.bare, { concurrency, seconds, expectStatus: 202 }));
    peak.service.push(await closedLoop(targets.service, { concurrency, seconds, expectStatus: 202 }));
  }
  const best = (runs: LoadResult[]) => runs.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
  const servicePeak = best(peak.service);
  const barePeak = best(peak.bare);
  console.log("\npeak (closed loop, best of 2)");
  console.log(`  bare Bun.serve   ${fmt(barePeak)}`);
  console.log(`  lucius intake    ${fmt(servicePeak)}`);
  console.log(`  ratio service/bare throughput: ${(servicePeak.perSecond / barePeak.perSecond).toFixed(2)}`);

  const rate = Math.floor(servicePeak.perSecond / 2);
  const halfService = await openLoop(targets.service, { ratePerSecond: rate, seconds, expectStatus: 202 });
  const halfBare = await openLoop(targets.bare, { ratePerSecond: rate, seconds, expectStatus: 202 });
  console.log(`\nat half of the service's peak (open loop, ${rate} req/s)`);
  console.log(`  bare Bun.serve   ${fmt(halfBare)}`);
  console.log(`  lucius intake    ${fmt(halfService)}`);
  console.log(`  ratio service/bare p99: ${(halfService.p99Ms / halfBare.p99Ms).toFixed(2)}`);
} finally {
  service.proc.kill("SIGTERM");
  bare.proc.kill("SIGTERM");
  await Promise.all([service.proc.exited, bare.proc.exited]);
}
