/** The pure rules of an operator's repairs: redrive, pause, resume; and the history entry a change makes. */
import { describe, expect, test } from "bun:test";
import { InvalidTransitionError, RedriveLimitError, ValidationFailedError } from "../../src/domain/errors.ts";
import { recordChange } from "../../src/domain/history.ts";
import type { JobAggregate, Protocol } from "../../src/domain/model.ts";
import { planJob } from "../../src/domain/plan-job.ts";
import { pauseJob, redriveJob, resumeJob } from "../../src/domain/repair.ts";
import { applyStepEvent } from "../../src/domain/step-events.ts";
import { applyPublished } from "../../src/domain/transitions.ts";

const line = (names: string[], extra: Record<string, object> = {}) =>
  names.map((name) => ({ name, topic: name, partitionKey: { kind: "jobId" as const }, maxAttempts: 1, timeoutSeconds: 0, ...extra[name] }));
const protocol: Protocol = { requestType: "r", version: 1, description: "", steps: line(["a", "b", "c"]) };
const T0 = new Date("2026-01-01T00:00:00.000Z");
const T1 = new Date("2026-01-01T00:01:00.000Z");
const options = { protocol, now: T1, retryDelaySeconds: 30 };

function planned(p = protocol, payload: Record<string, unknown> = { documentId: "d1" }): JobAggregate {
  return planJob({
    jobId: "0190d9a0-0000-7000-8000-000000000001",
    command: { requestType: "r", tenantId: "acme", correlationId: null, idempotencyKey: null, payload },
    protocol: p,
    traceparent: null,
    now: T0,
    retryDelaySeconds: 30,
  });
}

/** Applies an event to the step at `index` and folds the change into the aggregate. */
function apply(aggregate: JobAggregate, index: number, status: "succeeded" | "failed", p = protocol): JobAggregate {
  const step = aggregate.steps.find((s) => s.index === index)!;
  const entry = aggregate.outbox.find((o) => o.stepId === step.stepId && o.status === "pending");
  let current = aggregate;
  if (entry) {
    const published = applyPublished({ job: current.job, step, entry }, T0.toISOString());
    current = fold(current, { job: published.job, steps: [published.step], outbox: [published.entry] });
  }
  const decided = applyStepEvent(
    current,
    step.stepId,
    { eventId: `e-${index}-${status}`, status, ...(status === "failed" ? { error: { code: "x", message: "" } } : {}) },
    { ...options, protocol: p },
  );
  if (decided.outcome !== "applied") throw new Error(decided.outcome);
  return fold(current, decided);
}

function fold(aggregate: JobAggregate, change: { job?: JobAggregate["job"]; steps: JobAggregate["steps"]; outbox: JobAggregate["outbox"] }): JobAggregate {
  return {
    job: change.job ?? aggregate.job,
    steps: aggregate.steps.map((s) => change.steps.find((c) => c.stepId === s.stepId) ?? s),
    outbox: [
      ...aggregate.outbox.map((o) => change.outbox.find((c) => c.outboxId === o.outboxId) ?? o),
      ...change.outbox.filter((c) => !aggregate.outbox.some((o) => o.outboxId === c.outboxId)),
    ],
  };
}

const failedAtB = () => apply(apply(planned(), 0, "succeeded"), 1, "failed");

