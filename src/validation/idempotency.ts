import { createHash } from "node:crypto";
import canonicalize from "canonicalize";
import type { CommandEnvelope } from "./envelope.ts";
import { IDEMPOTENCY_KEY_PATTERN } from "./envelope.ts";
import { MalformedRequestError } from "../domain/errors.ts";

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

/**
 * SHA-256 of the RFC 8785 canonical JSON of the envelope minus the key, so that key order and
 * whitespace do not make the same request look different.
 */
export function requestFingerprint(envelope: CommandEnvelope): string {
  const { idempotencyKey: _key, ...rest } = envelope;
  return createHash("sha256").update(canonicalize(rest) ?? "").digest("hex");
}

const TRACEPARENT = /^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;

/** W3C trace context: an invalid header is ignored, as the specification asks, not an error. */
export function acceptTraceparent(header: string | null): string | null {
  if (header === null) return null;
  const value = header.trim().toLowerCase();
  return TRACEPARENT.test(value) && !value.startsWith("ff") ? value : null;
}
