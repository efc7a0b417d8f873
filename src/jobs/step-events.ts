/**
 * Step events from workers (over HTTP or Service Bus, one function for both), passed deadlines
 * and cancellation: read the job, let the pure rules decide, write the change conditionally, hand
 * new directives to the dispatcher. A lost race re-reads and decides again.
 */
import { type Caller, OPEN_CALLER } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { InvalidTransitionError, NotFoundError } from "../domain/errors.ts";
import { type HistoryCause, SERVICE_ACTOR } from "../domain/history.ts";
import { isChildStepId } from "../domain/ids.ts";
import type { Step } from "../domain/model.ts";
import type { HubMessage } from "../domain/notices.ts";
import { type DeadlineOutcome, expireChild, expireStep } from "../domain/step-deadlines.ts";
import { applyChildEvent, applyStepEvent, cancelJob, foldEndedChild, type StepEvent } from "../domain/step-events.ts";
import { cancelStep, hasJobEnded, hasStepEnded, withdrawEntry } from "../domain/transitions.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import type { JobStore } from "../storage/job-store.ts";
import { linkActiveSpan, withSpan } from "../telemetry/tracing.ts";
import { createJobWriter, DECIDE_AFRESH } from "./job-writer.ts";

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
  /** Told after each recorded change and each progress report (streams listen). */
  announce?: (notice: HubMessage) => void;
}

/** What a passed deadline did: nothing (the step moved on), a later deadline, another attempt, or a failed job. */
export type DeadlineResult = DeadlineOutcome["outcome"] | "retried";

/** For a map step's children, whose events all write the map step's row. */
const CHILD_ATTEMPTS = 25;
/** Children read per page when a map's last child ended. */
const CHILDREN_PAGE = 1000;

/** The answer to an event that changed nothing now (a repeat, or one that came too late; see ownWrite), with the statuses it met. */
function notApplied(
  base: Pick<StepEventResult, "jobId" | "stepId" | "eventId">,
  decided: { outcome: "duplicate" | "applied" } | { outcome: "ignored"; reason: string },
  jobStatus: string,
  stepStatus: string,
): StepEventResult {
  return { ...base, outcome: decided.outcome, ...(decided.outcome === "ignored" ? { reason: decided.reason } : {}), jobStatus, stepStatus };
}

/**
 * A repeat met after this call's own write lost its race, on a store that writes a change's rows
 * one after another (`table`): most likely that write got as far as the step's row before the
 * job's (the retry completed the rest), so the event was applied. Elsewhere a lost write wrote
 * nothing, and a repeat is another request's.
 */
function ownWrite<T extends { outcome: "duplicate" } | { outcome: "ignored"; reason: string }>(
  decided: T,
  ownWriteCutShort: boolean,
): T | { outcome: "applied" } {
  return decided.outcome === "duplicate" && ownWriteCutShort ? { outcome: "applied" } : decided;
}

/** What a worker's event records in its job's history (progress reports record nothing). */
function eventCause(event: StepEvent, caller: Caller, step: string): HistoryCause | undefined {
  if (event.status === "progress") return undefined;
  return {
    action: "event",
    actor: caller.name,
    step,
    eventId: event.eventId,
    status: event.status,
    ...(event.error ? { detail: { code: event.error.code, retryable: event.error.retryable ?? false } } : {}),
  };
}

