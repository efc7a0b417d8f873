/**
 * Storage cost of the intake and of a sweep, on Azurite (a Node child process):
 *  1. storage calls and sequential round trips per accepted command, per backend, counted with
 *     an HTTP pipeline policy on the SDK clients;
 *  2. the drain of what the intake left pending (a publisher that accepts everything at once):
 *     storage calls and time per published entry beside those per command, table and ledger;
 *  3. one sweep over the due index with 10 due entries among 1,000 vs 50,000 sent entries (ledger).
 *
 *   bun run bench:storage [--commands 200]
 */
import { parseArgs } from "node:util";
import type { TableClient } from "@azure/data-tables";
import { freshTables } from "../dev/azurite.ts";
import { bundledRegistry } from "../src/config/protocols.ts";
import { loadSettings } from "../src/config/settings.ts";
import { newJobId, outboxIdFor, stepIdFor } from "../src/domain/ids.ts";
import { silentLogger } from "../src/logging/logger.ts";
import { createDispatcher } from "../src/outbox/dispatcher.ts";
import type { Publisher } from "../src/outbox/publisher.ts";
import { createSweeper } from "../src/outbox/sweeper.ts";
import { createRuntime } from "../src/runtime.ts";
import { createTableClient } from "../src/storage/azure/client.ts";
import { outboxToEntity } from "../src/storage/azure/entities.ts";
import { createMultiTableStore } from "../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore, outboxRow } from "../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../src/storage/job-store.ts";
import { createMemoryStore } from "../src/storage/memory/memory-store.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";

const { values } = parseArgs({ options: { commands: { type: "string", default: "200" } } });
const commands = Number(values.commands);

interface Call {
  start: number;
  end: number;
  /** What the call was, and on which table: "batch Due", "update Ledger", … */
  what: string;
}

function describeCall(method: string, url: string): string {
  const path = decodeURIComponent(new URL(url).pathname);
  const table = (/\/devstoreaccount1\/([A-Za-z0-9]+)/.exec(path)?.[1] ?? (path.endsWith("$batch") ? "" : "?")).replace(/^t[0-9a-f]{10}/, "");
  if (path.endsWith("$batch")) return "batch";
  const point = /\(PartitionKey='[^']*',RowKey='[^']*'\)$/.test(path);
  const kind = method === "GET" ? (point ? "point read" : "query") : method === "POST" ? "insert" : method === "DELETE" ? "delete" : "update";
  return `${kind} ${table}`;
}

/** Records every HTTP call's interval so that round trips can be counted per command. */
function callRecorder() {
  let calls: Call[] = [];
  return {
    configureClient(client: TableClient) {
      client.pipeline.addPolicy({
        name: "benchCount",
        async sendRequest(request, next) {
          const call: Call = { start: performance.now(), end: Number.POSITIVE_INFINITY, what: describeCall(request.method, request.url) };
          calls.push(call);
          try {
            return await next(request);
          } finally {
            call.end = performance.now();
          }
        },
      });
    },
    take(): Call[] {
      const taken = calls;
      calls = [];
      return taken;
    },
  };
}

/** The longest chain of calls each starting after the previous ended: sequential round trips. */
function sequentialRoundTrips(calls: Call[]): number {
  let chain = 0;
  let lastEnd = Number.NEGATIVE_INFINITY;
  for (const call of [...calls].sort((a, b) => a.end - b.end)) {
    if (call.start >= lastEnd) {
      chain++;
      lastEnd = call.end;
    }
  }
  return chain;
}

const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((p / 100) * values.length))]!;
const median = (values: number[]) => percentile(values, 50);

/**
 * Publishes every pending entry of `store` through the real sweeper and dispatcher, with a
 * publisher that accepts everything at once: what the drain costs the storage, per entry.
 */
async function drainCost(store: JobStore, recorder: ReturnType<typeof callRecorder>, expected: number) {
  let published = 0;
  const publisher: Publisher = {
    async publish(_topic, messages) {
      published += messages.length;
      return messages.map(() => ({ ok: true }));
    },
    async check() {},
    async close() {},
  };
  const dispatcher = createDispatcher({ store, publisher, logger: silentLogger, publishTimeoutSeconds: 10, retryDelaySeconds: 1, maxAttempts: 5 });
  const sweeper = createSweeper({ store, dispatcher, logger: silentLogger, intervalSeconds: 5, batchSize: 100, leaseSeconds: 30 });
  recorder.take();
  const started = performance.now();
  await sweeper.drainAll();
  const ms = performance.now() - started;
  // The index writes the drain queued (markers of sent entries dropped) are its calls too.
  await store.close();
  const calls = recorder.take();
  if (published !== expected) throw new Error(`the drain published ${published} of ${expected} entries`);
  const byWhat = new Map<string, number>();
  for (const call of calls) byWhat.set(call.what, (byWhat.get(call.what) ?? 0) + 1);
  const breakdown = [...byWhat]
    .sort((a, b) => b[1] - a[1])
    .map(([what, n]) => `${what} ${(n / published).toFixed(2)}`)
    .join(", ");
  return { callsPerEntry: calls.length / published, msPerEntry: ms / published, breakdown };
}

