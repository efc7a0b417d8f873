/**
 * The storage port of the change feed: how a change stored by one instance reaches the streams
 * open on another (docs/STORAGE.md, "The change feed"). Markers are small, time-ordered, kept a
 * few minutes; each instance reads the new ones a few times a second, whatever its streams.
 */
import type { JobStatus } from "../domain/model.ts";

export interface ChangeMarker {
  tenantId: string;
  jobId: string;
  requestType: string;
  seq: number;
  jobStatus: JobStatus;
  /** The instance that wrote it (it told its own streams already). */
  origin: string;
  /** When it was written (set by the feed as it writes). */
  at: string;
}

export interface ChangeFeed {
  init(): Promise<void>;
  /** Writes markers (best effort: a stream also reads its job's history now and then). */
  append(markers: readonly ChangeMarker[]): Promise<void>;
  /**
   * Markers written at or after `since`, oldest first, at most `limit` per partition, each with
   * its key (unique: a reader that reads a window again drops what it has seen).
   */
  readSince(since: Date, limit: number): Promise<(ChangeMarker & { key: string })[]>;
  /** Removes markers older than `before`; returns how many. */
  purge(before: Date, limit: number): Promise<number>;
}
