import { Elysia, t } from "elysia";
import { TENANT_ID_PATTERN } from "../validation/envelope.ts";
import type { JobService } from "./service.ts";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export function jobRoutes(service: JobService) {
  return new Elysia({ name: "jobs", normalize: false })
    .get("/v1/jobs/:jobId", ({ params }) => service.get(params.jobId), {
      params: t.Object({ jobId: t.String({ minLength: 1, maxLength: 64 }) }),
    })
    .get("/v1/jobs", ({ query }) => service.list(query.tenantId, query.limit ?? DEFAULT_PAGE_SIZE, query.cursor ?? null), {
      query: t.Object(
        {
          tenantId: t.String({ pattern: TENANT_ID_PATTERN }),
          limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_PAGE_SIZE })),
          cursor: t.Optional(t.String({ minLength: 1, maxLength: 1024 })),
        },
        { additionalProperties: false },
      ),
    });
}
