import { bundledRegistry, type ProtocolRegistry } from "../src/config/protocols.ts";
import { loadSettings, type Settings } from "../src/config/settings.ts";
import { type Logger, silentLogger } from "../src/logging/logger.ts";
import type { Publisher } from "../src/outbox/publisher.ts";
import { createRuntime } from "../src/runtime.ts";
import type { JobStore } from "../src/storage/job-store.ts";

export interface TestRuntimeOptions {
  env?: Record<string, string>;
  /** In-process publisher; absent: none, unless `publisherFromSettings` asks for the configured one. */
  publisher?: Publisher | null;
  publisherFromSettings?: boolean;
  store?: JobStore;
  protocols?: ProtocolRegistry;
  now?: () => Date;
  beforeEventComplete?: (eventId: string) => void | Promise<void>;
  logger?: Logger;
}

/** Compiling the bundled schemas once per file keeps each test's start cheap. */
let bundled: ProtocolRegistry | undefined;
function bundledOnce(): ProtocolRegistry {
  bundled ??= bundledRegistry();
  return bundled;
}

export async function startTestRuntime(options: TestRuntimeOptions = {}) {
  const settings: Settings = loadSettings({ LUCIUS_PORT: "0", ...options.env });
  const runtime = await createRuntime({
    settings,
    protocols: options.protocols ?? bundledOnce(),
    logger: options.logger ?? silentLogger,
    ...(options.publisherFromSettings ? {} : { publisher: options.publisher ?? null }),
    ...(options.store ? { store: options.store } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.beforeEventComplete ? { beforeEventComplete: options.beforeEventComplete } : {}),
  });
  const request = (path: string, init: RequestInit = {}) => runtime.app.handle(new Request(`http://localhost${path}`, init));
  const postCommand = (body: unknown, headers: Record<string, string> = {}) =>
    request("/v1/commands", {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
  return { runtime, settings, request, postCommand };
}

export function ingestCommand(overrides: Record<string, unknown> = {}) {
  return {
    requestType: "document.ingest",
    tenantId: "acme",
    correlationId: "c-42",
    payload: { documentId: "d1", documentUri: "https://files.example/y.pdf", contentType: "application/pdf" },
    ...overrides,
  };
}