describe("redrive", () => {
  test("reopens the failed step with its next attempt and a new directive; the succeeded step stays; the never-run step waits", () => {
    const failed = failedAtB();
    const change = redriveJob(failed, { maxRedrives: 10 }, options);
    expect(change.job).toMatchObject({ status: "in_progress", redrives: 1 });
    expect(change.outbox.map((o) => [o.stepId.slice(-3), o.outboxId.slice(-6)])).toEqual([[".s1", ".s1.d1"]]);
    const byName = Object.fromEntries(fold(failed, change).steps.map((s) => [s.name, [s.status, s.attempts]]));
    expect(byName).toEqual({ a: ["succeeded", 1], b: ["pending", 2], c: ["pending", 0] });
  });

  test("is refused past the limit and for a job that did not fail or was not cancelled; a map step runs the items it is given again", () => {
    expect(() => redriveJob({ ...failedAtB(), job: { ...failedAtB().job, redrives: 2 } }, { maxRedrives: 2 }, options)).toThrow(RedriveLimitError);
    expect(() => redriveJob(planned(), { maxRedrives: 2 }, options)).toThrow(InvalidTransitionError);
    const mapped: Protocol = {
      ...protocol,
      steps: line(["a", "b"], { b: { map: { items: "/payload/list", maxConcurrency: 1, maxItems: 10, toleratedFailurePercent: 0 } } }),
    };
    const started = apply(planned(mapped, { list: [1] }), 0, "succeeded", mapped);
    const mapFailed = {
      ...started,
      job: { ...started.job, status: "failed" as const },
      steps: started.steps.map((s) => (s.index === 1 ? { ...s, status: "failed" as const } : s)),
    };
    // Its children must be read first (the service does): which items did not succeed.
    expect(() => redriveJob(mapFailed, { maxRedrives: 2 }, { ...options, protocol: mapped })).toThrow(/children read first/);
    const reopened = redriveJob(
      mapFailed,
      { maxRedrives: 2, mapChildren: { [mapFailed.steps[1]!.stepId]: { rerun: [0], succeeded: [] } } },
      { ...options, protocol: mapped },
    );
    expect(reopened.steps.find((s) => s.index === 1)).toMatchObject({ status: "initiated", map: { running: 0, failed: 0, rerun: [0] } });
    expect(reopened.outbox).toEqual([]);
    // Or skipped with a result.
    const skipped = redriveJob(mapFailed, { maxRedrives: 2, skip: { b: { done: true } } }, { ...options, protocol: mapped });
    expect(skipped.job.status).toBe("succeeded");
  });

  test("skips a step with a result; naming an unknown or succeeded step is a validation error", () => {
    const change = redriveJob(failedAtB(), { maxRedrives: 10, skip: { b: { fixed: 1 } } }, options);
    expect(change.steps.find((s) => s.name === "b")).toMatchObject({ status: "succeeded", result: { fixed: 1 }, attempts: 1 });
    // `a` succeeded without a result: `c` is told only what `b` was given.
    expect(change.outbox.map((o) => o.results)).toEqual([{ b: { fixed: 1 } }]);
    for (const skip of [{ nope: {} }, { a: {} }]) {
      expect(() => redriveJob(failedAtB(), { maxRedrives: 10, skip }, options)).toThrow(ValidationFailedError);
    }
  });
});

describe("pause and resume", () => {
  test("a paused job dispatches nothing when a step ends; resume dispatches what became ready", () => {
    const running = apply(planned(), 0, "succeeded");
    expect(running.outbox.filter((o) => o.status === "pending")).toHaveLength(1);
    const paused = fold(planned(), pauseJob(planned(), T1));
    const held = apply(paused, 0, "succeeded");
    expect(held.outbox.filter((o) => o.status === "pending")).toEqual([]);
    expect(held.steps.map((s) => s.status)).toEqual(["succeeded", "pending", "pending"]);
    const resumed = resumeJob(held, options);
    expect(resumed.job.paused).toBe(false);
    expect(resumed.outbox.map((o) => o.stepIndex)).toEqual([1]);
  });

  test("pausing an ended or paused job, or resuming one that is not paused, is refused", () => {
    const paused = fold(planned(), pauseJob(planned(), T1));
    expect(() => pauseJob(paused, T1)).toThrow(InvalidTransitionError);
    expect(() => resumeJob(planned(), options)).toThrow(InvalidTransitionError);
    expect(() => pauseJob(failedAtB(), T1)).toThrow(InvalidTransitionError);
    // A job that fails while paused is no longer paused: nothing is held for it any more.
    const failedWhilePaused = apply(paused, 0, "failed");
    expect(failedWhilePaused.job).toMatchObject({ status: "failed", paused: false });
  });
});

describe("history entries", () => {
  test("an entry says what the change dispatched and which steps and job status it moved; a child's change that moves nothing outside its map is no entry", () => {
    const failed = failedAtB();
    const change = redriveJob(failed, { maxRedrives: 10 }, options);
    const recorded = recordChange(failed, change, { action: "redrive", actor: "ann" }, T1)!;
    expect(recorded.job.changes).toBe(failed.job.changes + 1);
    expect(recorded.entry).toMatchObject({
      seq: failed.job.changes + 1,
      action: "redrive",
      actor: "ann",
      jobStatus: "in_progress",
      dispatched: [{ step: "b", attempt: 2 }],
      steps: [
        { step: "b", status: "pending" },
        { step: "c", status: "pending" },
      ],
    });
    expect(recordChange(failed, { steps: [], outbox: [] }, { action: "event", actor: "w", onlyIfVisible: true }, T1)).toBeNull();
  });
});
