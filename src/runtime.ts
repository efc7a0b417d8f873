/**
 * Wires settings to adapters and services, and stops them in order. Runtime-neutral: main.ts
 * owns the listening socket and the signals.
 */

import { createBulkRedrive } from "./admin/bulk-redrive.ts";
import { createAdminService } from "./admin/service.ts";
import { type App, createApp } from "./app.ts";
import { createApiKeyAuthenticator, KeysFileError, loadKeysFile } from "./auth/api-key-authenticator.ts";
import type { Authenticator } from "./auth/authenticator.ts";
import { createJwtAuthenticator } from "./auth/jwt-authenticator.ts";
import { createCommandService } from "./commands/service.ts";
import { createTenantRateLimit } from "./commands/tenant-rate-limit.ts";
import type { ProtocolRegistry } from "./config/protocols.ts";
import { type Settings, SettingsError } from "./config/settings.ts";
import { loadWebhookSecrets, type WebhookSecrets } from "./config/webhook-secrets.ts";
import type { EventReceiver } from "./events/service-bus-receiver.ts";
import type { ReadinessCheck } from "./health/routes.ts";
import { observe } from "./http/observe.ts";
import { guardRequests, routeTemplates } from "./http/request-guard.ts";
import { createDeadlineSweeper, type DeadlineSweeper } from "./jobs/deadline-sweeper.ts";
import { createHousekeeping } from "./jobs/housekeeping.ts";
import { createRepairService } from "./jobs/repair.ts";
import { createRetention, type Retention } from "./jobs/retention.ts";
import { createJobService } from "./jobs/service.ts";
import { createStepEventService, type StepEventService } from "./jobs/step-events.ts";
import type { Logger } from "./logging/logger.ts";
import { createMetrics, type Metrics } from "./metrics/metrics.ts";
import { createDispatcher, type Dispatcher } from "./outbox/dispatcher.ts";
import type { Publisher } from "./outbox/publisher.ts";
import { createSweeper, leaseSecondsFor, type Sweeper } from "./outbox/sweeper.ts";
import { createWebhookSender } from "./outbox/webhook-sender.ts";
import type { ChangeFeed } from "./storage/change-feed.ts";
import { createChangeFeed, createOperationStore, createStore } from "./storage/create-store.ts";
import type { JobStore } from "./storage/job-store.ts";
import type { OperationStore } from "./storage/operation-store.ts";
import { type ChangeHub, createChangeHub } from "./streams/change-hub.ts";
import { createFeedRelay } from "./streams/feed-relay.ts";
import { createStreamService } from "./streams/service.ts";
import { VERSION } from "./version.ts";

export interface RuntimeOptions {
  settings: Settings;
  protocols: ProtocolRegistry;
  logger: Logger;
  /** Replaces the store the settings select (tests). */
  store?: JobStore;
  /** Replaces the publisher the settings select; null publishes nothing (tests). */
  publisher?: Publisher | null;
  now?: () => Date;
  /** The change feed between instances; absent: the one LUCIUS_STORAGE_BACKEND names (null: none). */
  changeFeed?: ChangeFeed | null;
  /** Bulk operations' storage; absent: the one LUCIUS_STORAGE_BACKEND names. */
  operations?: OperationStore;
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
  /** Finds the steps whose deadline passed; runs with or without a broker. */
  deadlines: DeadlineSweeper;
  /** Removes expired jobs and idempotency records. */
  retention: Retention;
  /** Where this instance's streams listen for changes. */
  hub: ChangeHub;
  /** Starts the background work (the sweeper's timer, the events receiver). */
  start(): void;
  /** Refuses readiness, then waits for in-flight publishes and closes the adapters. */
  stop(): Promise<void>;
}

