/** Idempotency records of both Azure layouts: one row per (tenant, key), claimed by an insert. */
import type { TableClient } from "@azure/data-tables";
import type { IdempotencyRecord } from "../../domain/model.ts";
import { guarded, insertIfAbsent } from "./client.ts";
import { entityToIdempotency, idempotencyKeys, idempotencyToEntity } from "./entities.ts";
import { checkEntity } from "./limits.ts";

export type ClaimOutcome = { claimed: true } | { claimed: false; existing: IdempotencyRecord };

export interface IdempotencyClaims {
  /** Inserts the record unless its key is taken; of concurrent claims exactly one wins. */
  claim(record: IdempotencyRecord): Promise<ClaimOutcome>;
}

export function createIdempotencyClaims(client: TableClient): IdempotencyClaims {
  return {
    claim(record) {
      return guarded("claim idempotency key", async (): Promise<ClaimOutcome> => {
        const entity = idempotencyToEntity(record);
        checkEntity(entity);
        if ((await insertIfAbsent(client, entity)).inserted) return { claimed: true };
        const keys = idempotencyKeys(record.tenantId, record.key);
        return { claimed: false, existing: entityToIdempotency(await client.getEntity(keys.partitionKey, keys.rowKey)) };
      });
    },
  };
}
