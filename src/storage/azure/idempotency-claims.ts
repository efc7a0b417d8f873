/** Idempotency records of both Azure layouts: one row per (tenant, key), claimed by an insert. */
import type { TableClient } from "@azure/data-tables";
import type { IdempotencyRecord } from "../../domain/model.ts";
import { createBatchedMarkerWrites } from "./batched-marker-writes.ts";
import { guarded, insertIfAbsent, isMissing, lostConditionalWrite } from "./client.ts";
import { entityToIdempotency, idempotencyKeys, idempotencyToEntity } from "./entities.ts";
import { checkEntity } from "./limits.ts";

export type ClaimOutcome = { claimed: true } | { claimed: false; existing: IdempotencyRecord };

export interface IdempotencyClaims {
  /**
   * Inserts the record unless its key is taken; of concurrent claims exactly one wins. A record
   * created before `expiredBefore` no longer holds its key: the claim replaces it, conditionally,
   * so that of concurrent re-claims too exactly one wins.
   */
  claim(record: IdempotencyRecord, expiredBefore?: Date): Promise<ClaimOutcome>;
  /**
   * Deletes the record of (tenant, key) if it is still the one `match` describes (created at that
   * time, or pointing at that job); true when deleted.
   */
  expire(tenantId: string, key: string, match: { createdAt: string } | { jobId: string }): Promise<boolean>;
}

export function createIdempotencyClaims(client: TableClient): IdempotencyClaims {
  const writes = createBatchedMarkerWrites(client);
  async function read(tenantId: string, key: string): Promise<(IdempotencyRecord & { etag: string }) | null> {
    const keys = idempotencyKeys(tenantId, key);
    try {
      const row = await client.getEntity<Record<string, unknown>>(keys.partitionKey, keys.rowKey);
      return { ...entityToIdempotency(row), etag: row.etag };
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  return {
    claim(record, expiredBefore) {
      return guarded("claim idempotency key", async (): Promise<ClaimOutcome> => {
        const entity = idempotencyToEntity(record);
        checkEntity(entity);
        // Claims of the tenant made meanwhile share one call under load.
        if (await writes.write(["create", entity])) return { claimed: true };
        const existing = await read(record.tenantId, record.key);
        // Our own record (job ids are never reused): a transaction stored, its reply lost, and the
        // SDK's retry refused by what it had stored. The key is ours.
        if (existing?.jobId === record.jobId) return { claimed: true };
        // Deleted between the insert and the read (expired meanwhile): claim it afresh.
        if (!existing)
          return (await insertIfAbsent(client, entity)).inserted ? { claimed: true } : { claimed: false, existing: (await read(record.tenantId, record.key))! };
        if (expiredBefore === undefined || existing.createdAt >= expiredBefore.toISOString()) return { claimed: false, existing };
        try {
          await client.updateEntity(entity, "Replace", { etag: existing.etag });
          return { claimed: true };
        } catch (error) {
          if (!lostConditionalWrite(error) && !isMissing(error)) throw error;
          // Another request re-claimed the expired key first: its record answers this one.
          const winner = await read(record.tenantId, record.key);
          return winner ? { claimed: false, existing: winner } : { claimed: false, existing };
        }
      });
    },

    expire(tenantId, key, match) {
      return guarded("expire idempotency key", async () => {
        const existing = await read(tenantId, key);
        if (!existing || ("createdAt" in match ? existing.createdAt !== match.createdAt : existing.jobId !== match.jobId)) return false;
        const keys = idempotencyKeys(tenantId, key);
        try {
          await client.deleteEntity(keys.partitionKey, keys.rowKey, { etag: existing.etag });
          return true;
        } catch (error) {
          if (lostConditionalWrite(error) || isMissing(error)) return false;
          throw error;
        }
      });
    },
  };
}
