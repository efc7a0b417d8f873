import { createHash } from "node:crypto";
import canonicalize from "canonicalize";
import type { CommandEnvelope } from "./envelope.ts";

/**
 * SHA-256 of the RFC 8785 canonical JSON of the envelope minus the key, so that key order and
 * whitespace do not make the same request look different.
 */
export function requestFingerprint(envelope: CommandEnvelope): string {
  const { idempotencyKey: _key, ...rest } = envelope;
  return createHash("sha256")
    .update(canonicalize(rest) ?? "")
    .digest("hex");
}
