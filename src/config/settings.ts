/**
 * Settings from LUCIUS_* variables (all listed in README.md): parsed once, every problem collected and
 * reported together so that one failed start names every wrong variable.
 */

import { LOG_LEVELS, type LogLevel } from "../logging/logger.ts";
import { OTLP_PROTOCOLS, type OtlpProtocol } from "../telemetry/tracing.ts";
import { serviceBusConnectionProblem, tableConnectionProblem } from "./connection-strings.ts";
import { DEFAULT_STEP_TIMEOUT_SECONDS, MAX_STEP_TIMEOUT_SECONDS } from "./protocol-limits.ts";

export type StorageBackend = "memory" | "table" | "ledger";
export type AuthMode = "none" | "jwt" | "apikey";

export interface Settings {
  storageBackend: StorageBackend;
  tableConnection: string | null;
  tables: {
    jobs: string;
    steps: string;
    outbox: string;
    ledger: string;
    idempotency: string;
    jobIndex: string;
    /** Bulk operations (both Azure layouts). */
    operations: string;
  };
  admin: { enabled: boolean; apiKey: string | null };
  auth: {
    mode: AuthMode;
    jwksUrl: string | null;
    issuer: string | null;
    audience: string | null;
    clockSkewSeconds: number;
    tenantClaim: string;
    keysFile: string | null;
  };
  /** Commands per second per tenant and instance (burst twice that); 0 = no limit. */
  tenantRateLimit: number;
  /** Seconds an ended job is kept before it is removed with everything of it; 0 keeps jobs forever. */
  jobRetentionSeconds: number;
  /** Seconds an idempotency key is remembered; a request with an older key starts a new job. */
  idempotencyTtlSeconds: number;
  /** The memory backend's bound: jobs kept at most (the oldest ended ones go first). */
  memoryMaxJobs: number;
  /** LUCIUS_JOB_INDEX_BUCKETS: partitions per tenant of the Azure job index; null: what the table recorded (4 on a new one). */
  jobIndexBuckets: number | null;
  /** LUCIUS_DEADLINE_SHARDS: partitions of the Azure step-deadline index; null: what the table recorded (8 on a new one). */
  deadlineShards: number | null;
  serviceBusConnection: string | null;
  /** Where workers send step events: a queue, or `topic/Subscriptions/name`. */
  eventsEntity: string | null;
  /**
   * Step events handled at once from the events entity. The SDK's subscription holds as many
   * messages as it handles (its link credit), so this is its prefetch too.
   */
  eventsConcurrency: number;
  /** LUCIUS_MAX_REDRIVES: times one job may be redriven. */
  maxRedrives: number;
  /** LUCIUS_BULK_REDRIVE_RATE: jobs a bulk redrive redrives per second at most. */
  bulkRedriveRate: number;
  /** LUCIUS_MAX_STREAMS: event streams open on one instance at most. */
  maxStreams: number;
  /**
   * OpenTelemetry traces: on when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
   * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
   */
  tracing: { protocol: OtlpProtocol } | null;
  webhooks: {
    /** LUCIUS_WEBHOOK_SECRETS_FILE. */
    secretsFile: string | null;
    /** LUCIUS_WEBHOOK_MAX_ATTEMPTS: deliveries tried this often before they are parked `failed`. */
    maxAttempts: number;
    /** LUCIUS_WEBHOOK_ALLOW_HTTP: plain http callbacks (development). */
    allowHttp: boolean;
    /** LUCIUS_WEBHOOK_ALLOW_HOSTS: hosts whose private addresses may be called. */
    allowHosts: string[];
  };
  outbox: {
    publishTimeoutSeconds: number;
    retryEnabled: boolean;
    retryIntervalSeconds: number;
    retryBatchSize: number;
    retryDelaySeconds: number;
    maxAttempts: number;
  };
  host: string;
  port: number;
  protocolsFile: string | null;
  /** A step's deadline when its protocol names none (seconds); 0 = none. */
  stepTimeoutSeconds: number;
  maxBodyBytes: number;
  logLevel: LogLevel;
  /** /readyz fails once the oldest pending entry is older than this (seconds); 0 turns the check off. */
  readyMaxPendingAgeSeconds: number;
}

export class SettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "SettingsError";
  }
}

