/**
 * The entry point on Deno 2: the same wiring as main.ts's `serve`, with Deno's edges (serve, env,
 * stdout, signals). Everything else is the shared source. Bun-only: the compiled binary and the
 * subcommands of cli.ts.
 *
 *   deno task start          (see deno.json)
 */
import { loadProtocols, ProtocolFileError } from "./config/protocols.ts";
import { loadSettings, SettingsError } from "./config/settings.ts";
import { StorageUnavailableError } from "./domain/errors.ts";
import { createLogger } from "./logging/logger.ts";
import { createRuntime } from "./runtime.ts";
import { createStopOnSignal } from "./shutdown-signals.ts";
import { StorageRejectedError } from "./storage/errors.ts";

/** The little of Deno's API this entry uses, so that the project's type-check needs no Deno types. */
declare const Deno: {
  env: { toObject(): Record<string, string> };
  stdout: { writeSync(bytes: Uint8Array): number };
  serve(
    options: { hostname: string; port: number; onListen?: (address: { hostname: string; port: number }) => void },
    handler: (request: Request) => Promise<Response>,
  ): { shutdown(): Promise<void> };
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
  exit(code: number): never;
};

function refuseToStart(reason: string): never {
  console.error(`lucius: cannot start: ${reason}`);
  Deno.exit(1);
}

let settings: ReturnType<typeof loadSettings>;
let protocols: ReturnType<typeof loadProtocols>;
try {
  settings = loadSettings(Deno.env.toObject());
  protocols = loadProtocols(settings);
} catch (error) {
  if (error instanceof SettingsError || error instanceof ProtocolFileError) refuseToStart(error.message);
  throw error;
}

const encoder = new TextEncoder();
const logger = createLogger({
  level: settings.logLevel,
  destination: { write: (line: string) => void Deno.stdout.writeSync(encoder.encode(line)) },
  traceFields: settings.tracing !== null,
});
let runtime: Awaited<ReturnType<typeof createRuntime>>;
try {
  runtime = await createRuntime({ settings, protocols, logger });
} catch (error) {
  if (error instanceof StorageUnavailableError || error instanceof StorageRejectedError || error instanceof SettingsError) refuseToStart(error.message);
  throw error;
}

const server = Deno.serve(
  {
    hostname: settings.host,
    port: settings.port,
    onListen: ({ hostname, port }) =>
      logger.info({ url: `http://${hostname}:${port}/`, runtime: "deno", storage: settings.storageBackend }, "lucius listening"),
  },
  runtime.fetch,
);
runtime.start();

const stop = createStopOnSignal({
  logger,
  async stop() {
    await server.shutdown();
    await runtime.stop();
  },
  exit: (code) => Deno.exit(code),
});
Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
