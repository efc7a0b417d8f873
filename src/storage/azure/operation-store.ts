/**
 * Bulk operations on Azure (both layouts): one small table, one row per operation in a single
 * partition (there are few), the operation as JSON beside the fields the runners query by.
 */
import { odata } from "@azure/data-tables";
import type { BulkOperation } from "../../domain/bulk.ts";
import { ConcurrencyConflictError } from "../../domain/errors.ts";
import type { OperationStore } from "../operation-store.ts";
import { type AzureTableOptions, createTableClient, deleteIfPresent, guarded, insertIfAbsent, isMissing, lostConditionalWrite, queryAll } from "./client.ts";
import { checkEntity, chunkString, type Entity, joinChunks } from "./limits.ts";

const PARTITION = "op";

export interface AzureOperationStoreOptions extends AzureTableOptions {
  table: string;
}

function toEntity(operation: BulkOperation): Entity {
  const { etag: _, ...rest } = operation;
  return {
    partitionKey: PARTITION,
    rowKey: operation.operationId,
    status: operation.status,
    createdAt: operation.createdAt,
    ...(operation.finishedAt === null ? {} : { finishedAt: operation.finishedAt }),
    ...chunkString("operation", JSON.stringify(rest)),
  };
}

function fromEntity(row: Record<string, unknown> & { etag: string }): BulkOperation {
  return { ...(JSON.parse(joinChunks(row, "operation") ?? "{}") as BulkOperation), etag: row.etag };
}

export function createAzureOperationStore(options: AzureOperationStoreOptions): OperationStore {
  const client = createTableClient(options.table, options);

  async function get(operationId: string): Promise<BulkOperation | null> {
    try {
      return fromEntity(await client.getEntity<Record<string, unknown>>(PARTITION, operationId));
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  return {
    init: () => guarded("create tables", async () => void (await client.createTable())),

    create: (operation) =>
      guarded("store operation", async () => {
        const entity = toEntity(operation);
        checkEntity(entity);
        const inserted = await insertIfAbsent(client, entity);
        if (inserted.inserted) return { created: true, operation: { ...operation, etag: inserted.etag ?? "" } };
        return { created: false, operation: (await get(operation.operationId))! };
      }),

    get: (operationId) => guarded("read operation", () => get(operationId)),

    listRunning: (limit) =>
      guarded("list operations", async () =>
        (await queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${PARTITION} and status eq ${"running"}`, { limit }))
          .map(fromEntity)
          .sort((a, b) => a.createdAt.localeCompare(b.createdAt)),
      ),

    save: (operation) =>
      guarded("save operation", async () => {
        const entity = toEntity(operation);
        checkEntity(entity);
        try {
          const response = await client.updateEntity(entity, "Replace", { etag: operation.etag ?? "*" });
          return { ...operation, etag: response.etag ?? "" };
        } catch (error) {
          if (lostConditionalWrite(error) || isMissing(error))
            throw new ConcurrencyConflictError(`operation ${operation.operationId} was changed by another writer`, { cause: error });
          throw error;
        }
      }),

    purgeFinished: (finishedBefore, limit) =>
      guarded("purge operations", async () => {
        const rows = await queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${PARTITION} and finishedAt lt ${finishedBefore.toISOString()}`, {
          limit,
          select: ["RowKey"],
        });
        await Promise.all(rows.map((row) => deleteIfPresent(client, PARTITION, String(row.rowKey))));
        return rows.length;
      }),
  };
}
