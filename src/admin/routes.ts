import { Elysia, t } from "elysia";
import { jsonBody, noBody } from "../http/json-body.ts";
import { adminSecurity, pick, problems } from "../http/openapi.ts";
import { pageSize } from "../http/paging.ts";
import type { Logger } from "../logging/logger.ts";
import type { AdminService } from "./service.ts";

/** Failed entries started over by one "retry all" with includeFailed, unless `limit` says otherwise. */
const DEFAULT_FAILED_RESET = 1000;

const RetryAllBody = t.Object(
  { limit: t.Optional(t.Integer({ minimum: 1, maximum: 100_000 })), includeFailed: t.Optional(t.Boolean()) },
  { additionalProperties: false },
);

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
