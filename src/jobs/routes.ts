import { Elysia, t } from "elysia";
import { MalformedRequestError } from "../domain/errors.ts";
import { JOB_STATUSES } from "../domain/model.ts";
import { callerOf } from "../http/auth-guard.ts";
import { jsonBody, noBody } from "../http/json-body.ts";
import { pick, problems } from "../http/openapi.ts";
import { pageSize } from "../http/paging.ts";
import { REQUEST_TYPE_PATTERN, TENANT_ID_PATTERN } from "../validation/envelope.ts";
import { JobId, StepEventBody, StepId } from "../validation/step-event.ts";
import type { RedriveInput, RepairService } from "./repair.ts";
import type { JobService } from "./service.ts";
import type { StepEventService } from "./step-events.ts";

/** A redrive's optional body: a merge patch of the payload, and steps to skip with a result. */
const RedriveBody = t.Object(
  {
    payload: t.Optional(t.Unknown({ description: "A JSON Merge Patch (RFC 7386) of the job's payload, checked like a new command's" })),
    steps: t.Optional(
      t.Record(
        t.String({ minLength: 1, maxLength: 64 }),
        t.Object({ skip: t.Object({ result: t.Record(t.String(), t.Unknown()) }, { additionalProperties: false }) }, { additionalProperties: false }),
        {
          maxProperties: 50,
        },
      ),
    ),
  },
  { additionalProperties: false },
);

const repairResponses = {
  200: { description: "{ jobId, status, paused, redrives }" },
  ...pick(problems, 401, 403, 404, 409, 503),
};

