/**
 * What a passed step deadline does to a job, as one pure function. The deadline of an attempt is
 * set when its directive is issued. While a broker is configured it counts from the publish: an
 * attempt whose directive is still waiting for the broker has not reached any worker, so its
 * deadline moves on instead of spending an attempt. A passed deadline is a failed, retryable
 * attempt: the step is dispatched again while it has attempts left, else it fails `timed-out`,
 * the job fails, and what never ran is cancelled.
 */

import { heardFrom, withDeadlines } from "./directives.ts";
import { definitionOf, isCompensation, resultsFor } from "./graph.ts";
import { directiveIdFor } from "./ids.ts";
import { isCovered } from "./map-step.ts";
import type { Job, JobAggregate, OutboxEntry, Step, StepError } from "./model.ts";
import { type ApplyOptions, childDone, endAttempt, mapGone, retryChild } from "./step-events.ts";
import { failStep, hasJobEnded, hasStepEnded } from "./transitions.ts";

/** The error a step records when an attempt ran out of time. */
export const TIMED_OUT = "timed-out";
/** The error a step records when its worker went quiet for longer than its heartbeat. */
export const HEARTBEAT_MISSED = "heartbeat-missed";

export interface DeadlineOptions extends ApplyOptions {
  /** Directives are published to a broker: an attempt's time starts when its directive is sent. */
  countFromSend: boolean;
}

export type DeadlineOutcome =
  /** Nothing to do: the step ended, or its deadline is still ahead. */
  | { outcome: "not-due" }
  /** The attempt had not had its time yet (its directive waits for the broker, or went out late): a later deadline. */
  | { outcome: "extended"; steps: Step[] }
  /** The attempt is over: another directive, or the step and its job failed. */
  | { outcome: "timed-out"; retried: boolean; job?: Job; steps: Step[]; outbox: OutboxEntry[] };

export function expireStep(aggregate: JobAggregate, stepId: string, options: DeadlineOptions): DeadlineOutcome {
  const { job } = aggregate;
  const step = aggregate.steps.find((s) => s.stepId === stepId);
  const now = options.now.toISOString();
  if (!step || hasStepEnded(step) || step.deadlineAt === null || step.deadlineAt > now) return { outcome: "not-due" };
  // After its job ended only the compensation step (of a failed job) still runs.
  if (hasJobEnded(job) && !(job.status === "failed" && isCompensation(options.protocol, step))) return { outcome: "not-due" };

  const definition = definitionOf(options.protocol, step.index);
  const timeoutSeconds = definition?.timeoutSeconds ?? 0;
  const heartbeatSeconds = definition?.heartbeatSeconds;
  // The protocol no longer gives the step a deadline (changed since it was dispatched).
  if (timeoutSeconds === 0 && !heartbeatSeconds) return { outcome: "extended", steps: [{ ...step, deadlineAt: null, updatedAt: now }] };
  const extended = extendedDeadline(step, aggregate.outbox, timeoutSeconds, heartbeatSeconds, options);
  if (extended) return { outcome: "extended", steps: [extended] };

  const error = passedError(step, timeoutSeconds, heartbeatSeconds, now);
  const change = endAttempt(aggregate, step, error, options);
  return { outcome: "timed-out", retried: change.outbox.some((o) => o.stepId === step.stepId && o.status === "pending"), ...change };
}

/** The error of a passed deadline: the whole attempt's time (`timed-out`), or its heartbeat (`heartbeat-missed`). */
function passedError(step: Step, timeoutSeconds: number, heartbeatSeconds: number | undefined, now: string): StepError {
  const attemptOver = !heartbeatSeconds || (step.attemptDeadlineAt !== undefined && step.attemptDeadlineAt !== null && step.attemptDeadlineAt <= now);
  if (attemptOver) return { code: TIMED_OUT, message: `attempt ${step.attempts} did not finish within ${timeoutSeconds} s`, retryable: true };
  return { code: HEARTBEAT_MISSED, message: `attempt ${step.attempts} sent no event for ${heartbeatSeconds} s`, retryable: true };
}

