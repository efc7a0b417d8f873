/**
 * The storage port. Every backend (memory, table, ledger) implements it and passes the same
 * contract suite (test/storage/job-store-contract.ts).
 */
import type {
  HistoryEntry,
  IdempotencyRecord,
  Job,
  JobAggregate,
  JobFilter,
  JobSummary,
  OutboxEntry,
  OutboxStatus,
  OutboxWork,
  Page,
  Step,
} from "../domain/model.ts";

export type CreateJobResult =
  /** The job is stored (now, or by an earlier attempt with the same job id). */
  | { outcome: "stored"; aggregate: JobAggregate }
  /** The idempotency key was claimed before, by this record; nothing was stored. */
  | { outcome: "key-taken"; existing: IdempotencyRecord };

/** A job to store, with the first entry of its history (its acceptance). */
export type NewJob = JobAggregate & { history?: HistoryEntry };

export interface PageRequest {
  limit: number;
  /** Opaque, from a previous page's `nextCursor`. */
  cursor: string | null;
}

/** Entities of one job to overwrite, each only if its `etag` still matches the stored one. */
export interface JobChanges {
  job?: Job;
  steps?: Step[];
  /** An entry without an etag is new (a later step's directive) and is inserted. */
  outbox?: OutboxEntry[];
  /**
   * The change's history entry (domain/history.ts), written with it; `job` (its count of changes
   * raised) must come along, so that its etag orders the entries. On `ledger` in the same
   * transaction; on `table` right after the job's row.
   */
  history?: HistoryEntry;
  /** The job's status and pause are as listed: its listing row need not be written again. */
  listingUnchanged?: boolean;
  /**
   * Rows of the job the change was decided on but does not write: it lands only if each is still
   * at its etag (ConcurrencyConflictError otherwise, nothing written). What makes a decision taken
   * against a kept copy (see storage/recent-jobs.ts) safe: a row moved on elsewhere that the
   * change would have had to write (a failed directive an operator reset to pending) refuses it.
   * `ledger` writes each back unchanged in the change's transaction (a new etag, returned in
   * `fenced`); `memory` compares; `table`, whose rows land apart, writes each back first (an empty
   * merge: their contents stay as they are, their etags change) and the change only if all held.
   */
  fence?: { steps: Step[]; outbox: OutboxEntry[] };
}

export interface OutboxStats {
  pending: number;
  failed: number;
  /** Null when nothing is pending. */
  oldestPendingAgeSeconds: number | null;
}

export interface DueOutboxOptions {
  /** Entries the caller is publishing already (a drain's batches in flight): not read again. */
  skip?: ReadonlySet<string>;
}

/** What a sweep stamps on the entries it takes (see JobStore.takeDueOutbox). */
export interface DueLease {
  /** The time of taking: what is under another lease running past it is passed over. */
  now: Date;
  until: Date;
  /** Tells this sweep's leases from another's. */
  token: string;
}

/** An open step whose deadline passed, as the deadline index points at it. */
export interface ExpiredStep {
  jobId: string;
  stepId: string;
  deadlineAt: string;
}

/** What saveChanges wrote, with new etags. */
export interface SavedChanges {
  job?: Job;
  steps: Step[];
  outbox: OutboxEntry[];
  /** The change's fence with the rows' etags now (on `ledger` the write gave them new ones). */
  fenced?: { steps: Step[]; outbox: OutboxEntry[] };
}

export interface JobStore {
  /**
   * A change's rows are written one after another (`table`), so one cut short can leave some of
   * them written; absent or false where each change lands whole.
   */
  readonly writesRowsApart?: boolean;

  /** Creates what the backend needs (tables); safe to call on every start. */
  init(): Promise<void>;

  /**
   * The job as this process last wrote or read it, without a storage call; null when not kept.
   * May be stale: only for a change written conditionally on its job row (see recent-jobs.ts).
   * Absent where nothing is kept.
   */
  recentJob?(jobId: string): JobAggregate | null;
  /** Drops the kept copy of a job (found stale). */
  forgetJob?(jobId: string): void;
  /**
   * Resolves once the changes of this job that this process has in flight now are stored or
   * failed (and what their callers do straight after has run): a decision taken after it sees
   * them in the kept copy instead of losing a race to them. Absent where nothing is kept.
   */
  settled?(jobId: string): Promise<void>;

  /**
   * Stores a new job with its steps, outbox entries and job index row, after claiming `claim`'s
   * (tenantId, key) when given: of any number of concurrent claims of one key exactly one
   * stores its job, the others get the winner's record. Storing the same job id again (a retry
   * after a crash) completes what is missing and changes nothing that exists. A record created
   * before `keysExpireBefore` is expired (LUCIUS_IDEMPOTENCY_TTL): the claim replaces it.
   */
  createJob(aggregate: NewJob, claim: IdempotencyRecord | null, keysExpireBefore?: Date): Promise<CreateJobResult>;

