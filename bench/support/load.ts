/** A small HTTP load generator for the benchmarks: closed loop for peak, open loop for latency. */

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

export type MakeRequest = (i: number) => Request;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summarize(latencies: number[], errors: number, seconds: number): LoadResult {
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    errors,
    seconds,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

/** `concurrency` workers send back to back for `seconds`: the peak rate. */
export async function closedLoop(make: MakeRequest, options: { concurrency: number; seconds: number; expectStatus: number }): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let counter = 0;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  await Promise.all(
    Array.from({ length: options.concurrency }, async () => {
      while (performance.now() < deadline) {
        const sentAt = performance.now();
        try {
          const response = await fetch(make(counter++));
          await response.arrayBuffer();
          if (response.status === options.expectStatus) latencies.push(performance.now() - sentAt);
          else errors++;
        } catch {
          errors++;
        }
      }
    }),
  );
  return summarize(latencies, errors, (performance.now() - started) / 1000);
}

/**
 * Requests start at a fixed rate whatever the answers do; latency counts from the planned start,
 * so a stalled server cannot hide its queueing (no coordinated omission).
 */
export async function openLoop(
  make: MakeRequest,
  options: { ratePerSecond: number; seconds: number; expectStatus: number; maxInFlight?: number },
): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  const total = Math.floor(options.ratePerSecond * options.seconds);
  const intervalMs = 1000 / options.ratePerSecond;
  const maxInFlight = options.maxInFlight ?? 512;
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  for (let i = 0; i < total; i++) {
    const plannedAt = started + i * intervalMs;
    const wait = plannedAt - performance.now();
    if (wait > 1) await Bun.sleep(wait);
    if (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    // Late: count from the planned start (the queueing is the server's). Early (no sleep under 1 ms): from the send.
    const startedAt = Math.min(plannedAt, performance.now());
    const work = (async () => {
      try {
        const response = await fetch(make(i));
        await response.arrayBuffer();
        if (response.status === options.expectStatus) latencies.push(performance.now() - startedAt);
        else errors++;
      } catch {
        errors++;
      }
    })();
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  }
  await Promise.all(inFlight);
  return summarize(latencies, errors, (performance.now() - started) / 1000);
}
