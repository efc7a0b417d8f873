/**
 * An operator's repairs as pure functions: a redrive of a failed or cancelled job from where it
 * stopped (with steps skipped by a given result, or a patched payload), and pause and resume.
 */
import { type FieldViolation, InvalidTransitionError, RedriveLimitError, ValidationFailedError } from "./errors.ts";
import { failJob, redispatch } from "./fail-fast.ts";
import { resultsFor, workSteps } from "./graph.ts";
import { countedAfresh } from "./map-step.ts";
import type { Job, JobAggregate, JsonObject, OutboxEntry, Protocol, Step } from "./model.ts";
import { advance } from "./plan-job.ts";
import { finishJob, hasJobEnded, reopenJob, reopenStep, succeedByOperator } from "./transitions.ts";

export interface RepairOptions {
  protocol: Protocol;
  now: Date;
  retryDelaySeconds: number;
}

export interface RedriveRequest {
  /** The job's payload after the operator's patch (already validated); absent: unchanged. */
  payload?: JsonObject;
  /** Steps the operator marks succeeded with a result instead of running them, by name. */
  skip?: Record<string, JsonObject>;
  /** LUCIUS_MAX_REDRIVES. */
  maxRedrives: number;
  /** The bulk operation redriving it, if one is. */
  operationId?: string;
  /**
   * For each failed or cancelled map step (by step id), its children as read: the items to run
   * again (their child did not succeed) and those that succeeded, from which the step's count is
   * taken afresh (on `table` a child can have ended without its map counting it).
   */
  mapChildren?: Record<string, MapChildren>;
}

/** A map step's items below its cursor, by what their children did. */
export interface MapChildren {
  rerun: number[];
  succeeded: number[];
}

export type RepairChange = { job: Job; steps: Step[]; outbox: OutboxEntry[] };

/**
 * A failed or cancelled job back to in_progress: steps that succeeded keep their results and are
 * not sent again; failed and cancelled steps run again with their next attempt (a new directive,
 * so a new messageId), never-run steps run when their predecessors are done. A map step runs its
 * failed and cancelled children again (`mapChildren`, read by the caller), not the ones that succeeded.
 */
export function redriveJob(aggregate: JobAggregate, request: RedriveRequest, options: RepairOptions): RepairChange {
  const { job } = aggregate;
  const at = options.now.toISOString();
  if (job.status !== "failed" && job.status !== "cancelled") {
    throw new InvalidTransitionError(`job ${job.jobId} is ${job.status}: only a failed or cancelled job can be redriven`);
  }
  if (job.redrives >= request.maxRedrives) {
    throw new RedriveLimitError(`job ${job.jobId} was redriven ${job.redrives} times, the most allowed (LUCIUS_MAX_REDRIVES)`);
  }
  const work = workSteps(options.protocol, aggregate.steps);
  const skip = request.skip ?? {};
  const violations: FieldViolation[] = [];
  for (const name of Object.keys(skip)) {
    const step = work.find((s) => s.name === name);
    if (!step) violations.push({ path: `/steps/${name}`, message: `no step of this job is named '${name}'` });
    else if (step.status === "succeeded" || step.status === "skipped")
      violations.push({ path: `/steps/${name}`, message: `the step is ${step.status} already` });
  }
  if (violations.length > 0) throw new ValidationFailedError("the redrive names steps it cannot skip", { errors: violations });

  if (request.operationId !== undefined && job.redrivenBy === request.operationId) {
    throw new InvalidTransitionError(`job ${job.jobId} was redriven by operation ${request.operationId} already`);
  }
  const reopened = {
    ...reopenJob(request.payload ? { ...job, payload: request.payload } : job, at),
    ...(request.operationId === undefined ? {} : { redrivenBy: request.operationId }),
  };
  const changed = new Map<string, Step>();
  for (const step of work) {
    const result = skip[step.name];
    if (result !== undefined) changed.set(step.stepId, succeedByOperator(step, result, at));
    else if (step.status === "failed" || step.status === "cancelled") {
      changed.set(step.stepId, step.map === undefined ? reopenStep(step, at) : reopenMap(step, request.mapChildren?.[step.stepId], at));
    }
  }
  let steps = aggregate.steps.map((s) => changed.get(s.stepId) ?? s);
  const outbox: OutboxEntry[] = [];
  // A step that ran before had its predecessors done, and done steps stay done: it goes out now,
  // with its next attempt. A step that never ran is left to `advance`, like any other.
  for (const step of [...changed.values()]) {
    // A map step runs again through its children (the job writer fills it up); a map that never
    // started (its list was missing) starts anew.
    if (step.status !== "pending" || step.attempts === 0 || step.map !== undefined) continue;
    const results = resultsFor(options.protocol, steps, step.index);
    const issued = redispatch({ ...aggregate, job: reopened }, step, results, { ...options, traceFrom: step });
    changed.set(step.stepId, issued.step);
    outbox.push(issued.entry);
    steps = steps.map((s) => (s.stepId === step.stepId ? issued.step : s));
  }
  const next = advance({ job: reopened, steps, outbox: [...aggregate.outbox, ...outbox] }, { ...options, traceparent: null });
  const all = merge([...changed.values()], next.steps);
  if (next.failed) {
    const failed = failJob({ job: reopened, steps, outbox: [...aggregate.outbox, ...outbox] }, next.failed, options);
    return { job: failed.job, steps: merge(all, failed.steps), outbox: [...outbox, ...next.outbox, ...failed.outbox] };
  }
  if (next.done) return { job: finishJob(reopened, "succeeded", at), steps: all, outbox: [] };
  return { job: reopened, steps: all, outbox: [...outbox, ...next.outbox] };
}