  /**
   * The job and everything of it, with etags, but its map steps' children (so that what it costs
   * is bounded by the protocol, not by a list's length); null until the job is wholly stored.
   */
  getJob(jobId: string): Promise<JobAggregate | null>;

  /** Map steps' children by step id (see childStepIdFor), with their directives; those not stored are left out. */
  getChildren(jobId: string, stepIds: readonly string[]): Promise<{ steps: Step[]; outbox: OutboxEntry[] }>;

  /** A map step's children in item order, from item `from`, at most `limit`; only open ones (pending, initiated) with `open`. */
  listChildren(jobId: string, stepIndex: number, from: number, limit: number, open?: boolean): Promise<Step[]>;

  /**
   * A job's history entries after sequence number `after`, oldest first, at most `limit`; only the
   * newest MAX_HISTORY_ENTRIES are kept. Empty for a job that does not exist.
   */
  getHistory(jobId: string, after: number, limit: number): Promise<HistoryEntry[]>;

  /** One outbox entry as stored, by a point read; null when absent. Cheaper than getJob. */
  getOutboxEntry(jobId: string, outboxId: string): Promise<OutboxEntry | null>;

  /**
   * The tenant's jobs from the job index, newest first, narrowed by `filter`. The index row
   * follows the job's status (written after the job row: it may lag a crashed write).
   */
  listJobs(tenantId: string, page: PageRequest, filter?: JobFilter): Promise<Page<JobSummary>>;

  /**
   * Writes the given entities of one job, each conditional on its etag. A stale etag throws
   * ConcurrencyConflictError and leaves that entity unchanged (backends that can, write all or
   * nothing). Returns the written entities with their new etags.
   */
  saveChanges(jobId: string, changes: JobChanges): Promise<SavedChanges>;

  /**
   * Pending entries whose `nextAttemptAt` has passed, earliest first, with their job and step.
   * Costs O(pending entries), never O(all jobs ever stored). With many due, a backend may
   * return a random choice among the most overdue, so that replicas sweeping together spread out.
   */
  findDueOutbox(now: Date, limit: number, options?: DueOutboxOptions): Promise<OutboxWork[]>;

  /**
   * Finds entries due by `cutoff` like findDueOutbox and takes them under `lease` in the same
   * pass, where the backend can without writing each entry (`ledger`: it leases their due
   * markers, a hundred to a call): of sweeps racing for an entry one takes it, and one that dies
   * leaves a lease that runs out. Returns what it took, with the rows as read (the publish's
   * outcome is written on their etags), and how many due entries it met, taken or not. Absent:
   * the sweeper leases what findDueOutbox found, entry by entry (outbox/lease.ts).
   */
  takeDueOutbox?(cutoff: Date, limit: number, lease: DueLease, options?: DueOutboxOptions): Promise<{ seen: number; taken: OutboxWork[] }>;

  /**
   * Where takeDueOutbox leases markers, the one of `entry` leased the same way, for a caller that
   * leases the entry itself (an operator's retry of one entry): false when a sweep holds it, so
   * that the two never publish it at once. An entry without a marker is free (true).
   */
  leaseDueMarker?(entry: OutboxEntry, lease: DueLease): Promise<boolean>;

  /**
   * Open steps whose `deadlineAt` is at or before `now`, earliest first, up to `limit`, through an
   * index: costs what expired, never O(open steps). Index rows of steps that ended meanwhile are
   * skipped (and cleaned); finding is not taking: a step stays expired until a change is saved.
   */
  findExpiredSteps(now: Date, limit: number): Promise<ExpiredStep[]>;

  /**
   * Outbox entries of one status for the operator, in a stable order, paged. `pending` and
   * `failed` come from indexes (cost grows with those entries); `sent` may read the history.
   */
  listOutbox(status: OutboxStatus, page: PageRequest): Promise<Page<OutboxEntry>>;

  /** Counts of pending and failed entries, and the age of the oldest pending one. */
  outboxStats(now: Date): Promise<OutboxStats>;

  /**
   * Removes up to `limit` jobs that ended before `endedBefore` (LUCIUS_JOB_RETENTION), each with
   * its steps, outbox entries, job index row and index markers, found through an index of ended
   * jobs: costs what expired, never the history. Open jobs are never removed. Returns how many.
   */
  purgeEndedJobs(endedBefore: Date, limit: number): Promise<number>;

  /**
   * Jobs that ended within [from, to) (ISO times), in the order they ended, through the index of
   * ended jobs that retention reads: costs what the range holds, never the open jobs. A job that
   * changed since (redriven, or its compensation step ran on) may be listed as it ended then, or
   * twice: callers read the job again. The cursor is opaque.
   */
  listEndedJobs(range: { from: string; to: string }, page: PageRequest): Promise<Page<{ jobId: string; endedAt: string }>>;

  /** Removes up to `limit` idempotency records created before `createdBefore`, through an index. Returns how many. */
  purgeIdempotencyRecords(createdBefore: Date, limit: number): Promise<number>;

  /** Throws StorageUnavailableError when the backend does not answer. */
  ping(): Promise<void>;

  close(): Promise<void>;
}
