/**
 * `bun run azurite`: Azurite's table service in memory, for running the service on `ledger` or
 * `table` by hand (the tests start their own).
 *
 *   bun run azurite [--port 10002]        (Azurite's own --tablePort works too)
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { connectionStringFor } from "../dev/azurite.ts";

function options() {
  try {
    return parseArgs({ options: { port: { type: "string" }, tablePort: { type: "string" } } }).values;
  } catch (error) {
    console.error(`azurite: ${(error as Error).message}; usage: bun run azurite [--port 10002]`);
    process.exit(2);
  }
}
const values = options();
const port = Number(values.port ?? values.tablePort ?? "10002");
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error("azurite: --port must be a port number");
  process.exit(2);
}
const main = resolve(import.meta.dir, "../node_modules/azurite/dist/src/table/main.js");
const proc = Bun.spawn(["node", main, "--inMemoryPersistence", "--tableHost", "127.0.0.1", "--tablePort", String(port), "--disableTelemetry"], {
  stdout: "inherit",
  stderr: "inherit",
});
console.log(`LUCIUS_TABLE_CONNECTION='${connectionStringFor(port)}'`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => proc.kill(signal));
process.exit(await proc.exited);
