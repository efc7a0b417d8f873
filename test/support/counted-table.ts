/** A fresh table on the shared Azurite whose client counts every HTTP call it sends (a transaction is one). */
import type { TableClient } from "@azure/data-tables";
import { azurite, freshTables } from "../../dev/azurite.ts";
import { createTableClient } from "../../src/storage/azure/client.ts";

export async function countedTable(): Promise<{ client: TableClient; calls: () => number }> {
  const { connection } = await azurite();
  let calls = 0;
  const client = createTableClient(freshTables().jobs, {
    connection,
    configureClient: (c) =>
      c.pipeline.addPolicy({
        name: "count",
        sendRequest: (request, next) => {
          calls++;
          return next(request);
        },
      }),
  });
  await client.createTable();
  return { client, calls: () => calls };
}
