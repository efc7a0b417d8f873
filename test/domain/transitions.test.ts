import { describe, expect, test } from "bun:test";
import { InvalidTransitionError } from "../../src/domain/errors.ts";
import type { Job, OutboxEntry, Step } from "../../src/domain/model.ts";
import {
  applyPublished,
  initiateStep,
  leaseEntry,
  markOutboxSent,
  recordPublishFailure,
  resetFailedEntry,
  startJob,
  withdrawEntry,
} from "../../src/domain/transitions.ts";

const T0 = "2026-01-01T00:00:00.000Z";
const T1 = "2026-01-01T00:00:01.000Z";

const job: Job = {
  jobId: "j",
  tenantId: "acme",
  requestType: "document.ocr",
  protocolVersion: 1,
  paused: false,
  redrives: 0,
  changes: 0,
  correlationId: null,
  idempotencyKey: null,
  payload: {},
  status: "accepted",
  createdAt: T0,
  updatedAt: T0,
};
const step: Step = {
  jobId: "j",
  stepId: "s",
  index: 0,
  name: "ocr",
  topic: "ocr-requests",
  status: "pending",
  attempts: 1,
  result: null,
  error: null,
  events: [],
  progress: null,
  deadlineAt: null,
  startedAt: null,
  finishedAt: null,
  updatedAt: T0,
};
const entry: OutboxEntry = {
  outboxId: "o",
  jobId: "j",
  stepId: "s",
  stepIndex: 0,
  topic: "ocr-requests",
  partitionKey: "j",
  traceparent: null,
  results: {},
  status: "pending",
  attempts: 0,
  nextAttemptAt: T1,
  lastError: null,
  sentAt: null,
  lease: null,
  createdAt: T0,
  updatedAt: T0,
};
const failure = { error: "boom", retryable: true, now: T1, nextAttemptAt: "2026-01-01T00:00:31.000Z", maxAttempts: 3 };

describe("job", () => {
  test("accepted → in_progress", () => {
    expect(startJob(job, T1)).toMatchObject({ status: "in_progress", updatedAt: T1 });
  });
  test("in_progress stays in_progress, unchanged (a later step started)", () => {
    const running = { ...job, status: "in_progress" as const };
    expect(startJob(running, T1)).toBe(running);
  });
  test.each(["succeeded", "failed", "cancelled"] as const)("%s is terminal", (status) => {
    expect(() => startJob({ ...job, status }, T1)).toThrow(InvalidTransitionError);
  });
  test("does not mutate its input", () => {
    startJob(job, T1);
    expect(job.status).toBe("accepted");
  });
});

describe("step", () => {
  test("pending → initiated", () => {
    expect(initiateStep(step, T1)).toMatchObject({ status: "initiated", updatedAt: T1 });
  });
  test.each(["initiated", "succeeded", "failed", "cancelled"] as const)("%s cannot be initiated", (status) => {
    expect(() => initiateStep({ ...step, status }, T1)).toThrow(InvalidTransitionError);
  });
});

describe("outbox entry", () => {
  test("pending → sent counts the attempt and clears the due time", () => {
    expect(markOutboxSent(entry, T1)).toMatchObject({ status: "sent", attempts: 1, sentAt: T1, nextAttemptAt: null });
  });
  test.each(["sent", "failed"] as const)("%s cannot be sent again", (status) => {
    expect(() => markOutboxSent({ ...entry, status }, T1)).toThrow(InvalidTransitionError);
  });
  test("a retryable failure below the cap stays pending with its error and next due time", () => {
    expect(recordPublishFailure(entry, failure)).toMatchObject({ status: "pending", attempts: 1, lastError: "boom", nextAttemptAt: failure.nextAttemptAt });
  });
  test("the failure that reaches LUCIUS_OUTBOX_MAX_ATTEMPTS parks the entry as failed", () => {
    const second = recordPublishFailure(recordPublishFailure(entry, failure), failure);
    expect(second.status).toBe("pending");
    expect(recordPublishFailure(second, failure)).toMatchObject({ status: "failed", attempts: 3, nextAttemptAt: null, lastError: "boom" });
  });
  test("a permanent failure parks the entry at once", () => {
    expect(recordPublishFailure(entry, { ...failure, retryable: false, error: "topic not found" })).toMatchObject({
      status: "failed",
      attempts: 1,
      lastError: "topic not found",
    });
  });
  test("a failure cannot be recorded on a sent or failed entry", () => {
    expect(() => recordPublishFailure({ ...entry, status: "sent" }, failure)).toThrow(InvalidTransitionError);
    expect(() => recordPublishFailure({ ...entry, status: "failed" }, failure)).toThrow(InvalidTransitionError);
  });
  test("an operator's retry moves failed → pending with a fresh count, due now", () => {
    expect(resetFailedEntry({ ...entry, status: "failed", attempts: 3 }, T1)).toMatchObject({ status: "pending", attempts: 0, nextAttemptAt: T1 });
    expect(() => resetFailedEntry({ ...entry, status: "sent" }, T1)).toThrow(InvalidTransitionError);
  });
});

test("applyPublished moves all three together", () => {
  const next = applyPublished({ job, step, entry }, T1);
  expect([next.job.status, next.step.status, next.entry.status]).toEqual(["in_progress", "initiated", "sent"]);
});

test("applyPublished leaves a step or job a worker already moved on as it is, and still marks the entry sent", () => {
  const initiated = { ...step, status: "initiated" as const };
  const next = applyPublished({ job: { ...job, status: "in_progress" }, step: initiated, entry }, T1);
  expect(next.step).toBe(initiated);
  expect(next.entry.status).toBe("sent");
  const finished = applyPublished({ job: { ...job, status: "succeeded" }, step: { ...step, status: "succeeded" }, entry }, T1);
  expect([finished.job.status, finished.step.status, finished.entry.status]).toEqual(["succeeded", "succeeded", "sent"]);
});

test("a lease moves the due time to the lease's end and carries its token; sent and failure clear it", () => {
  const leased = leaseEntry(entry, T1, "2026-01-01T00:00:31.000Z", "sweep-1");
  expect(leased).toMatchObject({ status: "pending", attempts: 0, nextAttemptAt: "2026-01-01T00:00:31.000Z", lease: "sweep-1" });
  expect(markOutboxSent(leased, T1).lease).toBeNull();
  expect(recordPublishFailure(leased, failure).lease).toBeNull();
  expect(() => leaseEntry({ ...entry, status: "sent" }, T1, T1, "x")).toThrow(InvalidTransitionError);
});

test("a directive withdrawn when its job ends is withdrawn, not failed, and final", () => {
  const withdrawn = withdrawEntry(entry, "job ended before this directive was sent", T1);
  expect(withdrawn).toMatchObject({ status: "withdrawn", nextAttemptAt: null, lastError: "job ended before this directive was sent" });
  expect(() => markOutboxSent(withdrawn, T1)).toThrow(InvalidTransitionError);
  expect(() => resetFailedEntry(withdrawn, T1)).toThrow(InvalidTransitionError);
  expect(() => withdrawEntry(markOutboxSent(entry, T1), "late", T1)).toThrow(InvalidTransitionError);
});
