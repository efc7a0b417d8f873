/**
 * Wires settings to adapters and services, and stops them in order. Runtime-neutral: main.ts
 * owns the listening socket and the signals.
 */
import { createApp, type App } from "./app.ts";
import { createCommandService } from "./commands/service.ts";
import type { ProtocolRegistry } from "./config/protocols.ts";
import type { Settings } from "./config/settings.ts";
import { createJobService } from "./jobs/service.ts";
import { createStore } from "./ledger/create-store.ts";
import type { LedgerStore } from "./ledger/store.ts";
import type { Logger } from "./logging/logger.ts";
import { createDispatcher, type Dispatcher } from "./outbox/dispatcher.ts";
import type { Publisher } from "./outbox/publisher.ts";
import { createServiceBusPublisher } from "./outbox/service-bus-publisher.ts";

export interface RuntimeOptions {
  settings: Settings;
  protocols: ProtocolRegistry;
  logger: Logger;
  /** Replaces the store the settings select (tests). */
  store?: LedgerStore;
  /** Replaces the publisher the settings select; null publishes nothing (tests). */
  publisher?: Publisher | null;
  now?: () => Date;
}

export interface Runtime {
  app: App;
  store: LedgerStore;
  dispatcher: Dispatcher | null;
  /** Refuses readiness, then waits for in-flight publishes and closes the adapters. */
  stop(): Promise<void>;
}

function selectPublisher(options: RuntimeOptions): Publisher | null {
  if (options.publisher !== undefined) return options.publisher;
  const { settings, protocols, logger } = options;
  if (settings.serviceBusConnection === null) return null;
  return createServiceBusPublisher({
    connectionString: settings.serviceBusConnection,
    readinessTopic: protocols.list()[0]?.steps[0]?.topic ?? null,
    logger,
  });
}

export async function createRuntime(options: RuntimeOptions): Promise<Runtime> {
  const { settings, logger } = options;
  const publisher = selectPublisher(options);
  const store = options.store ?? createStore(settings);
  await store.init();
  const dispatcher = publisher
    ? createDispatcher({
        store,
        publisher,
        logger,
        publishTimeoutSeconds: settings.outbox.publishTimeoutSeconds,
        retryDelaySeconds: settings.outbox.retryDelaySeconds,
        maxAttempts: settings.outbox.maxAttempts,
        ...(options.now ? { now: options.now } : {}),
      })
    : null;
  let accepting = true;
  const commands = createCommandService({
    store,
    protocols: options.protocols,
    dispatcher,
    retryDelaySeconds: settings.outbox.retryDelaySeconds,
    ...(options.now ? { now: options.now } : {}),
  });
  const checks = [{ name: "storage", check: () => store.ping() }];
  if (publisher) checks.push({ name: "publisher", check: () => publisher.check() });
  const app = createApp({
    commands,
    jobs: createJobService({ store }),
    health: { checks, isAccepting: () => accepting },
    logger,
    maxBodyBytes: settings.maxBodyBytes,
  });
  return {
    app,
    store,
    dispatcher,
    async stop() {
      accepting = false;
      await dispatcher?.drain();
      await publisher?.close();
      await store.close();
    },
  };
}
