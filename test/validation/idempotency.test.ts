import { describe, expect, test } from "bun:test";
import { requestFingerprint } from "../../src/validation/idempotency.ts";

const envelope = { requestType: "document.ocr", tenantId: "acme", payload: { b: 1, a: [1, { y: 2, x: 1 }] } };

describe("requestFingerprint", () => {
  test("ignores key order and the idempotency key itself", () => {
    const reordered = { payload: { a: [1, { x: 1, y: 2 }], b: 1 }, tenantId: "acme", requestType: "document.ocr", idempotencyKey: "k" };
    expect(requestFingerprint(reordered)).toBe(requestFingerprint(envelope));
  });
  test("differs when anything else differs, array order included", () => {
    expect(requestFingerprint({ ...envelope, correlationId: "c" })).not.toBe(requestFingerprint(envelope));
    expect(requestFingerprint({ ...envelope, payload: { b: 1, a: [{ y: 2, x: 1 }, 1] } })).not.toBe(requestFingerprint(envelope));
  });
  test("is a SHA-256 hex digest", () => {
    expect(requestFingerprint(envelope)).toMatch(/^[0-9a-f]{64}$/);
  });
});
