/** The pure rules of step events and cancellation, without storage or transport. */
import { describe, expect, test } from "bun:test";
import { outboxIdFor } from "../../src/domain/ids.ts";
import type { JobAggregate, Protocol } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { applyChildEvent, applyStepEvent, cancelJob } from "../../src/domain/step-events.ts";
import { applyPublished } from "../../src/domain/transitions.ts";

const protocol: Protocol = {
  requestType: "document.ingest",
  version: 1,
  description: "",
  steps: [
    { name: "ocr", topic: "ocr-requests", partitionKey: { kind: "jobId" }, maxAttempts: 2, timeoutSeconds: 0 },
    { name: "embed", topic: "vector-ingestion", partitionKey: { kind: "tenantId" }, maxAttempts: 1, timeoutSeconds: 0 },
  ],
};
const T0 = new Date("2026-01-01T00:00:00.000Z");
const T1 = new Date("2026-01-01T00:01:00.000Z");
const T1_ISO = T1.toISOString();
const options = { protocol, now: T1, retryDelaySeconds: 30 };

function planned(): JobAggregate {
  return planJob({
    jobId: "0190d9a0-0000-7000-8000-000000000001",
    command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: { documentId: "d1" } },
    protocol,
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    now: T0,
    retryDelaySeconds: 30,
  });
}

/** The job once its first directive went out: job in progress, first step initiated. */
function dispatched(): JobAggregate {
  const aggregate = planned();
  const published = applyPublished({ job: aggregate.job, step: aggregate.steps[0]!, entry: aggregate.outbox[0]! }, T0.toISOString());
  return { job: published.job, steps: [published.step, aggregate.steps[1]!], outbox: [published.entry] };
}

const stepId = (aggregate: JobAggregate, index: number) => aggregate.steps[index]!.stepId;

