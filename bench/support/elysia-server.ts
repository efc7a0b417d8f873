/** The framework's own cost: a minimal Elysia route with a TypeBox body, answering 202. */
import { Elysia, t } from "elysia";

new Elysia()
  .get("/healthz", () => "ok")
  .post(
    "/v1/commands",
    ({ body, set }) => {
      set.status = 202;
      return { jobId: crypto.randomUUID(), status: "accepted", requestType: body.requestType, tenantId: body.tenantId, createdAt: new Date().toISOString() };
    },
    {
      body: t.Object({
        requestType: t.String(),
        tenantId: t.String(),
        correlationId: t.Optional(t.String()),
        payload: t.Object({}, { additionalProperties: true }),
      }),
    },
  )
  .listen({ hostname: "127.0.0.1", port: Number(process.env.PORT ?? 0) });