/**
 * With a broker, an attempt's time counts from its publish: while its directive waits, or when it
 * went out late, the step gets a later deadline instead of losing the attempt; null otherwise. A
 * heartbeat counts from the later of the publish and the worker's last report.
 */
function extendedDeadline(
  step: Step,
  outbox: readonly OutboxEntry[],
  timeoutSeconds: number,
  heartbeatSeconds: number | undefined,
  options: DeadlineOptions,
): Step | null {
  if (!options.countFromSend) return null;
  const now = options.now.toISOString();
  const directive = outbox.find((o) => o.outboxId === directiveIdFor(step.stepId, step.attempts - 1));
  if (directive?.status === "pending") return { ...withDeadlines(step, options.now, timeoutSeconds, heartbeatSeconds), updatedAt: now };
  if (!directive?.sentAt) return null;
  const sentAt = new Date(directive.sentAt);
  const fromSend = withDeadlines(step, sentAt, timeoutSeconds, heartbeatSeconds);
  const heard = step.progress && step.progress.at > directive.sentAt ? heardFrom(fromSend, new Date(step.progress.at), heartbeatSeconds) : fromSend;
  return heard.deadlineAt !== null && heard.deadlineAt > now ? { ...heard, updatedAt: now } : null;
}

/**
 * A passed deadline of a map step's child: like a step's (a later deadline while its directive
 * waits for the broker, another attempt while it has some), but a child that runs out of
 * attempts fails only itself; what that does to its map step is the map's to decide.
 */
export function expireChild(
  aggregate: JobAggregate,
  child: Step,
  childOutbox: readonly OutboxEntry[],
  options: DeadlineOptions,
  children?: readonly Step[],
): DeadlineOutcome | { outcome: "needs-children" } {
  const { job } = aggregate;
  const now = options.now.toISOString();
  const parent = aggregate.steps.find((s) => s.index === child.index);
  const definition = definitionOf(options.protocol, child.index);
  if (hasJobEnded(job) || hasStepEnded(child) || child.deadlineAt === null || child.deadlineAt > now) return { outcome: "not-due" };
  if (!parent?.map || hasStepEnded(parent)) return { outcome: "not-due" };
  // Past the cursor: written by a change that lost its race (`table`), never dispatched.
  if (child.itemIndex !== undefined && !isCovered(parent.map, child.itemIndex)) return { outcome: "not-due" };
  // The protocol no longer maps this step: the job ends rather than wait for ever.
  if (!definition?.map) return { outcome: "timed-out", retried: false, ...mapGone(aggregate, parent, options) };
  const { timeoutSeconds, heartbeatSeconds } = definition;
  if (timeoutSeconds === 0 && !heartbeatSeconds) return { outcome: "extended", steps: [{ ...child, deadlineAt: null, updatedAt: now }] };
  const extended = extendedDeadline(child, childOutbox, timeoutSeconds, heartbeatSeconds, options);
  if (extended) return { outcome: "extended", steps: [extended] };
  const error = passedError(child, timeoutSeconds, heartbeatSeconds, now);
  const map = { ...definition, map: definition.map };
  const context = {
    job,
    results: resultsFor(options.protocol, aggregate.steps, parent.index),
    traceparent: childOutbox[0]?.traceparent ?? null,
    now: options.now,
    retryDelaySeconds: options.retryDelaySeconds,
  };
  const retried = retryChild(job, child, error, map, context);
  if (retried) return { outcome: "timed-out", retried: true, steps: [retried.step], outbox: [retried.entry] };
  const done = childDone(aggregate, parent, failStep(child, error, now), map, options, context, {}, children);
  return "outcome" in done ? done : { outcome: "timed-out", retried: false, ...done };
}
