import { Elysia } from "elysia";
import { openRoute } from "../http/openapi.ts";
import { problemResponse } from "../http/problem.ts";

export interface ReadinessCheck {
  name: string;
  /** Throws when the dependency does not answer. */
  check(): Promise<void>;
}

export interface HealthOptions {
  checks: ReadinessCheck[];
  /** False once shutdown began, so load balancers stop sending traffic. */
  isAccepting(): boolean;
  checkTimeoutMs?: number;
}

export function healthRoutes(options: HealthOptions) {
  const timeoutMs = options.checkTimeoutMs ?? 2000;
  async function run(check: ReadinessCheck): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        check.check(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      return "ok";
    } catch (error) {
      return `failing: ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      clearTimeout(timer);
    }
  }

  return new Elysia({ name: "health" })
    .get("/healthz", () => ({ status: "ok" }), { detail: { tags: ["operations"], summary: "Liveness: 200 while the process runs", ...openRoute } })
    .get(
      "/readyz",
      async () => {
        const results = await Promise.all(options.checks.map(async (c) => [c.name, await run(c)] as const));
        const checks = Object.fromEntries(results);
        const failing = results.filter(([, status]) => status !== "ok").map(([name]) => name);
        if (!options.isAccepting()) failing.unshift("shutdown");
        if (failing.length === 0) return { status: "ready", checks };
        return problemResponse({
          type: "urn:lucius:problem:not-ready",
          title: "Not ready",
          status: 503,
          detail: `failing: ${failing.join(", ")}`,
          instance: "/readyz",
          checks,
        });
      },
      {
        detail: {
          tags: ["operations"],
          summary: "Readiness: storage, broker, outbox age",
          responses: { 200: { description: "ready" }, 503: { description: "not ready, failing checks named" } },
          ...openRoute,
        },
      },
    );
}
