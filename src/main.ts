/**
 * Entry point: the subcommands, and for `serve` settings, wiring, the socket, signals.
 * Bun-specific code lives here.
 */
import { loadProtocols, ProtocolFileError } from "./config/protocols.ts";
import { loadSettings, SettingsError } from "./config/settings.ts";
import { StorageUnavailableError } from "./domain/errors.ts";
import { StorageRejectedError } from "./storage/errors.ts";
import { createLogger } from "./logging/logger.ts";
import { createRuntime } from "./runtime.ts";
import { configCheck, healthcheck, USAGE } from "./cli.ts";
import { VERSION } from "./version.ts";

/** Bun's own limit is only a backstop: ours, lower, answers with a problem+json 413. */
function bunBodyLimit(maxBodyBytes: number): number {
  return Math.max(2 * maxBodyBytes, maxBodyBytes + 65536);
}

async function serve(): Promise<void> {
  let settings;
  let protocols;
  try {
    settings = loadSettings(Bun.env);
    protocols = loadProtocols(settings.protocolsFile);
  } catch (error) {
    if (error instanceof SettingsError || error instanceof ProtocolFileError) {
      console.error(`lucius: cannot start: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }
  // Bun's buffered stdout writer: pino's own asynchronous destination spent more time in its
  // bookkeeping than the intake itself under load. Flushed every second and before exit.
  const stdout = Bun.stdout.writer({ highWaterMark: 64 * 1024 });
  const logger = createLogger({ level: settings.logLevel, destination: { write: (line: string) => void stdout.write(line) } });
  const flushLogs = async () => {
    await stdout.flush();
  };
  let runtime;
  try {
    runtime = await createRuntime({ settings, protocols, logger });
  } catch (error) {
    if (error instanceof StorageUnavailableError || error instanceof StorageRejectedError) {
      logger.fatal(error.message);
      await flushLogs();
      console.error(`lucius: cannot start: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }

  let server;
  try {
    server = Bun.serve({
      hostname: settings.host,
      port: settings.port,
      maxRequestBodySize: bunBodyLimit(settings.maxBodyBytes),
      fetch: runtime.fetch,
    });
  } catch (error) {
    const reason = `cannot listen on ${settings.host}:${settings.port}: ${(error as Error).message}`;
    logger.fatal(reason);
    await flushLogs();
    console.error(`lucius: cannot start: ${reason}`);
    process.exit(1);
  }

  runtime.start();
  logger.info(
    {
      url: server.url.href,
      retryLoop: runtime.sweeper ? `every ${settings.outbox.retryIntervalSeconds}s` : "off",
      storage: settings.storageBackend,
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

  await flushLogs();
  setInterval(() => void flushLogs(), 1000).unref();

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting without waiting");
      await flushLogs();
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "stopping: no new connections, waiting for in-flight requests and publishes");
    await server.stop(false);
    await runtime.stop();
    logger.info("stopped");
    await flushLogs();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
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
