/**
 * One publish call bounded in time: a broker that stops answering must not hold a batch (and the
 * entries behind it) forever. Whatever goes wrong becomes one outcome per message.
 */
import type { OutboundMessage, Publisher, PublishOutcome } from "./publisher.ts";
import { PublishError } from "./publisher.ts";

export async function publishWithTimeout(publisher: Publisher, topic: string, messages: OutboundMessage[], timeoutSeconds: number): Promise<PublishOutcome[]> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort();
      reject(new PublishError(`publish timed out after ${timeoutSeconds}s`, true));
    }, timeoutSeconds * 1000);
  });
  try {
    const outcomes = await Promise.race([publisher.publish(topic, messages, controller.signal), timeout]);
    if (outcomes.length !== messages.length) throw new PublishError(`publisher answered ${outcomes.length} outcomes for ${messages.length} messages`, true);
    return outcomes;
  } catch (error) {
    const retryable = error instanceof PublishError ? error.retryable : true;
    const message = error instanceof Error ? error.message : String(error);
    return messages.map(() => ({ ok: false, error: message, retryable }));
  } finally {
    clearTimeout(timer);
  }
}

export type PublishResult = "sent" | "retryable_error" | "permanent_error";

/** How many messages of a publish call had each result (for the metrics). */
export function countResults(outcomes: readonly PublishOutcome[]): Map<PublishResult, number> {
  const counts = new Map<PublishResult, number>();
  for (const outcome of outcomes) {
    const result: PublishResult = outcome.ok ? "sent" : outcome.retryable ? "retryable_error" : "permanent_error";
    counts.set(result, (counts.get(result) ?? 0) + 1);
  }
  return counts;
}
