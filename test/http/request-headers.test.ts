import { describe, expect, test } from "bun:test";
import { MalformedRequestError } from "../../src/domain/errors.ts";
import { acceptTraceparent, resolveIdempotencyKey } from "../../src/http/request-headers.ts";

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
