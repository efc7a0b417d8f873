/**
 * POST /v1/commands in memory mode under concurrent load over real sockets, beside a bare
 * Bun.serve handler that parses the same JSON and answers 202, in the same run.
 *
 *   bun run bench:intake [--seconds 5] [--concurrency 64] [--log-level warn|info]
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { closedLoop, type LoadResult, type MakeRequest, openLoop } from "./load.ts";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "5" }, concurrency: { type: "string", default: "64" }, "log-level": { type: "string", default: "warn" } },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

/** Starts a server on a free port and waits until it answers; its output is not read (a full pipe would stall it). */
async function start(script: string, env: Record<string, string> = {}) {
  const port = await freePort();
  const proc = Bun.spawn(["bun", resolve(import.meta.dir, script)], {
    env: { PATH: process.env.PATH ?? "", NODE_ENV: "production", LUCIUS_HOST: "127.0.0.1", LUCIUS_PORT: String(port), PORT: String(port), ...env },
    stdout: "ignore",
    stderr: "inherit",
  });
  const url = new URL(`http://127.0.0.1:${port}/`);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await fetch(new URL("/healthz", url));
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`${script} did not start`);
      await Bun.sleep(20);
    }
  }
  return { proc, url };
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

const fmt2 = (n: number) => n.toFixed(2);
const best = (runs: LoadResult[]) => runs.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));

/** Fresh processes for each phase: the memory store keeps every job, and a heap grown by the
 *  peak phase's ~100,000 jobs would put its garbage-collection pauses into the latency phase. */
async function withTargets<T>(run: (targets: { service: MakeRequest; bare: MakeRequest }) => Promise<T>): Promise<T> {
  // At "info" every request writes a log line (to /dev/null here): --log-level info measures that too.
  const service = await start("../src/main.ts", { LUCIUS_LOG_LEVEL: values["log-level"]! });
  const bare = await start("./bare-server.ts");
  try {
    const targets = { service: requestsFor(service.url), bare: requestsFor(bare.url) };
    for (const make of Object.values(targets)) await closedLoop(make, { concurrency, seconds: 1, expectStatus: 202 });
    return await run(targets);
  } finally {
    service.proc.kill("SIGTERM");
    bare.proc.kill("SIGTERM");
    await Promise.all([service.proc.exited, bare.proc.exited]);
  }
}

console.log(`intake benchmark: ${concurrency} concurrent connections, ${seconds}s per run, Bun ${Bun.version}, ${navigator.hardwareConcurrency} cores`);
console.log(
  `service: memory backend, no publisher, a unique Idempotency-Key per request, LUCIUS_LOG_LEVEL=${values["log-level"]}; load generator in this process`,
);

const peak = await withTargets(async (targets) => {
  // Interleave the runs so that a noisy neighbour hurts both alike.
  const runs = { service: [] as LoadResult[], bare: [] as LoadResult[] };
  for (let round = 0; round < 2; round++) {
    runs.bare.push(await closedLoop(targets.bare, { concurrency, seconds, expectStatus: 202 }));
    runs.service.push(await closedLoop(targets.service, { concurrency, seconds, expectStatus: 202 }));
  }
  return { service: best(runs.service), bare: best(runs.bare) };
});
console.log("\npeak (closed loop, best of 2)");
console.log(`  bare Bun.serve   ${fmt(peak.bare)}`);
console.log(`  lucius intake    ${fmt(peak.service)}`);
console.log(`  ratio service/bare throughput: ${fmt2(peak.service.perSecond / peak.bare.perSecond)}`);

const rate = Math.floor(peak.service.perSecond / 2);
const half = await withTargets(async (targets) => ({
  service: await openLoop(targets.service, { ratePerSecond: rate, seconds, expectStatus: 202, maxInFlight: concurrency }),
  bare: await openLoop(targets.bare, { ratePerSecond: rate, seconds, expectStatus: 202, maxInFlight: concurrency }),
}));
console.log(`\nat half of the service's peak (open loop, ${rate} req/s, fresh processes)`);
console.log(`  bare Bun.serve   ${fmt(half.bare)}`);
console.log(`  lucius intake    ${fmt(half.service)}`);
console.log(`  ratio service/bare p50: ${fmt2(half.service.p50Ms / half.bare.p50Ms)}, p99: ${fmt2(half.service.p99Ms / half.bare.p99Ms)}`);
