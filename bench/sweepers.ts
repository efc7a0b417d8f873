/**
 * Replicas sweeping one store: N pending entries drained by one sweeper, then (fresh tables, the
 * same N) by three, each with its own store client and publisher, into the dev broker. Prints
 * the drain times and their ratio, publishes attempted per entry, publishes of one message by two
 * sweepers at overlapping times (must be 0), and deliveries the broker de-duplicated.
 * Azurite and the broker run in this process, as in the tests.
 *
 *   bun run bench:sweepers [--entries 1000] [--backend ledger|table|memory]
 */
import { parseArgs } from "node:util";
import { azurite, freshTables } from "../dev/azurite.ts";
import { eventually } from "../dev/eventually.ts";
import { sampleJob, storeJob } from "../dev/job-fixtures.ts";
import { overlappingPublishes, type TimedPublish, timedPublisher } from "../dev/recording-publisher.ts";
import { startBroker } from "../dev/service-bus.ts";
import { bundledRegistry } from "../src/config/protocols.ts";
import { loadSettings } from "../src/config/settings.ts";
import { silentLogger } from "../src/logging/logger.ts";
import { createServiceBusPublisher } from "../src/outbox/service-bus-publisher.ts";
import { createRuntime } from "../src/runtime.ts";
import { createMultiTableStore } from "../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../src/storage/job-store.ts";
import { createMemoryStore } from "../src/storage/memory/memory-store.ts";

const { values } = parseArgs({ options: { entries: { type: "string", default: "1000" }, backend: { type: "string", default: "ledger" } } });
const entries = Number(values.entries);
const backend = values.backend as "ledger" | "table" | "memory";

async function storesFor(): Promise<() => JobStore> {
  if (backend === "memory") {
    const shared = createMemoryStore();
    return () => shared;
  }
  const { connection } = await azurite();
  const tables = freshTables();
  const make = () => (backend === "table" ? createMultiTableStore({ connection, tables }) : createSingleTableStore({ connection, tables }));
  const first = make();
  await first.init();
  let made = 0;
  return () => (made++ === 0 ? first : make());
}

async function drain(sweeperCount: number) {
  const bus = await startBroker();
  const stores = await storesFor();
  const seed = stores();
  for (let i = 0; i < entries; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, entries - i) }, () => storeJob(seed, sampleJob("acme", { retryDelaySeconds: 0 }))));
  }
  const publishes: TimedPublish[] = [];
  const runtimes = await Promise.all(
    Array.from({ length: sweeperCount }, (_, n) =>
      createRuntime({
        settings: loadSettings({ LUCIUS_OUTBOX_RETRY_INTERVAL: "0.05", LUCIUS_OUTBOX_RETRY_BATCH_SIZE: "100", LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "2" }),
        protocols: bundledRegistry(),
        logger: silentLogger,
        store: n === 0 ? seed : stores(),
        publisher: timedPublisher(
          n,
          createServiceBusPublisher({ connectionString: bus.broker.connectionString, readinessTopic: "ocr-requests", logger: silentLogger }),
          publishes,
        ),
      }),
    ),
  );
  const started = performance.now();
  for (const runtime of runtimes) runtime.start();
  await eventually(async () => (await seed.outboxStats(new Date())).pending === 0, { timeoutMs: 300_000, intervalMs: 250, what: "nothing pending" });
  const drainMs = performance.now() - started;
  for (const runtime of runtimes) await runtime.stop();
  const overlapping = overlappingPublishes(publishes);
  const duplicates = bus.broker.duplicates("ocr-requests");
  const delivered = new Set(bus.broker.accepted("ocr-requests").map((m) => m.message_id)).size;
  await bus.stop();
  return { drainMs, publishes: publishes.length, overlapping, duplicates, delivered };
}

console.log(`sweepers benchmark: ${entries} pending entries, backend ${backend}, Bun ${Bun.version}`);
const one = await drain(1);
const three = await drain(3);
for (const [name, r] of [
  ["1 sweeper ", one],
  ["3 sweepers", three],
] as const) {
  console.log(
    `${name}: drained in ${r.drainMs.toFixed(0)} ms (${((entries / r.drainMs) * 1000).toFixed(0)} entries/s); delivered ${r.delivered}/${entries}; publishes per entry ${(r.publishes / entries).toFixed(3)}; overlapping publishes of one message ${r.overlapping}; de-duplicated by the broker ${r.duplicates}`,
  );
}
console.log(`ratio: 3 sweepers drain in ${(three.drainMs / one.drainMs).toFixed(2)} × the time of one (below 1 means replicas add up)`);
process.exit(0);
