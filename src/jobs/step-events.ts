/**
 * Step events from workers (over HTTP or Service Bus, one function for both), passed deadlines
 * and cancellation: read the job, let the pure rules decide, write the change conditionally, hand
 * new directives to the dispatcher. A lost race re-reads and decides again.
 */
import { type Caller, holdsTenant, OPEN_CALLER } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { ConcurrencyConflictError, InvalidTransitionError, NotFoundError } from "../domain/errors.ts";
import { definitionOf } from "../domain/graph.ts";
import { isChildStepId } from "../domain/ids.ts";
import { CHILDREN_PER_CHANGE, fillMap, wantsChildren } from "../domain/map-step.ts";
import type { Job, JobAggregate, OutboxEntry, OutboxWork, Step } from "../domain/model.ts";
import { type DeadlineOutcome, expireChild, expireStep } from "../domain/step-deadlines.ts";
import { applyChildEvent, applyStepEvent, cancelJob, type StepEvent } from "../domain/step-events.ts";
import { cancelStep, hasJobEnded, withdrawEntry } from "../domain/transitions.ts";
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
/** For a map step's children, whose events all write the map step's row. */
const CHILD_ATTEMPTS = 25;
/** Children read per page when a map's last child ended. */
const CHILDREN_PAGE = 1000;
/** Fill-up changes after one event, at most (each adds up to CHILDREN_PER_CHANGE children). */
const MAX_FILL_ROUNDS = 25;

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

  /**
   * Runs `decide` against the current job until its write wins. The children of a map step all
   * count on its row, so their events race for it: more attempts, after a short random pause.
   */
  async function withRetries<T>(jobId: string, caller: Caller, decide: (aggregate: JobAggregate) => Promise<T>, attempts = ATTEMPTS): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await decide(await load(jobId, caller));
      } catch (error) {
        if (!(error instanceof ConcurrencyConflictError) || attempt >= attempts) throw error;
        if (attempts > ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
      }
    }
  }

  /** A map step's child, read apart from its job (see JobStore.getJob), with its directives. */
  async function loadChild(jobId: string, stepId: string) {
    const read = await store.getChildren(jobId, [stepId]);
    const child = read.steps[0];
    if (!child) throw new NotFoundError(`job ${jobId} has no step ${stepId}`);
    return { child, childOutbox: read.outbox };
  }

  /** Stores a decided change, hands its new directives to the dispatcher, and does what follows it. */
  async function commit(before: JobAggregate, change: { job?: Job; steps: Step[]; outbox: OutboxEntry[] }): Promise<SavedChanges> {
    const { jobId } = before.job;
    const saved = await store.saveChanges(jobId, { ...(change.job ? { job: change.job } : {}), steps: change.steps, outbox: change.outbox });
    dispatchCreated(before, saved);
    await afterChange(before, saved);
    return saved;
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
        if (decided.outcome !== "applied") {
          return {
            ...base,
            outcome: decided.outcome,
            ...(decided.outcome === "ignored" ? { reason: decided.reason } : {}),
            jobStatus: aggregate.job.status,
            stepStatus: child.status,
          };
        }
        const saved = await commit({ ...aggregate, outbox: [...aggregate.outbox, ...childOutbox] }, decided);
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
      await commit({ ...aggregate, outbox: [...aggregate.outbox, ...childOutbox] }, decided.outcome === "timed-out" ? decided : { ...decided, outbox: [] });
      return decided.outcome === "timed-out" && decided.retried ? "retried" : decided.outcome;
    });
  }

  /**
   * After a stored change: a map step still short of its children gets more (a change each, up
   * to CHILDREN_PER_CHANGE), and a job that ended has its maps' unsent child directives withdrawn
   * and their open children cancelled. Both are best effort: a child's end fills a map up too,
   * and the retry loop withdraws, instead of publishing, a child directive of an ended job.
   */
  async function afterChange(before: JobAggregate, saved: SavedChanges): Promise<void> {
    const { job } = before;
    const { jobId } = job;
    const protocol = options.protocols.get(job.requestType);
    const short = (s: Step) => {
      const map = definitionOf(protocol, s.index)?.map;
      return map !== undefined && wantsChildren(s, map);
    };
    try {
      if (saved.job && hasJobEnded(saved.job)) {
        // Only map steps have children to close: other jobs cost nothing more here.
        const maps = new Set([...before.steps, ...saved.steps].filter((s) => s.map !== undefined).map((s) => s.index));
        if (maps.size > 0) await closeChildren(jobId, [...maps]);
      } else if (saved.steps.some(short)) await fillMaps(jobId);
    } catch (error) {
      if (!(error instanceof ConcurrencyConflictError)) throw error;
      // Another writer moved the job on: it fills or closes in turn.
    }
  }

  async function fillMaps(jobId: string): Promise<void> {
    for (let round = 0; round < MAX_FILL_ROUNDS; round++) {
      const aggregate = await store.getJob(jobId);
      if (!aggregate || hasJobEnded(aggregate.job)) return;
      const protocol = options.protocols.get(aggregate.job.requestType);
      const change = fillMap(aggregate, { protocol, now: now(), retryDelaySeconds: options.retryDelaySeconds });
      if (!change) return;
      const saved = await store.saveChanges(jobId, change);
      dispatchCreated(aggregate, saved);
    }
  }

  /** Cancels the open children of the given map steps of an ended job, and withdraws their unsent directives. */
  async function closeChildren(jobId: string, mapIndexes: readonly number[]): Promise<void> {
    const at = now().toISOString();
    for (const index of mapIndexes) {
      for (let conflicts = 0; ; ) {
        const open = await store.listChildren(jobId, index, 0, CHILDREN_PER_CHANGE, true);
        if (open.length === 0) break;
        const { outbox } = await store.getChildren(
          jobId,
          open.map((c) => c.stepId),
        );
        try {
          await store.saveChanges(jobId, {
            steps: open.map((c) => cancelStep(c, at)),
            outbox: outbox.filter((o) => o.status === "pending").map((o) => withdrawEntry(o, "job ended before this directive was sent", at)),
          });
        } catch (error) {
          // A child's publish outcome landed meanwhile: list again and retry.
          if (!(error instanceof ConcurrencyConflictError) || ++conflicts > ATTEMPTS) throw error;
        }
      }
    }
  }

  return {
    /** `caller`: who reports over HTTP; the Service Bus receiver's channel is trusted (OPEN_CALLER). */
    async handle(jobId: string, stepId: string, event: StepEvent, caller: Caller): Promise<StepEventResult> {
      if (isChildStepId(stepId)) return handleChild(jobId, stepId, event, caller);
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
        const saved = await commit(aggregate, decided);
        const after = saved.steps.find((s) => s.stepId === stepId) ?? step;
        return { ...base, outcome: "applied", jobStatus: (saved.job ?? aggregate.job).status, stepStatus: after.status };
      });
    },

    /**
     * A step whose deadline the index says has passed: decided against the job as it is now, so
     * a replica that got there first, or a worker's late answer, leaves nothing to do.
     */
    async expire(jobId: string, stepId: string): Promise<DeadlineResult> {
      if (isChildStepId(stepId)) return expireChildStep(jobId, stepId);
      return withRetries(jobId, OPEN_CALLER, async (aggregate) => {
        const decided = expireStep(aggregate, stepId, {
          protocol: options.protocols.get(aggregate.job.requestType),
          now: now(),
          retryDelaySeconds: options.retryDelaySeconds,
          countFromSend: dispatcher !== null,
        });
        if (decided.outcome === "not-due") return decided.outcome;
        await commit(aggregate, decided.outcome === "timed-out" ? decided : { ...decided, outbox: [] });
        return decided.outcome === "timed-out" && decided.retried ? "retried" : decided.outcome;
      });
    },

    async cancel(jobId: string, caller: Caller): Promise<{ jobId: string; status: string }> {
      return withRetries(jobId, caller, async (aggregate) => {
        const change = cancelJob(aggregate, now());
        if (!change) throw new InvalidTransitionError(`job ${jobId} has already ended: ${aggregate.job.status}`);
        const saved = await commit(aggregate, change);
        return { jobId, status: saved.job?.status ?? change.job.status };
      });
    },
  };
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
