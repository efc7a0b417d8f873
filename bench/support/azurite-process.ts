/** Azurite's table service as a Node child process (its own core), in memory, on a free port. */
import { resolve } from "node:path";
import { connectionStringFor } from "../../dev/azurite.ts";

async function freePort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

export async function startAzuriteProcess() {
  const port = await freePort();
  const main = resolve(import.meta.dir, "../../node_modules/azurite/dist/src/table/main.js");
  const proc = Bun.spawn(["node", main, "--inMemoryPersistence", "--tableHost", "127.0.0.1", "--tablePort", String(port), "--disableTelemetry", "--silent"], {
    stdout: "ignore",
    stderr: "inherit",
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await fetch(`http://127.0.0.1:${port}/`);
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("Azurite did not start");
      await Bun.sleep(50);
    }
  }
  return {
    connection: connectionStringFor(port),
    pid: proc.pid,
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
