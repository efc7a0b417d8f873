/**
 * `bun run dev`: the whole stack on this machine, for trying Lucius end to end. Starts Azurite
 * (in memory), the dev AMQP broker with every topic of the bundled protocols and the events
 * queue, the service on `ledger` with publishing, the events receiver and the admin API, and
 * the example worker for every step; prints what runs where and a command to try. Ctrl-C stops
 * every process it started.
 *
 *   bun run dev [--port 8000] [--azurite-port 10002] [--broker-port 5672]   (0: any free port)
 *               [--runtime bun|deno]   (the service on Bun, or on Deno through src/deno.ts)
 */
import { randomBytes } from "node:crypto";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { connectionStringFor } from "../dev/azurite.ts";
import { DENO_RUN, denoExecutable } from "../dev/deno-command.ts";
import { loadProtocols } from "../src/config/protocols.ts";

const root = resolve(import.meta.dir, "..");
function options() {
  try {
    return parseArgs({
      options: {
        port: { type: "string", default: "8000" },
        "azurite-port": { type: "string", default: "10002" },
        "broker-port": { type: "string", default: "5672" },
        runtime: { type: "string", default: "bun" },
      },
    }).values;
  } catch (error) {
    console.error(`dev: ${(error as Error).message}; usage: bun run dev [--port 8000] [--azurite-port 10002] [--broker-port 5672] [--runtime bun|deno]`);
    process.exit(2);
  }
}
const values = options();
const EVENTS_QUEUE = "step-events";
if (values.runtime !== "bun" && values.runtime !== "deno") {
  console.error("dev: --runtime must be bun or deno");
  process.exit(2);
}

/**
 * The ports asked for; each 0 becomes a free port. The probes stay open until every port is
 * chosen, so that two zeros never get the same port (a port closed is free to be handed out again).
 */
function portsOf(flags: Record<string, string>): number[] {
  const probes: Bun.TCPSocketListener<undefined>[] = [];
  const ports = Object.entries(flags).map(([flag, value]) => {
    const port = Number(value);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      console.error(`dev: --${flag} must be a port number (0 picks a free one)`);
      process.exit(2);
    }
    if (port !== 0) return port;
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    probes.push(probe);
    return probe.port;
  });
  for (const probe of probes) probe.stop(true);
  return ports;
}

const children: { name: string; proc: Bun.Subprocess }[] = [];

