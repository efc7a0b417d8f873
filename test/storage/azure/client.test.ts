import { describe, expect, test } from "bun:test";
import { ConcurrencyConflictError, PayloadTooLargeError, StorageUnavailableError } from "../../../src/domain/errors.ts";
import { queryAll, StorageRejectedError, toDomainError } from "../../../src/storage/azure/client.ts";
import { StorageLimitError } from "../../../src/storage/azure/limits.ts";
import { countedTable } from "../../support/counted-table.ts";

const restError = (statusCode: number | undefined, code?: string) =>
  Object.assign(new Error('{"odata.error":{"message":"raw Azure text"}}'), { name: "RestError", statusCode, code });

describe("toDomainError", () => {
  test.each([409, 412])("%i is a conflict", (status) => {
    expect(toDomainError(restError(status), "x")).toBeInstanceOf(ConcurrencyConflictError);
  });
  test.each([408, 429, 500, 503, undefined])("%p (throttled, failing or unreachable) is unavailable, with Retry-After", (status) => {
    const mapped = toDomainError(restError(status, status === undefined ? "ECONNREFUSED" : undefined), "x");
    expect(mapped).toBeInstanceOf(StorageUnavailableError);
    expect((mapped as StorageUnavailableError).retryAfterSeconds).toBeGreaterThan(0);
  });
  test("a refused request is ours: no Azure text in the message", () => {
    const mapped = toDomainError(restError(400, "InvalidInput"), "store job");
    expect(mapped).toBeInstanceOf(StorageRejectedError);
    expect(mapped.message).not.toContain("raw Azure text");
  });
  test("a limit checked before the call is the request's: 413", () => {
    expect(toDomainError(new StorageLimitError("too big"), "x")).toBeInstanceOf(PayloadTooLargeError);
  });
});

describe("queryAll", () => {
  test("follows continuation tokens across pages until every row is read", async () => {
    const { client, calls } = await countedTable();
    for (let batch = 0; batch < 25; batch++) {
      await client.submitTransaction(
        Array.from(
          { length: 100 },
          (_, i) => ["create", { partitionKey: `p${batch}`, rowKey: `r${i}` }] as ["create", { partitionKey: string; rowKey: string }],
        ),
      );
    }
    const before = calls();
    const rows = await queryAll(client, "PartitionKey ge 'p'");
    expect(rows).toHaveLength(2500);
    expect(calls() - before).toBe(3);
  });
});
