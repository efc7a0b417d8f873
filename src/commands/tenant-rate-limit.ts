/**
 * LUCIUS_TENANT_RATE_LIMIT: a token bucket per tenant, per instance (commands per second, a burst
 * of twice that), so one noisy tenant cannot starve the others. Bounded: past MAX_TENANTS, idle
 * tenants (whose bucket has refilled) are forgotten, and if none is idle, the oldest.
 */

const MAX_TENANTS = 10_000;

export interface TenantRateLimit {
  /** Takes one token for the tenant: 0 when allowed, else the whole seconds until one is back. */
  take(tenantId: string): number;
}

export function createTenantRateLimit(perSecond: number, now: () => number = () => performance.now()): TenantRateLimit {
  const burst = perSecond * 2;
  const buckets = new Map<string, { tokens: number; atMs: number }>();

  function refilled(bucket: { tokens: number; atMs: number }, atMs: number): number {
    return Math.min(burst, bucket.tokens + ((atMs - bucket.atMs) / 1000) * perSecond);
  }

  function makeRoom(atMs: number): void {
    for (const [tenant, bucket] of buckets) if (refilled(bucket, atMs) >= burst) buckets.delete(tenant);
    while (buckets.size >= MAX_TENANTS) buckets.delete(buckets.keys().next().value!);
  }

  return {
    take(tenantId) {
      const atMs = now();
      let bucket = buckets.get(tenantId);
      if (!bucket) {
        if (buckets.size >= MAX_TENANTS) makeRoom(atMs);
        bucket = { tokens: burst, atMs };
        buckets.set(tenantId, bucket);
      }
      const tokens = refilled(bucket, atMs);
      bucket.atMs = atMs;
      if (tokens >= 1) {
        bucket.tokens = tokens - 1;
        return 0;
      }
      bucket.tokens = tokens;
      return Math.max(1, Math.ceil((1 - tokens) / perSecond));
    },
  };
}
