import { Elysia, t } from "elysia";
import type { BulkFilter } from "../domain/bulk.ts";
import { callerOf } from "../http/auth-guard.ts";
import { jsonBody, noBody } from "../http/json-body.ts";
import { adminSecurity, pick, problems } from "../http/openapi.ts";
import { pageSize } from "../http/paging.ts";
import { resolveIdempotencyKey } from "../http/request-headers.ts";
import type { Logger } from "../logging/logger.ts";
import { REQUEST_TYPE_PATTERN, TENANT_ID_PATTERN } from "../validation/envelope.ts";
import type { BulkRedrive } from "./bulk-redrive.ts";
import type { AdminService } from "./service.ts";

/** Failed entries started over by one "retry all" with includeFailed, unless `limit` says otherwise. */
const DEFAULT_FAILED_RESET = 1000;

const RetryAllBody = t.Object(
  { limit: t.Optional(t.Integer({ minimum: 1, maximum: 100_000 })), includeFailed: t.Optional(t.Boolean()) },
  { additionalProperties: false },
);

const Instant = t.String({ format: "date-time", maxLength: 40 });
const BulkRedriveBody = t.Object(
  {
    tenantId: t.Optional(t.String({ pattern: TENANT_ID_PATTERN })),
    requestType: t.Optional(t.String({ pattern: REQUEST_TYPE_PATTERN })),
    status: t.Optional(t.Union([t.Literal("failed"), t.Literal("cancelled")])),
    endedAfter: t.Optional(Instant),
    endedBefore: t.Optional(Instant),
    errorCode: t.Optional(t.String({ minLength: 1, maxLength: 128 })),
  },
  { additionalProperties: false },
);

/** The filter in one key order, times in UTC: the same request under one Idempotency-Key compares equal. */
function bulkFilter(body: typeof BulkRedriveBody.static | undefined | null): BulkFilter {
  const filter: BulkFilter = {};
  if (body?.tenantId !== undefined) filter.tenantId = body.tenantId;
  if (body?.requestType !== undefined) filter.requestType = body.requestType;
  if (body?.status !== undefined) filter.status = body.status;
  if (body?.endedAfter !== undefined) filter.endedAfter = new Date(body.endedAfter).toISOString();
  if (body?.endedBefore !== undefined) filter.endedBefore = new Date(body.endedBefore).toISOString();
  if (body?.errorCode !== undefined) filter.errorCode = body.errorCode;
  return filter;
}

/** Bulk operations: a redrive of every failed or cancelled job a filter matches, and its progress. */
export function bulkRoutes(bulk: BulkRedrive, options: { logger: Logger; maxBodyBytes: number }) {
  const { logger } = options;
  return new Elysia({ name: "admin-bulk", normalize: false })
    .post(
      "/v1/admin/jobs/redrive",
      async ({ body, request, set }) => {
        const key = resolveIdempotencyKey(request.headers.get("idempotency-key"), undefined);
        const { operation, created } = await bulk.submit(bulkFilter(body), key, callerOf(request));
        logger.info({ action: "bulk-redrive", operationId: operation.operationId, created, filter: operation.filter }, "admin: bulk redrive");
        set.status = 202;
        set.headers.location = `/v1/admin/operations/${operation.operationId}`;
        return operation;
      },
      {
        body: t.Optional(BulkRedriveBody),
        parse: jsonBody({ maxBytes: options.maxBodyBytes, schema: BulkRedriveBody, optional: true }),
        detail: {
          tags: ["admin"],
          summary: "Redrive every failed or cancelled job a filter matches (at most 10,000), in the background",
          description:
            "Answers 202 with the operation at once; GET /v1/admin/operations/{operationId} reports matched, redriven and skipped (with reasons) as it runs. One replica works it at a time, at LUCIUS_BULK_REDRIVE_RATE jobs per second; another takes over if it dies; no job is redriven twice by one operation. The same Idempotency-Key answers the same operation.",
          security: adminSecurity,
          parameters: [{ name: "Idempotency-Key", in: "header", required: false, schema: { type: "string", minLength: 1, maxLength: 255 } }],
          responses: { 202: { description: "The operation" }, ...pick(problems, 400, 401, 413, 415, 422, 503) },
        },
      },
    )
    .get("/v1/admin/operations/:operationId", ({ params }) => bulk.get(params.operationId), {
      params: t.Object({ operationId: t.String({ pattern: "^op-[0-9a-f-]{32,36}$" }) }),
      detail: {
        tags: ["admin"],
        summary: "A bulk operation's progress",
        security: adminSecurity,
        responses: {
          200: { description: "The operation: status, matched, redriven, skipped, skippedReasons, skippedJobs, lease" },
          ...pick(problems, 400, 401, 404, 503),
        },
      },
    });
}

