/**
 * Around every request: an `X-Request-Id` (the client's, when it is sane, else a new one) echoed
 * on the answer, one JSON log line (method, path, status, duration, request id, job id), and
 * the intake metrics.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "../logging/logger.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { problemCodeOf, problemOf } from "./problem.ts";
import { pathOf } from "./request-guard.ts";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const JOB_PATH = /^\/v1\/jobs\/([^/]+)/;

export type Handler = (request: Request) => Promise<Response>;

export function observe(handle: Handler, options: { logger: Logger; metrics: Metrics }): Handler {
  const { logger, metrics } = options;
  return async (request) => {
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
    return response;
  };
}
