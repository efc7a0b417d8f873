/**
 * Fail-fast, as pure functions: a step that failed for good fails its job, the other open steps
 * are cancelled and unsent directives withdrawn, and the protocol's `onFailure` step is
 * dispatched once with the failure and every result so far.
 */
import { issueDirective } from "./directives.ts";
import { definitionOf, isCompensation, resultsOf, workSteps } from "./graph.ts";
import type { Job, JobAggregate, JobFailure, JsonObject, OutboxEntry, Protocol, Step } from "./model.ts";
import { cancelStep, finishJob, withdrawEntry } from "./transitions.ts";
import { isWebhook } from "./webhooks.ts";

export interface ApplyOptions {
  protocol: Protocol | undefined;
  now: Date;
  retryDelaySeconds: number;
}

/** The job failed by `failed` (already failed, not yet in `aggregate`): the rest cancelled, the compensation dispatched. */
export function failJob(aggregate: JobAggregate, failed: Step, options: ApplyOptions): { job: Job; steps: Step[]; outbox: OutboxEntry[] } {
  const now = options.now.toISOString();
  const rest = cancelRest(aggregate, now, failed.stepId, options.protocol);
  const compensation = compensate({ ...aggregate, steps: aggregate.steps.map((s) => (s.stepId === failed.stepId ? failed : s)) }, failed, options);
  return {
    job: finishJob(aggregate.job, "failed", now),
    steps: [failed, ...rest.steps, ...compensation.steps],
    outbox: [...rest.outbox, ...compensation.outbox],
  };
}

/**
 * The protocol's `onFailure`, once, when its job fails: its directive carries the failure and
 * every result so far. Nothing when the protocol has none (or it was dispatched already).
 */
export function compensate(aggregate: JobAggregate, failed: Step, options: ApplyOptions): { steps: Step[]; outbox: OutboxEntry[] } {
  const protocol = options.protocol;
  const step = aggregate.steps.find((s) => isCompensation(protocol, s));
  // Dispatched already: attempted, with its directive (on `table` a change cut short can leave the step marked and its directive unwritten).
  const dispatched = step !== undefined && step.attempts > 0 && aggregate.outbox.some((o) => o.stepId === step.stepId);
  if (!protocol || !step || step.status !== "pending" || dispatched) return { steps: [], outbox: [] };
  const results = resultsOf(
    aggregate.steps,
    workSteps(protocol, aggregate.steps).map((s) => s.index),
  );
  const failure = { step: failed.name, error: failed.error! };
  const issued = redispatch(aggregate, step, results, { ...options, traceFrom: failed, failure });
  return { steps: [issued.step], outbox: [issued.entry] };
}

/** The next directive of `step` under its protocol definition, traced like the step that led to it. */
export function redispatch(
  aggregate: JobAggregate,
  step: Step,
  results: Record<string, JsonObject>,
  options: ApplyOptions & { traceFrom: Step; failure?: JobFailure },
) {
  const definition = definitionOf(options.protocol, step.index);
  return issueDirective({
    ...(options.failure ? { failure: options.failure } : {}),
    job: aggregate.job,
    step,
    results,
    rule: definition?.partitionKey ?? { kind: "jobId" },
    timeoutSeconds: definition?.timeoutSeconds ?? 0,
    heartbeatSeconds: definition?.heartbeatSeconds,
    traceparent: aggregate.outbox.find((o) => o.stepId === options.traceFrom.stepId)?.traceparent ?? null,
    now: options.now,
    retryDelaySeconds: options.retryDelaySeconds,
  });
}

/** The open steps but `except` cancelled (and but the compensation step, unless `keepCompensationOf` is null: a cancel); unsent directives withdrawn. */
export function cancelRest(aggregate: JobAggregate, now: string, except: string | null, keepCompensationOf: Protocol | undefined | null) {
  return {
    steps: aggregate.steps
      .filter(
        (s) =>
          s.stepId !== except &&
          !(keepCompensationOf !== null && isCompensation(keepCompensationOf, s)) &&
          (s.status === "pending" || s.status === "initiated"),
      )
      .map((s) => cancelStep(s, now)),
    // A webhook delivery reports what happened: the job's end does not take it back.
    outbox: aggregate.outbox
      .filter((o) => o.status === "pending" && !isWebhook(o))
      .map((o) => withdrawEntry(o, "job ended before this directive was sent", now)),
  };
}