export function adminRoutes(service: AdminService, options: { logger: Logger; maxBodyBytes: number }) {
  const { logger } = options;
  return new Elysia({ name: "admin", normalize: false }).group("/v1/admin/outbox", (group) =>
    group
      .get(
        "",
        async ({ query }) => {
          const page = await service.list(query.status ?? "pending", pageSize(query.limit), query.cursor ?? null);
          logger.info({ action: "list", status: query.status ?? "pending", count: page.items.length }, "admin: listed outbox entries");
          return page;
        },
        {
          detail: {
            tags: ["admin"],
            summary: "Outbox entries by status",
            security: adminSecurity,
            responses: { 200: { description: "{ items, nextCursor }" }, ...pick(problems, 400, 401, 503) },
          },
          query: t.Object(
            {
              status: t.Optional(t.Union([t.Literal("pending"), t.Literal("failed"), t.Literal("sent"), t.Literal("withdrawn")])),
              limit: t.Optional(t.String()),
              cursor: t.Optional(t.String({ minLength: 1, maxLength: 4096 })),
            },
            { additionalProperties: false },
          ),
        },
      )
      .get(
        "/stats",
        async () => {
          const stats = await service.stats();
          logger.info({ action: "stats", ...stats }, "admin: read outbox stats");
          return stats;
        },
        {
          detail: {
            tags: ["admin"],
            summary: "Pending and failed counts, oldest pending age",
            security: adminSecurity,
            responses: { 200: { description: "{ pending, failed, oldestPendingAgeSeconds }" }, ...pick(problems, 401, 503) },
          },
        },
      )
      .post(
        "/retry",
        async ({ body, set }) => {
          const scheduled = await service.retryAll(body?.limit ?? DEFAULT_FAILED_RESET, body?.includeFailed ?? false);
          logger.info({ action: "retry-all", includeFailed: body?.includeFailed ?? false, ...scheduled }, "admin: draining the outbox");
          set.status = 202;
          return scheduled;
        },
        {
          detail: {
            tags: ["admin"],
            summary: "Publish every pending entry now (and failed ones, started over, when asked)",
            description:
              "Answers at once; the drain runs in the background until nothing pending is left, and shows in /v1/admin/outbox/stats, /metrics and the log. `limit` caps the failed entries started over.",
            security: adminSecurity,
            responses: { 202: { description: "{ scheduled, failedReset }" }, ...pick(problems, 401, 413, 415, 422, 503) },
          },
          body: t.Optional(RetryAllBody),
          parse: jsonBody({ maxBytes: options.maxBodyBytes, schema: RetryAllBody, optional: true }),
        },
      )
      .post(
        "/:outboxId/retry",
        async ({ params }) => {
          const result = await service.retryOne(params.outboxId);
          logger.info({ action: "retry-one", ...result }, "admin: retried an outbox entry");
          return result;
        },
        {
          params: t.Object({ outboxId: t.String({ minLength: 1, maxLength: 200 }) }),
          parse: noBody(options.maxBodyBytes),
          detail: {
            tags: ["admin"],
            summary: "Publish one entry now (a failed one starts over)",
            security: adminSecurity,
            responses: { 200: { description: "{ outboxId, status }" }, ...pick(problems, 401, 404, 409, 503) },
          },
        },
      ),
  );
}