const MIN_ADMIN_KEY_LENGTH = 16;
/**
 * Measured with bench:pipeline on memory (1,000 three-step jobs, events over the dev broker):
 * 4 at once 269 jobs/s, 16 383, 32 404, 64 497, 128 504: past 64 it stops rising. At most 64
 * messages of at most 1 MB each are held at once.
 */
export const DEFAULT_EVENTS_CONCURRENCY = 64;
export const DEFAULT_MAX_REDRIVES = 10;
export const DEFAULT_BULK_REDRIVE_RATE = 50;
export const DEFAULT_MAX_STREAMS = 1000;
export const DEFAULT_WEBHOOK_MAX_ATTEMPTS = 8;

/**
 * The sweeper's due-entry index lives in a table of its own beside the outbox rows (`table`) or
 * the ledger (`ledger`), named after it: its queries then read only index rows, on Azure and on
 * Azurite (which scans a whole table for any query).
 */
export function dueIndexTable(outboxOrLedgerTable: string): string {
  return `${outboxOrLedgerTable}Due`;
}

/**
 * The retention index (ended jobs, idempotency records by age) has a table of its own too, so that
 * its clean-up queries never read the markers of open work.
 */
export function ttlIndexTable(outboxOrLedgerTable: string): string {
  return `${outboxOrLedgerTable}Ttl`;
}

/** The change feed's table (docs/STORAGE.md), named after the outbox or ledger table like the indexes. */
export function changeFeedTable(outboxOrLedgerTable: string): string {
  return `${outboxOrLedgerTable}Chg`;
}
const TABLE_NAME = /^[A-Za-z][A-Za-z0-9]{2,62}$/;
const BACKENDS: readonly StorageBackend[] = ["memory", "table", "ledger"];
const AUTH_MODES: readonly AuthMode[] = ["none", "jwt", "apikey"];

type Env = Record<string, string | undefined>;

const DAY = 86400;
const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: DAY };

/** Reads variables and records problems instead of throwing at the first one. */
class EnvReader {
  readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  /** An empty value counts as unset: container templates often export empty variables. */
  raw(name: string): string | undefined {
    const value = this.env[name]?.trim();
    return value === undefined || value === "" ? undefined : value;
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optional(name: string): string | null {
    return this.raw(name) ?? null;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase() as T;
    if (allowed.includes(lower)) return lower;
    this.problems.push(`${name}=${JSON.stringify(value)}: must be one of ${allowed.join(", ")}`);
    return fallback;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase();
    if (["true", "1", "yes", "on"].includes(lower)) return true;
    if (["false", "0", "no", "off"].includes(lower)) return false;
    this.problems.push(`${name}=${JSON.stringify(value)}: must be true or false`);
    return fallback;
  }

  number(name: string, fallback: number, rule: { min: number; max: number; integer?: boolean }): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    const kind = rule.integer ? "an integer" : "a number";
    if (!Number.isFinite(parsed) || (rule.integer && !Number.isInteger(parsed)) || parsed < rule.min || parsed > rule.max) {
      this.problems.push(`${name}=${JSON.stringify(value)}: must be ${kind} from ${rule.min} to ${rule.max}`);
      return fallback;
    }
    return parsed;
  }

  /**
   * A duration: a number of seconds, or a number with a unit (`s`, `m`, `h`, `d`), e.g. `90s`,
   * `15m`, `24h`, `7d`. With `zero`, `0` is allowed too (it turns the feature off).
   */
  duration(name: string, fallbackSeconds: number, rule: { min: number; max: number; zero?: boolean }): number {
    const value = this.raw(name);
    if (value === undefined) return fallbackSeconds;
    const match = /^(\d+(?:\.\d+)?)\s*([smhd]?)$/i.exec(value);
    const seconds = match ? Number(match[1]) * UNIT_SECONDS[(match[2] || "s").toLowerCase()]! : Number.NaN;
    const allowed = (rule.zero === true && seconds === 0) || (seconds >= rule.min && seconds <= rule.max);
    if (!allowed) {
      this.problems.push(
        `${name}=${JSON.stringify(value)}: must be a duration such as 90s, 15m, 24h or 7d, from ${rule.min} s to ${rule.max / DAY} days${rule.zero ? ", or 0 (off)" : ""}`,
      );
      return fallbackSeconds;
    }
    return seconds;
  }

