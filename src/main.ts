/**
 * Entry point: the subcommands, and for `serve` settings, wiring, the socket, signals.
 * Bun-specific code lives here.
 */

import { configCheck, healthcheck, newKeyCommand, USAGE } from "./cli.ts";
import { loadProtocols, ProtocolFileError, type ProtocolRegistry } from "./config/protocols.ts";
import { loadSettings, type Settings, SettingsError } from "./config/settings.ts";
import { StorageUnavailableError } from "./domain/errors.ts";
import { createLogger, type Logger } from "./logging/logger.ts";
import { createRuntime, type Runtime } from "./runtime.ts";
import { createStopOnSignal } from "./shutdown-signals.ts";
import { StorageRejectedError } from "./storage/errors.ts";
import { VERSION } from "./version.ts";

/**
 * Bun's own limit answers 413 with an empty body, before our handler. Every route that reads a
 * body refuses past LUCIUS_MAX_BODY_BYTES itself (declared or counted, with a problem+json), and
 * Bun streams bodies to the handler without buffering them, so Bun's limit only bounds what no
 * route reads.
 */
function bunBodyLimit(maxBodyBytes: number): number {
  return Math.max(1024 * 1024 * 1024, 4 * maxBodyBytes);
}

type Logs = { logger: Logger; flush: () => Promise<void> };

/** Prints why the service cannot start, after the logs, and exits with 1. */
async function refuseToStart(reason: string, logs?: Logs): Promise<never> {
  if (logs) {
    logs.logger.fatal(reason);
    await logs.flush();
  }
  console.error(`lucius: cannot start: ${reason}`);
  process.exit(1);
}

/** Settings and protocols, or exit 1 naming every problem. */
async function loadConfiguration(): Promise<{ settings: Settings; protocols: ProtocolRegistry }> {
  try {
    const settings = loadSettings(Bun.env);
    return { settings, protocols: loadProtocols(settings) };
  } catch (error) {
    if (error instanceof SettingsError || error instanceof ProtocolFileError) return refuseToStart(error.message);
    throw error;
  }
}

/**
 * JSON log lines through Bun's buffered stdout writer: pino's own asynchronous destination spent
 * more time in its bookkeeping than the intake itself under load. Flushed every second and
 * before exit.
 */
function createStdoutLogs(settings: Settings): Logs {
  const stdout = Bun.stdout.writer({ highWaterMark: 64 * 1024 });
  const logger = createLogger({
    level: settings.logLevel,
    destination: { write: (line: string) => void stdout.write(line) },
    traceFields: settings.tracing !== null,
  });
  const flush = async () => {
    await stdout.flush();
  };
  setInterval(() => void flush(), 1000).unref();
  return { logger, flush };
}

/** Longer than an event stream's keep-alive (15 s), so that only a dead connection times out. */
const IDLE_TIMEOUT_SECONDS = 40;

function listen(settings: Settings, runtime: Runtime): ReturnType<typeof Bun.serve> | string {
  try {
    return Bun.serve({
      hostname: settings.host,
      port: settings.port,
      maxRequestBodySize: bunBodyLimit(settings.maxBodyBytes),
      // Bun closes a connection silent for 10 s by default: an event stream sends a comment every 15 s.
      idleTimeout: IDLE_TIMEOUT_SECONDS,
      fetch: runtime.fetch,
    });
  } catch (error) {
    return `cannot listen on ${settings.host}:${settings.port}: ${(error as Error).message}`;
  }
}

function logStartup(logger: Logger, settings: Settings, protocols: ProtocolRegistry, runtime: Runtime, url: URL): void {
  logger.info(
    {
      url: url.href,
      retryLoop: runtime.sweeper ? `every ${settings.outbox.retryIntervalSeconds}s` : "off",
      storage: settings.storageBackend,
      auth: settings.auth.mode,
      console: settings.admin.enabled ? new URL("/console", url).href : "off",
      protocols: protocols.list().map((p) => p.requestType),
      protocolSource: protocols.source,
    },
    "lucius listening",
  );
  if (!runtime.dispatcher) {
    logger.warn("publishing disabled: LUCIUS_SERVICEBUS_CONNECTION is not set, so outbox entries stay pending");
  } else {
    // The endpoint only: the connection string carries the key.
    const endpoint = /Endpoint=([^;]+)/i.exec(settings.serviceBusConnection ?? "")?.[1] ?? "(unknown endpoint)";
    logger.info({ endpoint }, "publishing to Azure Service Bus");
  }
}

/**
 * SIGTERM/SIGINT: stop listening, finish in-flight work, exit 0. The same signal repeated at once
 * (a process group signalled through `bun run`) is ignored; a later one, or the other signal,
 * exits at once with 1 (see shutdown-signals.ts).
 */
function stopOnSignals(logs: Logs, stopServer: () => Promise<void>, runtime: Runtime): void {
  const onSignal = createStopOnSignal({
    logger: logs.logger,
    async stop() {
      await stopServer();
      await runtime.stop();
    },
    async exit(code) {
      await logs.flush();
      process.exit(code);
    },
  });
  process.on("SIGTERM", () => void onSignal("SIGTERM"));
  process.on("SIGINT", () => void onSignal("SIGINT"));
}

async function serve(): Promise<void> {
  const { settings, protocols } = await loadConfiguration();
  const logs = createStdoutLogs(settings);
  let runtime: Runtime;
  try {
    runtime = await createRuntime({ settings, protocols, logger: logs.logger });
  } catch (error) {
    if (error instanceof StorageUnavailableError || error instanceof StorageRejectedError || error instanceof SettingsError)
      return refuseToStart(error.message, logs);
    throw error;
  }
  const server = listen(settings, runtime);
  if (typeof server === "string") return refuseToStart(server, logs);
  runtime.start();
  logStartup(logs.logger, settings, protocols, runtime, server.url);
  await logs.flush();
  stopOnSignals(logs, () => server.stop(false), runtime);
}

async function main(args: string[]): Promise<number | undefined> {
  const [command = "serve", ...rest] = args;
  const out = (line: string) => console.log(line);
  const err = (line: string) => console.error(line);
  switch (command) {
    case "serve":
      await serve();
      return undefined;
    case "healthcheck":
      return healthcheck(Bun.env, rest.includes("--ready"), err);
    case "config":
      if (rest[0] === "check") return configCheck(Bun.env, out, err);
      break;
    case "auth":
      if (rest[0] === "new-key") return newKeyCommand(rest.slice(1), out, err);
      break;
    case "--version":
    case "-v":
    case "version":
      out(VERSION);
      return 0;
    case "--help":
    case "-h":
    case "help":
      out(USAGE);
      return 0;
  }
  err(`lucius: unknown command '${args.join(" ")}'\n\n${USAGE}`);
  return 2;
}

const code = await main(Bun.argv.slice(2));
if (code !== undefined) process.exit(code);
