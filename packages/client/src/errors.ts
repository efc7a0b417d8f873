/** The errors the client throws: a problem answered by the service, and a wait that timed out. */
import type { Job, Problem, ProblemViolation } from "./types.ts";

const TYPE_PREFIX = "urn:lucius:problem:";

/**
 * An error answer of the service (RFC 9457 problem details). An answer that is not
 * `application/problem+json` (a proxy's 502, say) becomes one too, with type `about:blank`.
 */
export class LuciusProblem extends Error {
  override readonly name = "LuciusProblem";
  /** `urn:lucius:problem:<code>`, or `about:blank` for an answer that was not a problem. */
  readonly type: string;
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  /** Input problems: every violation, a JSON pointer into the request and a message. */
  readonly errors: ProblemViolation[];
  /** The answer's `Retry-After`, in seconds, when it had one. */
  readonly retryAfterSeconds?: number;
  readonly instance?: string;
  /** The whole problem as answered, extension members included (e.g. `checks` of /readyz). */
  readonly body: Record<string, unknown>;

  constructor(problem: Problem & Record<string, unknown>, retryAfterSeconds?: number) {
    super(problem.detail || problem.title);
    this.type = problem.type;
    this.status = problem.status;
    this.title = problem.title;
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
    if (retryAfterSeconds !== undefined) this.retryAfterSeconds = retryAfterSeconds;
    if (problem.instance !== undefined) this.instance = problem.instance;
    this.body = problem;
  }

  /** The end of `type` (`not-found`, `validation-failed`…); `about:blank` for other answers. */
  get code(): string {
    return this.type.startsWith(TYPE_PREFIX) ? this.type.slice(TYPE_PREFIX.length) : this.type;
  }
}

/**
 * `wait` (or a `submit` that never got an answer) ran out of time: named `TimeoutError`, like the
 * reason of `AbortSignal.timeout`.
 */
export class LuciusTimeoutError extends Error {
  override readonly name = "TimeoutError";
  /** The job waited for (`wait`). */
  readonly jobId?: string;
  /** The job as `wait` last read it, when it did. */
  readonly lastSeen?: Job;
  /** The key `submit` sent: submit again with it to learn whether the command was stored. */
  readonly idempotencyKey?: string;

  constructor(message: string, details: { jobId?: string; lastSeen?: Job; idempotencyKey?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    if (details.jobId !== undefined) this.jobId = details.jobId;
    if (details.lastSeen !== undefined) this.lastSeen = details.lastSeen;
    if (details.idempotencyKey !== undefined) this.idempotencyKey = details.idempotencyKey;
  }
}

/** The client's token function failed (or never answered before the call's deadline): no retry fixes that. */
export class LuciusTokenError extends Error {
  override readonly name = "LuciusTokenError";
  constructor(cause: unknown) {
    super(`the token function failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** `Retry-After` as seconds: delay-seconds or an HTTP date (RFC 9110); undefined when absent or unreadable. */
export function retryAfterSeconds(headers: Headers, now = Date.now()): number | undefined {
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - now) / 1000));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function violations(value: unknown): ProblemViolation[] | undefined {
  if (!Array.isArray(value)) return undefined;
  return value.filter(isRecord).map((v) => ({ path: String(v.path ?? ""), message: String(v.message ?? "") }));
}

/** Reads an error answer (consuming its body) into a LuciusProblem. */
export async function problemFrom(response: Response): Promise<LuciusProblem> {
  const text = await response.text().catch(() => "");
  let body: unknown;
  if (/json/i.test(response.headers.get("content-type") ?? "")) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  const retryAfter = retryAfterSeconds(response.headers);
  const fallbackTitle = response.statusText || `HTTP ${response.status}`;
  if (isRecord(body) && typeof body.type === "string") {
    const errors = violations(body.errors);
    return new LuciusProblem(
      {
        ...body,
        type: body.type,
        status: typeof body.status === "number" ? body.status : response.status,
        title: typeof body.title === "string" ? body.title : fallbackTitle,
        detail: typeof body.detail === "string" ? body.detail : "",
        ...(typeof body.instance === "string" ? { instance: body.instance } : {}),
        ...(errors ? { errors } : {}),
      },
      retryAfter,
    );
  }
  return new LuciusProblem(
    { type: "about:blank", status: response.status, title: fallbackTitle, detail: text.slice(0, 500) || `the service answered ${response.status}` },
    retryAfter,
  );
}
