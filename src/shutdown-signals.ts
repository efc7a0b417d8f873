/**
 * What a stop signal means, shared by both entry points. The first SIGTERM or SIGINT starts the
 * graceful stop. A supervisor that signals the process group (systemd, most others) reaches the
 * service twice at once: directly, and forwarded by `bun run`; such a copy must not cut the
 * drain short. So the same signal again within `repeatWindowMs` is the same delivery and is
 * ignored; an operator who means "now" sends it again after that moment (Ctrl-C twice), or
 * sends the other signal, and the process exits at once.
 */
export type StopSignal = "SIGTERM" | "SIGINT";

/** "stop": begin the graceful stop; "repeat": the same delivery again, ignore it; "now": exit without waiting. */
export type SignalDecision = "stop" | "repeat" | "now";

export interface SignalJudgeOptions {
  /** How long after the first signal the same signal still counts as the same delivery. */
  repeatWindowMs?: number;
  now?: () => number;
}

export const DEFAULT_REPEAT_WINDOW_MS = 1000;

export function createSignalJudge(options: SignalJudgeOptions = {}): (signal: StopSignal) => SignalDecision {
  const windowMs = options.repeatWindowMs ?? DEFAULT_REPEAT_WINDOW_MS;
  const now = options.now ?? Date.now;
  let first: { signal: StopSignal; at: number } | null = null;
  return (signal) => {
    if (!first) {
      first = { signal, at: now() };
      return "stop";
    }
    return signal === first.signal && now() - first.at < windowMs ? "repeat" : "now";
  };
}
