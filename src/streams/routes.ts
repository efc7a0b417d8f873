import { Elysia, t } from "elysia";
import { JOB_STATUSES } from "../domain/model.ts";
import { callerOf } from "../http/auth-guard.ts";
import { pick, problems } from "../http/openapi.ts";
import { REQUEST_TYPE_PATTERN, TENANT_ID_PATTERN } from "../validation/envelope.ts";
import { JobId } from "../validation/step-event.ts";
import type { StreamService } from "./service.ts";

export function streamRoutes(streams: StreamService) {
  return new Elysia({ name: "streams", normalize: false })
    .get("/v1/jobs/:jobId/stream", ({ params, request }) => streams.jobStream(params.jobId, callerOf(request), request.headers.get("last-event-id")), {
      params: t.Object({ jobId: JobId }),
      detail: {
        tags: ["jobs"],
        summary: "A job's changes as Server-Sent Events, until its final change",
        description:
          "text/event-stream: `snapshot` (the job as GET /v1/jobs/{jobId} shows it), then one event per change (`job` when its status moved, else `step`; data: the history entry; id: its sequence number), `progress` for progress reports (no id). Last-Event-ID resumes after that change, without a gap or a repeat. A comment every 15 s; the stream ends after the job's final change, when the credential expires, or when the instance stops.",
        responses: { 200: { description: "text/event-stream" }, ...pick(problems, 401, 403, 404, 503) },
      },
    })
    .get(
      "/v1/events",
      ({ query, request }) => {
        const { tenantId, requestType, status } = query;
        return streams.tenantStream(tenantId, callerOf(request), { ...(requestType ? { requestType } : {}), ...(status ? { status } : {}) });
      },
      {
        query: t.Object(
          {
            tenantId: t.String({ pattern: TENANT_ID_PATTERN }),
            requestType: t.Optional(t.String({ pattern: REQUEST_TYPE_PATTERN })),
            status: t.Optional(t.Union(JOB_STATUSES.map((s) => t.Literal(s)))),
          },
          { additionalProperties: false },
        ),
        detail: {
          tags: ["jobs"],
          summary: "Every change of a tenant's jobs as Server-Sent Events, as they happen",
          description:
            "text/event-stream of `job`, `step` and `progress` events (data: the history entry with its jobId and requestType; id: `<jobId>/<seq>`), narrowed by requestType and the job's status after the change. It starts from now: a client that lost its place reads each job's history.",
          responses: { 200: { description: "text/event-stream" }, ...pick(problems, 400, 401, 403, 503) },
        },
      },
    );
}
