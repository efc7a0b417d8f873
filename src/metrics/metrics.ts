/**
 * Prometheus metrics with prom-client (the standard Node client), on a registry of the runtime's
 * own so that several runtimes in one process (tests) never share counters.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/**
 * The outbox's counts as the metrics show them. Metrics sit below the parts they count, so they
 * declare what they take; the store's stats have this shape.
 */
export interface OutboxCounts {
  pending: number;
  failed: number;
  /** Null when nothing is pending. */
  oldestPendingAgeSeconds: number | null;
}

/** How one message's publish ended, as the `result` label of the publish metrics. */
export type PublishResultLabel = "sent" | "retryable_error" | "permanent_error";

export interface MetricsOptions {
  /** Outbox counts; read at most once per `statsTtlMs` (they can cost storage reads). */
  outboxStats: () => Promise<OutboxCounts>;
  statsTtlMs?: number;
  /** Milliseconds since the epoch; injected by tests. */
  now?: () => number;
}

export function createMetrics(options: MetricsOptions) {
  const registry = new Registry();
  const ttl = options.statsTtlMs ?? 10_000;
  const now = options.now ?? Date.now;
  let cached: { at: number; stats: OutboxCounts } | null = null;
  let refreshing: Promise<OutboxCounts> | null = null;

  /** The latest outbox counts, refreshed when older than the TTL; one read at a time. */
  async function outboxStats(): Promise<OutboxCounts> {
    if (cached && now() - cached.at < ttl) return cached.stats;
    refreshing ??= options
      .outboxStats()
      .then((stats) => {
        cached = { at: now(), stats };
        return stats;
      })
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  }

  const commands = new Counter({
    name: "lucius_commands_total",
    help: "Commands by outcome (accepted, replayed, rejected) and, for rejections, the problem type",
    labelNames: ["outcome", "reason"] as const,
    registers: [registry],
  });
  const intakeLatency = new Histogram({
    name: "lucius_intake_duration_seconds",
    help: "Time from request to answer of POST /v1/commands",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const publishLatency = new Histogram({
    name: "lucius_publish_duration_seconds",
    help: "Time of one publish call (a batch of one topic)",
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const published = new Counter({
    name: "lucius_publish_total",
    help: "Outbox messages by publish result",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const sweeps = new Counter({
    name: "lucius_sweeper_ticks_total",
    help: "Retry-loop sweeps by result",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const sweptEntries = new Counter({
    name: "lucius_sweeper_entries_total",
    help: "Due entries the retry loop published, by outcome (sent, or a failed attempt)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const refusals = new Counter({
    name: "lucius_auth_refusals_total",
    help: "Requests refused by authentication, permissions, tenant or rate limit, by reason",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  const deadlines = new Counter({
    name: "lucius_step_deadlines_total",
    help: "Passed step deadlines by what they did (extended, retried, timed-out, not-due)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const receiverErrors = new Counter({
    name: "lucius_step_event_receiver_errors_total",
    help: "Errors the Service Bus events receiver reported (each reconnection attempt during an outage counts)",
    registers: [registry],
  });
  new Gauge({
    name: "lucius_outbox_entries",
    help: "Outbox entries by status (pending, failed)",
    labelNames: ["status"] as const,
    registers: [registry],
    async collect() {
      const stats = await outboxStats();
      this.set({ status: "pending" }, stats.pending);
      this.set({ status: "failed" }, stats.failed);
    },
  });
  new Gauge({
    name: "lucius_outbox_oldest_pending_age_seconds",
    help: "Age of the oldest pending outbox entry; 0 when none is pending",
    registers: [registry],
    async collect() {
      this.set((await outboxStats()).oldestPendingAgeSeconds ?? 0);
    },
  });

  return {
    registry,
    outboxStats,
    commandAnswered(outcome: "accepted" | "replayed" | "rejected", reason = "", seconds?: number) {
      commands.inc({ outcome, reason });
      if (seconds !== undefined) intakeLatency.observe(seconds);
    },
    published(result: PublishResultLabel, count: number, seconds: number) {
      published.inc({ result }, count);
      publishLatency.observe(seconds);
    },
    swept(result: "ok" | "error") {
      sweeps.inc({ result });
    },
    sweptEntries(summary: { sent: number; failed: number }) {
      if (summary.sent > 0) sweptEntries.inc({ result: "sent" }, summary.sent);
      if (summary.failed > 0) sweptEntries.inc({ result: "failed" }, summary.failed);
    },
    refused(reason: string) {
      refusals.inc({ reason });
    },
    deadlineHandled(result: string) {
      deadlines.inc({ result });
    },
    receiverError() {
      receiverErrors.inc();
    },
    render: () => registry.metrics(),
    contentType: registry.contentType,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
