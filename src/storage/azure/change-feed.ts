/**
 * The change feed on Azure (both layouts): markers in `<outbox or ledger table>Chg`, four
 * partitions by job, row key `<time>_<jobId>_<seq>`, so that reading what is new is one short
 * range per partition. Markers are written in batches (one transaction per partition and flush)
 * and removed after a few minutes: the table stays small whatever the history.
 */
import { odata, type TransactionAction } from "@azure/data-tables";
import type { JobStatus } from "../../domain/model.ts";
import type { ChangeFeed, ChangeMarker } from "../change-feed.ts";
import { type AzureTableOptions, createTableClient, deleteRows, guarded, queryAll } from "./client.ts";
import { shardOf } from "./due-index.ts";
import { MAX_TRANSACTION_OPERATIONS } from "./limits.ts";

const SHARDS = 4;
const partitionOf = (jobId: string) => `feed-${shardOf(jobId, SHARDS)}`;
const rowKeyOf = (marker: ChangeMarker) => `${marker.at}_${marker.jobId}_${String(marker.seq).padStart(6, "0")}`;

export function createAzureChangeFeed(options: AzureTableOptions & { table: string }): ChangeFeed {
  const client = createTableClient(options.table, options);
  return {
    init: () => guarded("create tables", async () => void (await client.createTable())),

    append: (written) =>
      guarded("write change markers", async () => {
        // Stamped as written, so that a reader's window (its last read, less a margin) meets it.
        const at = new Date().toISOString();
        const markers = written.map((marker) => ({ ...marker, at }));
        const byPartition = new Map<string, ChangeMarker[]>();
        for (const marker of markers) byPartition.set(partitionOf(marker.jobId), [...(byPartition.get(partitionOf(marker.jobId)) ?? []), marker]);
        await Promise.all(
          [...byPartition].flatMap(([partitionKey, list]) => {
            const chunks: ChangeMarker[][] = [];
            for (let i = 0; i < list.length; i += MAX_TRANSACTION_OPERATIONS) chunks.push(list.slice(i, i + MAX_TRANSACTION_OPERATIONS));
            return chunks.map((chunk) =>
              client.submitTransaction(chunk.map((marker): TransactionAction => ["upsert", { partitionKey, rowKey: rowKeyOf(marker), ...marker }, "Replace"])),
            );
          }),
        );
      }),

    readSince: (since, limit) =>
      guarded("read change markers", async () => {
        const shards = await Promise.all(
          Array.from({ length: SHARDS }, (_, shard) =>
            queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${`feed-${shard}`} and RowKey ge ${since.toISOString()}`, { limit }),
          ),
        );
        return shards
          .flat()
          .map((row) => ({
            key: `${row.partitionKey}/${row.rowKey}`,
            tenantId: String(row.tenantId),
            jobId: String(row.jobId),
            requestType: String(row.requestType),
            seq: Number(row.seq),
            jobStatus: String(row.jobStatus) as JobStatus,
            origin: String(row.origin),
            at: String(row.at),
          }))
          .sort((a, b) => a.at.localeCompare(b.at));
      }),

    purge: (before, limit) =>
      guarded("purge change markers", async () => {
        let removed = 0;
        for (let shard = 0; shard < SHARDS; shard++) {
          const rows = await queryAll<Record<string, unknown>>(client, odata`PartitionKey eq ${`feed-${shard}`} and RowKey lt ${before.toISOString()}`, {
            limit,
            select: ["RowKey"],
          });
          await deleteRows(
            client,
            `feed-${shard}`,
            rows.map((row) => String(row.rowKey)),
          );
          removed += rows.length;
        }
        return removed;
      }),
  };
}
