/**
 * createApp composes the route modules around one error mapper. It receives ready services and
 * knows no concrete adapter.
 */
import { Elysia, ValidationError } from "elysia";
import { adminRoutes } from "./admin/routes.ts";
import type { AdminService } from "./admin/service.ts";
import { commandRoutes } from "./commands/routes.ts";
import type { CommandService } from "./commands/service.ts";
import { DomainError, type FieldViolation } from "./domain/errors.ts";
import { type HealthOptions, healthRoutes } from "./health/routes.ts";
import { openapiPlugin } from "./http/openapi.ts";
import { domainProblem, problemOf, statusOfError } from "./http/problem.ts";
import { jobRoutes } from "./jobs/routes.ts";
import type { JobService } from "./jobs/service.ts";
import type { StepEventService } from "./jobs/step-events.ts";
import type { Logger } from "./logging/logger.ts";
import type { Metrics } from "./metrics/metrics.ts";

export interface AppOptions {
  commands: CommandService;
  jobs: JobService;
  stepEvents: StepEventService;
  /** Absent: the admin routes do not exist (404). */
  admin?: { service: AdminService; apiKey: string };
  health: HealthOptions;
  logger: Logger;
  metrics: Metrics;
  maxBodyBytes: number;
  version: string;
}

export function createApp(options: AppOptions) {
  const { logger } = options;
  return new Elysia({ normalize: false })
    .onError({ as: "global" }, ({ code, error, request }) => {
      const instance = new URL(request.url).pathname;
      // Elysia wraps what a body parser throws in its ParseError; ours are domain errors.
      const domain = error instanceof DomainError ? error : error instanceof Error && error.cause instanceof DomainError ? error.cause : null;
      if (domain) {
        if (statusOfError(domain) >= 500) logger.warn({ err: domain, path: instance }, domain.message);
        return domainProblem(domain, instance);
      }
      if (error instanceof ValidationError) return validationProblem(error, instance);
      switch (code) {
        case "PARSE":
          return problemOf("malformed-json", 400, "Malformed JSON body", "the request body is not valid JSON", instance);
        case "NOT_FOUND":
          return problemOf("not-found", 404, "Not found", `no route for ${request.method} ${instance}`, instance);
        default:
          // Anything unmapped is our bug: log it whole, answer without its text.
          logger.error({ err: error, path: instance, code }, "unhandled error");
          return problemOf("internal-error", 500, "Internal error", "the request could not be completed", instance);
      }
    })
    .use(openapiPlugin(options.version))
    .get("/metrics", async () => new Response(await options.metrics.render(), { headers: { "content-type": options.metrics.contentType } }), {
      detail: { tags: ["operations"], summary: "Prometheus metrics" },
    })
    .use(healthRoutes(options.health))
    .use(commandRoutes(options.commands, { maxBodyBytes: options.maxBodyBytes }))
    .use(jobRoutes(options.jobs, options.stepEvents))
    .use(options.admin ? adminRoutes(options.admin.service, { apiKey: options.admin.apiKey, logger }) : new Elysia());
}

export type App = ReturnType<typeof createApp>;

/** Body violations are 422 (the request was understood); query and path violations are 400. */
function validationProblem(error: ValidationError, instance: string): Response {
  const where = error.type === "body" ? "" : `/${error.type}`;
  // TypeBox reports a missing property twice (missing, then wrong type): keep the first per path.
  const byPath = new Map<string, FieldViolation>();
  for (const e of error.all) {
    const path = where + ("path" in e && typeof e.path === "string" ? e.path : "");
    const message = "summary" in e && typeof e.summary === "string" && e.summary ? e.summary : e.message;
    if (!byPath.has(path)) byPath.set(path, { path, message });
  }
  const errors = [...byPath.values()];
  const [status, title] = error.type === "body" ? [422, "Request does not match its schema"] : [400, "Invalid request parameters"];
  return problemOf("validation-failed", status, title, `${errors.length} violation(s) in the request ${error.type}`, instance, errors);
}
