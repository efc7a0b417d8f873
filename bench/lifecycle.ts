/**
 * What a job costs, and how fast it moves: N two-step jobs of one tenant run to `succeeded` on
 * `ledger`, `table` or `memory` through the dev broker, a worker answering over Service Bus (or
 * over HTTP, `--events http`), with Azurite behind a counting HTTP proxy. Prints, in one run:
 *  - a burst of N jobs (16 submitters): jobs/s end to end, storage calls per job by kind (point read, query, insert, update, delete, batch), by table,
 *    and the busiest partitions' calls per job (every HTTP request the SDK sends is one call, as
 *    Azure bills it);
 *  - submit → first message, and step transition (step one's event sent → step two's message at
 *    the worker), p50/p99, in the burst (heavy) and at a light 20 jobs/s;
 *  - intake alone (N commands of a protocol no worker answers), commands/s, and the burst's
 *    jobs/s end to end as a ratio of it.
 *
 * With `--events both` it prints instead, for the same service, broker and backend, bursts of N
 * jobs with events over Service Bus and over HTTP in turn (`--rounds`, 3 of each by default,
 * the order alternating): each burst's jobs/s and step transition p50/p99, the median of each
 * path, and Service Bus as a ratio of HTTP.
 *
 *   bun run bench:lifecycle [--jobs 200] [--backend ledger|table|memory] [--events sb|http|both] [--rounds 3]
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ServiceBusClient } from "@azure/service-bus";
import { connectionStringFor, freshTables } from "../dev/azurite.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";
import { freePort, startBrokerProcess } from "./support/service-process.ts";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "200" },
    backend: { type: "string", default: "ledger" },
    events: { type: "string", default: "sb" },
    rounds: { type: "string", default: "3" },
  },
});
if (!["ledger", "table", "memory"].includes(values.backend)) throw new Error("--backend: ledger, table or memory");
if (!["sb", "http", "both"].includes(values.events)) throw new Error("--events: sb, http or both");
let overHttp = values.events === "http";
const JOBS = Number(values.jobs);
const root = resolve(import.meta.dir, "..");

/** Calls by kind and table, and by partition (from the URL, or each operation of a batch). */
const counts = { kind: new Map<string, number>(), table: new Map<string, number>(), partition: new Map<string, number>() };
const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
let counting = false;
/** When the proxy last saw a call that was not the change feed's: how the burst's tail knows the work is stored. */
let lastWorkCall = 0;

function kindOf(method: string, path: string, query: string): string {
  if (path.endsWith("$batch")) return "batch";
  const point = /\(PartitionKey='[^']*',RowKey='[^']*'\)$/.test(decodeURIComponent(path));
  if (method === "GET") return point ? "point read" : query.includes("NextPartitionKey") ? "query (next page)" : "query";
  if (method === "POST") return "insert";
  if (method === "PUT" || method === "MERGE" || method === "PATCH") return "update";
  if (method === "DELETE") return "delete";
  return method;
}

const azurite = await startAzuriteProcess();
const azuritePort = Number(/TableEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(azurite.connection)![1]);
const proxy = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(request) {
    const url = new URL(request.url);
    const body = request.method === "GET" || request.method === "HEAD" ? undefined : await request.arrayBuffer();
    if (counting) {
      const path = decodeURIComponent(url.pathname);
      const batch = path.endsWith("$batch");
      // A batch is one partition of one table: both are named inside its body.
      const text = batch && body ? new TextDecoder().decode(body) : "";
      const inside = batch ? decodeURIComponent(text) : path;
      const table = (/\/devstoreaccount1\/([A-Za-z0-9]+)/.exec(inside)?.[1] ?? "?").replace(/^t[0-9a-f]{10}/, "");
      const partition =
        /PartitionKey='([^']*)'/.exec(inside)?.[1] ??
        /"PartitionKey":"([^"]*)"/.exec(text)?.[1] ??
        /PartitionKey eq '([^']*)'/.exec(decodeURIComponent(url.search))?.[1];
      add(counts.kind, kindOf(request.method, url.pathname, url.search));
      add(counts.table, table);
      if (!table.endsWith("Chg")) lastWorkCall = Date.now();
      if (partition !== undefined) add(counts.partition, `${table}/${partition}`);
    }
    const target = `http://127.0.0.1:${azuritePort}${url.pathname}${url.search}`;
    const headers = new Headers(request.headers);
    headers.set("host", `127.0.0.1:${azuritePort}`);
    return fetch(target, { method: request.method, headers, ...(body ? { body } : {}) });
  },
});
const storage = connectionStringFor(proxy.port ?? 0);

