/**
 * What a job costs in storage calls on Azure: N jobs of a two-step protocol run to `succeeded`
 * on `ledger` (or `table`) through the dev broker, a worker answering over Service Bus, with
 * Azurite behind a counting HTTP proxy. Prints storage calls per job by kind (point read, query,
 * insert, update, delete, batch) and by table, the busiest partition's calls per job, and the
 * jobs/s end to end beside the intake alone in the same run. Every HTTP request the SDK sends
 * counts as one call, as Azure bills it.
 *
 *   bun run bench:lifecycle [--jobs 200] [--backend ledger|table]
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ServiceBusClient } from "@azure/service-bus";
import { connectionStringFor, freshTables } from "../dev/azurite.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";
import { freePort, startBrokerProcess } from "./support/service-process.ts";

const { values } = parseArgs({ options: { jobs: { type: "string", default: "200" }, backend: { type: "string", default: "ledger" } } });
const JOBS = Number(values.jobs);
const root = resolve(import.meta.dir, "..");

/** Calls by kind and table, and by partition (from the URL, or each operation of a batch). */
const counts = { kind: new Map<string, number>(), table: new Map<string, number>(), partition: new Map<string, number>() };
const add = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
let counting = false;

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
let ended = 0;
const workers = ["ocr-requests", "vector-ingestion"].map((topic, index) => {
  const receiver = client.createReceiver(topic, "workers", { receiveMode: "receiveAndDelete" });
  const subscription = receiver.subscribe(
    {
      async processMessage(message) {
        const body = message.body as { jobId: string; stepId: string };
        await events.sendMessages({
          body: { jobId: body.jobId, stepId: body.stepId, eventId: `${message.messageId}-ok`, status: "succeeded", result: { step: index } },
        });
        if (index === 1) ended++;
      },
      async processError() {},
    },
    { maxConcurrentCalls: 16 },
  );
  return { receiver, subscription };
});

console.log(`lifecycle benchmark: ${JOBS} two-step jobs on ${values.backend} (Azurite behind a counting proxy), events over Service Bus, Bun ${Bun.version}`);
counting = true;
const started = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: 16 }, async () => {
    while (next < JOBS) {
      const i = next++;
      const response = await fetch(`${base}/v1/commands`, {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": `life-${i}` },
        body: JSON.stringify({ requestType: "bench.two", tenantId: "bench", payload: { n: i } }),
      });
      if (response.status !== 202) throw new Error(`intake answered ${response.status}`);
    }
  }),
);
const intakeSeconds = (performance.now() - started) / 1000;
for (const deadline = Date.now() + 300_000; ended < JOBS; ) {
  if (Date.now() > deadline) throw new Error(`only ${ended} of ${JOBS} jobs ended`);
  await Bun.sleep(50);
}
const seconds = (performance.now() - started) / 1000;
// The last events are stored after the worker sent them: their calls count too.
await Bun.sleep(2000);
counting = false;

const perJob = (n: number) => (n / JOBS).toFixed(2);
const total = [...counts.kind.values()].reduce((a, b) => a + b, 0);
console.log(`  ${JOBS} jobs in ${seconds.toFixed(1)} s: ${(JOBS / seconds).toFixed(1)} jobs/s end to end (intake took ${intakeSeconds.toFixed(1)} s of it)`);
console.log(`  storage calls per job: ${perJob(total)}`);
console.log(`    by kind: ${[...counts.kind].map(([k, n]) => `${k} ${perJob(n)}`).join(", ")}`);
console.log(`    by table: ${[...counts.table].map(([k, n]) => `${k} ${perJob(n)}`).join(", ")}`);
const busiest = [...counts.partition].sort((a, b) => b[1] - a[1]).slice(0, 3);
console.log(`    busiest partitions (calls per job): ${busiest.map(([p, n]) => `${p} ${perJob(n)}`).join(", ")}`);

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
