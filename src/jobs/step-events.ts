/**
 * Step events from workers (over HTTP or Service Bus, one function for both), passed deadlines
 * and cancellation: read the job, let the pure rules decide, write the change conditionally, hand
 * new directives to the dispatcher. A lost race re-reads and decides again.
 */
import { type Caller, holdsTenant, OPEN_CALLER } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { ConcurrencyConflictError, InvalidTransitionError, NotFoundError } from "../domain/errors.ts";
import type { JobAggregate, OutboxWork } from "../domain/model.ts";
import { type DeadlineOutcome, expireStep } from "../domain/step-deadlines.ts";
import { applyStepEvent, cancelJob, type StepEvent } from "../domain/step-events.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import type { JobStore, SavedChanges } from "../storage/job-store.ts";

export interface StepEventResult {
  jobId: string;
  stepId: string;
  eventId: string;
  outcome: "applied" | "duplicate" | "ignored";
  reason?: string;
  jobStatus: string;
  stepStatus: string;
}

export interface StepEventServiceOptions {
  store: JobStore;
  protocols: ProtocolRegistry;
  dispatcher: Dispatcher | null;
  retryDelaySeconds: number;
  now?: () => Date;
}

/** What a passed deadline did: nothing (the step moved on), a later deadline, another attempt, or a failed job. */
export type DeadlineResult = DeadlineOutcome["outcome"] | "retried";

const ATTEMPTS = 5;

export function createStepEventService(options: StepEventServiceOptions) {
  const { store, dispatcher } = options;
  const now = options.now ?? (() => new Date());

  /** The job, when it exists for this caller: another tenant's job is not found. */
  async function load(jobId: string, caller: Caller): Promise<JobAggregate> {
    const aggregate = await store.getJob(jobId);
    if (!aggregate || !holdsTenant(caller, aggregate.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
    return aggregate;
  }

  /** Publishes the directives a change created, on the fast path (the sweeper backs it up). */
  function dispatchCreated(before: JobAggregate, saved: SavedChanges): void {
    if (!dispatcher) return;
    const job = saved.job ?? before.job;
    const work: OutboxWork[] = saved.outbox
      .filter((entry) => entry.status === "pending" && !before.outbox.some((o) => o.outboxId === entry.outboxId))
      .flatMap((entry) => {
        const step = saved.steps.find((s) => s.stepId === entry.stepId) ?? before.steps.find((s) => s.stepId === entry.stepId);
        return step ? [{ job, step, entry }] : [];
      });
    if (work.length > 0) dispatcher.dispatch(work);
  }

  /** Runs `decide` against the current job until its write wins. */
  async function withRetries<T>(jobId: string, caller: Caller, decide: (aggregate: JobAggregate) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await decide(await load(jobId, caller));
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError) || attempt >= ATTEMPTS) throw error;
      }
    }
  }

  return {
    /** `caller`: who reports over HTTP; the Service Bus receiver's channel is trusted (OPEN_CALLER). */
    async handle(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
      return withRetries(jobId, caller, async (aggregate) => {
        const step = aggregate.steps.find((s) => s.stepId === stepId);
        if (!step) throw new NotFoundError(`job ${jobId} has no step ${stepId}`);
        const decided = applyStepEvent(aggregate, stepId, event, {
          protocol: options.protocols.get(aggregate.job.requestType),
          now: now(),
          retryDelaySeconds: options.retryDelaySeconds,
        });
        const base = { jobId, stepId, eventId: event.eventId };
        if (decided.outcome !== "applied") {
          return {
            ...base,
            outcome: decided.outcome,
            ...(decided.outcome === "ignored" ? { reason: decided.reason } : {}),
            jobStatus: aggregate.job.status,
            stepStatus: step.status,
          };
        }
        const saved = await store.saveChanges(jobId, { ...(decided.job ? { job: decided.job } : {}), steps: decided.steps, outbox: decided.outbox });
        dispatchCreated(aggregate, saved);
        const after = saved.steps.find((s) => s.stepId === stepId) ?? step;
        return { ...base, outcome: "applied", jobStatus: (saved.job ?? aggregate.job).status, stepStatus: after.status };
      });
    },

    /**
     * A step whose deadline the index says has passed: decided against the job as it is now, so
     * a replica that got there first, or a worker's late answer, leaves nothing to do.
     */
    async expire(jobId: string, stepId: string): Promise<DeadlineResult> {
      return withRetries(jobId, OPEN_CALLER, async (aggregate) => {
        const decided = expireStep(aggregate, stepId, {
          protocol: options.protocols.get(aggregate.job.requestType),
          now: now(),
          retryDelaySeconds: options.retryDelaySeconds,
          countFromSend: dispatcher !== null,
        });
        if (decided.outcome === "not-due") return decided.outcome;
        const outbox = decided.outcome === "timed-out" ? decided.outbox : [];
        const saved = await store.saveChanges(jobId, {
          ...(decided.outcome === "timed-out" && decided.job ? { job: decided.job } : {}),
          steps: decided.steps,
          outbox,
        });
        dispatchCreated(aggregate, saved);
        return decided.outcome === "timed-out" && decided.retried ? "retried" : decided.outcome;
      });
    },

    async cancel(jobId: string, caller: Caller): Promise<{ jobId: string; status: string }> {
      return withRetries(jobId, caller, async (aggregate) => {
        const change = cancelJob(aggregate, now());
        if (!change) throw new InvalidTransitionError(`job ${jobId} has already ended: ${aggregate.job.status}`);
        const saved = await store.saveChanges(jobId, change);
        return { jobId, status: saved.job?.status ?? change.job.status };
      });
    },
  };
}

export type StepEventService = ReturnType<typeof createStepEventService>;
