import { Type } from "@sinclair/typebox";
import { Elysia } from "elysia";
import { callerOf } from "../http/auth-guard.ts";
import { jsonBody } from "../http/json-body.ts";
import { asOpenApiSchema, pick, problems } from "../http/openapi.ts";
import { acceptTraceparent, resolveIdempotencyKey } from "../http/request-headers.ts";
import { traceparentOf } from "../telemetry/tracing.ts";
import { CommandEnvelope } from "../validation/envelope.ts";
import type { CommandService } from "./service.ts";

const Accepted = Type.Object({
  jobId: Type.String(),
  status: Type.Literal("accepted"),
  requestType: Type.String(),
  tenantId: Type.String(),
  createdAt: Type.String({ format: "date-time" }),
});

export function commandRoutes(service: CommandService, options: { maxBodyBytes: number }) {
  return new Elysia({ name: "commands", normalize: false }).post(
    "/v1/commands",
    async ({ body, request, set }) => {
      const { job, replayed } = await service.submit({
        envelope: body,
        idempotencyKey: resolveIdempotencyKey(request.headers.get("idempotency-key"), body.idempotencyKey),
        // With tracing on, the request's own span (itself continuing the header's trace).
        traceparent: traceparentOf() ?? acceptTraceparent(request.headers.get("traceparent")),
        caller: callerOf(request),
      });
      set.status = 202;
      set.headers.location = `/v1/jobs/${job.jobId}`;
      if (replayed) set.headers["idempotent-replayed"] = "true";
      return { jobId: job.jobId, status: "accepted", requestType: job.requestType, tenantId: job.tenantId, createdAt: job.createdAt };
    },
    {
      body: CommandEnvelope,
      detail: {
        tags: ["commands"],
        summary: "Submit a command",
        description: "Validates the envelope and the payload, stores the job and its first directive, answers 202; publishing follows.",
        parameters: [
          { name: "Idempotency-Key", in: "header", required: false, schema: { type: "string", minLength: 1, maxLength: 255 } },
          { name: "traceparent", in: "header", required: false, schema: { type: "string" } },
        ],
        responses: {
          202: {
            description: "Accepted (or replayed: header Idempotent-Replayed: true)",
            content: { "application/json": { schema: asOpenApiSchema(Accepted) } },
          },
          ...pick(problems, 400, 401, 403, 409, 413, 422, 429, 503),
        },
      },
      parse: jsonBody({ maxBytes: options.maxBodyBytes, schema: CommandEnvelope }),
    },
  );
}