const azurite = await startAzuriteProcess();
try {
  console.log(`storage benchmark on Azurite (Node child process), Bun ${Bun.version}`);
  console.log(`\n1. intake: ${commands} commands each with an Idempotency-Key, one at a time, no publisher`);
  console.log("   backend  calls/command  sequential round trips before the 202  p50 ms  p99 ms");
  const protocols = bundledRegistry();
  const drains: string[] = [];
  for (const backend of ["memory", "table", "ledger"] as const) {
    const recorder = callRecorder();
    const tables = freshTables();
    const options = { connection: azurite.connection, tables, configureClient: recorder.configureClient };
    const store: JobStore = backend === "memory" ? createMemoryStore() : backend === "table" ? createMultiTableStore(options) : createSingleTableStore(options);
    const runtime = await createRuntime({ settings: loadSettings({}), protocols, logger: silentLogger, store, publisher: null });
    recorder.take();
    const perCommand: { calls: number; trips: number; ms: number }[] = [];
    for (let i = 0; i < commands; i++) {
      const started = performance.now();
      const response = await runtime.app.handle(
        new Request("http://localhost/v1/commands", {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": `bench-${i}` },
          body: JSON.stringify({
            requestType: "document.ingest",
            tenantId: "bench",
            payload: { documentId: `d${i}`, documentUri: "https://files.example/d.pdf", contentType: "application/pdf" },
          }),
        }),
      );
      const ms = performance.now() - started;
      if (response.status !== 202) throw new Error(`intake answered ${response.status}: ${await response.text()}`);
      const calls = recorder.take();
      perCommand.push({ calls: calls.length, trips: sequentialRoundTrips(calls), ms });
    }
    const measured = perCommand.slice(Math.floor(commands / 10)); // first tenth is warm-up
    const avg = (f: (c: (typeof measured)[0]) => number) => measured.reduce((sum, c) => sum + f(c), 0) / measured.length;
    console.log(
      `   ${backend.padEnd(7)}  ${avg((c) => c.calls)
        .toFixed(2)
        .padStart(13)}  ${avg((c) => c.trips)
        .toFixed(2)
        .padStart(37)}  ${median(measured.map((c) => c.ms))
        .toFixed(2)
        .padStart(6)}  ${percentile(
        measured.map((c) => c.ms),
        99,
      )
        .toFixed(2)
        .padStart(6)}`,
    );
    if (backend === "memory") continue;
    const drain = await drainCost(store, recorder, commands);
    // The intake above ran one command at a time; the drain runs its calls concurrently, so its
    // time per entry is the better of the two figures for it.
    drains.push(
      `   ${backend.padEnd(7)}  ${drain.callsPerEntry.toFixed(2).padStart(11)}  ${avg((c) => c.calls)
        .toFixed(2)
        .padStart(13)}  ${drain.msPerEntry.toFixed(2).padStart(11)}  ${avg((c) => c.ms)
        .toFixed(2)
        .padStart(14)}`,
      `            per entry: ${drain.breakdown}`,
    );
  }
  console.log(`\n2. drain: the ${commands} entries the intake left pending, through the sweeper, a publisher that accepts at once`);
  console.log("   backend  calls/entry  calls/command  ms/entry  ms/command (one at a time)");
  for (const line of drains) console.log(line);

  console.log("\n3. sweep over the due index (ledger): 10 due entries among N sent entries");
  const sweepTimes: Record<number, number> = {};
  for (const sent of [1_000, 50_000]) {
    const tables = freshTables();
    const store = createSingleTableStore({ connection: azurite.connection, tables });
    await store.init();
    // History: sent outbox rows, 100 per job partition in single transactions (no markers: sent entries have none).
    const ledger = createTableClient(tables.ledger, { connection: azurite.connection });
    const fill: Promise<unknown>[] = [];
    const now = new Date();
    for (let p = 0; p < sent / 100; p++) {
      const jobId = newJobId();
      const rows = Array.from({ length: 100 }, (_, i) =>
        outboxToEntity(
          {
            outboxId: outboxIdFor(jobId, i),
            jobId,
            stepId: stepIdFor(jobId, i),
            stepIndex: i,
            topic: "ocr-requests",
            partitionKey: jobId,
            traceparent: null,
            results: {},
            status: "sent",
            attempts: 1,
            nextAttemptAt: null,
            lastError: null,
            lease: null,
            sentAt: now.toISOString(),
            createdAt: now.toISOString(),
            updatedAt: now.toISOString(),
          },
          { partitionKey: jobId, rowKey: outboxRow({ outboxId: outboxIdFor(jobId, i) }) },
        ),
      );
      fill.push(ledger.submitTransaction(rows.map((row) => ["create", row])));
      if (fill.length >= 16) await Promise.all(fill.splice(0));
    }
    await Promise.all(fill);
    // The due entries go in through the real intake path, due 30 s after creation.
    const { planJob } = await import("../src/domain/plan-job.ts");
    const protocol = protocols.get("document.ingest")!;
    for (let i = 0; i < 10; i++) {
      await store.createJob(
        planJob({
          jobId: newJobId(),
          command: { requestType: "document.ingest", tenantId: "bench", correlationId: null, idempotencyKey: null, payload: { documentId: `d${i}` } },
          protocol,
          traceparent: null,
          now,
          retryDelaySeconds: 30,
        }),
        null,
      );
    }
    const sweepAt = new Date(now.getTime() + 60_000);
    const times: number[] = [];
    for (let run = 0; run < 21; run++) {
      const started = performance.now();
      const due = await store.findDueOutbox(sweepAt, 100);
      times.push(performance.now() - started);
      if (due.length !== 10) throw new Error(`expected 10 due entries, found ${due.length}`);
    }
    sweepTimes[sent] = median(times.slice(1));
    console.log(`   ${String(sent).padStart(6)} sent: median sweep ${sweepTimes[sent]!.toFixed(2)} ms (20 runs)`);
  }
  console.log(`   ratio 50,000 / 1,000: ${(sweepTimes[50_000]! / sweepTimes[1_000]!).toFixed(2)}`);
} finally {
  await azurite.stop();
}
