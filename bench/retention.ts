/**
 * Cost of a retention clean-up on Azurite (ledger): remove the 100 jobs that ended before the
 * cutoff, among 1,000 and among 50,000 live jobs, in the same Azurite. Two kinds of live jobs are
 * measured apart: open jobs (rows in the ledger, no retention marker), and jobs that ended recently
 * (within the retention: their markers share the retention index with the expired ones). The
 * live jobs' rows and markers are written in bulk; the 100 expired jobs go through the store
 * (created, then cancelled with an old clock) before each timed clean-up. Finding the expired
 * jobs (the index read) is timed apart from the whole clean-up, which also reads each job's rows
 * by a partition query: on Azure an indexed read, on Azurite a scan of the whole table.
 *
 *   bun run bench:retention [--runs 5]
 */
import { parseArgs } from "node:util";
import { freshTables } from "../dev/azurite.ts";
import { bundledRegistry } from "../src/config/protocols.ts";
import { newJobId } from "../src/domain/ids.ts";
import type { Job } from "../src/domain/model.ts";
import { planJob } from "../src/domain/plan-job.ts";
import { cancelJob } from "../src/domain/step-events.ts";
import { createTableClient } from "../src/storage/azure/client.ts";
import { jobToEntity } from "../src/storage/azure/entities.ts";
import { createRetentionIndex } from "../src/storage/azure/retention-index.ts";
import { createSingleTableStore, JOB_ROW } from "../src/storage/azure/single-table-store.ts";
import { startAzuriteProcess } from "./support/azurite-process.ts";

const { values } = parseArgs({ options: { runs: { type: "string", default: "5" } } });
const runs = Number(values.runs);
const EXPIRED = 100;
const DAY = 86400_000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const protocol = bundledRegistry().get("document.ocr")!;

function liveJob(now: Date, ended: boolean): Job {
  const at = new Date(now.getTime() - (ended ? DAY : 0)).toISOString();
  return {
    jobId: newJobId(),
    tenantId: "bench",
    requestType: "document.ocr",
    protocolVersion: 1,
    correlationId: null,
    paused: false,
    redrives: 0,
    changes: 0,
    idempotencyKey: null,
    payload: { documentId: "d" },
    status: ended ? "succeeded" : "in_progress",
    createdAt: at,
    updatedAt: at,
  };
}

const azurite = await startAzuriteProcess();
try {
  const now = new Date();
  const cutoff = new Date(now.getTime() - 7 * DAY);
  const results: string[] = [];
  for (const kind of ["open", "recently ended"] as const) {
    const times: Record<number, number> = {};
    const findTimes: Record<number, number> = {};
    for (const live of [1_000, 50_000]) {
      const tables = freshTables();
      const store = createSingleTableStore({ connection: azurite.connection, tables });
      await store.init();
      const ledger = createTableClient(tables.ledger, { connection: azurite.connection });
      const retention = createRetentionIndex(createTableClient(tables.ttl, { connection: azurite.connection }));
      const filling = performance.now();
      for (let i = 0; i < live; i += 200) {
        const jobs = Array.from({ length: Math.min(200, live - i) }, () => liveJob(now, kind === "recently ended"));
        await Promise.all(
          jobs.map(async (job) => {
            await ledger.createEntity(jobToEntity(job, { partitionKey: job.jobId, rowKey: JOB_ROW }));
            await retention.markEnded(job);
          }),
        );
      }
      const samples: number[] = [];
      const findSamples: number[] = [];
      for (let run = 0; run <= runs; run++) {
        for (let e = 0; e < EXPIRED; e += 20) {
          await Promise.all(
            Array.from({ length: 20 }, async () => {
              const created = await store.createJob(
                planJob({
                  jobId: newJobId(),
                  command: { requestType: "document.ocr", tenantId: "bench", correlationId: null, idempotencyKey: null, payload: { documentId: "d" } },
                  protocol,
                  traceparent: null,
                  now: new Date(cutoff.getTime() - 2 * DAY),
                  retryDelaySeconds: 30,
                }),
                null,
              );
              if (created.outcome !== "stored") throw new Error("not stored");
              await store.saveChanges(created.aggregate.job.jobId, cancelJob(created.aggregate, new Date(cutoff.getTime() - DAY))!);
            }),
          );
        }
        // Finding what expired (the index read alone), then the whole clean-up.
        const finding = performance.now();
        const found = await retention.endedBefore(cutoff, EXPIRED);
        const foundMs = performance.now() - finding;
        if (found.length !== EXPIRED) throw new Error(`expected ${EXPIRED} markers, found ${found.length}`);
        const started = performance.now();
        const removed = await store.purgeEndedJobs(cutoff, EXPIRED);
        if (run > 0) {
          samples.push(performance.now() - started); // the first run warms up
          findSamples.push(foundMs);
        }
        if (removed !== EXPIRED) throw new Error(`expected ${EXPIRED} removed, got ${removed}`);
      }
      await store.close();
      times[live] = median(samples);
      findTimes[live] = median(findSamples);
      console.log(
        `${String(live).padStart(6)} ${kind} live jobs (filled in ${((performance.now() - filling) / 1000).toFixed(0)} s): median clean-up of ${EXPIRED} expired jobs ${times[live]!.toFixed(0)} ms, of which finding them ${findTimes[live]!.toFixed(1)} ms (${runs} runs)`,
      );
    }
    results.push(
      `ratio 50,000 / 1,000 with ${kind} live jobs: clean-up ${(times[50_000]! / times[1_000]!).toFixed(2)}, finding ${(findTimes[50_000]! / findTimes[1_000]!).toFixed(2)}`,
    );
  }
  for (const line of results) console.log(line);
} finally {
  await azurite.stop();
}
