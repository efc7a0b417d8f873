/**
 * createApp composes the route modules around one error mapper. It receives ready services and
 * knows no concrete adapter.
 */

import type { ValueError } from "@sinclair/typebox/errors";
import { Elysia, ValidationError } from "elysia";
import type { BulkRedrive } from "./admin/bulk-redrive.ts";
import { adminRoutes, bulkRoutes } from "./admin/routes.ts";
import type { AdminService } from "./admin/service.ts";
import { commandRoutes } from "./commands/routes.ts";
import type { CommandService } from "./commands/service.ts";
import { consoleRoutes } from "./console/routes.ts";
import { DomainError, ForbiddenError, MalformedRequestError, RateLimitedError, UnauthorizedError, ValidationFailedError } from "./domain/errors.ts";
import { type HealthOptions, healthRoutes } from "./health/routes.ts";
import { type AuthGuardOptions, authGuard } from "./http/auth-guard.ts";
import { openapiPlugin, openRoute } from "./http/openapi.ts";
import { domainProblem, HttpProblem, httpProblem, problemOf, statusOfError } from "./http/problem.ts";
import { pathOf } from "./http/request-guard.ts";
import type { RepairService } from "./jobs/repair.ts";
import { jobRoutes } from "./jobs/routes.ts";
import type { JobService } from "./jobs/service.ts";
import type { StepEventService } from "./jobs/step-events.ts";
import type { Logger } from "./logging/logger.ts";
import type { Metrics } from "./metrics/metrics.ts";
import { referenceRoutes } from "./reference/routes.ts";
import { streamRoutes } from "./streams/routes.ts";
import type { StreamService } from "./streams/service.ts";
import { violationsOf } from "./validation/violations.ts";

export interface AppOptions {
  commands: CommandService;
  jobs: JobService;
  stepEvents: StepEventService;
  repair: RepairService;
  streams: StreamService;
  /** Absent: the admin routes do not exist (404). */
  admin?: { service: AdminService; bulk: BulkRedrive };
  /** Who may call what (LUCIUS_AUTH_MODE, LUCIUS_ADMIN_API_KEY). */
  auth: Omit<AuthGuardOptions, "logger"> & { mode: "none" | "jwt" | "apikey" };
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
      const instance = pathOf(request.url) || "/";
      // Elysia wraps what a parse hook throws in its ParseError: ours is the cause.
      const ours = [error, error instanceof Error ? error.cause : undefined].find((e) => e instanceof DomainError || e instanceof HttpProblem);
      if (ours instanceof HttpProblem) return httpProblem(ours, instance);
      const domain = ours instanceof DomainError ? ours : error instanceof ValidationError ? inputError(error) : null;
      if (domain) {
        if (domain instanceof UnauthorizedError || domain instanceof ForbiddenError || domain instanceof RateLimitedError)
          options.metrics.refused(domain.reason);
        // A full memory store refuses every command until jobs end: counted in the metrics
        // (lucius_commands_total{reason="storage-full"}), not logged once per refusal.
        if (statusOfError(domain) >= 500 && domain.code !== "storage-full") logger.warn({ err: domain, path: instance }, domain.message);
        return domainProblem(domain, instance);
      }
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
    .use(authGuard({ ...options.auth, logger }))
    .use(openapiPlugin(options.version, options.auth.authenticator === null ? "none" : options.auth.mode))
    .use(referenceRoutes())
    .get("/metrics", async () => new Response(await options.metrics.render(), { headers: { "content-type": options.metrics.contentType } }), {
      detail: { tags: ["operations"], summary: "Prometheus metrics", ...openRoute },
    })
    .use(healthRoutes(options.health))
    .use(commandRoutes(options.commands, { maxBodyBytes: options.maxBodyBytes }))
    .use(jobRoutes(options.jobs, options.stepEvents, options.repair, { maxBodyBytes: options.maxBodyBytes }))
    .use(streamRoutes(options.streams))
    .use(options.admin ? adminRoutes(options.admin.service, { logger, maxBodyBytes: options.maxBodyBytes }) : new Elysia())
    .use(options.admin ? bulkRoutes(options.admin.bulk, { logger, maxBodyBytes: options.maxBodyBytes }) : new Elysia())
    .use(options.admin ? consoleRoutes() : new Elysia());
}

export type App = ReturnType<typeof createApp>;

/**
 * What Elysia's own validation refused: a body is understood but wrong (422); a query, path or
 * header value is a malformed request (400). Bodies are normally checked by their parse hook
 * first (see http/json-body.ts), since Elysia's error would print the whole body.
 */
function inputError(error: ValidationError): DomainError {
  const errors = violationsOf(error.all as unknown as ValueError[], error.type === "body" ? "" : `/${error.type}`);
  const detail = `${errors.length} violation(s) in the request ${error.type}`;
  return error.type === "body" ? new ValidationFailedError(detail, { errors }) : new MalformedRequestError(detail, { errors });
}
