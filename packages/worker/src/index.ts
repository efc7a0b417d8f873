/**
 * @lucius/worker: write workers for Lucius Orchestrator. See README.md.
 */
export type { JsonObject, StepMessage } from "./message.ts";
export { createWorker, type StepContext, StepFailure, type StepHandler, type Worker, type WorkerLog, type WorkerOptions } from "./worker.ts";
