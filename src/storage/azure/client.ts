/**
 * What both Azure backends share about talking to Table Storage: clients, error mapping, paging.
 */
import { TableClient, type TableEntityResult } from "@azure/data-tables";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { ConcurrencyConflictError, PayloadTooLargeError, StorageUnavailableError } from "../../domain/errors.ts";
import { tracer, tracingEnabled } from "../../telemetry/tracing.ts";
import { StorageRejectedError } from "../errors.ts";
import { MAX_TRANSACTION_OPERATIONS, StorageLimitError } from "./limits.ts";

export interface AzureTableOptions {
  /** An Azure Storage connection string (Azurite's works too). */
  connection: string;
  /** SDK retries of a failed call (throttling, connection loss). */
  maxRetries?: number;
  /** Per-try timeout of one HTTP call. */
  timeoutMs?: number;
  /** Sees every client once it is made: tests and benchmarks add pipeline policies here. */
  configureClient?: (client: TableClient) => void;
  /** LUCIUS_JOB_INDEX_BUCKETS (see job-index.ts); absent: what the index table recorded, or the default on a new one. */
  jobIndexBuckets?: number | null;
  /** LUCIUS_DEADLINE_SHARDS (see deadline-index.ts); absent: what the index table recorded, or the default on a new one. */
  deadlineShards?: number | null;
}

type PipelinePolicy = Parameters<TableClient["pipeline"]["addPolicy"]>[0];

/** Seconds a client is asked to wait after storage did not answer. */
const STORAGE_RETRY_AFTER_SECONDS = 2;

export function createTableClient(tableName: string, options: AzureTableOptions): TableClient {
  const insecure = /TableEndpoint=http:|UseDevelopmentStorage=true|DefaultEndpointsProtocol=http;/i.test(options.connection);
  const client = TableClient.fromConnectionString(options.connection, tableName, {
    allowInsecureConnection: insecure,
    retryOptions: { maxRetries: options.maxRetries ?? 2, retryDelayInMs: 200, maxRetryDelayInMs: 2000 },
  });
  const timeoutMs = options.timeoutMs ?? 5000;
  client.pipeline.addPolicy({
    name: "luciusTryTimeout",
    sendRequest(request, next) {
      request.timeout = timeoutMs;
      return next(request);
    },
  });
  client.pipeline.addPolicy(asciiJsonBodies, { afterPhase: "Serialize" });
  // Per try, so that each span is one HTTP call (the SDK's retries are calls too).
  if (tracingEnabled()) client.pipeline.addPolicy(storageSpans(tableName), { afterPhase: "Retry" });
  options.configureClient?.(client);
  return client;
}

/**
 * Sends JSON bodies as pure ASCII (`\u` escapes: the same JSON value). Azurite decodes each
 * TCP chunk of a request body on its own (`segments.join("")` in its generated serializer), so a
 * multi-byte character split across two chunks is stored corrupted; Azure is unaffected either way.
 * Batch bodies (multipart, with lengths inside) are read whole by Azurite and left alone.
 */
const NON_ASCII = /[\u0080-\uffff]/;
// Code unit by code unit (no u flag): a surrogate pair becomes two escapes, as JSON wants.
const NON_ASCII_ALL = /[\u0080-\uffff]/g;

