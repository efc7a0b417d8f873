/**
 * Domain errors: a closed set of codes, each a class so that callers can tell them apart. They say
 * what went wrong in the orchestrator's own terms; how a code is answered over HTTP (status,
 * title) is decided in one place, src/http/problem.ts.
 */

export type ErrorCode =
  | "malformed-request"
  | "malformed-json"
  | "payload-too-large"
  | "validation-failed"
  | "unknown-request-type"
  | "idempotency-key-reused"
  | "idempotency-key-in-flight"
  | "invalid-cursor"
  | "not-found"
  | "unauthorized"
  | "forbidden"
  | "rate-limited"
  | "authentication-unavailable"
  | "concurrency-conflict"
  | "invalid-transition"
  | "redrive-limit-reached"
  | "storage-unavailable"
  | "storage-full"
  | "too-many-streams"
  | "publishing-disabled";

export interface FieldViolation {
  /** JSON pointer into the input, e.g. `/payload/documentId`. */
  path: string;
  message: string;
}

export interface DomainErrorExtras {
  errors?: FieldViolation[];
  retryAfterSeconds?: number;
  cause?: unknown;
}

export abstract class DomainError extends Error {
  abstract readonly code: ErrorCode;
  readonly errors?: FieldViolation[];
  /** Seconds a caller should wait before trying again, when the condition is transient. */
  readonly retryAfterSeconds?: number;

  constructor(detail: string, extras: DomainErrorExtras = {}) {
    super(detail, extras.cause === undefined ? undefined : { cause: extras.cause });
    this.name = new.target.name;
    if (extras.errors) this.errors = extras.errors;
    if (extras.retryAfterSeconds !== undefined) this.retryAfterSeconds = extras.retryAfterSeconds;
  }
}

/** Input that cannot be read as asked (a bad parameter, a malformed key). */
export class MalformedRequestError extends DomainError {
  readonly code = "malformed-request";
}

export class MalformedJsonError extends DomainError {
  readonly code = "malformed-json";
}

/** Input, or an entity built from it, over a size limit. */
export class PayloadTooLargeError extends DomainError {
  readonly code = "payload-too-large";
}

export class ValidationFailedError extends DomainError {
  readonly code = "validation-failed";
}

export class UnknownRequestTypeError extends DomainError {
  readonly code = "unknown-request-type";
}

export class IdempotencyKeyReusedError extends DomainError {
  readonly code = "idempotency-key-reused";
}

export class IdempotencyKeyInFlightError extends DomainError {
  readonly code = "idempotency-key-in-flight";
}

/** A paging cursor this service did not issue. */
export class InvalidCursorError extends DomainError {
  readonly code = "invalid-cursor";
}

export class NotFoundError extends DomainError {
  readonly code = "not-found";
}

/** Why a caller was refused, for the refusal metrics; never the credential itself. */
export type RefusalReason = "missing-credentials" | "invalid-credentials" | "missing-permission" | "tenant-not-held" | "rate-limited";

/** A caller without valid credentials: none were sent, or they were wrong. */
export class UnauthorizedError extends DomainError {
  readonly code = "unauthorized";
  readonly reason: "missing-credentials" | "invalid-credentials";
  constructor(detail: string, reason: "missing-credentials" | "invalid-credentials", extras: DomainErrorExtras = {}) {
    super(detail, extras);
    this.reason = reason;
  }
}

/** A known caller without the permission or the tenant a request needs. */
export class ForbiddenError extends DomainError {
  readonly code = "forbidden";
  readonly reason: "missing-permission" | "tenant-not-held";
  constructor(detail: string, reason: "missing-permission" | "tenant-not-held") {
    super(detail);
    this.reason = reason;
  }
}

/** A tenant over its command rate; `retryAfterSeconds` says when a token is back. */
export class RateLimitedError extends DomainError {
  readonly code = "rate-limited";
  readonly reason = "rate-limited";
}

/** Credentials that cannot be checked now (the identity provider's keys cannot be fetched). */
export class AuthenticationUnavailableError extends DomainError {
  readonly code = "authentication-unavailable";
}

/** A conditional write lost against a concurrent writer (stale ETag or existing key). */
export class ConcurrencyConflictError extends DomainError {
  readonly code = "concurrency-conflict";
}

/** A transition the state machine refuses (e.g. marking a sent entry sent again). */
export class InvalidTransitionError extends DomainError {
  readonly code = "invalid-transition";
}

/** A job was redriven as many times as LUCIUS_MAX_REDRIVES allows. */
export class RedriveLimitError extends DomainError {
  readonly code = "redrive-limit-reached";
}

export class StorageUnavailableError extends DomainError {
  readonly code = "storage-unavailable";
}

/** The memory backend holds its bound of open jobs: new ones wait until some end. */
export class StorageFullError extends DomainError {
  readonly code = "storage-full";
}

/** This instance holds LUCIUS_MAX_STREAMS streams: a new one waits for one to end. */
export class TooManyStreamsError extends DomainError {
  readonly code = "too-many-streams";
}

/** An operation that needs a broker, on a service started without one. */
export class PublishingDisabledError extends DomainError {
  readonly code = "publishing-disabled";
}
