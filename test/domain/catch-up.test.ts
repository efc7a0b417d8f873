/**
 * catchUp: nothing for a job as a whole change leaves it (memory and ledger never give it
 * anything else), nothing for a job whose protocol changed since it started, and on a job that a
 * change cut short (table) exactly what that change would have done.
 */
import { describe, expect, test } from "bun:test";
import { catchUp } from "../../src/domain/catch-up.ts";
import type { JobAggregate, OutboxEntry, Protocol, ProtocolStep, Step } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { applyStepEvent, type StepEvent } from "../../src/domain/step-events.ts";
import { applyPublished } from "../../src/domain/transitions.ts";

const step = (name: string, extra: Partial<ProtocolStep> = {}): ProtocolStep => ({
  name,
  topic: name,
  partitionKey: { kind: "jobId" },
  maxAttempts: 1,
  timeoutSeconds: 0,
  ...extra,
});
/** a → b and c side by side → d; compensation on failure. */
const protocol: Protocol = {
  requestType: "r",
  version: 1,
  description: "",
  steps: [step("a", { after: [] }), step("b", { after: [0] }), step("c", { after: [0] }), step("d", { after: [1, 2] })],
  onFailure: step("undo"),
};
const T0 = new Date("2026-01-01T00:00:00.000Z");
const options = { protocol, now: new Date("2026-01-01T00:01:00.000Z"), retryDelaySeconds: 0 };

function planned(): JobAggregate {
  const command = { requestType: "r", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: {} };
  return planJob({ jobId: "0190d9a0-0000-7000-8000-000000000001", command, protocol, traceparent: null, now: T0, retryDelaySeconds: 0 });
}

function withChange(aggregate: JobAggregate, change: { job?: JobAggregate["job"]; steps: Step[]; outbox: OutboxEntry[] }): JobAggregate {
  return {
    job: change.job ?? aggregate.job,
    steps: aggregate.steps.map((s) => change.steps.find((c) => c.stepId === s.stepId) ?? s),
    outbox: [...aggregate.outbox.filter((o) => !change.outbox.some((c) => c.outboxId === o.outboxId)), ...change.outbox],
  };
}

/** Every pending directive marked published, as the dispatcher stores it. */
function published(aggregate: JobAggregate): JobAggregate {
  let next = aggregate;
  for (const entry of aggregate.outbox.filter((o) => o.status === "pending")) {
    const done = applyPublished({ job: next.job, step: next.steps.find((s) => s.stepId === entry.stepId)!, entry }, T0.toISOString());
    next = withChange(next, { job: done.job, steps: [done.step], outbox: [done.entry] });
  }
  return next;
}

function event(aggregate: JobAggregate, name: string, status: StepEvent["status"]): JobAggregate {
  const target = aggregate.steps.find((s) => s.name === name)!;
  const decided = applyStepEvent(
    aggregate,
    target.stepId,
    { eventId: `${name}-${status}`, status, ...(status === "failed" ? { error: { code: "x", message: "y" } } : {}) },
    options,
  );
  if (decided.outcome !== "applied") throw new Error(`event not applied: ${decided.outcome}`);
  return published(withChange(aggregate, decided));
}

describe("catchUp", () => {
  test("finds nothing in a job as whole changes leave it, at every stage", () => {
    let job = planned();
    expect(catchUp(job, options)).toBeNull();
    job = published(job);
    expect(catchUp(job, options)).toBeNull();
    job = event(job, "a", "succeeded");
    expect(catchUp(job, options)).toBeNull();
    job = event(job, "b", "succeeded");
    expect(catchUp(job, options)).toBeNull();
    const failed = event(job, "c", "failed");
    expect(failed.job.status).toBe("failed");
    expect(catchUp(failed, options)).toBeNull();
    job = event(event(job, "c", "succeeded"), "d", "succeeded");
    expect(job.job.status).toBe("succeeded");
    expect(catchUp(job, options)).toBeNull();
  });

  test("leaves alone a job whose protocol lost or renamed steps since it started", () => {
    const job = published(planned());
    expect(catchUp(job, { ...options, protocol: { ...protocol, version: 2, steps: protocol.steps.slice(0, 2) } })).toBeNull();
    expect(catchUp(job, { ...options, protocol: { ...protocol, version: 2, onFailure: step("rollback") } })).toBeNull();
  });

  test("a step's end written without its consequences: the successors are dispatched", () => {
    const job = published(planned());
    const a = job.steps[0]!;
    const cutShort = withChange(job, { steps: [{ ...a, status: "succeeded", result: {}, finishedAt: options.now.toISOString() }], outbox: [] });
    const change = catchUp(cutShort, options)!;
    expect(change.steps.map((s) => [s.name, s.status, s.attempts])).toEqual([
      ["b", "pending", 1],
      ["c", "pending", 1],
    ]);
    expect(change.outbox.map((o) => o.stepId)).toEqual([job.steps[1]!.stepId, job.steps[2]!.stepId]);
    expect(change.job?.etag).toBe(job.job.etag);
  });

  test("a step failed for good in a job still running: the job fails, its sibling is cancelled, the compensation goes out", () => {
    const running = event(published(planned()), "a", "succeeded");
    const b = running.steps[1]!;
    const cutShort = withChange(running, { steps: [{ ...b, status: "failed", error: { code: "x", message: "y", retryable: false } }], outbox: [] });
    const change = catchUp(cutShort, options)!;
    expect(change.job?.status).toBe("failed");
    expect(change.steps.map((s) => [s.name, s.status])).toEqual([
      ["b", "failed"],
      ["c", "cancelled"],
      ["d", "cancelled"],
      ["undo", "pending"],
    ]);
    expect(change.outbox.find((o) => o.stepId === cutShort.steps[4]!.stepId)?.failure).toEqual({
      step: "b",
      error: { code: "x", message: "y", retryable: false },
    });
  });

  test("a failed job whose siblings and compensation were not written: they are, once", () => {
    const running = event(published(planned()), "a", "succeeded");
    const failedWhole = event(running, "b", "failed");
    // The job's and b's rows written; c, d and the compensation not.
    const cutShort = withChange(running, { job: failedWhole.job, steps: [failedWhole.steps[1]!], outbox: [] });
    const change = catchUp(cutShort, options)!;
    expect(change.steps.map((s) => [s.name, s.status])).toEqual([
      ["c", "cancelled"],
      ["d", "cancelled"],
      ["undo", "pending"],
    ]);
    expect(catchUp(withChange(cutShort, change), options)).toBeNull();
  });
});