const asciiJsonBodies: PipelinePolicy = {
  name: "luciusAsciiJsonBodies",
  sendRequest(request, next) {
    const json = request.headers.get("content-type")?.startsWith("application/json") ?? false;
    if (json && typeof request.body === "string" && NON_ASCII.test(request.body)) {
      request.body = request.body.replace(NON_ASCII_ALL, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`);
      // Serialization already counted the original body.
      if (request.headers.has("content-length")) request.headers.set("content-length", String(request.body.length));
    }
    return next(request);
  },
};

/**
 * A CLIENT span per storage call, inside whatever span made it (a request, an event, a round);
 * calls made outside any (an idle poll of the retry loop) make none, so idle replicas send nothing.
 */
function storageSpans(table: string): PipelinePolicy {
  return {
    name: "luciusStorageSpans",
    async sendRequest(request, next) {
      if (!trace.getActiveSpan()) return next(request);
      const url = new URL(request.url);
      // `$batch` for a transaction; a table or an entity's table otherwise (keys stay out of names).
      const target = url.pathname.endsWith("/$batch") ? "$batch" : table;
      const span = tracer().startSpan(
        `${request.method} ${target}`,
        {
          kind: SpanKind.CLIENT,
          attributes: {
            "http.request.method": request.method,
            "server.address": url.hostname,
            ...(url.port ? { "server.port": Number(url.port) } : {}),
            "url.full": `${url.origin}${url.pathname}`,
            "db.system.name": "azure.tables",
            "db.collection.name": table,
            "az.namespace": "Microsoft.Storage",
          },
        },
        context.active(),
      );
      try {
        const response = await next(request);
        span.setAttribute("http.response.status_code", response.status);
        // 404, 409 and 412 are answers the stores expect (absent rows, lost conditions).
        if (response.status >= 500 || response.status === 429) span.setStatus({ code: SpanStatusCode.ERROR });
        return response;
      } catch (error) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        span.setAttribute("error.type", error instanceof Error ? error.name : "Error");
        throw error;
      } finally {
        span.end();
      }
    },
  };
}

function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** A conditional write that lost: a stale etag (412), a row gone (404) or one already there (409). */
export function lostConditionalWrite(error: unknown): boolean {
  const status = statusOf(error);
  return status === 412 || status === 404 || status === 409;
}

/** An insert that met a row with the same keys. */
export function alreadyExists(error: unknown): boolean {
  return statusOf(error) === 409;
}

/** A read or delete of a row that is not there. */
export function isMissing(error: unknown): boolean {
  return statusOf(error) === 404;
}

/** The storage error code, wherever this SDK put it (the error shape differs between calls and SDK versions). */
function codeOf(error: unknown): string | undefined {
  const e = error as { code?: unknown; details?: { errorCode?: unknown; odataError?: { code?: unknown } } };
  const code = e?.details?.errorCode ?? e?.details?.odataError?.code ?? e?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Turns what the SDK throws into domain errors. Unavailable or throttled storage is a 503 with
 * Retry-After; a lost condition is a conflict; a limit is the client's; anything else is ours
 * and carries no Azure text outward (the original stays as `cause` for the log).
 */
export function toDomainError(error: unknown, what: string): Error {
  if (error instanceof StorageLimitError) return new PayloadTooLargeError(`${what}: ${error.message}`, { cause: error });
  if (error instanceof ConcurrencyConflictError || error instanceof StorageUnavailableError) return error;
  const status = statusOf(error);
  if (status === 409 || status === 412) return new ConcurrencyConflictError(`${what}: changed by another writer`, { cause: error });
  if (status === undefined || status === 408 || status === 429 || status >= 500) {
    return new StorageUnavailableError(`${what}: table storage did not answer`, { retryAfterSeconds: STORAGE_RETRY_AFTER_SECONDS, cause: error });
  }
  return new StorageRejectedError(`${what}: table storage refused the request (${status} ${codeOf(error) ?? ""})`.trim(), { cause: error });
}

export { StorageRejectedError };

/** Runs `work`, mapping whatever it throws. */
export async function guarded<T>(what: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw toDomainError(error, what);
  }
}

/** Every entity a query matches, page after page (Azure may return short or empty pages with a continuation). */
export async function queryAll<T extends object>(
  client: TableClient,
  filter: string,
  options: { select?: string[]; limit?: number } = {},
): Promise<TableEntityResult<T>[]> {
  const results: TableEntityResult<T>[] = [];
  const pages = client
    .listEntities<T>({ queryOptions: { filter, ...(options.select ? { select: options.select } : {}) } })
    .byPage({ maxPageSize: Math.min(1000, options.limit ?? 1000) });
  for await (const page of pages) {
    results.push(...page);
    if (options.limit !== undefined && results.length >= options.limit) return results.slice(0, options.limit);
  }
  return results;
}

/**
 * Deletes rows of one partition, in order, a hundred to a transaction. A transaction that fails
 * (a row already gone fails it whole) is replayed row by row, ignoring rows that are missing.
 */
export async function deleteRows(client: TableClient, partitionKey: string, rowKeys: readonly string[]): Promise<void> {
  for (let i = 0; i < rowKeys.length; i += MAX_TRANSACTION_OPERATIONS) {
    const chunk = rowKeys.slice(i, i + MAX_TRANSACTION_OPERATIONS);
    try {
      await client.submitTransaction(chunk.map((rowKey) => ["delete", { partitionKey, rowKey }]));
    } catch {
      for (const rowKey of chunk) await deleteIfPresent(client, partitionKey, rowKey);
    }
  }
}

/** Inserts unless an entity with those keys exists; true when this call inserted it. */
export async function insertIfAbsent(
  client: TableClient,
  entity: { partitionKey: string; rowKey: string } & Record<string, unknown>,
): Promise<{ inserted: boolean; etag?: string }> {
  try {
    const response = await client.createEntity(entity);
    return { inserted: true, ...(response.etag ? { etag: response.etag } : {}) };
  } catch (error) {
    if (alreadyExists(error)) return { inserted: false };
    throw error;
  }
}

export async function deleteIfPresent(client: TableClient, partitionKey: string, rowKey: string): Promise<void> {
  try {
    await client.deleteEntity(partitionKey, rowKey);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
}
