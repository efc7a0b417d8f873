/**
 * Stored jobs for tests and benches: a two-step `document.ingest` job planned by the real
 * `planJob`, and a helper that stores one. The store contract suite uses them too.
 */
import { newJobId } from "../src/domain/ids.ts";
import type { IdempotencyRecord, JobAggregate, JsonObject } from "../src/domain/model.ts";
import { planJob } from "../src/domain/plan-job.ts";
import type { JobStore, NewJob } from "../src/storage/job-store.ts";

const protocol = {
  requestType: "document.ingest",
  version: 1,
  description: "",
  steps: [
    { name: "ocr", topic: "ocr-requests", partitionKey: { kind: "jobId" as const }, maxAttempts: 1, timeoutSeconds: 0 },
    { name: "embed", topic: "vector-ingestion", partitionKey: { kind: "tenantId" as const }, maxAttempts: 2, timeoutSeconds: 0 },
  ],
};

export function sampleJob(
  tenantId = "acme",
  overrides: { jobId?: string; now?: Date; payload?: JsonObject; retryDelaySeconds?: number; timeoutSeconds?: number } = {},
): JobAggregate {
  const timeoutSeconds = overrides.timeoutSeconds ?? 0;
  return planJob({
    jobId: overrides.jobId ?? newJobId(),
    command: {
      requestType: "document.ingest",
      tenantId,
      correlationId: "c",
      idempotencyKey: null,
      payload: overrides.payload ?? { documentId: "d1", nested: { list: [1, "two"] } },
    },
    protocol: { ...protocol, steps: protocol.steps.map((step) => ({ ...step, timeoutSeconds })) },
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    now: overrides.now ?? new Date(),
    retryDelaySeconds: overrides.retryDelaySeconds ?? 30,
  });
}

/** Stores a job and returns it with its etags. */
export async function storeJob(store: JobStore, aggregate: NewJob = sampleJob(), claim: IdempotencyRecord | null = null): Promise<JobAggregate> {
  const result = await store.createJob(aggregate, claim);
  if (result.outcome !== "stored") throw new Error("expected the job to be stored");
  return result.aggregate;
}
