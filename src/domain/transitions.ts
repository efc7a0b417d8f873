/**
 * The state machines of jobs, steps and outbox entries as pure functions. Every backend stores only what these
 * functions return; each refuses a transition the machine does not allow.
 */
import { InvalidTransitionError } from "./errors.ts";
import type { Job, JobStatus, JsonObject, OutboxEntry, OutboxStatus, Step, StepError, StepStatus } from "./model.ts";

const jobTransitions: Record<JobStatus, readonly JobStatus[]> = {
  accepted: ["in_progress", "failed", "cancelled"],
  in_progress: ["succeeded", "failed", "cancelled"],
  succeeded: [],
  failed: [],
  cancelled: [],
};

const stepTransitions: Record<StepStatus, readonly StepStatus[]> = {
  // pending → failed: its last attempt ran out of time before any worker was seen to take it.
  // pending → skipped: its condition was false once its predecessors were done.
  pending: ["initiated", "failed", "skipped", "cancelled"],
  initiated: ["succeeded", "failed", "cancelled"],
  succeeded: [],
  failed: [],
  skipped: [],
  cancelled: [],
};

const outboxTransitions: Record<OutboxStatus, readonly OutboxStatus[]> = {
  pending: ["sent", "failed", "withdrawn"],
  sent: [],
  failed: ["pending"],
  withdrawn: [],
};

/** A job has ended when no transition leads out of its status. */
export function hasJobEnded(job: Pick<Job, "status">): boolean {
  return jobTransitions[job.status].length === 0;
}

/** A step has ended when no transition leads out of its status. */
export function hasStepEnded(step: Pick<Step, "status">): boolean {
  return stepTransitions[step.status].length === 0;
}

function assertAllowed<S extends string>(kind: string, table: Record<S, readonly S[]>, from: S, to: S): void {
  if (!table[from].includes(to)) {
    throw new InvalidTransitionError(`${kind} cannot go from '${from}' to '${to}'`);
  }
}

/** accepted → in_progress; a job already in progress stays as it is (a later step started). */
export function startJob(job: Job, now: string): Job {
  if (job.status === "in_progress") return job;
  assertAllowed("job", jobTransitions, job.status, "in_progress");
  return { ...job, status: "in_progress", updatedAt: now };
}

/** pending → initiated: the step's directive reached the broker. */
export function initiateStep(step: Step, now: string): Step {
  assertAllowed("step", stepTransitions, step.status, "initiated");
  return { ...step, status: "initiated", startedAt: step.startedAt ?? now, updatedAt: now };
}

/** initiated → succeeded, keeping the worker's result. */
export function succeedStep(step: Step, result: JsonObject | null, now: string): Step {
  assertAllowed("step", stepTransitions, step.status, "succeeded");
  return { ...step, status: "succeeded", result, error: null, finishedAt: now, updatedAt: now };
}

/** initiated (or pending, see stepTransitions) → failed, for good. */
export function failStep(step: Step, error: StepError, now: string): Step {
  assertAllowed("step", stepTransitions, step.status, "failed");
  return { ...step, status: "failed", error, finishedAt: now, updatedAt: now };
}

/** A retryable failure of an open step (an answer, or a deadline): it stays as it is, its error is recorded. */
export function recordStepError(step: Step, error: StepError, now: string): Step {
  if (hasStepEnded(step)) throw new InvalidTransitionError(`step is '${step.status}': it has ended`);
  return { ...step, error, updatedAt: now };
}

/** pending → skipped: its condition did not hold. */
export function skipStep(step: Step, now: string): Step {
  assertAllowed("step", stepTransitions, step.status, "skipped");
  return { ...step, status: "skipped", finishedAt: now, updatedAt: now };
}

/** pending or initiated → cancelled. */
export function cancelStep(step: Step, now: string): Step {
  assertAllowed("step", stepTransitions, step.status, "cancelled");
  return { ...step, status: "cancelled", finishedAt: now, updatedAt: now };
}

/** A step event's id, remembered so that a repeat changes nothing (the latest 100 are kept). */
export function rememberEvent(step: Step, eventId: string, now: string): Step {
  return { ...step, events: [...step.events, eventId].slice(-100), updatedAt: now };
}

/** accepted or in_progress → succeeded, failed or cancelled. */
export function finishJob(job: Job, status: "succeeded" | "failed" | "cancelled", now: string): Job {
  assertAllowed("job", jobTransitions, job.status, status);
  // An ended job dispatches nothing anyway: a pause ends with it.
  return { ...job, status, paused: false, updatedAt: now };
}

/**
 * failed or cancelled → in_progress: an operator's redrive (domain/repair.ts). Outside the
 * transition table on purpose: only a redrive reopens an ended job, and it counts.
 */