const broker = await startBrokerProcess();
const protocolsFile = join(mkdtempSync(join(tmpdir(), "lucius-lifecycle-")), "protocols.json");
writeFileSync(
  protocolsFile,
  JSON.stringify({
    protocols: [
      {
        requestType: "bench.two",
        version: 1,
        steps: [
          { name: "one", topic: "ocr-requests", payloadSchema: { type: "object" } },
          { name: "two", topic: "vector-ingestion", payloadSchema: { type: "object" } },
        ],
      },
      // Intake alone: a step on a topic no worker of this bench reads.
      { requestType: "bench.idle", version: 1, steps: [{ name: "idle", topic: "document-merge", payloadSchema: { type: "object" } }] },
    ],
  }),
);
const tables = freshTables();
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const env: Record<string, string> = {
  PATH: process.env.PATH ?? "",
  LUCIUS_HOST: "127.0.0.1",
  LUCIUS_PORT: String(port),
  LUCIUS_LOG_LEVEL: "warn",
  LUCIUS_STORAGE_BACKEND: values.backend,
  LUCIUS_TABLE_CONNECTION: storage,
  LUCIUS_LEDGER_TABLE: tables.ledger,
  LUCIUS_JOBS_TABLE: tables.jobs,
  LUCIUS_STEPS_TABLE: tables.steps,
  LUCIUS_OUTBOX_TABLE: tables.outbox,
  LUCIUS_IDEMPOTENCY_TABLE: tables.idempotency,
  LUCIUS_JOB_INDEX_TABLE: tables.jobIndex,
  LUCIUS_PROTOCOLS_FILE: protocolsFile,
  LUCIUS_SERVICEBUS_CONNECTION: broker.connection,
  LUCIUS_EVENTS_ENTITY: "step-events",
};
const service = Bun.spawn(["bun", resolve(root, "src/main.ts")], { cwd: root, env, stdout: "ignore", stderr: "inherit" });
for (const deadline = Date.now() + 20_000; ; ) {
  if ((await fetch(`${base}/healthz`).catch(() => null))?.ok) break;
  if (Date.now() > deadline) throw new Error("the service did not start");
  await Bun.sleep(50);
}

const client = new ServiceBusClient(broker.connection);
const events = client.createSender("step-events");
/** Per job: when its submit started, when step one's message arrived, its event left, step two's message arrived. */
const times = new Map<string, { submitted: number; first?: number; eventSent?: number; second?: number }>();
let ended = 0;
const workers = ["ocr-requests", "vector-ingestion"].map((topic, index) => {
  const receiver = client.createReceiver(topic, "workers", { receiveMode: "receiveAndDelete" });
  const subscription = receiver.subscribe(
    {
      async processMessage(message) {
        const arrived = performance.now();
        const body = message.body as { jobId: string; stepId: string; attempt: number };
        const job = times.get(body.jobId);
        if (job) {
          if (index === 0) job.first ??= arrived;
          else job.second ??= arrived;
        }
        const event = { eventId: `${message.messageId}-ok`, status: "succeeded", attempt: body.attempt, result: { step: index } };
        if (job && index === 0) job.eventSent = performance.now();
        if (overHttp) {
          const answer = await fetch(`${base}/v1/jobs/${body.jobId}/steps/${body.stepId}/events`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(event),
          });
          if (answer.status !== 202) throw new Error(`an event answered ${answer.status}`);
        } else {
          await events.sendMessages({ body: { jobId: body.jobId, stepId: body.stepId, ...event } });
        }
        if (index === 1) ended++;
      },
      async processError() {},
    },
    { maxConcurrentCalls: 16 },
  );
  return { receiver, subscription };
});

async function submit(requestType: string, key: string): Promise<string> {
  const submitted = performance.now();
  const response = await fetch(`${base}/v1/commands`, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body: JSON.stringify({ requestType, tenantId: "bench", payload: { key } }),
  });
  if (response.status !== 202) throw new Error(`intake answered ${response.status}`);
  const { jobId } = (await response.json()) as { jobId: string };
  if (requestType === "bench.two") {
    const job = times.get(jobId) ?? { submitted };
    job.submitted = submitted;
    times.set(jobId, job);
  }
  return jobId;
}

/** `count` submits by 16 callers at once; seconds taken. */
async function burst(requestType: string, count: number, prefix: string): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < count) await submit(requestType, `${prefix}-${next++}`);
    }),
  );
  return (performance.now() - started) / 1000;
}

