/**
 * Cost of the deadline sweep on Azurite (ledger): find the 10 steps whose deadline passed among
 * 1,000 and among 50,000 open steps whose deadlines are still ahead. The open steps' markers go
 * in through the deadline index itself (the rows a real open step leaves in the index; their job
 * rows are never read by a sweep, so they are left out to keep the fill short); the 10 expired
 * steps are whole jobs stored through the intake path. Both sizes run in the same Azurite, and
 * the ratio of their median sweep times is printed.
 *
 *   bun run bench:deadlines [--runs 20]
 */
import { parseArgs } from "node:util";
import { freshTables } from "../dev/azurite.ts";
import { bundledRegistry } from "../src/config/protocols.ts";
import { newJobId, stepIdFor } from "../src/domain/ids.ts";
import type { Step } from "../src/domain/model.ts";
import { planJob } from "../src/domain/plan-job.ts";
import { createTableClient } from "../src/storage/azure/client.ts";
import { createDeadlineIndex } from "../src/storage/azure/deadline-index.ts";
import { createSingleTableStore } from "../src/storage/azure/single-table-store.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "20" } } });
const runs = Number(values.runs);
const EXPIRED = 10;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const azurite = await startAzuriteProcess();
try {
  const now = new Date();
  const times: Record<number, number> = {};
  const protocols = bundledRegistry({ stepTimeoutSeconds: 60 });
  for (const open of [1_000, 50_000]) {
    const tables = freshTables();
    const store = createSingleTableStore({ connection: azurite.connection, tables });
    await store.init();
    const index = createDeadlineIndex(createTableClient(tables.due, { connection: azurite.connection }));
    const filling = performance.now();
    const ahead = new Date(now.getTime() + 3600_000).toISOString();
    for (let i = 0; i < open; i += 500) {
      const steps = Array.from({ length: Math.min(500, open - i) }, (): Step => {
        const jobId = newJobId();
        return {
          jobId,
          stepId: stepIdFor(jobId, 0),
          index: 0,
          name: "ocr",
          topic: "ocr-requests",
          status: "initiated",
          attempts: 1,
          result: null,
          error: null,
          events: [],
          progress: null,
          deadlineAt: ahead,
          startedAt: null,
          finishedAt: null,
          updatedAt: ahead,
        };
      });
      await index.beforeWrite(steps, now.toISOString());
    }
    for (let i = 0; i < EXPIRED; i++) {
      await store.createJob(
        planJob({
          jobId: newJobId(),
          command: { requestType: "document.ocr", tenantId: "bench", correlationId: null, idempotencyKey: null, payload: { documentId: `d${i}` } },
          protocol: protocols.get("document.ocr")!,
          traceparent: null,
          now: new Date(now.getTime() - 120_000),
          retryDelaySeconds: 30,
        }),
        null,
      );
    }
    console.log(`${String(open).padStart(6)} open steps: filled in ${((performance.now() - filling) / 1000).toFixed(1)} s`);
    const samples: number[] = [];
    for (let run = 0; run <= runs; run++) {
      const started = performance.now();
      const expired = await store.findExpiredSteps(now, 100);
      if (run > 0) samples.push(performance.now() - started); // the first run warms the connection
      if (expired.length !== EXPIRED) throw new Error(`expected ${EXPIRED} expired steps, found ${expired.length}`);
    }
    times[open] = median(samples);
    console.log(`${String(open).padStart(6)} open steps: median deadline sweep ${times[open]!.toFixed(2)} ms (${runs} runs, ${EXPIRED} expired)`);
    await store.close();
  }
  console.log(`ratio 50,000 / 1,000: ${(times[50_000]! / times[1_000]!).toFixed(2)} (target ≤ 1.5)`);
} finally {
  await azurite.stop();
}
