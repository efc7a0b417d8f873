/**
 * Streams of job changes (docs/API.md, "Streams"): one job's, from a snapshot (or from the
 * change after Last-Event-ID) to its final change; or every change of a tenant's jobs. Each event
 * is a history entry, read from storage in order, so a stream has no gap and no repeat whatever
 * told it (this instance's change hub, or the change feed from another instance).
 */
import { type Caller, holdsTenant } from "../auth/caller.ts";
import type { ProtocolRegistry } from "../config/protocols.ts";
import { ForbiddenError, NotFoundError, TooManyStreamsError } from "../domain/errors.ts";
import type { HistoryEntry, JobAggregate, JobStatus } from "../domain/model.ts";
import { hasJobEnded } from "../domain/transitions.ts";
import { toView } from "../jobs/service.ts";
import type { JobStore } from "../storage/job-store.ts";
import type { ChangeHub, HubMessage } from "./change-hub.ts";
import { type SseSink, sseResponse } from "./sse.ts";

export interface StreamServiceOptions {
  store: JobStore;
  hub: ChangeHub;
  protocols: Pick<ProtocolRegistry, "get">;
  /** LUCIUS_MAX_STREAMS: streams open on this instance at most. */
  maxStreams: number;
  now?: () => Date;
}

/** History entries read per page while a stream catches up. */
const PAGE = 100;
/** What a refused stream is told to wait. */
const RETRY_AFTER_SECONDS = 5;
/** setTimeout's longest delay: a credential valid for longer is checked again then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const eventOf = (entry: HistoryEntry) => (entry.jobStatus ? "job" : "step");
const ENDED: ReadonlySet<JobStatus> = new Set(["succeeded", "failed", "cancelled"]);

/** A job is over for its stream: it ended and no step of it runs (its compensation step included). */
function isOver({ job, steps }: JobAggregate): boolean {
  return hasJobEnded(job) && !steps.some((s) => s.status === "initiated" || (s.status === "pending" && s.attempts > 0));
}

export function createStreamService(options: StreamServiceOptions) {
  const { store, hub } = options;
  const now = options.now ?? (() => new Date());
  let open = 0;

  /** A stream's slot, its bounds (credential expiry, shutdown), and its end. */
  function openStream(caller: Caller) {
    if (open >= options.maxStreams) {
      throw new TooManyStreamsError(`this instance holds ${options.maxStreams} streams (LUCIUS_MAX_STREAMS)`, { retryAfterSeconds: RETRY_AFTER_SECONDS });
    }
    open++;
    let sink: SseSink | null = null;
    const timers: ReturnType<typeof setTimeout>[] = [];
    const unlisten = [hub.onClose(() => sink?.close())];
    if (caller.expiresAtMs !== undefined)
      timers.push(setTimeout(() => sink?.close(), Math.min(MAX_TIMER_MS, Math.max(0, caller.expiresAtMs - now().getTime()))));
    return {
      bind(s: SseSink) {
        sink = s;
      },
      listen(off: () => void) {
        unlisten.push(off);
      },
      closed() {
        open--;
        for (const timer of timers) clearTimeout(timer);
        for (const off of unlisten) off();
      },
    };
  }

  return {
    /** Streams open on this instance now. */
    open: () => open,

    async jobStream(jobId: string, caller: Caller, lastEventId: string | null): Promise<Response> {
      const first = await store.getJob(jobId);
      if (!first || !holdsTenant(caller, first.job.tenantId)) throw new NotFoundError(`job ${jobId} does not exist`);
      const resumeFrom = lastEventId !== null && /^\d{1,9}$/.test(lastEventId) ? Number(lastEventId) : null;
      // A reconnect after the job's final change: 204 tells an EventSource not to come back.
      if (resumeFrom !== null && resumeFrom >= first.job.changes && isOver(first)) return new Response(null, { status: 204 });
      let last = resumeFrom ?? first.job.changes;
      let ended = hasJobEnded(first.job);
      let running: Promise<void> = Promise.resolve();
      const slot = openStream(caller);
      const { response, sink } = sseResponse({ onKeepAlive: () => catchUp(), onClose: () => slot.closed() });
      slot.bind(sink);

      const sendSnapshot = (aggregate: JobAggregate) => {
        sink.send("snapshot", toView(aggregate, options.protocols.get(aggregate.job.requestType)), String(aggregate.job.changes));
        last = aggregate.job.changes;
        ended ||= hasJobEnded(aggregate.job);
      };
      /** Sends every entry after `last`, in order; ends the stream after the job's final change. */
      async function step(): Promise<void> {
        for (let more = true; more && !sink.closed; ) {
          const entries = await store.getHistory(jobId, last, PAGE);
          // Entries past the history's bound were overwritten: the stream starts over from a snapshot.
          if (entries.length > 0 && entries[0]!.seq > last + 1) {
            const current = await store.getJob(jobId);
            if (!current) return sink.close();
            sendSnapshot(current);
            continue;
          }
          for (const entry of entries) {
            sink.send(eventOf(entry), entry, String(entry.seq));
            last = entry.seq;
            if (entry.jobStatus !== undefined && ENDED.has(entry.jobStatus)) ended = true;
          }
          more = entries.length === PAGE;
        }
        // Only a job that ended can be over (its compensation step may still run): read it then.
        if (!ended) return;
        const current = await store.getJob(jobId);
        if (!current || (isOver(current) && last >= current.job.changes)) {
          // Said before closing, so that an EventSource closes instead of reconnecting.
          sink.send("end", { jobId, status: current?.job.status ?? null });
          sink.close();
        }
      }
      function catchUp(): void {
        running = running.then(step).catch(() => {
          // Storage did not answer: the next notification or keep-alive tries again.
        });
      }

      slot.listen(
        hub.subscribe({ jobId }, (message: HubMessage) => {
          if (message.kind === "progress") sink.send("progress", { jobId, step: message.step, stepId: message.stepId, progress: message.progress });
          else if (message.seq > last) catchUp();
        }),
      );
      if (resumeFrom === null) sendSnapshot(first);
      catchUp();
      return response;
    },

    async tenantStream(tenantId: string, caller: Caller, filter: { requestType?: string; status?: JobStatus }): Promise<Response> {
      if (!holdsTenant(caller, tenantId)) throw new ForbiddenError(`not allowed to read the jobs of tenant '${tenantId}'`, "tenant-not-held");
      let running: Promise<void> = Promise.resolve();
      const slot = openStream(caller);
      const { response, sink } = sseResponse({ onClose: () => slot.closed() });
      slot.bind(sink);
      slot.listen(
        hub.subscribe({ tenantId }, (message) => {
          if (filter.requestType !== undefined && message.requestType !== filter.requestType) return;
          if (message.kind === "progress") {
            if (filter.status === undefined)
              sink.send("progress", { jobId: message.jobId, step: message.step, stepId: message.stepId, progress: message.progress });
            return;
          }
          if (filter.status !== undefined && message.jobStatus !== filter.status) return;
          running = running
            .then(async () => {
              const entry = message.entry ?? (await store.getHistory(message.jobId, message.seq - 1, 1))[0];
              if (entry?.seq === message.seq) sink.send(eventOf(entry), { ...entry, requestType: message.requestType }, `${message.jobId}/${entry.seq}`);
            })
            .catch(() => {});
        }),
      );
      return response;
    },
  };
}

export type StreamService = ReturnType<typeof createStreamService>;