export async function createRuntime(options: RuntimeOptions): Promise<Runtime> {
  const { settings, logger } = options;
  const clock = options.now ?? (() => new Date());
  const withClock = options.now ? { now: options.now } : {};
  // Before anything that makes spans: the SDK is imported only when an endpoint is set.
  const tracing = settings.tracing
    ? (await import("./telemetry/sdk.ts")).startTracing({ version: VERSION, protocol: settings.tracing.protocol, logger })
    : null;
  const selected = await selectPublisher(options);
  const publisher = selected && settings.tracing ? (await import("./outbox/traced-publisher.ts")).tracePublishes(selected) : selected;
  const store = options.store ?? (await createStore(settings));
  await store.init();
  const metrics = createMetrics({ outboxStats: () => store.outboxStats(clock()), now: () => clock().getTime() });
  // A bad secrets file stops the start, naming every problem.
  const webhookSecrets = loadWebhookSecrets(settings.webhooks.secretsFile);
  const { dispatcher, sweeper, drainer } = createOutboxWorkers({ settings, store, publisher, logger, metrics, withClock, webhookSecrets });
  const hub = createChangeHub();
  const feed = options.changeFeed !== undefined ? options.changeFeed : await createChangeFeed(settings);
  await feed?.init();
  const relay = createFeedRelay({ hub, feed, logger });
  const services = {
    store,
    protocols: options.protocols,
    dispatcher,
    retryDelaySeconds: settings.outbox.retryDelaySeconds,
    announce: relay.announce,
    ...withClock,
  };
  const authenticator = createAuthenticator(settings, logger);
  const stepEvents = createStepEventService(services);
  const operations = options.operations ?? (await createOperationStore(settings));
  await operations.init();
  const repair = createRepairService({ ...services, maxRedrives: settings.maxRedrives });
  const bulk = createBulkRedrive({
    store,
    operations,
    repair,
    logger,
    ratePerSecond: settings.bulkRedriveRate,
    intervalSeconds: settings.outbox.retryIntervalSeconds,
    retentionSeconds: settings.jobRetentionSeconds,
    ...withClock,
  });
  const deadlines = createDeadlineSweeper({
    store,
    events: stepEvents,
    logger,
    batchSize: settings.outbox.retryBatchSize,
    onHandled: metrics.deadlineHandled,
    ...withClock,
  });
  const retention = createRetention({
    store,
    logger,
    jobRetentionSeconds: settings.jobRetentionSeconds,
    idempotencyTtlSeconds: settings.idempotencyTtlSeconds,
    batchSize: settings.outbox.retryBatchSize,
    ...withClock,
  });
  const housekeeping = createHousekeeping({
    chores: [
      { name: "step deadlines", run: deadlines.chore },
      { name: "retention", run: retention.chore },
    ],
    intervalSeconds: settings.outbox.retryIntervalSeconds,
    logger,
  });
  const receiver = await createReceiver(options, stepEvents, metrics);
  let accepting = true;
  const leaseSeconds = leaseSecondsFor(settings.outbox.publishTimeoutSeconds);
  const app = createApp({
    commands: createCommandService({
      ...services,
      idempotencyTtlSeconds: settings.idempotencyTtlSeconds,
      rateLimit: settings.tenantRateLimit > 0 ? createTenantRateLimit(settings.tenantRateLimit) : null,
      webhooks: { secrets: webhookSecrets, allowHttp: settings.webhooks.allowHttp },
    }),
    jobs: createJobService({ store, protocols: options.protocols }),
    stepEvents,
    repair,
    streams: createStreamService({ store, hub, protocols: options.protocols, maxStreams: settings.maxStreams, ...withClock }),
    health: { checks: readinessChecks(settings, store, publisher, metrics, receiver), isAccepting: () => accepting },
    ...(settings.admin.enabled ? { admin: { service: createAdminService({ store, dispatcher, drainer, leaseSeconds, ...withClock }), bulk } } : {}),
    auth: { mode: settings.auth.mode, authenticator, adminApiKey: settings.admin.apiKey, adminEnabled: settings.admin.enabled },
    logger,
    metrics,
    maxBodyBytes: settings.maxBodyBytes,
    version: VERSION,
  });
  return {
    app,
    fetch: observe(
      guardRequests(
        (request) => app.handle(request),
        () => app.routes,
      ),
      { logger, metrics, routeOf: routeTemplates(() => app.routes) },
    ),
    metrics,
    store,
    dispatcher,
    sweeper,
    deadlines,
    retention,
    hub,
    start() {
      sweeper?.start();
      housekeeping.start();
      bulk.start();
      relay.start();
      receiver?.start();
    },
    async stop() {
      accepting = false;
      // Streams end first: their clients reconnect to another instance.
      hub.closeAll();
      await relay.stop();
      await receiver?.close();
      await housekeeping.stop();
      await bulk.stop();
      await drainer?.stop();
      await dispatcher?.drain();
      await publisher?.close();
      await store.close();
      await tracing?.shutdown();
    },
  };
}

/** The adapter of LUCIUS_AUTH_MODE; null for `none`, which is said once at start. */
function createAuthenticator(settings: Settings, logger: Logger): Authenticator | null {
  const { auth } = settings;
  switch (auth.mode) {
    case "none":
      logger.warn("LUCIUS_AUTH_MODE=none: every route but the admin routes is open to anyone who reaches the port (development only)");
      return null;
    case "jwt":
      return createJwtAuthenticator({
        jwksUrl: auth.jwksUrl!,
        issuer: auth.issuer!,
        audience: auth.audience!,
        clockSkewSeconds: auth.clockSkewSeconds,
        tenantClaim: auth.tenantClaim,
      });
    case "apikey":
      try {
        return createApiKeyAuthenticator(loadKeysFile(auth.keysFile!));
      } catch (error) {
        if (error instanceof KeysFileError) throw new SettingsError([error.message]);
        throw error;
      }
  }
}