export function reopenJob(job: Job, now: string): Job {
  if (job.status !== "failed" && job.status !== "cancelled") {
    throw new InvalidTransitionError(`job is '${job.status}': only a failed or cancelled job can be redriven`);
  }
  return { ...job, status: "in_progress", paused: false, redrives: job.redrives + 1, updatedAt: now };
}

/** failed or cancelled → pending, to run again with its next attempt (a redrive); its attempts keep counting. */
export function reopenStep(step: Step, now: string): Step {
  if (step.status !== "failed" && step.status !== "cancelled")
    throw new InvalidTransitionError(`step is '${step.status}': only a failed or cancelled step runs again`);
  return { ...step, status: "pending", error: null, progress: null, deadlineAt: null, startedAt: null, finishedAt: null, updatedAt: now };
}

/** pending, failed or cancelled → succeeded with the result an operator gave, instead of running it (again). */
export function succeedByOperator(step: Step, result: JsonObject, now: string): Step {
  if (step.status === "succeeded" || step.status === "skipped" || step.status === "initiated") {
    throw new InvalidTransitionError(`step is '${step.status}': only a pending, failed or cancelled step can be skipped with a result`);
  }
  return { ...step, status: "succeeded", result, error: null, deadlineAt: null, finishedAt: now, updatedAt: now };
}

/** A directive that must no longer go out (its job ended): pending → withdrawn, not a failure. */
export function withdrawEntry(entry: OutboxEntry, reason: string, now: string): OutboxEntry {
  assertAllowed("outbox entry", outboxTransitions, entry.status, "withdrawn");
  return { ...entry, status: "withdrawn", lastError: reason, nextAttemptAt: null, lease: null, updatedAt: now };
}

/** pending → sent, counting the attempt that succeeded. */
export function markOutboxSent(entry: OutboxEntry, now: string): OutboxEntry {
  assertAllowed("outbox entry", outboxTransitions, entry.status, "sent");
  return { ...entry, status: "sent", attempts: entry.attempts + 1, sentAt: now, nextAttemptAt: null, lease: null, updatedAt: now };
}

export interface PublishFailure {
  error: string;
  retryable: boolean;
  now: string;
  /** When the entry becomes due again if it stays pending. */
  nextAttemptAt: string;
  maxAttempts: number;
}

/**
 * A failed publish: the entry stays pending with its next due time, or becomes `failed` when the
 * error is permanent or the attempts are used up.
 */
export function recordPublishFailure(entry: OutboxEntry, failure: PublishFailure): OutboxEntry {
  // Only a pending entry is ever published, so only a pending one can record a failure.
  if (entry.status !== "pending") throw new InvalidTransitionError(`outbox entry is '${entry.status}', not pending`);
  const attempts = entry.attempts + 1;
  const exhausted = !failure.retryable || attempts >= failure.maxAttempts;
  const status: OutboxStatus = exhausted ? "failed" : "pending";
  return {
    ...entry,
    status,
    attempts,
    lastError: failure.error,
    nextAttemptAt: exhausted ? null : failure.nextAttemptAt,
    lease: null,
    updatedAt: failure.now,
  };
}

/**
 * A sweeper's lease: a pending entry is claimed by moving its due time to the end of the lease,
 * written conditionally on its etag. Other sweepers no longer see it as due; if the holder dies,
 * the entry falls due again when the lease ends. Not an attempt: only outcomes count.
 */
export function leaseEntry(entry: OutboxEntry, now: string, until: string, token: string): OutboxEntry {
  if (entry.status !== "pending") throw new InvalidTransitionError(`outbox entry is '${entry.status}', not pending`);
  return { ...entry, nextAttemptAt: until, lease: token, updatedAt: now };
}

/** failed → pending with a fresh attempt count, due now (an operator's retry). */
export function resetFailedEntry(entry: OutboxEntry, now: string): OutboxEntry {
  assertAllowed("outbox entry", outboxTransitions, entry.status, "pending");
  return { ...entry, status: "pending", attempts: 0, nextAttemptAt: now, lease: null, updatedAt: now };
}

/**
 * What the fast path or the sweeper stores once a step's directive was published. A step found
 * already initiated stays as it is: on the `table` backend a crash can land between the step's
 * write and the entry's, and the sweep's re-publish then only has the entry left to mark.
 */
export function applyPublished(parts: { job: Job; step: Step; entry: OutboxEntry }, now: string) {
  return {
    // A fast worker may have answered (even finished the job) before this write.
    job: parts.job.status === "accepted" ? startJob(parts.job, now) : parts.job,
    step: parts.step.status === "pending" ? initiateStep(parts.step, now) : parts.step,
    entry: markOutboxSent(parts.entry, now),
  };
}