export function createStepEventService(options: StepEventServiceOptions) {
  const { store, dispatcher } = options;
  const now = options.now ?? (() => new Date());
  const writer = createJobWriter({ ...options, now });
  const { withRetries, withRecent, commit } = writer;

  /** A map step's child, read apart from its job (see JobStore.getJob), with its directives. */
  async function loadChild(jobId: string, stepId: string) {
    const read = await store.getChildren(jobId, [stepId]);
    const child = read.steps[0];
    if (!child) throw new NotFoundError(`job ${jobId} has no step ${stepId}`);
    return { child, childOutbox: read.outbox };
  }

  /** Every child of a map step, in item order (read once, when its last child ends). */
  async function allChildren(jobId: string, stepIndex: number): Promise<Step[]> {
    const children: Step[] = [];
    for (;;) {
      const page = await store.listChildren(jobId, stepIndex, children.length, CHILDREN_PAGE);
      children.push(...page);
      if (page.length < CHILDREN_PAGE) return children;
    }
  }

  /** Decides with the children only when the rule asks for them (the map's last child ended). */
  async function withChildren<T extends { outcome: string }>(
    jobId: string,
    stepIndex: number,
    decide: (children?: readonly Step[]) => T | { outcome: "needs-children" },
  ): Promise<T> {
    const first = decide();
    if (first.outcome !== "needs-children") return first as T;
    return decide(await allChildren(jobId, stepIndex)) as T;
  }

  /**
   * Events of one job's map children, one after the other in this process: they all write the map
   * step's row, and letting them race turned each into several reads and writes (a conflict, a
   * re-read, another try). Replicas still race each other; the retries settle that.
   */
  const childEvents = createKeyedQueue();

  async function handleChild(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
    return childEvents.run(jobId, () => applyChild(jobId, stepId, event, caller));
  }

  async function applyChild(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
    let wrote = false;
    return withRetries(
      jobId,
      caller,
      async (aggregate) => {
        const { child, childOutbox } = await loadChild(jobId, stepId);
        const protocol = options.protocols.get(aggregate.job.requestType);
        const decided = await withChildren(jobId, child.index, (children) =>
          applyChildEvent(aggregate, child, childOutbox, event, { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds }, children),
        );
        const base = { jobId, stepId, eventId: event.eventId };
        if (decided.outcome !== "applied")
          return notApplied(base, ownWrite(decided, wrote && store.writesRowsApart === true), aggregate.job.status, child.status);
        const cause = eventCause(event, caller, child.name);
        wrote = true;
        const saved = await commit(
          { ...aggregate, outbox: [...aggregate.outbox, ...childOutbox] },
          decided,
          cause && { ...cause, detail: { ...cause.detail, item: child.itemIndex ?? null }, onlyIfVisible: true },
        );
        const after = saved.steps.find((s) => s.stepId === stepId) ?? child;
        return { ...base, outcome: "applied", jobStatus: (saved.job ?? aggregate.job).status, stepStatus: after.status };
      },
      CHILD_ATTEMPTS,
    );
  }

  async function expireChildStep(jobId: string, stepId: string): Promise<DeadlineResult> {
    return childEvents.run(jobId, () => expireChildNow(jobId, stepId));
  }

  async function expireChildNow(jobId: string, stepId: string): Promise<DeadlineResult> {
    return withRetries(jobId, OPEN_CALLER, async (aggregate) => {
      const { child, childOutbox } = await loadChild(jobId, stepId);
      const protocol = options.protocols.get(aggregate.job.requestType);
      const before = { ...aggregate, outbox: [...aggregate.outbox, ...childOutbox] };
      // A child left open by a job that ended (its closing cut short): closed now, so that its
      // deadline marker stops coming back.
      if (hasJobEnded(aggregate.job) && !hasStepEnded(child)) {
        const at = now().toISOString();
        await commit(before, {
          steps: [cancelStep(child, at)],
          outbox: childOutbox.filter((o) => o.status === "pending").map((o) => withdrawEntry(o, "job ended before this directive was sent", at)),
        });
        return "not-due";
      }
      // The child ended but its map never counted it, and no repeat of its event came (table):
      // its deadline marker, kept for it, brings it here to be counted.
      const folded = await withChildren(
        jobId,
        child.index,
        (children) =>
          foldEndedChild(aggregate, child, childOutbox, { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds }, children) ?? {
            outcome: "not-due" as const,
          },
      );
      if (folded.outcome === "applied") {
        await commit(before, folded);
        return "not-due";
      }
      const decided = await withChildren(jobId, child.index, (children) =>
        expireChild(
          aggregate,
          child,
          childOutbox,
          { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds, countFromSend: dispatcher !== null },
          children,
        ),
      );
      if (decided.outcome === "not-due") return decided.outcome;
      if (decided.outcome === "extended") await commit(before, { ...decided, outbox: [] });
      else
        await commit(before, decided, {
          action: "deadline",
          actor: SERVICE_ACTOR,
          step: child.name,
          detail: { item: child.itemIndex ?? null },
          onlyIfVisible: true,
        });
      return decided.outcome === "timed-out" && decided.retried ? "retried" : decided.outcome;
    });
  }

  return {
    /**
     * `caller`: who reports over HTTP; the Service Bus receiver's channel is trusted (OPEN_CALLER).
     * With tracing on, one span around it: the directives it creates hang under it.
     */
    async handle(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
      const attributes = { "lucius.job.id": jobId, "lucius.step.id": stepId, "lucius.event.id": event.eventId, "lucius.event.status": event.status };
      return withSpan(`apply step-event ${event.status}`, { attributes }, async (span) => {
        const result = await handleEvent(jobId, stepId, event, caller);
        span?.setAttribute("lucius.event.outcome", result.outcome);
        return result;
      });
    },

    /**
     * A step whose deadline the index says has passed: decided against the job as it is now, so
     * a replica that got there first, or a worker's late answer, leaves nothing to do.
     */
    expire,

    async cancel(jobId: string, caller: Caller): Promise<{ jobId: string; status: string }> {
      return withRetries(jobId, caller, async (aggregate) => {
        const change = cancelJob(aggregate, now());
        if (!change) throw new InvalidTransitionError(`job ${jobId} has already ended: ${aggregate.job.status}`);
        const saved = await commit(aggregate, change, { action: "cancel", actor: caller.name });
        return { jobId, status: saved.job?.status ?? change.job.status };
      });
    },
  };

  async function handleEvent(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
    if (isChildStepId(stepId)) return handleChild(jobId, stepId, event, caller);
    let wrote = false;
    // Decided first against the job as this process last saw it (ledger): its change writes the
    // job's row, so a stale copy loses the write and the event is decided again, fresh.
    return withRecent(jobId, caller, async (aggregate, decidedOn) => {
      const kept = decidedOn === "kept copy";
      const step = aggregate.steps.find((s) => s.stepId === stepId);
      if (!step) {
        if (kept) return DECIDE_AFRESH;
        throw new NotFoundError(`job ${jobId} has no step ${stepId}`);
      }
      linkActiveSpan(aggregate.outbox.findLast((o) => o.stepId === stepId)?.traceparent);
      const decided = applyStepEvent(aggregate, stepId, event, {
        protocol: options.protocols.get(aggregate.job.requestType),
        now: now(),
        retryDelaySeconds: options.retryDelaySeconds,
      });
      const base = { jobId, stepId, eventId: event.eventId };
      if (decided.outcome !== "applied") {
        if (kept) return DECIDE_AFRESH;
        return notApplied(base, ownWrite(decided, wrote && store.writesRowsApart === true), aggregate.job.status, step.status);
      }
      // A progress report writes only its step's row: decided again fresh, it reads the job.
      if (kept && event.status === "progress") return DECIDE_AFRESH;
      wrote = true;
      const saved = await commit(aggregate, decided, eventCause(event, caller, step.name), decidedOn);
      const after = saved.steps.find((s) => s.stepId === stepId) ?? step;
      if (event.status === "progress" && after.progress) {
        const { job } = aggregate;
        writer.announce({ kind: "progress", tenantId: job.tenantId, jobId, requestType: job.requestType, step: step.name, stepId, progress: after.progress });
      }
      return { ...base, outcome: "applied", jobStatus: (saved.job ?? aggregate.job).status, stepStatus: after.status };
    });
  }

  async function expire(jobId: string, stepId: string): Promise<DeadlineResult> {
    if (isChildStepId(stepId)) return expireChildStep(jobId, stepId);
    return withRetries(jobId, OPEN_CALLER, async (aggregate) => {
      // The deadline round's span points at the job's trace (the retry is published in that trace).
      linkActiveSpan(aggregate.outbox.findLast((o) => o.stepId === stepId)?.traceparent);
      const decided = expireStep(aggregate, stepId, {
        protocol: options.protocols.get(aggregate.job.requestType),
        now: now(),
        retryDelaySeconds: options.retryDelaySeconds,
        countFromSend: dispatcher !== null,
      });
      if (decided.outcome === "not-due") return decided.outcome;
      const step = aggregate.steps.find((s) => s.stepId === stepId);
      // A deadline moved on (the attempt was not sent yet) is no change worth an entry.
      if (decided.outcome === "extended") await commit(aggregate, { ...decided, outbox: [] });
      else await commit(aggregate, decided, { action: "deadline", actor: SERVICE_ACTOR, step: step?.name ?? stepId });
      return decided.outcome === "timed-out" && decided.retried ? "retried" : decided.outcome;
    });
  }
}

export type StepEventService = ReturnType<typeof createStepEventService>;

/**
 * Runs the tasks given for one key one after the other (tasks of other keys run alongside). A
 * key is forgotten once its last task ended, so the map holds only keys with work.
 */
function createKeyedQueue() {
  const tails = new Map<string, Promise<unknown>>();
  return {
    run<T>(key: string, task: () => Promise<T>): Promise<T> {
      const previous = tails.get(key) ?? Promise.resolve();
      const next = previous.then(task, task);
      const tail = next.catch(() => {});
      tails.set(key, tail);
      void tail.then(() => {
        if (tails.get(key) === tail) tails.delete(key);
      });
      return next;
    },
  };
}
