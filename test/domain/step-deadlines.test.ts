/** The pure rules of a passed step deadline, without storage, timers or transport. */
import { describe, expect, test } from "bun:test";
import { outboxIdFor } from "../../src/domain/ids.ts";
import type { JobAggregate, Protocol } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { expireStep, TIMED_OUT } from "../../src/domain/step-deadlines.ts";
import { applyStepEvent } from "../../src/domain/step-events.ts";
import { applyPublished } from "../../src/domain/transitions.ts";

const protocol: Protocol = {
  requestType: "document.ingest",
  version: 1,
  description: "",
  steps: [
    { name: "ocr", topic: "ocr-requests", partitionKey: { kind: "jobId" }, maxAttempts: 2, timeoutSeconds: 60 },
    { name: "embed", topic: "vector-ingestion", partitionKey: { kind: "tenantId" }, maxAttempts: 1, timeoutSeconds: 60 },
  ],
};
const T0 = new Date("2026-01-01T00:00:00.000Z");
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);
const options = (seconds: number, countFromSend = true) => ({ protocol, now: at(seconds), retryDelaySeconds: 30, countFromSend });

function planned(): JobAggregate {
  return planJob({
    jobId: "0190d9a0-0000-7000-8000-000000000001",
    command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: { documentId: "d1" } },
    protocol,
    traceparent: null,
    now: T0,
    retryDelaySeconds: 30,
  });
}

/** The first directive sent `sentAfter` seconds after it was issued. */
function dispatched(sentAfter = 0): JobAggregate {
  const aggregate = planned();
  const published = applyPublished({ job: aggregate.job, step: aggregate.steps[0]!, entry: aggregate.outbox[0]! }, at(sentAfter).toISOString());
  return { job: published.job, steps: [published.step, aggregate.steps[1]!], outbox: [published.entry] };
}

const first = (aggregate: JobAggregate) => aggregate.steps[0]!.stepId;

describe("expireStep", () => {
  test("a dispatched step gets a deadline of its timeout after the directive was issued", () => {
    expect(planned().steps[0]!.deadlineAt).toBe(at(60).toISOString());
    expect(planned().steps[1]!.deadlineAt).toBeNull();
  });

  test("before the deadline, or once the step ended, there is nothing to do", () => {
    const aggregate = dispatched();
    expect(expireStep(aggregate, first(aggregate), options(59))).toEqual({ outcome: "not-due" });
    const answered = applyStepEvent(aggregate, first(aggregate), { eventId: "e", status: "succeeded" }, options(10));
    if (answered.outcome !== "applied") throw new Error(answered.outcome);
    const finished = { ...aggregate, steps: [answered.steps[0]!, answered.steps[1]!], outbox: [...aggregate.outbox, ...answered.outbox] };
    expect(expireStep(finished, first(aggregate), options(120))).toEqual({ outcome: "not-due" });
  });

  test("a passed deadline with attempts left dispatches the step again, with a new deadline and the reason recorded", () => {
    const aggregate = dispatched();
    const decided = expireStep(aggregate, first(aggregate), options(61));
    if (decided.outcome !== "timed-out") throw new Error(decided.outcome);
    expect(decided.retried).toBe(true);
    expect(decided.job).toBeUndefined();
    expect(decided.steps).toEqual([
      expect.objectContaining({
        status: "initiated",
        attempts: 2,
        deadlineAt: at(121).toISOString(),
        error: expect.objectContaining({ code: TIMED_OUT, retryable: true }),
      }),
    ]);
    expect(decided.outbox).toEqual([expect.objectContaining({ outboxId: outboxIdFor(aggregate.job.jobId, 0, 1), status: "pending" })]);
  });

  test("a passed deadline of the last attempt fails the step timed-out and the job, cancels the rest and withdraws what was not sent", () => {
    const aggregate = dispatched();
    const again = expireStep(aggregate, first(aggregate), options(61));
    if (again.outcome !== "timed-out") throw new Error(again.outcome);
    const retried = { ...aggregate, steps: [again.steps[0]!, aggregate.steps[1]!], outbox: [...aggregate.outbox, ...again.outbox] };
    // The second directive is sent at once; its attempt runs out too.
    const sent = applyPublished({ job: retried.job, step: retried.steps[0]!, entry: retried.outbox[1]! }, at(61).toISOString());
    const second = { ...retried, steps: [sent.step, retried.steps[1]!], outbox: [retried.outbox[0]!, sent.entry] };
    const decided = expireStep(second, first(second), options(122));
    if (decided.outcome !== "timed-out") throw new Error(decided.outcome);
    expect(decided.retried).toBe(false);
    expect(decided.job).toMatchObject({ status: "failed" });
    expect(decided.steps.map((s) => [s.index, s.status, s.error?.code ?? null])).toEqual([
      [0, "failed", TIMED_OUT],
      [1, "cancelled", null],
    ]);
  });

  test("while its directive waits for the broker, the attempt has not started: the deadline moves on instead", () => {
    const aggregate = planned();
    const decided = expireStep(aggregate, first(aggregate), options(90));
    expect(decided).toEqual({ outcome: "extended", steps: [expect.objectContaining({ attempts: 1, deadlineAt: at(150).toISOString() })] });
  });

  test("a directive sent late gives its attempt the whole timeout from the send", () => {
    const aggregate = dispatched(40);
    expect(expireStep(aggregate, first(aggregate), options(61))).toEqual({
      outcome: "extended",
      steps: [expect.objectContaining({ deadlineAt: at(100).toISOString() })],
    });
  });

  test("without a broker, time counts from the dispatch: a pending step with no attempt left fails", () => {
    const single: Protocol = { ...protocol, steps: [{ ...protocol.steps[0]!, maxAttempts: 1 }] };
    const aggregate = planJob({
      jobId: "0190d9a0-0000-7000-8000-000000000002",
      command: { requestType: "document.ingest", tenantId: "acme", correlationId: null, idempotencyKey: null, payload: {} },
      protocol: single,
      traceparent: null,
      now: T0,
      retryDelaySeconds: 30,
    });
    const decided = expireStep(aggregate, first(aggregate), { ...options(61, false), protocol: single });
    if (decided.outcome !== "timed-out") throw new Error(decided.outcome);
    expect(decided.job).toMatchObject({ status: "failed" });
    expect(decided.steps[0]).toMatchObject({ status: "failed", error: { code: TIMED_OUT } });
    expect(decided.outbox).toEqual([expect.objectContaining({ status: "withdrawn" })]);
  });

  test("an event of an attempt that is over is ignored; one of the current attempt applies", () => {
    const aggregate = dispatched();
    const again = expireStep(aggregate, first(aggregate), options(61));
    if (again.outcome !== "timed-out") throw new Error(again.outcome);
    const retried = { ...aggregate, steps: [again.steps[0]!, aggregate.steps[1]!], outbox: [...aggregate.outbox, ...again.outbox] };
    const late = applyStepEvent(retried, first(retried), { eventId: "late", status: "succeeded", attempt: 1 }, options(62));
    expect(late).toEqual({ outcome: "ignored", reason: expect.stringContaining("attempt 1") });
    const current = applyStepEvent(retried, first(retried), { eventId: "now", status: "succeeded", attempt: 2 }, options(62));
    expect(current.outcome).toBe("applied");
  });
});
