import { describe, expect, test } from "bun:test";
import {
  checkEntity,
  checkTransaction,
  chunkString,
  entitySizeBytes,
  joinChunks,
  MAX_STRING_CHARS,
  StorageLimitError,
} from "../../../src/storage/azure/limits.ts";

const keys = { partitionKey: "p", rowKey: "r" };

describe("chunkString / joinChunks", () => {
  test("a short string stays one property", () => {
    expect(chunkString("payload", "abc")).toEqual({ payload: "abc" });
  });
  test("a long string is split into parts of at most 32 K characters and joined back exactly", () => {
    const value = "ab😀".repeat(30_000);
    const parts = chunkString("payload", value);
    expect(parts.payload__parts).toBe(Math.ceil(value.length / MAX_STRING_CHARS));
    for (const part of Object.values(parts)) if (typeof part === "string") expect(part.length).toBeLessThanOrEqual(MAX_STRING_CHARS);
    expect(joinChunks(parts, "payload")).toBe(value);
  });
  test("never splits a surrogate pair between parts", () => {
    const value = `${"x".repeat(MAX_STRING_CHARS - 1)}😀y`;
    const parts = chunkString("v", value);
    expect(parts.v).toBe("x".repeat(MAX_STRING_CHARS - 1));
    expect(joinChunks(parts, "v")).toBe(value);
  });
  test("a missing part is an error, not a silently shorter value", () => {
    const parts = chunkString("v", "z".repeat(MAX_STRING_CHARS * 2 + 1));
    delete parts.v__1;
    expect(() => joinChunks(parts, "v")).toThrow(/part 1/);
  });
});

describe("entity and transaction limits, before any call", () => {
  test("entity size counts strings in UTF-16 like Azure", () => {
    expect(entitySizeBytes({ ...keys, s: "abcd" })).toBe(4 + 4 + 8 + 2 + 4 + 8);
  });
  test("a string over 32 K characters is refused", () => {
    expect(() => checkEntity({ ...keys, s: "x".repeat(MAX_STRING_CHARS + 1) })).toThrow(StorageLimitError);
  });
  test("an entity over 1 MiB is refused", () => {
    const big = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`p${i}`, "x".repeat(MAX_STRING_CHARS)]));
    expect(() => checkEntity({ ...keys, ...big })).toThrow(/1048576/);
  });
  test("more than 252 properties are refused", () => {
    expect(() => checkEntity({ ...keys, ...Object.fromEntries(Array.from({ length: 253 }, (_, i) => [`p${i}`, 1])) })).toThrow(/252/);
  });
  test("a transaction: not empty, at most 100 operations, one partition, under 4 MiB", () => {
    expect(() => checkTransaction([])).toThrow(/at least one/);
    expect(() => checkTransaction(Array.from({ length: 101 }, (_, i) => ({ ...keys, rowKey: `r${i}` })))).toThrow(/100/);
    expect(() => checkTransaction([keys, { partitionKey: "q", rowKey: "r" }])).toThrow(/one partition/);
    const heavy = Array.from({ length: 25 }, (_, i) => ({ ...keys, rowKey: `r${i}`, a: "é".repeat(30_000), b: "é".repeat(30_000), c: "é".repeat(30_000) }));
    expect(() => checkTransaction(heavy)).toThrow(/4194304/);
    expect(() => checkTransaction(Array.from({ length: 100 }, (_, i) => ({ ...keys, rowKey: `r${i}` })))).not.toThrow();
  });
});
