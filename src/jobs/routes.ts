import { Elysia, t } from "elysia";
import { MalformedRequestError } from "../domain/errors.ts";
import { TENANT_ID_PATTERN } from "../validation/envelope.ts";
import type { JobService } from "./service.ts";
import { pick, problems } from "../http/openapi.ts";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

/** Checked here rather than with t.Integer: Elysia's coerced-number errors lose the field's path. */
export function pageSize(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_PAGE_SIZE;
  const limit = Number(raw);
  if (!/^[0-9]+$/.test(raw) || limit < 1 || limit > MAX_PAGE_SIZE) {
    throw new MalformedRequestError(`limit must be an integer from 1 to ${MAX_PAGE_SIZE}`, {
      errors: [{ path: "/query/limit", message: `must be an integer from 1 to ${MAX_PAGE_SIZE}` }],
    });
  }
  return limit;
}

export function jobRoutes(service: JobService) {
  return new Elysia({ name: "jobs", normalize: false })
    .get("/v1/jobs/:jobId", ({ params }) => service.get(params.jobId), {
      params: t.Object({ jobId: t.String({ minLength: 1, maxLength: 64 }) }),
      detail: { tags: ["jobs"], summary: "One job with its steps and outbox entries", responses: { 200: { description: "The job" }, ...pick(problems, 404, 503) } },
    })
    .get("/v1/jobs", ({ query }) => service.list(query.tenantId, pageSize(query.limit), query.cursor ?? null), {
      query: t.Object(
        {
          tenantId: t.String({ pattern: TENANT_ID_PATTERN }),
          limit: t.Optional(t.String()),
          cursor: t.Optional(t.String({ minLength: 1, maxLength: 1024 })),
        },
        { additionalProperties: false },
      ),
      detail: { tags: ["jobs"], summary: "A tenant's jobs, newest first", responses: { 200: { description: "{ items, nextCursor }" }, ...pick(problems, 400, 503) } },
    });
}
