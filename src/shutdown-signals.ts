/**
 * What a stop signal means, shared by both entry points. The first SIGTERM or SIGINT starts the
 * graceful stop. A supervisor that signals the process group (systemd, most others) reaches the
 * service twice at once: directly, and forwarded by `bun run`; such a copy must not cut the
 * drain short. So the same signal again within `repeatWindowMs` is the same delivery and is
 * ignored; an operator who means "now" sends it again after that moment (Ctrl-C twice), or
 * sends the other signal, and the process exits at once.
 */
import type { Logger } from "./logging/logger.ts";

export type StopSignal = "SIGTERM" | "SIGINT";

/** "stop": begin the graceful stop; "repeat": the same delivery again, ignore it; "now": exit without waiting. */
export type SignalDecision = "stop" | "repeat" | "now";

export interface SignalJudgeOptions {
  /** How long after the first signal the same signal still counts as the same delivery. */
  repeatWindowMs?: number;
  now?: () => number;
}

const DEFAULT_REPEAT_WINDOW_MS = 1000;

export function createSignalJudge(options: SignalJudgeOptions = {}): (signal: StopSignal) => SignalDecision {
  const windowMs = options.repeatWindowMs ?? DEFAULT_REPEAT_WINDOW_MS;
  // A monotonic clock: a wall-clock jump must not turn a copy into a deliberate second signal.
  const now = options.now ?? (() => performance.now());
  let first: { signal: StopSignal; at: number } | null = null;
  return (signal) => {
    if (!first) {
      first = { signal, at: now() };
      return "stop";
    }
    return signal === first.signal && now() - first.at < windowMs ? "repeat" : "now";
  };
}

export interface StopOnSignalsOptions {
  logger: Logger;
  /** Stops listening and lets in-flight work finish. */
  stop(): Promise<void>;
  /** Ends the process with the code, after the logs are out. */
  exit(code: number): Promise<never> | never;
  judge?: (signal: StopSignal) => SignalDecision;
}

/** What to do on each SIGTERM or SIGINT: the runtime's edges only listen and exit. */
export function createStopOnSignal(options: StopOnSignalsOptions): (signal: StopSignal) => Promise<void> {
  const { logger } = options;
  const judge = options.judge ?? createSignalJudge();
  return async (signal) => {
    const decision = judge(signal);
    if (decision === "repeat") {
      logger.info({ signal }, "the same signal again at once: still stopping gracefully (send it again after a second to exit now)");
      return;
    }
    if (decision === "now") {
      logger.warn({ signal }, "second signal: exiting without waiting");
      await options.exit(1);
    }
    logger.info({ signal }, "stopping: no new connections, waiting for in-flight requests and publishes");
    try {
      await options.stop();
    } catch (error) {
      logger.error({ err: error }, "the stop failed: exiting without finishing it");
      await options.exit(1);
    }
    logger.info("stopped");
    await options.exit(0);
  };
}
