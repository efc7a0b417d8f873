/** The operator's view of the outbox: list, stats, retry. No HTTP here. */
import { InvalidTransitionError, NotFoundError, PublishingDisabledError } from "../domain/errors.ts";
import { isChildStepId, jobIdOfOutbox } from "../domain/ids.ts";
import type { OutboxEntry, OutboxStatus, OutboxWork, Page } from "../domain/model.ts";
import { hasJobEnded, resetFailedEntry } from "../domain/transitions.ts";
import type { Dispatcher } from "../outbox/dispatcher.ts";
import { leaseAndPublish } from "../outbox/lease.ts";
import type { Sweeper } from "../outbox/sweeper.ts";
import type { JobStore, OutboxStats } from "../storage/job-store.ts";

export interface AdminServiceOptions {
  store: JobStore;
  dispatcher: Dispatcher | null;
  /** Runs the operator's "retry all" drains; null (like dispatcher) when nothing is published. */
  drainer: Pick<Sweeper, "drainAll"> | null;
  leaseSeconds: number;
  now?: () => Date;
}

export interface RetryAllResult {
  /** Pending entries when the drain started: what it will publish, besides what arrives meanwhile. */
  scheduled: number;
  /** Failed entries started over with a fresh attempt count. */
  failedReset: number;
}

export function createAdminService(options: AdminServiceOptions) {
  const { store } = options;
  const now = options.now ?? (() => new Date());

  const disabled = () => new PublishingDisabledError("LUCIUS_SERVICEBUS_CONNECTION is not set: nothing can be published");

  function dispatcher(): Dispatcher {
    if (!options.dispatcher) throw disabled();
    return options.dispatcher;
  }

  function drainer(): Pick<Sweeper, "drainAll"> {
    if (!options.drainer) throw disabled();
    return options.drainer;
  }

  /** failed → pending with a fresh attempt count; the entry as stored. */
  async function reset(work: OutboxWork, at: Date): Promise<OutboxWork> {
    const saved = await store.saveChanges(work.job.jobId, { outbox: [resetFailedEntry(work.entry, at.toISOString())] });
    return { ...work, entry: saved.outbox[0]! };
  }

  async function workOf(entry: OutboxEntry): Promise<OutboxWork | null> {
    // A map step's child is read apart from its job (see JobStore.getJob).
    const [aggregate, child] = await Promise.all([
      store.getJob(entry.jobId),
      isChildStepId(entry.stepId) ? store.getChildren(entry.jobId, [entry.stepId]) : Promise.resolve(null),
    ]);
    const current = (child ? child.outbox : aggregate?.outbox)?.find((o) => o.outboxId === entry.outboxId);
    const step = (child ? child.steps : aggregate?.steps)?.find((s) => s.stepId === entry.stepId);
    return aggregate && current && step ? { job: aggregate.job, step, entry: current } : null;
  }

  return {
    list(status: OutboxStatus, limit: number, cursor: string | null): Promise<Page<OutboxEntry>> {
      return store.listOutbox(status, { limit, cursor });
    },

    stats(): Promise<OutboxStats> {
      return store.outboxStats(now());
    },

    /**
     * Starts publishing every pending entry now, whatever its due time, in the background (and
     * first resets up to `limit` failed ones, when asked); answers at once with what it scheduled.
     * The progress shows in the stats, the metrics and the sweeper's log lines.
     */
    async retryAll(limit: number, includeFailed: boolean): Promise<RetryAllResult> {
      const publishing = drainer();
      let failedReset = 0;
      if (includeFailed) {
        const at = now();
        for (let cursor: string | null = null, left = limit; left > 0; ) {
          const page: Page<OutboxEntry> = await store.listOutbox("failed", { limit: Math.min(left, 100), cursor });
          const found = await Promise.all(page.items.map(workOf));
          // A directive withdrawn because its job ended stays withdrawn.
          const retryable = found.filter((work): work is OutboxWork => work !== null && work.entry.status === "failed" && !hasJobEnded(work.job));
          await Promise.all(retryable.map((work) => reset(work, at)));
          failedReset += retryable.length;
          left -= page.items.length;
          if (page.nextCursor === null || page.items.length === 0) break;
          cursor = page.nextCursor;
        }
      }
      const { pending } = await store.outboxStats(now());
      void publishing.drainAll().catch(() => {});
      return { scheduled: pending, failedReset };
    },

    /** Publishes one entry now; a failed one starts over with a fresh attempt count. */
    async retryOne(outboxId: string): Promise<{ outboxId: string; status: string }> {
      const publishing = dispatcher();
      const jobId = jobIdOfOutbox(outboxId);
      const stepId = outboxId.replace(/\.d\d+$/, "");
      const found = jobId ? await workOf({ jobId, stepId, outboxId } as OutboxEntry) : null;
      if (!found) throw new NotFoundError(`outbox entry ${outboxId} does not exist`);
      const { job, step, entry } = found;
      if (entry.status === "sent") throw new InvalidTransitionError(`outbox entry ${outboxId} was sent already`);
      if (entry.status === "withdrawn") throw new InvalidTransitionError(`outbox entry ${outboxId} was withdrawn: its job ended before it was sent`);
      // A failed job's compensation step still runs: its directive may be retried.
      if (hasJobEnded(job) && !(job.status === "failed" && step.compensation))
        throw new InvalidTransitionError(`job ${job.jobId} is ${job.status}: its directives are not sent any more`);
      const at = now();
      let work: OutboxWork = found;
      if (entry.status === "failed") work = await reset(work, at);
      await leaseAndPublish([work], { store, dispatcher: publishing, leaseSeconds: options.leaseSeconds, now: at });
      const after = (await workOf(entry))?.entry;
      return { outboxId, status: after?.status ?? entry.status };
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
