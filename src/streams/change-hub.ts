/**
 * Job changes inside one instance: the job writer and the intake tell the hub after each stored
 * change, the change feed tells it what other instances stored, and open streams listen. A
 * listener is called synchronously and must not block; a slow client is the stream's problem
 * (src/streams/sse.ts bounds what it holds).
 */
import type { HubMessage } from "../domain/notices.ts";

export type { HubMessage, JobChange, ProgressChange } from "../domain/notices.ts";

export type HubListener = (message: HubMessage) => void;

export interface ChangeHub {
  publish(message: HubMessage): void;
  /** Listens to one job's changes, or a tenant's; returns the way to stop. */
  subscribe(topic: { jobId: string } | { tenantId: string }, listener: HubListener): () => void;
  /** Tells every listener the instance is stopping (each stream ends). */
  closeAll(): void;
  onClose(listener: () => void): () => void;
  /** Listeners now: streams open on this instance. */
  size(): number;
}

export function createChangeHub(): ChangeHub {
  const byJob = new Map<string, Set<HubListener>>();
  const byTenant = new Map<string, Set<HubListener>>();
  const closers = new Set<() => void>();
  let listeners = 0;

  const add = (map: Map<string, Set<HubListener>>, key: string, listener: HubListener) => {
    const set = map.get(key) ?? new Set();
    set.add(listener);
    map.set(key, set);
    listeners++;
    return () => {
      if (!set.delete(listener)) return;
      listeners--;
      if (set.size === 0) map.delete(key);
    };
  };

  return {
    publish(message) {
      for (const listener of [...(byJob.get(message.jobId) ?? []), ...(byTenant.get(message.tenantId) ?? [])]) listener(message);
    },
    subscribe(topic, listener) {
      return "jobId" in topic ? add(byJob, topic.jobId, listener) : add(byTenant, topic.tenantId, listener);
    },
    closeAll() {
      for (const close of [...closers]) close();
    },
    onClose(listener) {
      closers.add(listener);
      return () => closers.delete(listener);
    },
    size: () => listeners,
  };
}