  tableName(name: string, fallback: string, options: { withDueIndex?: boolean } = {}): string {
    const value = this.string(name, fallback);
    if (!TABLE_NAME.test(value)) {
      this.problems.push(`${name}=${JSON.stringify(value)}: an Azure table name is 3-63 letters or digits, starting with a letter`);
    } else if (options.withDueIndex && !TABLE_NAME.test(dueIndexTable(value))) {
      this.problems.push(
        `${name}=${JSON.stringify(value)}: at most 60 characters, so that its index tables ${dueIndexTable(value)} and ${ttlIndexTable(value)} are valid names`,
      );
    }
    return value;
  }
}

export function loadSettings(env: Env): Settings {
  const read = new EnvReader(env);
  const storageBackend = read.oneOf("LUCIUS_STORAGE_BACKEND", BACKENDS, "memory");
  const tableConnection = read.optional("LUCIUS_TABLE_CONNECTION");
  const settings: Settings = {
    storageBackend,
    tableConnection,
    tables: {
      jobs: read.tableName("LUCIUS_JOBS_TABLE", "LuciusJobs"),
      steps: read.tableName("LUCIUS_STEPS_TABLE", "LuciusSteps"),
      outbox: read.tableName("LUCIUS_OUTBOX_TABLE", "LuciusOutbox", { withDueIndex: true }),
      ledger: read.tableName("LUCIUS_LEDGER_TABLE", "LuciusLedger", { withDueIndex: true }),
      idempotency: read.tableName("LUCIUS_IDEMPOTENCY_TABLE", "LuciusIdempotency"),
      jobIndex: read.tableName("LUCIUS_JOB_INDEX_TABLE", "LuciusJobIndex"),
      operations: read.tableName("LUCIUS_OPERATIONS_TABLE", "LuciusOperations"),
    },
    admin: {
      enabled: read.boolean("LUCIUS_ADMIN_ENABLED", false),
      apiKey: read.optional("LUCIUS_ADMIN_API_KEY"),
    },
    auth: {
      mode: read.oneOf("LUCIUS_AUTH_MODE", AUTH_MODES, "none"),
      jwksUrl: read.optional("LUCIUS_AUTH_JWKS_URL"),
      issuer: read.optional("LUCIUS_AUTH_ISSUER"),
      audience: read.optional("LUCIUS_AUTH_AUDIENCE"),
      clockSkewSeconds: read.number("LUCIUS_AUTH_CLOCK_SKEW", 60, { min: 0, max: 600 }),
      tenantClaim: read.string("LUCIUS_AUTH_TENANT_CLAIM", "tenants"),
      keysFile: read.optional("LUCIUS_AUTH_KEYS_FILE"),
    },
    tenantRateLimit: read.number("LUCIUS_TENANT_RATE_LIMIT", 0, { min: 0, max: 1_000_000 }),
    jobRetentionSeconds: read.duration("LUCIUS_JOB_RETENTION", 7 * DAY, { min: 60, max: 3650 * DAY, zero: true }),
    idempotencyTtlSeconds: read.duration("LUCIUS_IDEMPOTENCY_TTL", DAY, { min: 60, max: 365 * DAY }),
    memoryMaxJobs: read.number("LUCIUS_MEMORY_MAX_JOBS", 25_000, { min: 100, max: 100_000_000, integer: true }),
    jobIndexBuckets: env.LUCIUS_JOB_INDEX_BUCKETS?.trim() ? read.number("LUCIUS_JOB_INDEX_BUCKETS", 4, { min: 1, max: 64, integer: true }) : null,
    deadlineShards: env.LUCIUS_DEADLINE_SHARDS?.trim() ? read.number("LUCIUS_DEADLINE_SHARDS", 8, { min: 1, max: 64, integer: true }) : null,
    serviceBusConnection: read.optional("LUCIUS_SERVICEBUS_CONNECTION"),
    eventsEntity: read.optional("LUCIUS_EVENTS_ENTITY"),
    eventsConcurrency: read.number("LUCIUS_EVENTS_CONCURRENCY", DEFAULT_EVENTS_CONCURRENCY, { min: 1, max: 1000, integer: true }),
    maxRedrives: read.number("LUCIUS_MAX_REDRIVES", DEFAULT_MAX_REDRIVES, { min: 0, max: 1000, integer: true }),
    webhooks: {
      secretsFile: read.optional("LUCIUS_WEBHOOK_SECRETS_FILE"),
      maxAttempts: read.number("LUCIUS_WEBHOOK_MAX_ATTEMPTS", DEFAULT_WEBHOOK_MAX_ATTEMPTS, { min: 1, max: 100, integer: true }),
      allowHttp: read.boolean("LUCIUS_WEBHOOK_ALLOW_HTTP", false),
      allowHosts: (read.optional("LUCIUS_WEBHOOK_ALLOW_HOSTS") ?? "")
        .split(",")
        .map((host) => host.trim().toLowerCase())
        .filter(Boolean),
    },
    maxStreams: read.number("LUCIUS_MAX_STREAMS", DEFAULT_MAX_STREAMS, { min: 1, max: 100_000, integer: true }),
    tracing: tracingFrom(env, read.problems),
    bulkRedriveRate: read.number("LUCIUS_BULK_REDRIVE_RATE", DEFAULT_BULK_REDRIVE_RATE, { min: 1, max: 1000, integer: true }),
    outbox: {
      publishTimeoutSeconds: read.number("LUCIUS_OUTBOX_PUBLISH_TIMEOUT", 2.0, { min: 0.05, max: 300 }),
      retryEnabled: read.boolean("LUCIUS_OUTBOX_RETRY_ENABLED", true),
      retryIntervalSeconds: read.number("LUCIUS_OUTBOX_RETRY_INTERVAL", 5.0, { min: 0.05, max: 3600 }),
      retryBatchSize: read.number("LUCIUS_OUTBOX_RETRY_BATCH_SIZE", 100, { min: 1, max: 1000, integer: true }),
      retryDelaySeconds: read.number("LUCIUS_OUTBOX_RETRY_DELAY", 30.0, { min: 0, max: 86400 }),
      maxAttempts: read.number("LUCIUS_OUTBOX_MAX_ATTEMPTS", 3, { min: 1, max: 1000, integer: true }),
    },
    host: read.string("LUCIUS_HOST", "0.0.0.0"),
    port: read.number("LUCIUS_PORT", 8000, { min: 0, max: 65535, integer: true }),
    protocolsFile: read.optional("LUCIUS_PROTOCOLS_FILE"),
    stepTimeoutSeconds: read.number("LUCIUS_STEP_TIMEOUT", DEFAULT_STEP_TIMEOUT_SECONDS, { min: 0, max: MAX_STEP_TIMEOUT_SECONDS, integer: true }),
    maxBodyBytes: read.number("LUCIUS_MAX_BODY_BYTES", 262144, { min: 1024, max: 64 * 1024 * 1024, integer: true }),
    logLevel: read.oneOf("LUCIUS_LOG_LEVEL", LOG_LEVELS, "info"),
    readyMaxPendingAgeSeconds: read.number("LUCIUS_READY_MAX_PENDING_AGE", 600, { min: 0, max: 7 * 86400 }),
  };

  for (const [name, value, problemOf] of [
    ["LUCIUS_TABLE_CONNECTION", tableConnection, tableConnectionProblem],
    ["LUCIUS_SERVICEBUS_CONNECTION", settings.serviceBusConnection, serviceBusConnectionProblem],
  ] as const) {
    const problem = value === null ? null : problemOf(value);
    if (problem) read.problems.push(`${name}: ${problem}`);
  }
  if (storageBackend !== "memory" && tableConnection === null) {
    read.problems.push(`LUCIUS_STORAGE_BACKEND=${storageBackend} needs LUCIUS_TABLE_CONNECTION (an Azure Storage connection string)`);
  }
  if (settings.eventsEntity !== null) {
    if (settings.serviceBusConnection === null) read.problems.push("LUCIUS_EVENTS_ENTITY needs LUCIUS_SERVICEBUS_CONNECTION");
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,259}(\/subscriptions\/[A-Za-z0-9][A-Za-z0-9._-]{0,49})?$/i.test(settings.eventsEntity)) {
      read.problems.push(`LUCIUS_EVENTS_ENTITY=${JSON.stringify(settings.eventsEntity)}: a queue name, or topic/Subscriptions/name`);
    }
  }
  if (settings.admin.apiKey !== null && settings.admin.apiKey.length < MIN_ADMIN_KEY_LENGTH) {
    read.problems.push(`LUCIUS_ADMIN_API_KEY: must be at least ${MIN_ADMIN_KEY_LENGTH} characters`);
  } else if (settings.admin.enabled && settings.admin.apiKey === null && settings.auth.mode === "none") {
    // With authentication on, the outbox.admin permission opens the admin routes; without, only the key.
    read.problems.push("LUCIUS_ADMIN_ENABLED=true needs LUCIUS_ADMIN_API_KEY (or LUCIUS_AUTH_MODE=jwt|apikey and the outbox.admin permission)");
  }
  read.problems.push(...authProblems(settings.auth));
  if (read.problems.length > 0) throw new SettingsError(read.problems);
  return settings;
}