describe("applyStepEvent", () => {
  test.each(["succeeded", "failed"] as const)(
    "a worker's %s answer that comes before its directive was marked sent marks it sent in the same change",
    (status) => {
      const aggregate = planned();
      const first = aggregate.outbox[0]!;
      const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "e1", status }, options);
      if (decided.outcome !== "applied") throw new Error(decided.outcome);
      expect(decided.outbox.filter((o) => o.outboxId === first.outboxId)).toEqual([
        expect.objectContaining({ status: "sent", sentAt: T1_ISO, attempts: first.attempts + 1, nextAttemptAt: null }),
      ]);
    },
  );

  test("the answer marks the directive of the attempt that answered, not an earlier one still pending", () => {
    const aggregate = planned();
    const first = aggregate.outbox[0]!;
    const second = { ...first, outboxId: outboxIdFor(aggregate.job.jobId, 0, 1) };
    const retried: JobAggregate = { ...aggregate, steps: [{ ...aggregate.steps[0]!, attempts: 2 }, aggregate.steps[1]!], outbox: [first, second] };
    const decided = applyStepEvent(retried, stepId(retried, 0), { eventId: "e1", status: "succeeded", attempt: 2 }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.outbox.filter((o) => o.status === "sent").map((o) => o.outboxId)).toEqual([second.outboxId]);
  });

  test("a directive already marked sent is not written again by its step's answer", () => {
    const aggregate = dispatched();
    const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "e1", status: "succeeded" }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.outbox.some((o) => o.outboxId === aggregate.outbox[0]!.outboxId)).toBe(false);
  });

  test("succeeded on a middle step keeps its result and issues the next step's directive with the same trace", () => {
    const aggregate = dispatched();
    const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "e1", status: "succeeded", result: { pages: 3 } }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job).toBeUndefined();
    const [done, next] = decided.steps;
    expect(done).toMatchObject({ status: "succeeded", result: { pages: 3 }, finishedAt: T1_ISO, events: ["e1"] });
    expect(next).toMatchObject({ index: 1, status: "pending", attempts: 1 });
    expect(decided.outbox).toEqual([
      expect.objectContaining({
        outboxId: outboxIdFor(aggregate.job.jobId, 1, 0),
        topic: "vector-ingestion",
        partitionKey: "acme",
        traceparent: aggregate.outbox[0]!.traceparent,
        status: "pending",
      }),
    ]);
  });

  test("succeeded on the last step finishes the job as succeeded", () => {
    const aggregate = dispatched();
    const last = { ...aggregate.steps[1]!, status: "initiated" as const, attempts: 1 };
    const decided = applyStepEvent(
      { ...aggregate, steps: [{ ...aggregate.steps[0]!, status: "succeeded" }, last] },
      last.stepId,
      { eventId: "e2", status: "succeeded" },
      options,
    );
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job).toMatchObject({ status: "succeeded", updatedAt: T1_ISO });
    expect(decided.steps).toEqual([expect.objectContaining({ stepId: last.stepId, status: "succeeded", result: null })]);
    expect(decided.outbox).toEqual([]);
  });

  test("a retryable failure with attempts left records the error and issues another directive for the same step", () => {
    const aggregate = dispatched();
    const decided = applyStepEvent(
      aggregate,
      stepId(aggregate, 0),
      { eventId: "e1", status: "failed", error: { code: "busy", message: "try later", retryable: true } },
      options,
    );
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job).toBeUndefined();
    expect(decided.steps).toEqual([
      expect.objectContaining({ status: "initiated", attempts: 2, error: { code: "busy", message: "try later", retryable: true } }),
    ]);
    expect(decided.outbox.map((o) => o.outboxId)).toEqual([outboxIdFor(aggregate.job.jobId, 0, 1)]);
  });

  test("a retryable failure with no attempts left fails the step, the job, and cancels what never ran", () => {
    const aggregate = dispatched();
    const spent = { ...aggregate, steps: [{ ...aggregate.steps[0]!, attempts: 2 }, aggregate.steps[1]!] };
    const decided = applyStepEvent(
      spent,
      stepId(aggregate, 0),
      { eventId: "e1", status: "failed", error: { code: "busy", message: "", retryable: true } },
      options,
    );
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job?.status).toBe("failed");
    expect(decided.steps.map((s) => [s.index, s.status])).toEqual([
      [0, "failed"],
      [1, "cancelled"],
    ]);
  });

  test("a permanent failure fails at once, whatever attempts are left; one without details is 'unknown'", () => {
    const aggregate = dispatched();
    const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "e1", status: "failed" }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job?.status).toBe("failed");
    expect(decided.steps[0]!.error).toEqual({ code: "unknown", message: "", retryable: false });
  });

  test("failing a job withdraws its directives not yet sent", () => {
    const aggregate = planned();
    const started = {
      ...aggregate,
      job: { ...aggregate.job, status: "in_progress" as const },
      steps: [{ ...aggregate.steps[0]!, status: "initiated" as const }, aggregate.steps[1]!],
    };
    const decided = applyStepEvent(started, stepId(aggregate, 0), { eventId: "e1", status: "failed" }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.outbox).toEqual([
      expect.objectContaining({ outboxId: aggregate.outbox[0]!.outboxId, status: "withdrawn", lastError: "job ended before this directive was sent" }),
    ]);
  });

  test("progress only records the event and the latest progress, with its percent and message when given", () => {
    const aggregate = dispatched();
    const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "p1", status: "progress", percent: 40, message: "page 2 of 5" }, options);
    expect(decided).toEqual({
      outcome: "applied",
      steps: [{ ...aggregate.steps[0]!, events: ["p1"], progress: { percent: 40, message: "page 2 of 5", at: T1_ISO }, updatedAt: T1_ISO }],
      outbox: [],
    });
    const bare = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "p2", status: "progress" }, options);
    if (bare.outcome !== "applied") throw new Error(bare.outcome);
    expect(bare.steps[0]!.progress).toEqual({ percent: null, message: null, at: T1_ISO });
  });

  test("an event id seen before is a duplicate and changes nothing", () => {
    const aggregate = dispatched();
    const seen = { ...aggregate, steps: [{ ...aggregate.steps[0]!, events: ["e1"] }, aggregate.steps[1]!] };
    expect(applyStepEvent(seen, stepId(aggregate, 0), { eventId: "e1", status: "succeeded" }, options)).toEqual({ outcome: "duplicate" });
  });

  test("events for an ended job or an ended step are ignored with the reason", () => {
    const aggregate = dispatched();
    const cancelled = { ...aggregate, job: { ...aggregate.job, status: "cancelled" as const } };
    expect(applyStepEvent(cancelled, stepId(aggregate, 0), { eventId: "e1", status: "succeeded" }, options)).toEqual({
      outcome: "ignored",
      reason: "job is cancelled",
    });
    const stepDone = { ...aggregate, steps: [{ ...aggregate.steps[0]!, status: "succeeded" as const }, aggregate.steps[1]!] };
    expect(applyStepEvent(stepDone, stepId(aggregate, 0), { eventId: "e1", status: "failed" }, options)).toEqual({
      outcome: "ignored",
      reason: "step is succeeded",
    });
  });

  test("an event for a step never dispatched is ignored; one that beats the fast path's mark starts the step", () => {
    const aggregate = planned();
    expect(applyStepEvent(aggregate, stepId(aggregate, 1), { eventId: "e1", status: "succeeded" }, options)).toEqual({
      outcome: "ignored",
      reason: "step has not been dispatched",
    });
    // Step 0's directive is issued (attempts 1) but not yet marked sent: the worker was faster.
    const decided = applyStepEvent(aggregate, stepId(aggregate, 0), { eventId: "e1", status: "succeeded" }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.steps[0]).toMatchObject({ status: "succeeded", startedAt: T1_ISO });
    // ...and its job: nothing else would move it out of accepted without a broker.
    expect(decided.job).toMatchObject({ status: "in_progress", updatedAt: T1_ISO });
  });

  test("the last step's success ends a job that no publish ever marked started as succeeded", () => {
    const aggregate = planned();
    const steps = [
      { ...aggregate.steps[0]!, status: "succeeded" as const },
      { ...aggregate.steps[1]!, attempts: 1 },
    ];
    const decided = applyStepEvent({ ...aggregate, steps }, stepId(aggregate, 1), { eventId: "e2", status: "succeeded" }, options);
    if (decided.outcome !== "applied") throw new Error(decided.outcome);
    expect(decided.job).toMatchObject({ status: "succeeded" });
  });

  test("a step id outside the job is a programming error", () => {
    expect(() => applyStepEvent(planned(), "nope", { eventId: "e1", status: "progress" }, options)).toThrow("step nope is not part of job");
  });
});

