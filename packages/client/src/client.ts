/**
 * The client: fetch, Headers, AbortSignal, crypto and TextDecoder only, so that it runs in
 * browsers, Node, Bun and Deno alike.
 */
import { createParser } from "eventsource-parser";
import { LuciusProblem, LuciusTimeoutError, LuciusTokenError, problemFrom } from "./errors.ts";
import type {
  Accepted,
  Cancelled,
  Command,
  HistoryEntry,
  Job,
  JobPage,
  JobStatus,
  JobSummary,
  JsonObject,
  ListJobsQuery,
  Page,
  RedriveOptions,
  RepairResult,
  Submitted,
} from "./types.ts";

/** What the client calls to reach the service: the global `fetch` unless given. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** A bearer token, or a function returning one (called before every request, so it may refresh). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The service's address, e.g. `https://lucius.example.com` (a path prefix is kept). */
  baseUrl: string | URL;
  /** Sent as `Authorization: Bearer <token>` (LUCIUS_AUTH_MODE=jwt, or an API key as a bearer). */
  token?: TokenSource;
  /** Sent as `X-API-Key` (LUCIUS_AUTH_MODE=apikey, or the admin key). */
  apiKey?: string;
  fetch?: FetchLike;
  /** How long `submit` keeps retrying, in milliseconds, unless told otherwise (default 30 000). */
  submitDeadlineMs?: number;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface SubmitOptions extends RequestOptions {
  /** Default: a new UUID. Every retry of this submit sends the same key. */
  idempotencyKey?: string;
  /** Overrides the client's `submitDeadlineMs` for this call. */
  deadlineMs?: number;
  /** A W3C traceparent to continue a trace from. */
  traceparent?: string;
}

export interface WaitOptions extends RequestOptions {
  /** Give up after this many milliseconds with a `TimeoutError` (default: wait as long as it takes). */
  timeoutMs?: number;
  /** How often to read the job when polling (default 1000). */
  pollIntervalMs?: number;
  /** Follow the job's event stream (default true); false polls only. */
  stream?: boolean;
}

export interface ListOptions extends RequestOptions {
  tenantId: string;
  status?: JobStatus;
  requestType?: string;
  correlationId?: string;
  paused?: boolean;
  /** Jobs per page, 1–100 (the service's default 20). */
  limit?: number;
  /** Start from this page (a previous page's `nextCursor`). */
  cursor?: string;
}

/** A tenant's jobs, newest first: iterate it for jobs, or its `pages()` for pages. */
export interface JobList extends AsyncIterable<JobSummary> {
  pages(): AsyncGenerator<JobPage, void, undefined>;
}

export interface LuciusClient {
  /**
   * `POST /v1/commands` with an `Idempotency-Key`: 409, 429, 503 and network errors are retried
   * with the same key (after `Retry-After`, else a backoff) until the deadline.
   */
  submit<Payload extends JsonObject>(command: Command<Payload>, options?: SubmitOptions): Promise<Submitted>;
  get(jobId: string, options?: RequestOptions): Promise<Job>;
  list(options: ListOptions): JobList;
  /** Resolves with the job once it is over: through its event stream, else by polling. */
  wait(jobId: string, options?: WaitOptions): Promise<Job>;
  /** Every change of the job, oldest first (every page). */
  history(jobId: string, options?: RequestOptions): Promise<HistoryEntry[]>;
  redrive(jobId: string, options?: RedriveOptions): Promise<RepairResult>;
  pause(jobId: string, options?: RequestOptions): Promise<RepairResult>;
  resume(jobId: string, options?: RequestOptions): Promise<RepairResult>;
  cancel(jobId: string, options?: RequestOptions): Promise<Cancelled>;
}

