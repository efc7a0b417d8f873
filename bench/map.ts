/**
 * A 1,000-item map with an instant worker, on `memory`, `ledger` and `table` (Azurite in this process):
 * `split` → `ocr` mapped over its pages (maxConcurrency 50) → `merge`. The worker answers every
 * message as soon as it is published (an in-process publisher, so only the service and storage
 * are measured). Prints, per backend: the time from `split` succeeded to the last child
 * published and to `merge` dispatched, the most children in flight, storage calls per child
 * (by kind) and rows read per child event — the figure that must not grow with the list.
 *
 *   bun run bench:map [--items 1000] [--concurrency 50]
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { azurite, freshTables } from "../dev/azurite.ts";
import { startTestRuntime } from "../dev/in-process-runtime.ts";
import { loadProtocolFile } from "../src/config/protocols.ts";
import type { OutboundMessage, Publisher } from "../src/outbox/publisher.ts";
import { createMultiTableStore } from "../src/storage/azure/multi-table-store.ts";
import { createSingleTableStore } from "../src/storage/azure/single-table-store.ts";
import type { JobStore } from "../src/storage/job-store.ts";
import { createMemoryStore } from "../src/storage/memory/memory-store.ts";

const { values } = parseArgs({ options: { items: { type: "string", default: "1000" }, concurrency: { type: "string", default: "50" } } });
const ITEMS = Number(values.items);
const CONCURRENCY = Number(values.concurrency);

const file = join(mkdtempSync(join(tmpdir(), "lucius-bench-map-")), "protocols.json");
const step = (name: string, extra: Record<string, unknown> = {}) => ({ name, topic: name, payloadSchema: { type: "object" }, timeoutSeconds: 0, ...extra });
writeFileSync(
  file,
  JSON.stringify({
    protocols: [
      {
        requestType: "bench.map",
        version: 1,
        steps: [
          step("split", { after: [] }),
          step("ocr", { map: { items: "/results/split/pages", maxConcurrency: CONCURRENCY, maxItems: 10_000 } }),
          step("merge"),
        ],
      },
    ],
  }),
);
const protocols = loadProtocolFile(file, 0);

/** Calls and rows read, by store method. */
function counting(store: JobStore) {
  const calls = new Map<string, number>();
  const rows = new Map<string, number>();
  const count = (name: string, read = 0) => {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    rows.set(name, (rows.get(name) ?? 0) + read);
  };
  const wrapped: JobStore = {
    ...store,
    async getJob(jobId) {
      const aggregate = await store.getJob(jobId);
      count("getJob", aggregate ? 1 + aggregate.steps.length + aggregate.outbox.length : 0);
      return aggregate;
    },
    async getChildren(jobId, stepIds) {
      const read = await store.getChildren(jobId, stepIds);
      count("getChildren", read.steps.length + read.outbox.length);
      return read;
    },
    async listChildren(jobId, index, from, limit, open) {
      const read = await store.listChildren(jobId, index, from, limit, open);
      count("listChildren", read.length);
      return read;
    },
    async saveChanges(jobId, changes) {
      count("saveChanges");
      return store.saveChanges(jobId, changes);
    },
    async getOutboxEntry(jobId, outboxId) {
      count("getOutboxEntry", 1);
      return store.getOutboxEntry(jobId, outboxId);
    },
  };
  const reset = () => {
    calls.clear();
    rows.clear();
  };
  return { store: wrapped, calls, rows, reset };
}

