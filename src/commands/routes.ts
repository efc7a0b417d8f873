import { Elysia } from "elysia";
import { readJsonBody } from "../http/json-body.ts";
import { CommandEnvelope } from "../validation/envelope.ts";
import { acceptTraceparent } from "../validation/idempotency.ts";
import type { CommandService } from "./service.ts";

export function commandRoutes(service: CommandService, options: { maxBodyBytes: number }) {
  return new Elysia({ name: "commands", normalize: false }).post(
    "/v1/commands",
    async ({ body, request, set }) => {
      const { job, replayed } = await service.submit({
        envelope: body,
        idempotencyKeyHeader: request.headers.get("idempotency-key"),
        traceparent: acceptTraceparent(request.headers.get("traceparent")),
      });
      set.status = 202;
      set.headers.location = `/v1/jobs/${job.jobId}`;
      if (replayed) set.headers["idempotent-replayed"] = "true";
      return { jobId: job.jobId, status: "accepted", requestType: job.requestType, tenantId: job.tenantId, createdAt: job.createdAt };
    },
    {
      body: CommandEnvelope,
      // Our reader replaces Elysia's: it enforces the size limit and ignores a missing Content-Type.
      parse: ({ request }) => readJsonBody(request, options.maxBodyBytes),
    },
  );
}
