/**
 * LUCIUS_AUTH_MODE=apikey: static keys for machine clients where no identity provider exists.
 * LUCIUS_AUTH_KEYS_FILE lists `{ name, sha256, tenants, roles }`; the keys themselves are never
 * stored. A presented key is hashed and compared with every entry's digest in constant time, so
 * neither a key's content nor which entry matched leaks through timing. The file is read at start:
 * a key removed from it stops working at the next start.
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { UnauthorizedError } from "../domain/errors.ts";
import type { Authenticator } from "./authenticator.ts";
import { type Caller, PERMISSIONS, permissionsFrom, tenantsFrom } from "./caller.ts";

const KeyEntry = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    sha256: Type.String({ pattern: "^[0-9a-f]{64}$", description: "hex SHA-256 of the key" }),
    tenants: Type.Union([Type.Literal("*"), Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 10_000 })]),
    roles: Type.Array(Type.Union(PERMISSIONS.map((p) => Type.Literal(p))), { uniqueItems: true }),
  },
  { additionalProperties: false },
);
const KeysFile = Type.Array(KeyEntry, { maxItems: 10_000 });
export type KeyEntry = Static<typeof KeyEntry>;

export class KeysFileError extends Error {
  constructor(path: string, problem: string) {
    super(`LUCIUS_AUTH_KEYS_FILE ${path}: ${problem}`);
    this.name = "KeysFileError";
  }
}

/** The entries of a keys file; a file that cannot be read or does not match the format stops the start. */
export function loadKeysFile(path: string): KeyEntry[] {
  let document: unknown;
  try {
    document = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new KeysFileError(path, (error as Error).message);
  }
  if (!Value.Check(KeysFile, document)) {
    const problems = [...Value.Errors(KeysFile, document)].slice(0, 10).map((e) => `${e.path || "/"}: ${e.message}`);
    throw new KeysFileError(path, `does not match the keys file format: ${problems.join("; ")}`);
  }
  const entries = document as KeyEntry[];
  const names = new Set<string>();
  for (const [i, entry] of entries.entries()) {
    if (names.has(entry.name)) throw new KeysFileError(path, `/${i}/name: duplicate name '${entry.name}'`);
    names.add(entry.name);
  }
  return entries;
}

const digestOf = (key: string) => createHash("sha256").update(key, "utf8").digest();

export function createApiKeyAuthenticator(entries: readonly KeyEntry[]): Authenticator {
  const known = entries.map((entry) => ({
    digest: Buffer.from(entry.sha256, "hex"),
    caller: { name: entry.name, tenants: tenantsFrom(entry.tenants), permissions: permissionsFrom(entry.roles) } satisfies Caller,
  }));
  return {
    async authenticate(key) {
      if (key === null) throw new UnauthorizedError("send an API key in X-API-Key or Authorization: Bearer", "missing-credentials");
      const digest = digestOf(key);
      let match: Caller | null = null;
      // Every entry is compared, matched or not: the time taken does not say which one matched.
      for (const entry of known) if (timingSafeEqual(digest, entry.digest) && match === null) match = entry.caller;
      if (match === null) throw new UnauthorizedError("the API key is not known", "invalid-credentials");
      return match;
    },
  };
}

/** A new random key and the entry that grants it (what `lucius auth new-key` prints). */
export function newApiKey(entry: Omit<KeyEntry, "sha256">): { key: string; entry: KeyEntry } {
  const key = `lk_${randomBytes(32).toString("base64url")}`;
  return { key, entry: { name: entry.name, sha256: digestOf(key).toString("hex"), tenants: entry.tenants, roles: entry.roles } };
}
