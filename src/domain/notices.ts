/**
 * What the orchestrator tells about a job as it changes (to this instance's streams, and through
 * the change feed to other instances'): plain data, made by the services that store changes.
 */
import type { HistoryEntry, JobStatus, StepProgress } from "./model.ts";

/** One stored change of a job, as streams need it: `entry` when this instance made it. */
export interface JobChange {
  kind: "change";
  tenantId: string;
  jobId: string;
  requestType: string;
  /** The change's sequence number in the job's history. */
  seq: number;
  jobStatus: JobStatus;
  entry?: HistoryEntry;
}

/** A worker's progress report: not a history entry (no sequence number), only told live. */
export interface ProgressChange {
  kind: "progress";
  tenantId: string;
  jobId: string;
  requestType: string;
  step: string;
  stepId: string;
  progress: StepProgress;
}

export type HubMessage = JobChange | ProgressChange;
