/**
 * The one place where errors become responses: RFC 9457 problem+json, never a stack trace, never
 * a backend's raw error text.
 */
import { type DomainError, type ErrorCode, type FieldViolation, UnauthorizedError } from "../domain/errors.ts";

const PROBLEM_CONTENT_TYPE = "application/problem+json";
const TYPE_PREFIX = "urn:lucius:problem:";

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: FieldViolation[];
  /** RFC 9457 extension members, e.g. the checks of /readyz. */
  [extension: string]: unknown;
}

/** The code of a problem answer (the end of its type), read back from a copy of its body. */
export async function problemCodeOf(response: Response): Promise<string | undefined> {
  if (!response.headers.get("content-type")?.startsWith(PROBLEM_CONTENT_TYPE)) return undefined;
  try {
    const { type } = (await response.clone().json()) as { type?: string };
    return type?.slice(type.lastIndexOf(":") + 1);
  } catch {
    return undefined;
  }
}

export function problemResponse(problem: Problem, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(problem), {
    status: problem.status,
    headers: { "content-type": PROBLEM_CONTENT_TYPE, ...headers },
  });
}

interface ProblemKind {
  status: number;
  title: string;
  /** The problem type's code when it differs from the error's. */
  type?: string;
  /** Violations to report when the error carries none. */
  errors?: FieldViolation[];
}

/** How each domain error is answered: the only place that knows their HTTP status. */
const PROBLEM_KINDS: Record<ErrorCode, ProblemKind> = {
  "malformed-request": { status: 400, title: "Malformed request" },
  "malformed-json": { status: 400, title: "Malformed JSON body" },
  "payload-too-large": { status: 413, title: "Request body too large" },
  "validation-failed": { status: 422, title: "Request does not match its schema" },
  "unknown-request-type": { status: 422, title: "Unknown request type" },
  "idempotency-key-reused": { status: 422, title: "Idempotency key reused with a different request" },
  "idempotency-key-in-flight": { status: 409, title: "A request with this idempotency key is still being processed" },
  // Every paged route takes its cursor from the query string.
  "invalid-cursor": { status: 400, title: "Malformed request", type: "malformed-request", errors: [{ path: "/query/cursor", message: "invalid cursor" }] },
  "not-found": { status: 404, title: "Not found" },
  unauthorized: { status: 401, title: "Missing or invalid credentials" },
  forbidden: { status: 403, title: "Not allowed" },
  "rate-limited": { status: 429, title: "Too many commands for this tenant" },
  "authentication-unavailable": { status: 503, title: "Credentials cannot be checked now" },
  "concurrency-conflict": { status: 409, title: "Conflicting concurrent update" },
  "invalid-transition": { status: 409, title: "State transition not allowed" },
  "redrive-limit-reached": { status: 409, title: "The job was redriven as often as allowed" },
  "storage-unavailable": { status: 503, title: "Storage unavailable" },
  "storage-full": { status: 503, title: "Too many open jobs" },
  "too-many-streams": { status: 503, title: "Too many open streams on this instance" },
  "publishing-disabled": { status: 503, title: "Publishing is not configured" },
};

/** The HTTP status a domain error is answered with. */
export function statusOfError(error: DomainError): number {
  return PROBLEM_KINDS[error.code].status;
}

export function domainProblem(error: DomainError, instance: string): Response {
  const kind = PROBLEM_KINDS[error.code];
  const headers: Record<string, string> = {};
  if (error.retryAfterSeconds !== undefined) headers["retry-after"] = String(error.retryAfterSeconds);
  if (error instanceof UnauthorizedError) headers["www-authenticate"] = challengeFor(error);
  const errors = error.errors ?? kind.errors;
  return problemResponse(
    {
      type: TYPE_PREFIX + (kind.type ?? error.code),
      title: kind.title,
      status: kind.status,
      detail: error.message,
      instance,
      ...(errors ? { errors } : {}),
    },
    headers,
  );
}

/**
 * RFC 6750's challenge: the scheme and realm, and with credentials that were sent but refused,
 * `error="invalid_token"` and a description (never the credential).
 */
function challengeFor(error: UnauthorizedError): string {
  if (error.reason === "missing-credentials") return 'Bearer realm="lucius"';
  const description = error.message.replace(/["\\]/g, "'").slice(0, 200);
  return `Bearer realm="lucius", error="invalid_token", error_description="${description}"`;
}

/**
 * A problem only HTTP knows (a media type, a method, a Host header): raised and answered inside
 * src/http, never by a service.
 */
export class HttpProblem extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    readonly title: string,
    detail: string,
    readonly headers: Record<string, string> = {},
    readonly errors?: FieldViolation[],
  ) {
    super(detail);
    this.name = "HttpProblem";
  }
}

export function httpProblem(problem: HttpProblem, instance: string): Response {
  return problemResponse(
    {
      type: TYPE_PREFIX + problem.code,
      title: problem.title,
      status: problem.status,
      detail: problem.message,
      instance,
      ...(problem.errors ? { errors: problem.errors } : {}),
    },
    problem.headers,
  );
}

export function problemOf(code: string, status: number, title: string, detail: string, instance: string, errors?: FieldViolation[]): Response {
  return problemResponse({ type: TYPE_PREFIX + code, title, status, detail, instance, ...(errors ? { errors } : {}) });
}
