/**
 * Every route against every permission and tenant, on every backend: a caller without the right
 * permission for the tenant gets nothing but 401, 403 or 404; the right one gets its answer.
 * Health, readiness and metrics stay open.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ingestCommand, startTestRuntime } from "../../dev/in-process-runtime.ts";
import { newApiKey } from "../../src/auth/api-key-authenticator.ts";
import { PERMISSIONS, type Permission } from "../../src/auth/caller.ts";
import { permissionFor } from "../../src/http/auth-guard.ts";
import { storeFor } from "../support/stores.ts";

const dir = mkdtempSync(join(tmpdir(), "lucius-matrix-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface TestCaller {
  name: string;
  key: string | null;
  tenant: string | null;
  permissions: readonly Permission[];
}

/** One key per permission on tenant acme, every permission on another tenant, every one on acme, a wrong key, none. */
const granted = [
  ...PERMISSIONS.map((p) => ({ name: `${p}@acme`, tenants: ["acme"], roles: [p] })),
  { name: "all@globex", tenants: ["globex"], roles: [...PERMISSIONS] },
  { name: "all@acme", tenants: ["acme"], roles: [...PERMISSIONS] },
].map((grant) => ({ grant, issued: newApiKey({ name: grant.name, tenants: grant.tenants, roles: grant.roles }) }));
const keysFile = join(dir, "keys.json");
writeFileSync(keysFile, JSON.stringify(granted.map((g) => g.issued.entry)));

const callers: TestCaller[] = [
  ...granted.map(({ grant, issued }) => ({ name: grant.name, key: issued.key, tenant: grant.tenants[0]!, permissions: grant.roles })),
  { name: "wrong key", key: "lk_not-a-key-anyone-was-given", tenant: null, permissions: [] },
  { name: "no credentials", key: null, tenant: null, permissions: [] },
];
const setupKey = granted.find((g) => g.grant.name === "all@acme")!.issued.key;

type Target = { jobId: string; stepId: string };
interface Route {
  name: string;
  /** It changes the job (cancel, event): each request gets a fresh one. */
  changesJob?: boolean;
  permission: Permission;
  /** What a caller with the permission but another tenant gets. */
  otherTenant: 403 | 404 | "allowed";
  allowed: number;
  request(target: Target): [string, RequestInit];
}

const json = (body: unknown): RequestInit => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const routes: Route[] = [
  { name: "submit a command", permission: "commands.submit", otherTenant: 403, allowed: 202, request: () => ["/v1/commands", json(ingestCommand())] },
  {
    name: "cancel a job",
    changesJob: true,
    permission: "jobs.operate",
    otherTenant: 404,
    allowed: 200,
    request: (t) => [`/v1/jobs/${t.jobId}/cancel`, { method: "POST" }],
  },
  {
    name: "report a step event",
    changesJob: true,
    permission: "steps.report",
    otherTenant: 404,
    allowed: 202,
    request: (t) => [`/v1/jobs/${t.jobId}/steps/${t.stepId}/events`, json({ eventId: "e1", status: "progress", percent: 10 })],
  },
  {
    name: "pause a job",
    changesJob: true,
    permission: "jobs.operate",
    otherTenant: 404,
    allowed: 200,
    request: (t) => [`/v1/jobs/${t.jobId}/pause`, { method: "POST" }],
  },
  // A job that is running is not paused, nor failed: the caller gets as far as the job's state.
  { name: "resume a job", permission: "jobs.operate", otherTenant: 404, allowed: 409, request: (t) => [`/v1/jobs/${t.jobId}/resume`, { method: "POST" }] },
  { name: "redrive a job", permission: "jobs.operate", otherTenant: 404, allowed: 409, request: (t) => [`/v1/jobs/${t.jobId}/redrive`, { method: "POST" }] },
  { name: "read a job's history", permission: "jobs.read", otherTenant: 404, allowed: 200, request: (t) => [`/v1/jobs/${t.jobId}/history`, {}] },
  { name: "stream a job's changes", permission: "jobs.read", otherTenant: 404, allowed: 200, request: (t) => [`/v1/jobs/${t.jobId}/stream`, {}] },
  { name: "stream a tenant's changes", permission: "jobs.read", otherTenant: 403, allowed: 200, request: () => ["/v1/events?tenantId=acme", {}] },
  { name: "read a job", permission: "jobs.read", otherTenant: 404, allowed: 200, request: (t) => [`/v1/jobs/${t.jobId}`, {}] },
  { name: "list a tenant's jobs", permission: "jobs.read", otherTenant: 403, allowed: 200, request: () => ["/v1/jobs?tenantId=acme", {}] },
  { name: "read the outbox stats", permission: "outbox.admin", otherTenant: "allowed", allowed: 200, request: () => ["/v1/admin/outbox/stats", {}] },
  // HEAD is answered by the GET routes: it needs what GET needs.
  { name: "HEAD a job", permission: "jobs.read", otherTenant: 404, allowed: 200, request: (t) => [`/v1/jobs/${t.jobId}`, { method: "HEAD" }] },
  { name: "HEAD a tenant's jobs", permission: "jobs.read", otherTenant: 403, allowed: 200, request: () => ["/v1/jobs?tenantId=acme", { method: "HEAD" }] },
];

