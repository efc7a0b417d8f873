export interface BackoffOptions {
  /** The delay after the first failure, in seconds. */
  baseSeconds: number;
  /** No delay grows beyond this. */
  capSeconds: number;
  /** [0, 1): injected so tests are deterministic. */
  random?: () => number;
}

/**
 * Seconds to wait after the `failures`-th failed attempt: exponential, capped, with "equal
 * jitter" (half fixed, half random) so replicas that failed together do not retry together.
 */
export function backoffSeconds(failures: number, options: BackoffOptions): number {
  const random = options.random ?? Math.random;
  const exponent = Math.max(0, failures - 1);
  const ceiling = Math.min(options.capSeconds, options.baseSeconds * 2 ** Math.min(exponent, 52));
  return ceiling / 2 + (ceiling / 2) * random();
}