export function jobRoutes(service: JobService, events: StepEventService, repair: RepairService, options: { maxBodyBytes: number }) {
  return new Elysia({ name: "jobs", normalize: false })
    .post(
      "/v1/jobs/:jobId/steps/:stepId/events",
      async ({ params, body, set, request }) => {
        for (const field of ["jobId", "stepId"] as const) {
          if (body[field] !== undefined && body[field] !== params[field]) {
            throw new MalformedRequestError(`the event's ${field} differs from the path`, {
              errors: [{ path: `/${field}`, message: "differs from the path" }],
            });
          }
        }
        const { jobId: _j, stepId: _s, ...event } = body;
        set.status = 202;
        return events.handle(params.jobId, params.stepId, event, callerOf(request));
      },
      {
        params: t.Object({ jobId: JobId, stepId: StepId }),
        body: StepEventBody,
        parse: jsonBody({ maxBytes: options.maxBodyBytes, schema: StepEventBody }),
        detail: {
          tags: ["jobs"],
          summary: "A worker reports on a step",
          description:
            "succeeded stores the result and dispatches the next step; failed retries (retryable, up to the step's maxAttempts) or fails the job; progress only records. A repeated eventId or a late event changes nothing and says so.",
          responses: {
            202: { description: "{ outcome: applied | duplicate | ignored, jobStatus, stepStatus }" },
            ...pick(problems, 400, 401, 403, 404, 409, 422, 503),
          },
        },
      },
    )
    .post("/v1/jobs/:jobId/cancel", ({ params, request }) => events.cancel(params.jobId, callerOf(request)), {
      params: t.Object({ jobId: JobId }),
      parse: noBody(options.maxBodyBytes),
      detail: {
        tags: ["jobs"],
        summary: "Cancel a job that has not ended",
        responses: { 200: { description: "{ jobId, status }" }, ...pick(problems, 401, 403, 404, 409, 503) },
      },
    })
    .post(
      "/v1/jobs/:jobId/redrive",
      ({ params, body, request }) => {
        const input = body ?? {};
        return repair.redrive(
          params.jobId,
          {
            ...(input.payload !== undefined ? { payload: input.payload } : {}),
            ...(input.steps ? { steps: input.steps as NonNullable<RedriveInput["steps"]> } : {}),
          },
          callerOf(request),
        );
      },
      {
        params: t.Object({ jobId: JobId }),
        body: t.Optional(RedriveBody),
        parse: jsonBody({ maxBytes: options.maxBodyBytes, schema: RedriveBody, optional: true }),
        detail: {
          tags: ["jobs"],
          summary: "Run a failed or cancelled job again from where it stopped",
          description:
            "Steps that succeeded keep their results and are not sent again; failed and cancelled steps run again with their next attempt (a new messageId). Optional: a JSON Merge Patch of the payload (422 listing the violations, nothing changes), and steps to mark succeeded with a result instead of running them. 409 for a job in another status, past LUCIUS_MAX_REDRIVES, or when another redrive won.",
          responses: { ...repairResponses, ...pick(problems, 400, 422) },
        },
      },
    )
    .post("/v1/jobs/:jobId/pause", ({ params, request }) => repair.pause(params.jobId, callerOf(request)), {
      params: t.Object({ jobId: JobId }),
      parse: noBody(options.maxBodyBytes),
      detail: {
        tags: ["jobs"],
        summary: "Dispatch nothing new for a job until it is resumed; running steps finish",
        responses: repairResponses,
      },
    })
    .post("/v1/jobs/:jobId/resume", ({ params, request }) => repair.resume(params.jobId, callerOf(request)), {
      params: t.Object({ jobId: JobId }),
      parse: noBody(options.maxBodyBytes),
      detail: {
        tags: ["jobs"],
        summary: "Resume a paused job: what became ready meanwhile is dispatched",
        responses: repairResponses,
      },
    })
    .get(
      "/v1/jobs/:jobId/history",
      ({ params, query, request }) => repair.history(params.jobId, pageSize(query.limit), query.cursor ?? null, callerOf(request)),
      {
        params: t.Object({ jobId: JobId }),
        query: t.Object({ limit: t.Optional(t.String()), cursor: t.Optional(t.String({ minLength: 1, maxLength: 1024 })) }, { additionalProperties: false }),
        detail: {
          tags: ["jobs"],
          summary: "Every change of a job in order: what happened, who did it, what it dispatched",
          responses: {
            200: { description: "{ items: [{ seq, at, action, actor, step?, eventId?, status?, detail?, dispatched, steps, jobStatus? }], nextCursor }" },
            ...pick(problems, 400, 401, 403, 404, 503),
          },
        },
      },
    )
    .get(
      "/v1/jobs/:jobId/steps/:stepId/items",
      ({ params, query, request }) => service.items(params.jobId, params.stepId, pageSize(query.limit), query.cursor ?? null, callerOf(request)),
      {
        params: t.Object({ jobId: JobId, stepId: StepId }),
        query: t.Object({ limit: t.Optional(t.String()), cursor: t.Optional(t.String({ minLength: 1, maxLength: 1024 })) }, { additionalProperties: false }),
        detail: {
          tags: ["jobs"],
          summary: "A map step's items: each child's status, attempts, result or error, in item order",
          responses: {
            200: { description: "{ items: [{ itemIndex, stepId, status, attempts, result, error }], nextCursor }" },
            ...pick(problems, 400, 401, 403, 404, 503),
          },
        },
      },
    )
    .get("/v1/jobs/:jobId", ({ params, request }) => service.get(params.jobId, callerOf(request)), {
      params: t.Object({ jobId: JobId }),
      detail: {
        tags: ["jobs"],
        summary: "One job with its steps and outbox entries",
        responses: { 200: { description: "The job" }, ...pick(problems, 401, 403, 404, 503) },
      },
    })
    .get(
      "/v1/jobs",
      ({ query, request }) => {
        const { tenantId, limit, cursor, paused, ...filter } = query;
        return service.list(tenantId, pageSize(limit), cursor ?? null, callerOf(request), {
          ...filter,
          ...(paused === undefined ? {} : { paused: paused === "true" }),
        });
      },
      {
        query: t.Object(
          {
            tenantId: t.String({ pattern: TENANT_ID_PATTERN }),
            limit: t.Optional(t.String()),
            cursor: t.Optional(t.String({ minLength: 1, maxLength: 1024 })),
            status: t.Optional(t.Union(JOB_STATUSES.map((status) => t.Literal(status)))),
            requestType: t.Optional(t.String({ pattern: REQUEST_TYPE_PATTERN })),
            correlationId: t.Optional(t.String({ minLength: 1, maxLength: 128 })),
            paused: t.Optional(t.Union([t.Literal("true"), t.Literal("false")])),
          },
          { additionalProperties: false },
        ),
        detail: {
          tags: ["jobs"],
          summary: "A tenant's jobs, newest first, by status, pause, request type or correlation id",
          responses: { 200: { description: "{ items, nextCursor }" }, ...pick(problems, 400, 401, 403, 503) },
        },
      },
    );
}