/**
 * A map step that started, back to running: the children that succeeded keep their results and
 * count (taken afresh from them); the others run again with their next attempt, then the items never reached.
 */
function reopenMap(step: Step, children: MapChildren | undefined, at: string): Step {
  if (children === undefined) throw new Error(`redrive of map step ${step.stepId} needs its children read first`);
  return {
    ...reopenStep(step, at),
    status: "initiated",
    startedAt: step.startedAt,
    map: { ...countedAfresh(step.map!, children.succeeded), running: 0, failed: 0, failedItems: [], rerun: children.rerun },
  };
}

/** A job that has not ended stops dispatching anything new; its running steps go on. */
export function pauseJob(aggregate: JobAggregate, now: Date): RepairChange {
  const { job } = aggregate;
  if (hasJobEnded(job)) throw new InvalidTransitionError(`job ${job.jobId} is ${job.status}: only a job that has not ended can be paused`);
  if (job.paused) throw new InvalidTransitionError(`job ${job.jobId} is paused already`);
  return { job: { ...job, paused: true, updatedAt: now.toISOString() }, steps: [], outbox: [] };
}

/** A paused job dispatches what became ready while it was paused. */
export function resumeJob(aggregate: JobAggregate, options: RepairOptions): RepairChange {
  const { job } = aggregate;
  if (hasJobEnded(job)) throw new InvalidTransitionError(`job ${job.jobId} is ${job.status}: it has ended`);
  if (!job.paused) throw new InvalidTransitionError(`job ${job.jobId} is not paused`);
  const resumed = { ...job, paused: false, updatedAt: options.now.toISOString() };
  const next = advance({ ...aggregate, job: resumed }, { ...options, traceparent: aggregate.outbox.at(-1)?.traceparent ?? null });
  if (next.failed) {
    const failed = failJob({ ...aggregate, job: resumed }, next.failed, options);
    return { job: failed.job, steps: merge(next.steps, failed.steps), outbox: [...next.outbox, ...failed.outbox] };
  }
  if (next.done) return { job: finishJob(resumed, "succeeded", options.now.toISOString()), steps: next.steps, outbox: [] };
  return { job: resumed, steps: next.steps, outbox: next.outbox };
}

/** `later` wins over `earlier` for a step in both. */
function merge(earlier: readonly Step[], later: readonly Step[]): Step[] {
  return [...earlier.filter((s) => !later.some((l) => l.stepId === s.stepId)), ...later];
}