async function run(backend: "memory" | "ledger" | "table") {
  let inner: JobStore;
  if (backend === "memory") inner = createMemoryStore({ maxJobs: 1000 });
  else {
    const { connection } = await azurite();
    inner = (backend === "ledger" ? createSingleTableStore : createMultiTableStore)({ connection, tables: freshTables() });
    await inner.init?.();
  }
  const counted = counting(inner);
  const answers: Promise<unknown>[] = [];
  let inFlight = 0;
  let most = 0;
  let childrenPublished = 0;
  let lastChildAt = 0;
  let mergeAt = 0;
  let conflicts = 0;
  let answer: (message: OutboundMessage) => void = () => {};
  const publisher: Publisher = {
    async publish(topic, messages) {
      for (const message of messages) {
        if (topic === "ocr") {
          childrenPublished++;
          inFlight++;
          most = Math.max(most, inFlight);
          if (childrenPublished === ITEMS) lastChildAt = performance.now();
          // The instant worker: answers once the publish has returned.
          queueMicrotask(() => answer(message));
        }
        if (topic === "merge") mergeAt = performance.now();
      }
      return messages.map(() => ({ ok: true }) as const);
    },
    check: async () => {},
    close: async () => {},
  };
  const service = await startTestRuntime({ store: counted.store, protocols, publisher, env: { LUCIUS_OUTBOX_RETRY_DELAY: "5" } });
  const report = (jobId: string, stepId: string, body: Record<string, unknown>) =>
    service.request(`/v1/jobs/${jobId}/steps/${stepId}/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  answer = (message) => {
    const { body } = message;
    // In flight is what the worker holds: from its message's publish to its answer.
    inFlight--;
    answers.push(
      (async () => {
        // A worker tries again when its event lost the race for the map step's row (409).
        for (let attempt = 1; ; attempt++) {
          const response = await report(body.jobId, body.stepId, {
            eventId: `${message.messageId}-ok`,
            status: "succeeded",
            result: { text: `page ${body.itemIndex ?? 0}` },
          });
          if (response.status === 202) return;
          if (response.status !== 409 || attempt > 20) throw new Error(`an event was answered ${response.status}: ${await response.text()}`);
          conflicts++;
        }
      })(),
    );
  };
  const accepted = await service.postCommand({ requestType: "bench.map", tenantId: "bench", payload: {} });
  const { jobId } = (await accepted.json()) as { jobId: string };
  await service.runtime.dispatcher!.drain();
  counted.reset();
  const pages = Array.from({ length: ITEMS }, (_, i) => ({ page: i + 1 }));
  const started = performance.now();
  await report(jobId, `${jobId}.s0`, { eventId: "split-ok", status: "succeeded", result: { pages } });
  for (const deadline = Date.now() + 600_000; mergeAt === 0; ) {
    if (Date.now() > deadline) throw new Error(`${backend}: merge not dispatched within 10 minutes (${childrenPublished} children published)`);
    await Promise.all(answers.splice(0));
    await service.runtime.dispatcher!.drain();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const calls = [...counted.calls].map(([name, n]) => `${name} ${(n / ITEMS).toFixed(2)}`).join(", ");
  const totalCalls = [...counted.calls.values()].reduce((a, b) => a + b, 0);
  // Rows read by the events of children: every read but the one listing when the last child ended.
  const listed = counted.rows.get("listChildren") ?? 0;
  const eventRows = [...counted.rows.values()].reduce((a, b) => a + b, 0) - listed;
  console.log(
    `  ${backend}: last child published ${((lastChildAt - started) / 1000).toFixed(2)} s after split succeeded, merge dispatched after ${((mergeAt - started) / 1000).toFixed(2)} s; ` +
      `${ITEMS} children, at most ${most} in flight (maxConcurrency ${CONCURRENCY})`,
  );
  console.log(
    `    storage calls per child ${(totalCalls / ITEMS).toFixed(2)} (${calls}); rows read per child event ${(eventRows / ITEMS).toFixed(2)}; the last child's event listed ${listed} children once; ${conflicts} answers repeated after a 409`,
  );
  await service.runtime.stop();
}

console.log(`map benchmark: ${ITEMS} items, maxConcurrency ${CONCURRENCY}, an instant in-process worker, Bun ${Bun.version}`);
await run("memory");
await run("ledger");
await run("table");
process.exit(0);
