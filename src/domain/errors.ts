/**
 * Domain errors: each carries a stable `code` (the last segment of its problem type) and the
 * HTTP status it maps to. Only src/http/problem.ts turns them into responses.
 */

export interface FieldViolation {
  /** JSON pointer into the request, e.g. `/payload/documentId`. */
  path: string;
  message: string;
}

export abstract class DomainError extends Error {
  abstract readonly code: string;
  abstract readonly status: number;
  abstract readonly title: string;
  readonly errors?: FieldViolation[];
  /** Seconds a client should wait before retrying, when the condition is transient. */
  readonly retryAfterSeconds?: number;

  constructor(detail: string, extras: { errors?: FieldViolation[]; retryAfterSeconds?: number; cause?: unknown } = {}) {
    super(detail, extras.cause === undefined ? undefined : { cause: extras.cause });
    this.name = new.target.name;
    if (extras.errors) this.errors = extras.errors;
    if (extras.retryAfterSeconds !== undefined) this.retryAfterSeconds = extras.retryAfterSeconds;
  }
}

export class MalformedRequestError extends DomainError {
  readonly code = "malformed-request";
  readonly status = 400;
  readonly title = "Malformed request";
}

export class MalformedJsonError extends DomainError {
  readonly code = "malformed-json";
  readonly status = 400;
  readonly title = "Malformed JSON body";
}

export class PayloadTooLargeError extends DomainError {
  readonly code = "payload-too-large";
  readonly status = 413;
  readonly title = "Request body too large";
}

export class ValidationFailedError extends DomainError {
  readonly code = "validation-failed";
  readonly status = 422;
  readonly title = "Request does not match its schema";
}

export class UnknownRequestTypeError extends DomainError {
  readonly code = "unknown-request-type";
  readonly status = 422;
  readonly title = "Unknown request type";
}

export class IdempotencyKeyReusedError extends DomainError {
  readonly code = "idempotency-key-reused";
  readonly status = 422;
  readonly title = "Idempotency key reused with a different request";
}

export class IdempotencyKeyInFlightError extends DomainError {
  readonly code = "idempotency-key-in-flight";
  readonly status = 409;
  readonly title = "A request with this idempotency key is still being processed";
}

export class NotFoundError extends DomainError {
  readonly code = "not-found";
  readonly status = 404;
  readonly title = "Not found";
}

/** A conditional write lost against a concurrent writer (stale ETag or existing key). */
export class ConcurrencyConflictError extends DomainError {
  readonly code = "concurrency-conflict";
  readonly status = 409;
  readonly title = "Conflicting concurrent update";
}

/** A transition the state machine refuses (e.g. marking a sent entry sent again). */
export class InvalidTransitionError extends DomainError {
  readonly code = "invalid-transition";
  readonly status = 409;
  readonly title = "State transition not allowed";
}

export class StorageUnavailableError extends DomainError {
  readonly code = "storage-unavailable";
  readonly status = 503;
  readonly title = "Storage unavailable";
}

/** An operation that needs a broker, on a service started without one. */
export class PublishingDisabledError extends DomainError {
  readonly code = "publishing-disabled";
  readonly status = 503;
  readonly title = "Publishing is not configured";
}
