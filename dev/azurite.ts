/**
 * Azurite's table service, started in this process once per test run (in memory, free port)
 * from the npm package, and fresh table names for each test.
 */
import { randomBytes } from "node:crypto";

/** The emulator's published development account: not a secret. */
export const AZURITE_ACCOUNT = "devstoreaccount1";
export const AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

export function connectionStringFor(port: number): string {
  return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};TableEndpoint=http://127.0.0.1:${port}/${AZURITE_ACCOUNT};`;
}

interface Running {
  connection: string;
  port: number;
  close(): Promise<void>;
}

let starting: Promise<Running> | undefined;

async function start(): Promise<Running> {
  const { default: TableServer } = await import("azurite/dist/src/table/TableServer.js");
  const { default: TableConfiguration } = await import("azurite/dist/src/table/TableConfiguration.js");
  // host, port (0: free), keep-alive, db path, debug log, access log, log stream, debug file,
  // loose, skip API version check, cert, key, pwd, oauth, product-style URLs off, in memory.
  const configuration = new TableConfiguration(
    "127.0.0.1",
    0,
    undefined,
    undefined,
    false,
    false,
    undefined,
    undefined,
    false,
    true,
    "",
    "",
    "",
    undefined,
    false,
    true,
  );
  const server = new TableServer(configuration);
  await server.start();
  const port = Number(new URL(server.getHttpServerAddress()).port);
  return { connection: connectionStringFor(port), port, close: () => server.close() };
}

/** The run's Azurite; started on first use, closed with the process. */
export function azurite(): Promise<Running> {
  starting ??= start();
  return starting;
}

/** Table names no other test uses: Azurite keeps tables for the whole run. */
export function freshTables() {
  const prefix = `t${randomBytes(5).toString("hex")}`;
  return {
    jobs: `${prefix}Jobs`,
    steps: `${prefix}Steps`,
    outbox: `${prefix}Outbox`,
    ledger: `${prefix}Ledger`,
    idempotency: `${prefix}Idem`,
    jobIndex: `${prefix}Index`,
    operations: `${prefix}Ops`,
    due: `${prefix}Due`,
    ttl: `${prefix}Ttl`,
  };
}
