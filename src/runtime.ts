/**
 * Wires settings to adapters and services, and stops them in order. Runtime-neutral: main.ts
 * owns the listening socket and the signals.
 */
import { createAdminService } from "./admin/service.ts";
import { observe } from "./http/observe.ts";
import { createMetrics, type Metrics } from "./metrics/metrics.ts";
import { VERSION } from "./version.ts";
import { createApp, type App } from "./app.ts";
import { createCommandService } from "./commands/service.ts";
import type { ProtocolRegistry } from "./config/protocols.ts";
import type { Settings } from "./config/settings.ts";
import { createJobService } from "./jobs/service.ts";
import { createStepEventService } from "./jobs/step-events.ts";
import type { EventReceiver } from "./events/service-bus-receiver.ts";
import { createStore } from "./storage/create-store.ts";
import type { JobStore } from "./storage/job-store.ts";
import type { Logger } from "./logging/logger.ts";
import { createDispatcher, type Dispatcher } from "./outbox/dispatcher.ts";
import type { Publisher } from "./outbox/publisher.ts";
import { createSweeper, leaseSecondsFor, type Sweeper } from "./outbox/sweeper.ts";

export interface RuntimeOptions {
  settings: Settings;
  protocols: ProtocolRegistry;
  logger: Logger;
  /** Replaces the store the settings select (tests). */
  store?: JobStore;
  /** Replaces the publisher the settings select; null publishes nothing (tests). */
  publisher?: Publisher | null;
  now?: () => Date;
  /** Runs between an event's commit and its message's completion (tests inject crashes). */
  beforeEventComplete?: (eventId: string) => Promise<void> | void;
}

export interface Runtime {
  app: App;
  /** The app's handler with request ids, request logs and intake metrics: what the server runs. */
  fetch: (request: Request) => Promise<Response>;
  metrics: Metrics;
  store: JobStore;
  dispatcher: Dispatcher | null;
  /** Null when nothing is published or LUCIUS_OUTBOX_RETRY_ENABLED is false. */
  sweeper: Sweeper | null;
  /** Starts the background work (the sweeper's timer). */
  start(): void;
  /** Refuses readiness, then waits for in-flight publishes and closes the adapters. */
  stop(): Promise<void>;
}

/** The Service Bus SDK is imported only when a connection is set (it weighs on the start). */
async function selectPublisher(options: RuntimeOptions): Promise<Publisher | null> {
  if (options.publisher !== undefined) return options.publisher;
  const { settings, protocols, logger } = options;
  if (settings.serviceBusConnection === null) return null;
  const { createServiceBusPublisher } = await import("./outbox/service-bus-publisher.ts");
  return createServiceBusPublisher({
    connectionString: settings.serviceBusConnection,
    readinessTopic: protocols.list()[0]?.steps[0]?.topic ?? null,
    logger,
  });
}

export async function createRuntime(options: RuntimeOptions): Promise<Runtime> {
  const { settings, logger } = options;
  const publisher = await selectPublisher(options);
  const store = options.store ?? (await createStore(settings));
  await store.init();
  const clock = options.now ?? (() => new Date());
  const metrics = createMetrics({ outboxStats: () => store.outboxStats(clock()), now: () => clock().getTime() });
  const dispatcher = publisher
    ? createDispatcher({
        onPublished: metrics.published,
        replyTo: settings.eventsEntity,
        store,
        publisher,
        logger,
        publishTimeoutSeconds: settings.outbox.publishTimeoutSeconds,
        retryDelaySeconds: settings.outbox.retryDelaySeconds,
        maxAttempts: settings.outbox.maxAttempts,
        ...(options.now ? { now: options.now } : {}),
      })
    : null;
  const sweeper =
    dispatcher && settings.outbox.retryEnabled
      ? createSweeper({
          store,
          dispatcher,
          logger,
          intervalSeconds: settings.outbox.retryIntervalSeconds,
          batchSize: settings.outbox.retryBatchSize,
          leaseSeconds: leaseSecondsFor(settings.outbox.publishTimeoutSeconds),
          onTick: metrics.swept,
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
  const maxAge = settings.outbox.retryEnabled && publisher ? settings.readyMaxPendingAgeSeconds : 0;
  if (maxAge > 0) {
    checks.push({
      name: "outbox",
      async check() {
        const { oldestPendingAgeSeconds: age } = await metrics.outboxStats();
        if (age !== null && age > maxAge) throw new Error(`the oldest pending entry is ${Math.round(age)} s old (limit ${maxAge} s)`);
      },
    });
  }
  const stepEvents = createStepEventService({
    store,
    protocols: options.protocols,
    dispatcher,
    retryDelaySeconds: settings.outbox.retryDelaySeconds,
    ...(options.now ? { now: options.now } : {}),
  });
  let receiver: EventReceiver | null = null;
  if (settings.eventsEntity && settings.serviceBusConnection) {
    const { createEventReceiver } = await import("./events/service-bus-receiver.ts");
    receiver = createEventReceiver({
      connectionString: settings.serviceBusConnection,
      entity: settings.eventsEntity,
      events: stepEvents,
      logger,
      ...(options.beforeEventComplete ? { beforeComplete: options.beforeEventComplete } : {}),
    });
  }
  const app = createApp({
    commands,
    jobs: createJobService({ store }),
    stepEvents,
    health: { checks, isAccepting: () => accepting },
    ...(settings.admin.enabled && settings.admin.apiKey
      ? {
          admin: {
            service: createAdminService({ store, dispatcher, leaseSeconds: leaseSecondsFor(settings.outbox.publishTimeoutSeconds), ...(options.now ? { now: options.now } : {}) }),
            apiKey: settings.admin.apiKey,
          },
        }
      : {}),
    logger,
    metrics,
    maxBodyBytes: settings.maxBodyBytes,
    version: VERSION,
  });
  return {
    app,
    fetch: observe((request) => app.handle(request), { logger, metrics }),
    metrics,
    store,
    dispatcher,
    sweeper,
    start() {
      sweeper?.start();
      receiver?.start();
    },
    async stop() {
      accepting = false;
      await receiver?.close();
      await sweeper?.stop();
      await dispatcher?.drain();
      await publisher?.close();
      await store.close();
    },
  };
}
