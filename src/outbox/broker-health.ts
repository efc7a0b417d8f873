/**
 * Whether the broker is reachable, as seen from publish results: a call whose every message failed
 * retryably means it is down; any message sent means it is up. While it is down, publishing
 * would only spend every entry's attempts and push their next tries out by backoff, so that a
 * recovered broker would wait for them: the sweeper probes instead, and the fast path lets one
 * batch through per probe period (its answer is the probe).
 */
import type { PublishOutcome } from "./publisher.ts";

export interface BrokerHealth {
  isDown(): boolean;
  /** Records what one publish call did. */
  note(outcomes: readonly PublishOutcome[]): void;
  /** True when publishing may go ahead now: the broker is up, or a probe is due. */
  mayAttempt(): boolean;
  /** Checks the broker now (bounded by `timeoutMs`); true when it answers. */
  probe(): Promise<boolean>;
}

export interface BrokerHealthOptions {
  check: () => Promise<void>;
  probeEveryMs: number;
  timeoutMs: number;
  nowMs?: () => number;
  /** Told when the broker is found down and when it is back. */
  onChange?: (down: boolean) => void;
}

export function createBrokerHealth(options: BrokerHealthOptions): BrokerHealth {
  const nowMs = options.nowMs ?? (() => performance.now());
  let down = false;
  let lastAttempt = Number.NEGATIVE_INFINITY;

  function set(value: boolean): void {
    if (value === down) return;
    down = value;
    options.onChange?.(down);
  }

  return {
    isDown: () => down,
    note(outcomes) {
      if (outcomes.some((outcome) => outcome.ok)) set(false);
      else if (outcomes.length > 0 && outcomes.every((outcome) => !outcome.ok && outcome.retryable)) set(true);
    },
    mayAttempt() {
      if (!down) return true;
      if (nowMs() - lastAttempt < options.probeEveryMs) return false;
      lastAttempt = nowMs();
      return true;
    },
    async probe() {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([
          options.check(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error("no answer")), options.timeoutMs);
          }),
        ]);
        set(false);
        return true;
      } catch {
        set(true);
        return false;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
