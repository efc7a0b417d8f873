/**
 * What connects the streams of several instances (docs/ARCHITECTURE.md, "Streams"): each change
 * stored here is told to this instance's streams at once and queued as a marker for the change
 * feed (written every 100 ms, one transaction per partition); every 250 ms the relay reads the
 * markers other instances wrote and tells this instance's streams. The cost is per instance and
 * per change, never per stream: 4 range reads every 250 ms while idle.
 */
import type { Logger } from "../logging/logger.ts";
import { createLoop, pauseFor } from "../loops/loop.ts";
import type { ChangeFeed, ChangeMarker } from "../storage/change-feed.ts";
import type { ChangeHub, HubMessage } from "./change-hub.ts";

export interface FeedRelayOptions {
  hub: ChangeHub;
  /** Null on `memory`: one instance, the hub is enough. */
  feed: ChangeFeed | null;
  logger: Logger;
  /** This instance, as markers name it. */
  origin?: string;
}

const POLL_MS = 250;
/** Markers are read again this far back: another instance's clock, and its write, may lag. */
const LAG_MS = 1500;
/** Markers queued at most while the feed does not answer; the oldest go first. */
const MAX_QUEUED = 10_000;
/** Markers kept in the feed: long past any reader's window. */
const KEEP_MS = 5 * 60_000;
const PURGE_EVERY_MS = 60_000;

export function createFeedRelay(options: FeedRelayOptions) {
  const { hub, feed, logger } = options;
  const origin = options.origin ?? `instance-${crypto.randomUUID()}`;
  let queued: ChangeMarker[] = [];
  /** Keys read in the current window, with their time: a window read again drops them. */
  const seen = new Map<string, string>();
  let since = new Date(Date.now() - LAG_MS);
  let lastPurge = Date.now();

  async function round() {
    if (!feed) return pauseFor(60_000);
    if (queued.length > 0) {
      const batch = queued;
      queued = [];
      await feed
        .append(batch)
        .catch((error) =>
          logger.warn({ err: error, markers: batch.length }, "streams: change markers not written; other instances' streams catch up from history"),
        );
    }
    const markers = await feed.readSince(since, 1000);
    for (const marker of markers) {
      if (seen.has(marker.key)) continue;
      seen.set(marker.key, marker.at);
      if (marker.origin === origin) continue;
      hub.publish({
        kind: "change",
        tenantId: marker.tenantId,
        jobId: marker.jobId,
        requestType: marker.requestType,
        seq: marker.seq,
        jobStatus: marker.jobStatus,
      });
    }
    const newest = markers.at(-1)?.at;
    if (newest) since = new Date(Math.max(since.getTime(), Date.parse(newest) - LAG_MS));
    else since = new Date(Math.max(since.getTime(), Date.now() - LAG_MS * 4));
    for (const [key, at] of seen) if (at < since.toISOString()) seen.delete(key);
    if (Date.now() - lastPurge > PURGE_EVERY_MS) {
      lastPurge = Date.now();
      await feed.purge(new Date(Date.now() - KEEP_MS), 1000);
    }
    return pauseFor(POLL_MS);
  }

  const loop = createLoop({ name: "change feed", round, errorPauseMs: 1000, logger });

  return {
    origin,
    /** A change stored by this instance: its streams now, other instances' through the feed. */
    announce(message: HubMessage): void {
      hub.publish(message);
      if (!feed || message.kind !== "change") return;
      const { tenantId, jobId, requestType, seq, jobStatus } = message;
      queued.push({ tenantId, jobId, requestType, seq, jobStatus, origin, at: "" });
      if (queued.length > MAX_QUEUED) queued.splice(0, queued.length - MAX_QUEUED);
    },
    start: () => loop.start(),
    stop: () => loop.stop(),
  };
}

export type FeedRelay = ReturnType<typeof createFeedRelay>;
