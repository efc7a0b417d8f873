/** The request headers the API reads, turned into domain values (or refused with the header named). */
import { MalformedRequestError } from "../domain/errors.ts";
import { IDEMPOTENCY_KEY_PATTERN } from "../validation/envelope.ts";

const keyPattern = new RegExp(IDEMPOTENCY_KEY_PATTERN);

/**
 * The key from the `Idempotency-Key` header or the body field; both present and different is a
 * client error, since either could be the one the client meant.
 */
export function resolveIdempotencyKey(header: string | null, body: string | undefined): string | null {
  if (header !== null && !keyPattern.test(header)) {
    throw new MalformedRequestError("Idempotency-Key must be 1-255 printable ASCII characters", {
      errors: [{ path: "/headers/idempotency-key", message: "must be 1-255 printable ASCII characters" }],
    });
  }
  if (header !== null && body !== undefined && header !== body) {
    throw new MalformedRequestError("the Idempotency-Key header and the body's idempotencyKey differ", {
      errors: [{ path: "/idempotencyKey", message: "differs from the Idempotency-Key header" }],
    });
  }
  return header ?? body ?? null;
}

const TRACEPARENT = /^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;

/** W3C trace context: an invalid header is ignored, as the specification asks, not an error. */
export function acceptTraceparent(header: string | null): string | null {
  if (header === null) return null;
  const value = header.trim().toLowerCase();
  return TRACEPARENT.test(value) && !value.startsWith("ff") ? value : null;
}
