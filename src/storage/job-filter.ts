import type { Job, JobFilter } from "../domain/model.ts";

/** Whether a job is one the listing's filter asks for. */
export function matchesFilter(job: Pick<Job, "status" | "paused" | "requestType" | "correlationId">, filter: JobFilter): boolean {
  return (
    (filter.status === undefined || job.status === filter.status) &&
    (filter.paused === undefined || job.paused === filter.paused) &&
    (filter.requestType === undefined || job.requestType === filter.requestType) &&
    (filter.correlationId === undefined || job.correlationId === filter.correlationId)
  );
}