async function untilEnded(count: number): Promise<void> {
  for (const deadline = Date.now() + 300_000; ended < count; ) {
    if (Date.now() > deadline) throw new Error(`only ${ended} of ${count} jobs ended`);
    await Bun.sleep(20);
  }
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
function latencies(jobIds: string[]): string {
  const jobs = jobIds.map((id) => times.get(id)!).filter((t) => t.first !== undefined && t.second !== undefined && t.eventSent !== undefined);
  const first = jobs.map((t) => t.first! - t.submitted);
  const transition = jobs.map((t) => t.second! - t.eventSent!);
  const ms = (n: number) => `${n.toFixed(1)} ms`;
  return `submit → first message p50 ${ms(percentile(first, 50))} p99 ${ms(percentile(first, 99))}; step transition p50 ${ms(percentile(transition, 50))} p99 ${ms(percentile(transition, 99))}`;
}

/** CPU time (user + system, ms) of each process of the run so far: where the machine's two cores go. */
function cpuNow(): Record<string, number> {
  const ticks = (pid: number) => {
    try {
      // Fields 14 and 15 of /proc/<pid>/stat, after the command's closing parenthesis: clock ticks (100 a second).
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
      return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
    } catch {
      return Number.NaN;
    }
  };
  const own = process.cpuUsage();
  return { Azurite: ticks(azurite.pid), service: ticks(service.pid), broker: ticks(broker.pid), "bench (proxy, worker)": (own.user + own.system) / 1000 };
}

function cpuPer(before: Record<string, number>, after: Record<string, number>, count: number): string {
  const parts = Object.keys(after).map((name) => [name, (after[name]! - before[name]!) / count] as const);
  const total = parts.reduce((sum, [, ms]) => sum + ms, 0);
  return `${parts.map(([name, ms]) => `${name} ${ms.toFixed(2)}`).join(", ")}; all ${total.toFixed(2)}`;
}

/** Step transitions (event sent → next message at the worker) of the given jobs, in ms. */
function transitions(jobIds: string[]): number[] {
  return jobIds
    .map((id) => times.get(id)!)
    .filter((t) => t.second !== undefined && t.eventSent !== undefined)
    .map((t) => t.second! - t.eventSent!);
}

async function stop(): Promise<never> {
  for (const worker of workers) {
    await worker.subscription.close();
    await worker.receiver.close();
  }
  await client.close();
  service.kill("SIGTERM");
  await service.exited;
  await broker.stop();
  proxy.stop(true);
  await azurite.stop();
  process.exit(0);
}

if (values.events === "both") {
  const rounds = Number(values.rounds);
  console.log(
    `lifecycle benchmark, events over Service Bus beside HTTP: ${rounds} bursts of ${JOBS} two-step jobs each way on ${values.backend}, Bun ${Bun.version}`,
  );
  const figures = { sb: { rate: [] as number[], p50: [] as number[] }, http: { rate: [] as number[], p50: [] as number[] } };
  let submitted = 0;
  // Round 0 warms both paths up (links, connections, the JIT) and is not counted: a first burst
  // pays for what a running service has paid long ago.
  for (let round = -1; round < rounds; round++) {
    for (const path of round % 2 === 0 ? (["sb", "http"] as const) : (["http", "sb"] as const)) {
      overHttp = path === "http";
      const before = new Set(times.keys());
      const started = performance.now();
      await burst("bench.two", JOBS, `${path}-${round}`);
      submitted += JOBS;
      await untilEnded(submitted);
      const rate = JOBS / ((performance.now() - started) / 1000);
      const spans = transitions([...times.keys()].filter((id) => !before.has(id)));
      if (round >= 0) {
        figures[path].rate.push(rate);
        figures[path].p50.push(percentile(spans, 50));
      }
      console.log(
        `  ${round < 0 ? "warm-up (not counted)" : `round ${round + 1}`}, ${path === "sb" ? "Service Bus" : "HTTP"}: ${rate.toFixed(1)} jobs/s; step transition p50 ${percentile(spans, 50).toFixed(1)} ms p99 ${percentile(spans, 99).toFixed(1)} ms`,
      );
    }
  }
  const median = (values: number[]) => percentile(values, 50);
  const [sb, http] = [figures.sb, figures.http];
  console.log(
    `  medians: Service Bus ${median(sb.rate).toFixed(1)} jobs/s, transition p50 ${median(sb.p50).toFixed(1)} ms; HTTP ${median(http.rate).toFixed(1)} jobs/s, transition p50 ${median(http.p50).toFixed(1)} ms`,
  );
  console.log(
    `  Service Bus / HTTP: jobs/s ${(median(sb.rate) / median(http.rate)).toFixed(2)}, transition p50 ${(median(sb.p50) / median(http.p50)).toFixed(2)}× (pairs: ${sb.p50.map((v, i) => (v / http.p50[i]!).toFixed(2)).join(", ")})`,
  );
  await stop();
}

console.log(
  `lifecycle benchmark: ${JOBS} two-step jobs of one tenant on ${values.backend}${values.backend === "memory" ? "" : " (Azurite behind a counting proxy)"}, events over ${overHttp ? "HTTP" : "Service Bus"}, Bun ${Bun.version}`,
);
// 1. The burst of jobs, counted (first: nothing else is going on).
counting = true;
const before = new Set(times.keys());
const cpuBefore = cpuNow();
const started = performance.now();
const intakeSeconds = await burst("bench.two", JOBS, "life");
await untilEnded(JOBS);
const seconds = (performance.now() - started) / 1000;
const cpuBurst = cpuPer(cpuBefore, cpuNow(), JOBS);
// The last events are stored after the worker sent them: their calls count too, until the
// jobs' tables are quiet for 300 ms (the streams' change feed is polled all the time: not work).
for (const deadline = Date.now() + 10_000; Date.now() - lastWorkCall < 300 && Date.now() < deadline; ) await Bun.sleep(25);
counting = false;
const heavy = [...times.keys()].filter((id) => !before.has(id));

const perJob = (n: number) => (n / JOBS).toFixed(2);
const total = [...counts.kind.values()].reduce((a, b) => a + b, 0);
const endToEnd = JOBS / seconds;
console.log(`  ${JOBS} jobs in ${seconds.toFixed(1)} s: ${endToEnd.toFixed(1)} jobs/s end to end (intake took ${intakeSeconds.toFixed(1)} s of it)`);
console.log(`  heavy (the burst): ${latencies(heavy)}`);
if (values.backend !== "memory") {
  console.log(`  storage calls per job: ${perJob(total)}`);
  console.log(`    by kind: ${[...counts.kind].map(([k, n]) => `${k} ${perJob(n)}`).join(", ")}`);
  console.log(`    by table: ${[...counts.table].map(([k, n]) => `${k} ${perJob(n)}`).join(", ")}`);
  const busiest = [...counts.partition].sort((a, b) => b[1] - a[1]).slice(0, 3);
  console.log(`    busiest partitions (calls per job): ${busiest.map(([p, n]) => `${p} ${perJob(n)}`).join(", ")}`);
}
// 2. Light: 100 jobs at 20 a second.
const light: string[] = [];
const lightStart = performance.now();
for (let i = 0; i < 100; i++) {
  const due = lightStart + i * 50;
  if (due > performance.now()) await Bun.sleep(due - performance.now());
  light.push(await submit("bench.two", `light-${i}`));
}
await untilEnded(JOBS + 100);
console.log(`  light (20 jobs/s): ${latencies(light)}`);
// 3. Intake alone (commands no worker answers), as the baseline of the same emulator and machine.
// Its calls are counted too: where the emulator is the bottleneck, the ratio follows the calls.
const burstCalls = total;
for (const map of Object.values(counts)) map.clear();
counting = true;
const cpuIntakeBefore = cpuNow();
const intakeSeconds2 = await burst("bench.idle", JOBS, "idle");
const cpuIntake = cpuPer(cpuIntakeBefore, cpuNow(), JOBS);
counting = false;
const intakeOnly = JOBS / intakeSeconds2;
const intakeCalls = [...counts.kind.values()].reduce((a, b) => a + b, 0);
console.log(`  intake alone: ${intakeOnly.toFixed(1)} commands/s; end to end / intake alone: ${(endToEnd / intakeOnly).toFixed(2)}`);
if (values.backend !== "memory") {
  console.log(
    `    storage calls: intake alone ${(intakeCalls / JOBS).toFixed(2)} per command, ${(intakeCalls / intakeSeconds2).toFixed(0)}/s; the burst ${(burstCalls / JOBS).toFixed(2)} per job, ${(burstCalls / seconds).toFixed(0)}/s; end to end / intake alone where storage calls set the pace (Azure): ${(intakeCalls / burstCalls).toFixed(2)}`,
  );
}
console.log(`    CPU ms per job in the burst: ${cpuBurst}`);
console.log(`    CPU ms per command, intake alone: ${cpuIntake}`);
console.log("    (where this machine's cores are the limit, end to end / intake alone follows CPU per command / CPU per job)");

await stop();