const DEFAULT_SUBMIT_DEADLINE_MS = 30_000;
const DEFAULT_POLL_INTERVAL_MS = 1_000;
const BACKOFF_BASE_MS = 200;
const BACKOFF_CAP_MS = 5_000;
/** 409 (the key's first request still being stored), 429, 503; 502 and 504: a gateway's, after which the command may have been stored. */
const RETRIED_STATUSES = new Set([409, 429, 502, 503, 504]);
/** setTimeout's limit (about 24.8 days): a longer deadline is no timer at all. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const ENDED: ReadonlySet<string> = new Set<JobStatus>(["succeeded", "failed", "cancelled"]);
const HISTORY_PAGE = 100;

/**
 * A job is over when it ended and none of its steps still runs (its `onFailure` step included):
 * what the stream's `end` event says.
 */
export function jobIsOver(job: Pick<Job, "status" | "steps">): boolean {
  return ENDED.has(job.status) && !job.steps.some((s) => s.status === "initiated" || (s.status === "pending" && s.attempts > 0));
}

/** Exponential backoff with jitter: about 200 ms, 400 ms, 800 ms… at most 5 s. */
export function backoffMs(attempt: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

function newIdempotencyKey(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context in browsers; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** One signal for a call: the caller's, and a deadline that aborts with `onTimeout()`'s error. */
function scope(signal: AbortSignal | undefined, timeoutMs: number | undefined, onTimeout: () => Error) {
  const controller = new AbortController();
  const forward = () => controller.abort(signal?.reason);
  if (signal?.aborted) controller.abort(signal.reason);
  else signal?.addEventListener("abort", forward, { once: true });
  const timed = timeoutMs !== undefined && Number.isFinite(timeoutMs) && timeoutMs < MAX_TIMER_MS;
  const timer = timed ? setTimeout(() => controller.abort(onTimeout()), Math.max(0, timeoutMs)) : undefined;
  return {
    signal: controller.signal,
    /** Aborted by the caller (not by the deadline). */
    callerAborted: () => signal?.aborted === true,
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", forward);
    },
  };
}

/** Problems worth another read while polling: overload and outages, not refusals. */
function transient(error: unknown): boolean {
  if (error instanceof LuciusTokenError) return false;
  return !(error instanceof LuciusProblem) || error.status === 429 || error.status >= 500;
}

/** `promise`, unless `signal` aborts first (then its reason). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

export function createClient(options: ClientOptions): LuciusClient {
  if (options.token !== undefined && options.apiKey !== undefined) throw new TypeError("createClient: give a token or an apiKey, not both");
  const base = new URL(String(options.baseUrl));
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const fetchImpl: FetchLike = options.fetch ?? ((input, init) => fetch(input, init));
  const submitDeadlineMs = options.submitDeadlineMs ?? DEFAULT_SUBMIT_DEADLINE_MS;

  const url = (path: string) => new URL(path.replace(/^\//, ""), base);
  const jobPath = (jobId: string, rest = "") => `/v1/jobs/${encodeURIComponent(jobId)}${rest}`;

  async function authenticate(headers: Headers, signal: AbortSignal | undefined): Promise<void> {
    if (options.apiKey !== undefined) headers.set("x-api-key", options.apiKey);
    const source = options.token;
    if (source === undefined) return;
    let token: string;
    try {
      // A token function that never answers must not outlast the call's deadline or abort.
      token = typeof source === "function" ? await untilAborted(Promise.resolve().then(source), signal) : source;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw new LuciusTokenError(error);
    }
    headers.set("authorization", `Bearer ${token}`);
  }

  type SendInit = { body?: unknown; headers?: Record<string, string>; accept?: string; signal?: AbortSignal | undefined };

  /** The request to send, credentials included (a token function is asked here). */
  async function prepare(method: string, path: string, init: SendInit = {}): Promise<[URL, RequestInit]> {
    const headers = new Headers(init.headers);
    headers.set("accept", init.accept ?? "application/json");
    if (init.body !== undefined) headers.set("content-type", "application/json");
    await authenticate(headers, init.signal);
    return [
      url(path),
      {
        method,
        headers,
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      },
    ];
  }

  async function send(method: string, path: string, init: SendInit = {}): Promise<Response> {
    return fetchImpl(...(await prepare(method, path, init)));
  }

  async function call<T>(method: string, path: string, init: { body?: unknown; signal?: AbortSignal | undefined } = {}): Promise<T> {
    const response = await send(method, path, init);
    if (!response.ok) throw await problemFrom(response);
    return (await response.json()) as T;
  }

  async function submit<Payload extends JsonObject>(command: Command<Payload>, submitOptions: SubmitOptions = {}): Promise<Submitted> {
    const idempotencyKey = submitOptions.idempotencyKey ?? newIdempotencyKey();
    const deadlineMs = submitOptions.deadlineMs ?? submitDeadlineMs;
    const deadline = Date.now() + deadlineMs;
    let last: unknown;
    const bounds = scope(
      submitOptions.signal,
      deadlineMs,
      () => new LuciusTimeoutError(`submit: no answer within ${deadlineMs} ms`, { idempotencyKey, cause: last }),
    );
    const headers: Record<string, string> = { "idempotency-key": idempotencyKey };
    if (submitOptions.traceparent !== undefined) headers.traceparent = submitOptions.traceparent;
    try {
      for (let attempt = 0; ; attempt++) {
        let waitMs: number;
        // Outside the retried part: a token function that fails is not a network error.
        const request = await prepare("POST", "/v1/commands", { body: command, headers, signal: bounds.signal });
        try {
          const response = await fetchImpl(...request);
          if (response.ok) {
            const accepted = (await response.json()) as Accepted;
            return { ...accepted, replayed: response.headers.get("idempotent-replayed") === "true", idempotencyKey };
          }
          const problem = await problemFrom(response);
          if (!RETRIED_STATUSES.has(problem.status)) throw problem;
          last = problem;
          // Not before Retry-After; never a busy loop on `Retry-After: 0`.
          waitMs = Math.max(backoffMs(attempt), (problem.retryAfterSeconds ?? 0) * 1000);
        } catch (error) {
          if (bounds.signal.aborted || error instanceof LuciusProblem) throw error;
          // The request did not get an answer (a network error): it may have been stored; the same key finds out.
          last = error;
          waitMs = backoffMs(attempt);
        }
        // A wait that would end past the deadline is not worth starting: give up now, with the key
        // (the command may have been stored: submitting again with it finds out, safely).
        if (Date.now() + waitMs >= deadline) {
          throw new LuciusTimeoutError(`submit: no answer that ends it within ${deadlineMs} ms`, { idempotencyKey, cause: last });
        }
        await sleep(waitMs, bounds.signal);
      }
    } catch (error) {
      if (bounds.callerAborted()) throw submitOptions.signal?.reason;
      // The deadline passed during a request or a wait: its TimeoutError carries the key and the last answer.
      if (bounds.signal.aborted) throw bounds.signal.reason;
      throw error;
    } finally {
      bounds.dispose();
    }
  }

  function list(listOptions: ListOptions): JobList {
    const { signal, cursor, tenantId, status, requestType, correlationId, paused, limit } = listOptions;
    const query: ListJobsQuery = {
      tenantId,
      ...(status !== undefined ? { status } : {}),
      ...(requestType !== undefined ? { requestType } : {}),
      ...(correlationId !== undefined ? { correlationId } : {}),
      ...(paused !== undefined ? { paused: paused ? "true" : "false" } : {}),
      ...(limit !== undefined ? { limit: String(limit) } : {}),
    };
    async function* pages(): AsyncGenerator<JobPage, void, undefined> {
      let next = cursor ?? null;
      do {
        const params = new URLSearchParams(query);
        if (next !== null) params.set("cursor", next);
        const page: JobPage = await call<JobPage>("GET", `/v1/jobs?${params}`, { signal });
        yield page;
        next = page.nextCursor;
      } while (next !== null);
    }
    return {
      pages,
      async *[Symbol.asyncIterator]() {
        for await (const page of pages()) yield* page.items;
      },
    };
  }

  const get = (jobId: string, requestOptions: RequestOptions = {}) => call<Job>("GET", jobPath(jobId), { signal: requestOptions.signal });

  async function history(jobId: string, requestOptions: RequestOptions = {}): Promise<HistoryEntry[]> {
    const entries: HistoryEntry[] = [];
    let cursor: string | null = null;
    do {
      const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
      if (cursor !== null) params.set("cursor", cursor);
      const page: Page<HistoryEntry> = await call<Page<HistoryEntry>>("GET", jobPath(jobId, `/history?${params}`), { signal: requestOptions.signal });
      entries.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);
    return entries;
  }

  /**
   * Follows the job's stream until its `end` event: true then; false when the stream could not be
   * opened or dropped before (the caller polls). 401, 403 and 404 are thrown as problems.
   */
  async function streamUntilEnd(jobId: string, signal: AbortSignal): Promise<boolean> {
    let response: Response;
    try {
      response = await send("GET", jobPath(jobId, "/stream"), { accept: "text/event-stream", signal });
    } catch (error) {
      if (signal.aborted) throw signal.reason;
      if (error instanceof LuciusTokenError) throw error;
      return false;
    }
    if (response.status === 401 || response.status === 403 || response.status === 404) throw await problemFrom(response);
    const body = response.body;
    if (!response.ok || response.status === 204 || !body || !/^text\/event-stream/i.test(response.headers.get("content-type") ?? "")) {
      await body?.cancel().catch(() => {});
      return false;
    }
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let ended = false;
    const parser = createParser({
      onEvent(event) {
        if (event.event === "end") ended = true;
      },
    });
    const onAbort = () => void reader.cancel(signal.reason).catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    // Aborted while the answer was on its way (a fetch that ignores its signal): stop reading now.
    if (signal.aborted) onAbort();
    try {
      while (!ended) {
        const { done, value } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // The stream broke: polling takes over (unless the wait itself was aborted, below).
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (ended) await reader.cancel().catch(() => {});
    }
    if (signal.aborted) throw signal.reason;
    return ended;
  }

  /** Reads the job until it is over; overload and network errors only delay the next read. */
  async function poll(jobId: string, intervalMs: number, signal: AbortSignal, seen: { job?: Job }): Promise<Job> {
    for (;;) {
      try {
        const job = await get(jobId, { signal });
        seen.job = job;
        if (jobIsOver(job)) return job;
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (!transient(error)) throw error;
      }
      await sleep(intervalMs, signal);
    }
  }

  async function wait(jobId: string, waitOptions: WaitOptions = {}): Promise<Job> {
    const { timeoutMs, pollIntervalMs = DEFAULT_POLL_INTERVAL_MS } = waitOptions;
    const seen: { job?: Job } = {};
    const bounds = scope(
      waitOptions.signal,
      timeoutMs,
      () => new LuciusTimeoutError(`job ${jobId} was not over within ${timeoutMs} ms`, { jobId, ...(seen.job ? { lastSeen: seen.job } : {}) }),
    );
    try {
      // Whether the stream saw the end or not, the job is read: as the answer, or to start polling.
      if (waitOptions.stream !== false) await streamUntilEnd(jobId, bounds.signal);
      return await poll(jobId, pollIntervalMs, bounds.signal, seen);
    } catch (error) {
      if (bounds.signal.aborted) throw bounds.signal.reason;
      throw error;
    } finally {
      bounds.dispose();
    }
  }

  const repair =
    (action: "pause" | "resume") =>
    (jobId: string, requestOptions: RequestOptions = {}) =>
      call<RepairResult>("POST", jobPath(jobId, `/${action}`), { signal: requestOptions.signal });

  return {
    submit,
    get,
    list,
    wait,
    history,
    redrive(jobId, redriveOptions = {}) {
      const body = {
        ...(redriveOptions.patch !== undefined ? { payload: redriveOptions.patch } : {}),
        ...(redriveOptions.steps !== undefined ? { steps: redriveOptions.steps } : {}),
      };
      return call<RepairResult>("POST", jobPath(jobId, "/redrive"), {
        ...(Object.keys(body).length > 0 ? { body } : {}),
        signal: redriveOptions.signal,
      });
    },
    pause: repair("pause"),
    resume: repair("resume"),
    cancel: (jobId, requestOptions = {}) => call<Cancelled>("POST", jobPath(jobId, "/cancel"), { signal: requestOptions.signal }),
  };
}
