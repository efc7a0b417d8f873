/**
 * Authentication and permissions, before anything else reads the request: a caller without the
 * right credentials learns nothing, not even a body schema. Each route's permission is looked up
 * by method and path; every other `/v1/` path needs a known caller; health, readiness, metrics and
 * the OpenAPI document stay open. Routes read the caller with `callerOf(request)` and hand it to
 * the services, which scope what it may see by tenant.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Elysia } from "elysia";
import type { Authenticator } from "../auth/authenticator.ts";
import { type Caller, OPEN_CALLER, type Permission } from "../auth/caller.ts";
import { ForbiddenError, UnauthorizedError } from "../domain/errors.ts";
import type { Logger } from "../logging/logger.ts";
import { pathOf } from "./request-guard.ts";

const RULES: { method: string; path: RegExp; permission: Permission }[] = [
  { method: "POST", path: /^\/v1\/commands$/, permission: "commands.submit" },
  { method: "POST", path: /^\/v1\/jobs\/[^/]+\/(cancel|redrive|pause|resume)$/, permission: "jobs.operate" },
  { method: "POST", path: /^\/v1\/jobs\/[^/]+\/steps\/[^/]+\/events$/, permission: "steps.report" },
  { method: "GET", path: /^\/v1\/jobs(\/[^/]+)?$/, permission: "jobs.read" },
  { method: "GET", path: /^\/v1\/jobs\/[^/]+\/steps\/[^/]+\/items$/, permission: "jobs.read" },
  { method: "GET", path: /^\/v1\/jobs\/[^/]+\/(history|stream)$/, permission: "jobs.read" },
  { method: "GET", path: /^\/v1\/events$/, permission: "jobs.read" },
  { method: "*", path: /^\/v1\/admin(\/|$)/, permission: "outbox.admin" },
];

/**
 * The permission a request needs; null for a path that needs only a known caller. Read as the
 * router reads it: trailing slashes dropped (it takes `/v1/commands/` for `/v1/commands`), and
 * HEAD answered by the GET route, so it needs what GET needs.
 */
export function permissionFor(method: string, path: string): Permission | null {
  const routed = path.replace(/\/+$/, "") || "/";
  const as = method === "HEAD" ? "GET" : method;
  return RULES.find((rule) => (rule.method === "*" || rule.method === as) && rule.path.test(routed))?.permission ?? null;
}

/**
 * The caller that LUCIUS_ADMIN_API_KEY stands for: an operator, who runs the admin routes and reads
 * the jobs of every tenant (the console shows both), but submits and reports nothing.
 */
const ADMIN_KEY_CALLER: Caller = { name: "admin-key", tenants: "*", permissions: new Set<Permission>(["outbox.admin", "jobs.read", "jobs.operate"]) };

/** The credential from `Authorization: Bearer`, else `X-API-Key`. */
function presentedCredential(headers: Headers): string | null {
  const bearer = /^Bearer\s+(.+)$/i.exec(headers.get("authorization") ?? "");
  if (bearer) return bearer[1]!.trim();
  return headers.get("x-api-key");
}

/** Compares digests, so neither the content nor the length of the key leaks through timing. */
function sameKey(presented: string, expected: string): boolean {
  const digest = (value: string) => createHash("sha256").update(value, "utf8").digest();
  return timingSafeEqual(digest(presented), digest(expected));
}

export interface AuthGuardOptions {
  /** Null: LUCIUS_AUTH_MODE=none, every caller may do everything except the admin routes. */
  authenticator: Authenticator | null;
  /** LUCIUS_ADMIN_API_KEY: opens the admin routes in every mode. */
  adminApiKey: string | null;
  /** LUCIUS_ADMIN_ENABLED: without it the admin routes do not exist, and answer 404 to anyone. */
  adminEnabled: boolean;
  logger: Logger;
}

const callers = new WeakMap<Request, Caller>();

/** The caller the guard let through for this request. */
export function callerOf(request: Request): Caller {
  const caller = callers.get(request);
  if (!caller) throw new Error("no caller for this request: the auth guard did not run");
  return caller;
}

export function authGuard(options: AuthGuardOptions) {
  const { authenticator, adminApiKey, logger } = options;

  async function identify(request: Request, path: string, permission: Permission | null): Promise<Caller> {
    const credential = presentedCredential(request.headers);
    const operatorRoute = permission === "outbox.admin" || permission === "jobs.read" || permission === "jobs.operate";
    if (operatorRoute && adminApiKey !== null && credential !== null && sameKey(credential, adminApiKey)) return ADMIN_KEY_CALLER;
    if (authenticator === null) {
      if (permission !== "outbox.admin") return OPEN_CALLER;
      logger.warn({ path, keyPresented: credential !== null }, "admin: refused a request without a valid key");
      throw new UnauthorizedError(
        "send the admin API key in X-API-Key or Authorization: Bearer",
        credential === null ? "missing-credentials" : "invalid-credentials",
      );
    }
    return authenticator.authenticate(credential);
  }

  return new Elysia({ name: "auth-guard" }).onRequest(async ({ request }) => {
    const path = pathOf(request.url);
    if (!path.startsWith("/v1/") && path !== "/v1") return;
    const permission = permissionFor(request.method, path);
    if (permission === "outbox.admin" && !options.adminEnabled) return;
    const caller = await identify(request, path, permission);
    if (permission !== null && !caller.permissions.has(permission)) {
      throw new ForbiddenError(`this caller lacks the '${permission}' permission`, "missing-permission");
    }
    callers.set(request, caller);
  });
}
