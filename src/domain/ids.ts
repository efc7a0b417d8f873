import { v5 as uuidv5, v7 as uuidv7 } from "uuid";

/** Time-ordered, so the job index sorts newest first by id alone. */
export function newJobId(): string {
  return uuidv7();
}

/**
 * Step and outbox ids derive from the job id, so a retried write of the same job produces the
 * same entities (and the same Service Bus messageId) instead of duplicates.
 */
export function stepIdFor(jobId: string, stepIndex: number): string {
  return uuidv5(`step/${stepIndex}`, jobId);
}

/** `dispatch` counts the directives issued for one step: 0 for its first run. */
export function outboxIdFor(jobId: string, stepIndex: number, dispatch = 0): string {
  return uuidv5(`outbox/${stepIndex}/${dispatch}`, jobId);
}