describe("cancelJob", () => {
  test("cancels the job, its open steps and its unsent directives", () => {
    const aggregate = dispatched();
    const change = cancelJob(aggregate, T1);
    expect(change?.job).toMatchObject({ status: "cancelled", updatedAt: T1_ISO });
    expect(change?.steps.map((s) => [s.index, s.status])).toEqual([
      [0, "cancelled"],
      [1, "cancelled"],
    ]);
    // The first directive was sent already: nothing left to withdraw.
    expect(change?.outbox).toEqual([]);
  });

  test("a job that has ended cannot be cancelled", () => {
    const aggregate = dispatched();
    for (const status of ["succeeded", "failed", "cancelled"] as const) expect(cancelJob({ ...aggregate, job: { ...aggregate.job, status } }, T1)).toBeNull();
  });
});

describe("a job whose protocol is no longer configured", () => {
  test("goes on in a line: the next step is dispatched with the results so far, and the last ends the job", () => {
    const aggregate = dispatched();
    const first = applyStepEvent(
      aggregate,
      aggregate.steps[0]!.stepId,
      { eventId: "e1", status: "succeeded", result: { pages: 2 } },
      { ...options, protocol: undefined },
    );
    if (first.outcome !== "applied") throw new Error(first.outcome);
    expect(first.outbox.map((entry) => [entry.stepId, entry.results])).toEqual([[aggregate.steps[1]!.stepId, { ocr: { pages: 2 } }]]);
    const next: JobAggregate = {
      job: first.job ?? aggregate.job,
      steps: [first.steps[0]!, { ...first.steps[1]!, status: "initiated" }],
      outbox: [...aggregate.outbox, ...first.outbox],
    };
    const last = applyStepEvent(next, next.steps[1]!.stepId, { eventId: "e2", status: "succeeded" }, { ...options, protocol: undefined });
    if (last.outcome !== "applied") throw new Error(last.outcome);
    expect(last.job?.status).toBe("succeeded");
  });
});

test("with its protocol gone, a job's compensation step is not taken for a last step of the line", () => {
  const withUndo: Protocol = { ...protocol, steps: [protocol.steps[0]!], onFailure: { ...protocol.steps[1]!, name: "undo" } };
  const aggregate = planJob({
    jobId: "0190d9a0-0000-7000-8000-000000000002",
    command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: { documentId: "d1" } },
    protocol: withUndo,
    traceparent: null,
    now: T0,
    retryDelaySeconds: 30,
  });
  expect(aggregate.steps[1]).toMatchObject({ name: "undo", compensation: true });
  const done = applyStepEvent(aggregate, aggregate.steps[0]!.stepId, { eventId: "e1", status: "succeeded" }, { ...options, protocol: undefined });
  if (done.outcome !== "applied") throw new Error(done.outcome);
  expect(done.job?.status).toBe("succeeded");
  // No directive for the compensation step; the answered step's own is marked sent.
  expect(done.outbox.map((o) => [o.stepId, o.status])).toEqual([[aggregate.steps[0]!.stepId, "sent"]]);
});

test("a map step that the protocol no longer maps: its child's event fails the step and the job (protocol-changed), not a wait for ever", () => {
  const mapped: Protocol = {
    ...protocol,
    steps: [{ ...protocol.steps[0]!, map: { items: "/payload/pages", maxConcurrency: 2, maxItems: 10, toleratedFailurePercent: 0 } }],
  };
  const aggregate = planJob({
    jobId: "0190d9a0-0000-7000-8000-000000000003",
    command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: { pages: [1, 2, 3] } },
    protocol: mapped,
    traceparent: null,
    now: T0,
    retryDelaySeconds: 30,
  });
  const child = aggregate.steps.find((s) => s.itemIndex === 0)!;
  const job = { ...aggregate, steps: aggregate.steps.filter((s) => s.itemIndex === undefined) };
  const changed = { ...protocol, steps: [protocol.steps[0]!] };
  const outcome = applyChildEvent(job, child, [], { eventId: "c0", status: "succeeded" }, { ...options, protocol: changed });
  if (outcome.outcome !== "applied") throw new Error(outcome.outcome);
  expect(outcome.job?.status).toBe("failed");
  expect(outcome.steps[0]).toMatchObject({ status: "failed", error: { code: "protocol-changed" } });
});
