/**
 * What a change cut short left undone, derived from the job as stored. On `table` a change's rows
 * are written one after the other (steps, then the job's row), so a lost race or a crash midway
 * can leave a step ended whose consequences were never written: a step failed for good in a job
 * still running, a failed job whose siblings still run and whose compensation never went out, or
 * successors never dispatched. Whoever touches the job next (the retry after the lost race, the
 * repeat of the event, a deadline) completes it first. On `memory` and `ledger` every change lands
 * whole and this finds nothing.
 */
import { type ApplyOptions, cancelRest, compensate, failJob } from "./fail-fast.ts";
import { isCompensation } from "./graph.ts";
import type { Job, JobAggregate, OutboxEntry, Step } from "./model.ts";
import { advance } from "./plan-job.ts";
import { finishJob, hasJobEnded } from "./transitions.ts";

export type CatchUp = { job?: Job; steps: Step[]; outbox: OutboxEntry[] };

export function catchUp(aggregate: JobAggregate, options: ApplyOptions): CatchUp | null {
  const { job } = aggregate;
  const { protocol } = options;
  // A job whose steps are not the protocol's (it changed since the job started) is left alone:
  // what its graph implies is unknown.
  if (!protocol || aggregate.steps.some((s) => (isCompensation(protocol, s) ? protocol.onFailure?.name : protocol.steps[s.index]?.name) !== s.name))
    return null;
  const failed = aggregate.steps.find((s) => s.status === "failed" && !isCompensation(protocol, s));
  if (job.status === "failed") return failed ? settleFailed(aggregate, failed, options) : null;
  if (hasJobEnded(job)) return null;
  // Fail-fast that never happened: the step's row was written, its job's was not.
  if (failed) return failJob(aggregate, failed, options);
  const traceparent = aggregate.outbox.at(-1)?.traceparent ?? null;
  const next = advance(aggregate, { protocol, now: options.now, retryDelaySeconds: options.retryDelaySeconds, traceparent });
  if (next.failed) return failJob(aggregate, next.failed, options);
  if (next.done) return { job: finishJob(job, "succeeded", options.now.toISOString()), steps: next.steps, outbox: [] };
  return next.steps.length > 0 ? { job: touched(job, options), steps: next.steps, outbox: next.outbox } : null;
}

/**
 * The job's row comes along, conditionally, even when only steps change: a change still being
 * written (its job's row last) then loses its race and decides again, instead of overwriting
 * what this one did.
 */
function touched(job: Job, options: ApplyOptions): Job {
  return { ...job, updatedAt: options.now.toISOString() };
}

/** A failed job: its other open steps cancelled, unsent directives withdrawn (but its compensation's), the compensation dispatched once. */
function settleFailed(aggregate: JobAggregate, failed: Step, options: ApplyOptions): CatchUp | null {
  const compensationStep = aggregate.steps.find((s) => isCompensation(options.protocol, s));
  const rest = cancelRest(aggregate, options.now.toISOString(), failed.stepId, options.protocol);
  const withdrawn = rest.outbox.filter((entry) => entry.stepId !== compensationStep?.stepId);
  const compensation = compensate(aggregate, failed, options);
  if (rest.steps.length === 0 && withdrawn.length === 0 && compensation.steps.length === 0) return null;
  return { job: touched(aggregate.job, options), steps: [...rest.steps, ...compensation.steps], outbox: [...withdrawn, ...compensation.outbox] };
}
