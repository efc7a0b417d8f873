/**
 * Around every request: an `X-Request-Id` (the client's, when it is sane, else a new one) echoed
 * on the answer, one JSON log line (method, path, status, duration, request id, job id), the
 * intake metrics, and with tracing on a SERVER span (continuing the request's `traceparent`)
 * that everything the request does runs inside.
 */
import { randomUUID } from "node:crypto";
import { context, propagation, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "../logging/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { tracer, tracingEnabled } from "../telemetry/tracing.ts";
import { problemCodeOf, problemOf } from "./problem.ts";
import { pathOf } from "./request-guard.ts";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const JOB_PATH = /^\/v1\/jobs\/([^/]+)/;

export type Handler = (request: Request) => Promise<Response>;

export interface ObserveOptions {
  logger: Logger;
  metrics: Metrics;
  /** The route a path takes, for span names (`POST /v1/jobs/:jobId/redrive`). */
  routeOf?: (path: string) => string | null;
}

const headerGetter = {
  keys: (headers: Headers) => [...headers.keys()],
  get: (headers: Headers, key: string) => headers.get(key) ?? undefined,
};

export function observe(handle: Handler, options: ObserveOptions): Handler {
  const observed = observeRequest(handle, options);
  // Only the request goes on: a server passes more arguments (Bun its server) that are no span.
  if (!tracingEnabled()) return (request) => observed(request);
  return (request) => {
    const path = pathOf(request.url);
    const route = options.routeOf?.(path) ?? null;
    // Most requests carry no trace context: then there is nothing to parse.
    const parent = request.headers.has("traceparent") ? propagation.extract(context.active(), request.headers, headerGetter) : context.active();
    const span = tracer().startSpan(
      route ? `${request.method} ${route}` : request.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          "http.request.method": request.method,
          "url.path": path,
          "url.scheme": request.url.startsWith("https:") ? "https" : "http",
          ...(route ? { "http.route": route } : {}),
        },
      },
      parent,
    );
    return context.with(trace.setSpan(parent, span), () => observed(request, span));
  };
}

function endServerSpan(span: Span | undefined, status: number): void {
  if (!span) return;
  span.setAttribute("http.response.status_code", status);
  // A server span is an error only for 5xx: a 4xx is the client's (semantic conventions).
  if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

function observeRequest(handle: Handler, options: ObserveOptions): (request: Request, span?: Span) => Promise<Response> {
  const { logger, metrics } = options;
  return async (request, span) => {
    const started = performance.now();
    const offered = request.headers.get("x-request-id");
    const requestId = offered !== null && REQUEST_ID.test(offered) ? offered : randomUUID();
    let response: Response;
    try {
      response = await handle(request);
    } catch (error) {
      // The app answers its own errors; what escapes it (a Request the runtime refuses to build)
      // still gets a problem, never the runtime's plain-text 500.
      logger.error({ err: error, method: request.method }, "unhandled error outside the app");
      response = problemOf("internal-error", 500, "Internal error", "the request could not be completed", pathOf(request.url) || "/");
    }
    try {
      response.headers.set("x-request-id", requestId);
    } catch {
      // Some responses carry immutable headers: answer with a copy.
      response = new Response(response.body, response);
      response.headers.set("x-request-id", requestId);
    }
    const seconds = (performance.now() - started) / 1000;
    const path = pathOf(request.url);
    const jobId = /\/v1\/jobs\/([^/]+)/.exec(response.headers.get("location") ?? "")?.[1] ?? JOB_PATH.exec(path)?.[1];
    if (request.method === "POST" && path === "/v1/commands") {
      if (response.status === 202) metrics.commandAnswered(response.headers.get("idempotent-replayed") === "true" ? "replayed" : "accepted", "", seconds);
      else metrics.commandAnswered("rejected", (await problemCodeOf(response)) ?? String(response.status), seconds);
    }
    logger.info(
      { method: request.method, path, status: response.status, durationMs: Math.round(seconds * 100_000) / 100, requestId, ...(jobId ? { jobId } : {}) },
      "request",
    );
    // An event stream's span ends when its answer starts: its length is the client's to choose.
    endServerSpan(span, response.status);
    return response;
  };
}