/** The Service Bus SDK is imported only when a connection is set (it weighs on the start). */
async function selectPublisher(options: RuntimeOptions): Promise<Publisher | null> {
  if (options.publisher !== undefined) return options.publisher;
  const { settings, protocols, logger } = options;
  if (settings.serviceBusConnection === null) return null;
  const { createServiceBusPublisher } = await import("./outbox/service-bus-publisher.ts");
  try {
    return createServiceBusPublisher({ connectionString: settings.serviceBusConnection, readinessTopic: protocols.list()[0]?.steps[0]?.topic ?? null, logger });
  } catch (error) {
    // A connection string the settings loader let through but the SDK refuses.
    throw new SettingsError([`LUCIUS_SERVICEBUS_CONNECTION: the Service Bus SDK refused it (${(error as Error).message})`]);
  }
}

interface OutboxWorkerOptions {
  settings: Settings;
  store: JobStore;
  publisher: Publisher | null;
  logger: Logger;
  metrics: Metrics;
  withClock: { now?: () => Date };
  webhookSecrets: WebhookSecrets;
}

/** The fast path and the retry loop; neither exists without a publisher. */
function createOutboxWorkers({ settings, store, publisher, logger, metrics, withClock, webhookSecrets }: OutboxWorkerOptions): {
  dispatcher: Dispatcher | null;
  sweeper: Sweeper | null;
  drainer: Sweeper | null;
} {
  if (!publisher) return { dispatcher: null, sweeper: null, drainer: null };
  const { outbox } = settings;
  let sweeper: Sweeper | null = null;
  const dispatcher = createDispatcher({
    onDue: (at) => sweeper?.wakeBy(at),
    onPublished: metrics.published,
    replyTo: settings.eventsEntity,
    store,
    publisher,
    logger,
    publishTimeoutSeconds: outbox.publishTimeoutSeconds,
    retryDelaySeconds: outbox.retryDelaySeconds,
    maxAttempts: outbox.maxAttempts,
    webhooks: createWebhookSender({ secrets: webhookSecrets, allowHttp: settings.webhooks.allowHttp, allowHosts: settings.webhooks.allowHosts }),
    webhookMaxAttempts: settings.webhooks.maxAttempts,
    ...withClock,
  });
  sweeper = createSweeper({
    store,
    dispatcher,
    logger,
    intervalSeconds: outbox.retryIntervalSeconds,
    batchSize: outbox.retryBatchSize,
    leaseSeconds: leaseSecondsFor(outbox.publishTimeoutSeconds),
    onTick: metrics.swept,
    onPublished: metrics.sweptEntries,
    backlog: async () => (await metrics.outboxStats()).pending,
    ...withClock,
  });
  // Without the retry loop the sweeper is never started, but still runs the operator's drains.
  return { dispatcher, sweeper: outbox.retryEnabled ? sweeper : null, drainer: sweeper };
}

/** Storage always; the events entity when receiving; the broker when publishing; the backlog's age when the retry loop runs. */
function readinessChecks(settings: Settings, store: JobStore, publisher: Publisher | null, metrics: Metrics, receiver: EventReceiver | null): ReadinessCheck[] {
  const checks: ReadinessCheck[] = [{ name: "storage", check: () => store.ping() }];
  if (receiver) checks.push({ name: "events", check: () => receiver.check() });
  if (!publisher) return checks;
  checks.push({ name: "publisher", check: () => publisher.check() });
  const maxAge = settings.outbox.retryEnabled ? settings.readyMaxPendingAgeSeconds : 0;
  if (maxAge > 0) {
    checks.push({
      name: "outbox",
      async check() {
        const { oldestPendingAgeSeconds: age } = await metrics.outboxStats();
        if (age !== null && age > maxAge) throw new Error(`the oldest pending entry is ${Math.round(age)} s old (limit ${maxAge} s)`);
      },
    });
  }
  return checks;
}

/** Step events over Service Bus, when an events entity and a connection are set. */
async function createReceiver(options: RuntimeOptions, events: StepEventService, metrics: Metrics): Promise<EventReceiver | null> {
  const { settings, logger } = options;
  if (!settings.eventsEntity || !settings.serviceBusConnection) return null;
  const { createEventReceiver } = await import("./events/service-bus-receiver.ts");
  return createEventReceiver({
    connectionString: settings.serviceBusConnection,
    entity: settings.eventsEntity,
    concurrency: settings.eventsConcurrency,
    onError: metrics.receiverError,
    events,
    logger,
    ...(options.beforeEventComplete ? { beforeComplete: options.beforeEventComplete } : {}),
  });
}
