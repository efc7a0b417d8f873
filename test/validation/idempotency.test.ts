import { describe, expect, test } from "bun:test";
import { MalformedRequestError } from "../../src/domain/errors.ts";
import { acceptTraceparent, requestFingerprint, resolveIdempotencyKey } from "../../src/validation/idempotency.ts";

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

describe("resolveIdempotencyKey", () => {
  test("takes the header or the body field", () => {
    expect(resolveIdempotencyKey("h", undefined)).toBe("h");
    expect(resolveIdempotencyKey(null, "b")).toBe("b");
    expect(resolveIdempotencyKey("same", "same")).toBe("same");
    expect(resolveIdempotencyKey(null, undefined)).toBeNull();
  });
  test("refuses both present and different, and a header outside printable ASCII or 255 chars", () => {
    expect(() => resolveIdempotencyKey("a", "b")).toThrow(MalformedRequestError);
    expect(() => resolveIdempotencyKey("tab\there", undefined)).toThrow(MalformedRequestError);
    expect(() => resolveIdempotencyKey("k".repeat(256), undefined)).toThrow(MalformedRequestError);
    expect(resolveIdempotencyKey("k".repeat(255), undefined)).toHaveLength(255);
  });
});

describe("acceptTraceparent", () => {
  test("keeps a valid W3C traceparent, normalised to lower case", () => {
    expect(acceptTraceparent("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01")).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  });
  test("ignores an invalid one instead of failing the request", () => {
    expect(acceptTraceparent("garbage")).toBeNull();
    expect(acceptTraceparent("00-00000000000000000000000000000000-b7ad6b7169203331-01")).toBeNull();
    expect(acceptTraceparent("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")).toBeNull();
    expect(acceptTraceparent(null)).toBeNull();
  });
});