/** Starts a child whose output lines are shown prefixed with its name; `ready` sees each line. */
function start(name: string, cmd: string[], env: Record<string, string>, ready?: (line: string) => boolean): Promise<void> {
  const proc = Bun.spawn(cmd, { cwd: root, env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
  children.push({ name, proc });
  let resolveReady: () => void = () => {};
  const isReady = new Promise<void>((res) => {
    resolveReady = res;
  });
  if (!ready) resolveReady();
  for (const stream of [proc.stdout, proc.stderr]) {
    void (async () => {
      let buffered = "";
      for await (const chunk of stream) {
        buffered += new TextDecoder().decode(chunk);
        for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          console.log(`[${name}] ${line}`);
          if (ready?.(line)) resolveReady();
        }
      }
    })();
  }
  void proc.exited.then((code) => {
    if (!stopping) {
      console.error(`dev: ${name} exited (code ${code}); stopping everything`);
      void stopAll(1);
    }
  });
  return Promise.race([
    isReady,
    proc.exited.then((code) => {
      throw new Error(`${name} exited with code ${code} before it was ready`);
    }),
  ]);
}

/** Until `url` answers (with 2xx, or with anything when `anyAnswer`). */
async function waitForHttp(url: string, what: string, anyAnswer = false): Promise<void> {
  for (const deadline = Date.now() + 30_000; ; ) {
    try {
      const response = await fetch(url);
      if (response.ok || anyAnswer) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what} did not answer at ${url}`);
    await Bun.sleep(100);
  }
}

let stopping = false;
/**
 * Stops every child. A Ctrl-C in the terminal reaches the children too (one process group): they
 * get a few seconds to stop on their own before being told again, since a second signal makes
 * the service exit without waiting for its in-flight work.
 */
async function stopAll(code: number, childrenSignalled = false): Promise<never> {
  if (stopping) return new Promise<never>(() => {});
  stopping = true;
  const exited = Promise.all(children.map(({ proc }) => proc.exited));
  if (childrenSignalled) await Promise.race([exited, Bun.sleep(5000)]);
  for (const { proc } of [...children].reverse()) if (proc.exitCode === null) proc.kill("SIGTERM");
  await Promise.race([exited, Bun.sleep(10_000)]);
  for (const { proc } of children) if (proc.exitCode === null) proc.kill("SIGKILL");
  process.exit(code);
}
process.on("SIGINT", () => void stopAll(0, true));
process.on("SIGTERM", () => void stopAll(0));

try {
  const [port, azuritePort, brokerPort] = portsOf({ port: values.port!, "azurite-port": values["azurite-port"]!, "broker-port": values["broker-port"]! }) as [
    number,
    number,
    number,
  ];
  const azuriteMain = resolve(root, "node_modules/azurite/dist/src/table/main.js");
  await start(
    "azurite",
    ["node", azuriteMain, "--inMemoryPersistence", "--tableHost", "127.0.0.1", "--tablePort", String(azuritePort), "--disableTelemetry", "--silent"],
    {},
  );
  // Azurite answers a bare GET with an error: any answer means it listens.
  await waitForHttp(`http://127.0.0.1:${azuritePort}/`, "Azurite", true);
  // Every topic of the active protocol file (LUCIUS_PROTOCOLS_FILE, else the bundled one).
  const topics = [
    ...new Set(
      loadProtocols({ protocolsFile: process.env.LUCIUS_PROTOCOLS_FILE || null, stepTimeoutSeconds: 0 })
        .list()
        .flatMap((protocol) => protocol.steps.map((step) => step.topic)),
    ),
  ];
  let brokerConnection = "";
  const topicArgs = topics.flatMap((topic) => ["--topic", topic]);
  await start("broker", ["bun", "scripts/broker.ts", "--port", String(brokerPort), "--queue", EVENTS_QUEUE, ...topicArgs], {}, (line) => {
    const match = /LUCIUS_SERVICEBUS_CONNECTION='([^']+)'/.exec(line);
    if (match) brokerConnection = match[1]!;
    return match !== null;
  });
  const adminKey = `dev-${randomBytes(12).toString("hex")}`;
  const service = values.runtime === "deno" ? [denoExecutable(), ...DENO_RUN] : ["bun", "src/main.ts"];
  await start("lucius", service, {
    LUCIUS_HOST: "127.0.0.1",
    LUCIUS_PORT: String(port),
    LUCIUS_LOG_LEVEL: process.env.LUCIUS_LOG_LEVEL ?? "warn",
    LUCIUS_STORAGE_BACKEND: "ledger",
    LUCIUS_TABLE_CONNECTION: connectionStringFor(azuritePort),
    LUCIUS_SERVICEBUS_CONNECTION: brokerConnection,
    LUCIUS_EVENTS_ENTITY: EVENTS_QUEUE,
    LUCIUS_ADMIN_ENABLED: "true",
    LUCIUS_ADMIN_API_KEY: adminKey,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/readyz`, "the service");
  await start("worker", ["bun", "examples/worker.ts", ...topics], { LUCIUS_SERVICEBUS_CONNECTION: brokerConnection, WORKER_LOCK_RENEWAL_MS: "0" }, (line) =>
    line.includes("worker taking messages"),
  );
  console.log(`
Lucius is running (Ctrl-C stops everything):
  service   ${url}   (on ${values.runtime === "deno" ? "Deno" : "Bun"}; ledger on Azurite, publishing, step events from '${EVENTS_QUEUE}')
  Azurite   http://127.0.0.1:${azuritePort}   (in memory)
  broker    ${brokerConnection}
  worker    examples/worker.ts on ${topics.join(", ")}
  admin key ${adminKey}   (development only)
  console   ${url}/console   (enter the admin key; then Jobs, tenant acme)

Try:
  curl -s ${url}/v1/commands -H 'content-type: application/json' -d '{"requestType":"document.ingest","tenantId":"acme","payload":{"documentId":"d1","documentUri":"https://files.example/d1.pdf","contentType":"application/pdf"}}'
  curl -s ${url}/v1/jobs/<jobId>
`);
  console.log(`dev: ready at ${url}`);
} catch (error) {
  console.error(`dev: ${(error as Error).message}`);
  await stopAll(1);
}
