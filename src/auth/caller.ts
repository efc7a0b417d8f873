/**
 * Who is calling, once authenticated: the tenants it may act for and what it may do. Runtime-
 * neutral and free of HTTP: services take a Caller to scope what they read and change.
 */

/** What a caller may do (docs/API.md, "Authentication"). */
export const PERMISSIONS = ["commands.submit", "jobs.read", "jobs.operate", "steps.report", "outbox.admin"] as const;
export type Permission = (typeof PERMISSIONS)[number];

export interface Caller {
  /** For logs: the key's name, or the token's subject. Never a credential. */
  name: string;
  /** The tenants it may act for; "*" for every tenant. */
  tenants: "*" | ReadonlySet<string>;
  permissions: ReadonlySet<Permission>;
  /** When its credential expires (a token's `exp`), epoch ms; absent: it does not (a key). */
  expiresAtMs?: number;
}

export function holdsTenant(caller: Caller, tenantId: string): boolean {
  return caller.tenants === "*" || caller.tenants.has(tenantId);
}

/** Every permission for every tenant: the caller of a service without authentication (development). */
export const OPEN_CALLER: Caller = { name: "anonymous", tenants: "*", permissions: new Set(PERMISSIONS) };

/** The known permissions among `values` (unknown roles and scopes are someone else's). */
export function permissionsFrom(values: Iterable<string>): Set<Permission> {
  const known = new Set<string>(PERMISSIONS);
  const found = new Set<Permission>();
  for (const value of values) if (known.has(value)) found.add(value as Permission);
  return found;
}

/** A tenant list where `"*"` anywhere means every tenant. */
export function tenantsFrom(values: readonly string[] | "*"): Caller["tenants"] {
  return values === "*" || values.includes("*") ? "*" : new Set(values);
}