const TRACES_SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"];

/**
 * Whether traces are on, from the standard OpenTelemetry variables, and what in them this build
 * cannot honour (the SDK would fall back quietly; a start that names the problem is better).
 */
function tracingFrom(env: Env, problems: string[]): { protocol: OtlpProtocol } | null {
  const value = (name: string) => {
    const raw = env[name]?.trim();
    return raw ? raw : null;
  };
  const endpoints = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"].filter((name) => value(name) !== null);
  // A list, as the specification allows ("otlp,console"); only otlp is exported here.
  const exporters = (value("OTEL_TRACES_EXPORTER") ?? "otlp").split(",").map((name) => name.trim());
  // Without an endpoint nothing of OpenTelemetry runs, and nothing of its variables is checked.
  if (endpoints.length === 0 || value("OTEL_SDK_DISABLED")?.toLowerCase() === "true" || exporters.includes("none")) return null;
  if (!exporters.includes("otlp")) problems.push(`OTEL_TRACES_EXPORTER=${JSON.stringify(value("OTEL_TRACES_EXPORTER"))}: this build exports otlp (or none)`);
  for (const name of endpoints) {
    if (!/^https?:\/\/[^\s/]+/i.test(value(name)!) || !URL.canParse(value(name)!))
      problems.push(`${name}=${JSON.stringify(value(name))}: must be an http(s) URL`);
  }
  let protocol: OtlpProtocol = "http/protobuf";
  // The signal's own variable wins over the general one.
  for (const name of ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]) {
    const chosen = value(name);
    if (chosen === null) continue;
    if ((OTLP_PROTOCOLS as readonly string[]).includes(chosen)) protocol = chosen as OtlpProtocol;
    else problems.push(`${name}=${JSON.stringify(chosen)}: this build sends ${OTLP_PROTOCOLS.join(" or ")} only`);
  }
  const sampler = value("OTEL_TRACES_SAMPLER");
  if (sampler !== null && !TRACES_SAMPLERS.includes(sampler))
    problems.push(`OTEL_TRACES_SAMPLER=${JSON.stringify(sampler)}: must be one of ${TRACES_SAMPLERS.join(", ")}`);
  const ratio = value("OTEL_TRACES_SAMPLER_ARG");
  if (ratio !== null && sampler?.endsWith("traceidratio") && !(Number(ratio) >= 0 && Number(ratio) <= 1)) {
    problems.push(`OTEL_TRACES_SAMPLER_ARG=${JSON.stringify(ratio)}: a ratio from 0 to 1`);
  }
  return { protocol };
}