function withTrailingSlash(route: Route): Route {
  return {
    ...route,
    name: `${route.name} (trailing slash)`,
    request: (target) => {
      const [path, init] = route.request(target);
      const [pathname, query] = path.split("?");
      return [`${pathname}/${query ? `?${query}` : ""}`, init];
    },
  };
}

function expected(route: Route, caller: TestCaller): number {
  if (caller.tenant === null) return 401;
  if (!caller.permissions.includes(route.permission)) return 403;
  if (caller.tenant !== "acme" && route.otherTenant !== "allowed") return route.otherTenant;
  return route.allowed;
}

for (const backend of ["memory", "table", "ledger"] as const) {
  describe(`authorization: ${backend}`, () => {
    test(`${routes.length} routes (and their trailing-slash forms) × ${callers.length} callers answer as the permission and tenant say`, async () => {
      const svc = await startTestRuntime({
        store: await storeFor(backend),
        env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: keysFile, LUCIUS_ADMIN_ENABLED: "true" },
      });
      const mismatches: string[] = [];
      const newJob = async () => ((await (await svc.postCommand(ingestCommand(), { "x-api-key": setupKey })).json()) as { jobId: string }).jobId;
      const shared = await newJob();
      // Each route as written and with a trailing slash (the router takes both).
      for (const route of [...routes, ...routes.map(withTrailingSlash)]) {
        for (const caller of callers) {
          // A job of tenant acme; a fresh one for a route that changes it, so that it finds the job open.
          const jobId = route.changesJob ? await newJob() : shared;
          const [path, init] = route.request({ jobId, stepId: `${jobId}.s0` });
          const headers = new Headers(init.headers);
          if (caller.key !== null) headers.set("x-api-key", caller.key);
          const response = await svc.request(path, { ...init, headers });
          const want = expected(route, caller);
          if (response.status !== want) mismatches.push(`${route.name} as ${caller.name}: ${response.status}, expected ${want}`);
          if (want === 401 && !response.headers.get("www-authenticate")) mismatches.push(`${route.name} as ${caller.name}: 401 without WWW-Authenticate`);
        }
      }
      expect(mismatches).toEqual([]);
    });

    test("health, readiness and metrics stay open without credentials", async () => {
      const svc = await startTestRuntime({ store: await storeFor(backend), env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: keysFile } });
      for (const path of ["/healthz", "/readyz", "/metrics"]) expect((await svc.request(path)).status).toBe(200);
    });
  });
}

test("refusals are counted by reason in the metrics, never with the credential", async () => {
  const svc = await startTestRuntime({ env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: keysFile } });
  await svc.postCommand(ingestCommand());
  await svc.postCommand(ingestCommand(), { "x-api-key": "lk_wrong" });
  await svc.postCommand(ingestCommand({ tenantId: "globex" }), { "x-api-key": setupKey });
  await svc.request("/v1/jobs?tenantId=acme", { headers: { "x-api-key": granted[0]!.issued.key } });
  const metrics = await (await svc.request("/metrics")).text();
  for (const reason of ["missing-credentials", "invalid-credentials", "tenant-not-held", "missing-permission"]) {
    expect(metrics).toContain(`lucius_auth_refusals_total{reason="${reason}"} 1`);
  }
  expect(metrics).not.toContain("lk_wrong");
});

test("every /v1 route the app serves names its permission (a new route cannot be left open by mistake)", async () => {
  const svc = await startTestRuntime({ env: { LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: keysFile, LUCIUS_ADMIN_ENABLED: "true" } });
  const served = svc.runtime.app.routes.filter((route) => route.path.startsWith("/v1"));
  expect(served.length).toBeGreaterThan(8);
  const unnamed = served.filter((route) => permissionFor(route.method, route.path.replace(/:[^/]+/g, "x")) === null).map((r) => `${r.method} ${r.path}`);
  expect(unnamed).toEqual([]);
});