/** What each authentication mode needs, by variable. */
function authProblems(auth: Settings["auth"]): string[] {
  const problems: string[] = [];
  if (auth.mode === "jwt") {
    if (auth.jwksUrl === null) problems.push("LUCIUS_AUTH_MODE=jwt needs LUCIUS_AUTH_JWKS_URL (the issuer's JWKS address)");
    else if (!/^https?:\/\/[^\s/]+/i.test(auth.jwksUrl)) problems.push(`LUCIUS_AUTH_JWKS_URL=${JSON.stringify(auth.jwksUrl)}: must be an http(s) URL`);
    if (auth.issuer === null) problems.push("LUCIUS_AUTH_MODE=jwt needs LUCIUS_AUTH_ISSUER (the tokens' iss)");
    if (auth.audience === null) problems.push("LUCIUS_AUTH_MODE=jwt needs LUCIUS_AUTH_AUDIENCE (the tokens' aud)");
  }
  if (auth.mode === "apikey" && auth.keysFile === null) problems.push("LUCIUS_AUTH_MODE=apikey needs LUCIUS_AUTH_KEYS_FILE (a JSON file of key digests)");
  if (!/^[A-Za-z0-9_.:/-]{1,200}$/.test(auth.tenantClaim)) problems.push(`LUCIUS_AUTH_TENANT_CLAIM=${JSON.stringify(auth.tenantClaim)}: a claim name`);
  return problems;
}
