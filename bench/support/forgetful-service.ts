/**
 * The service as `src/main.ts` serves it (same settings, runtime, log writer), except that its
 * store keeps no job: `createJob` answers "stored" and forgets. Everything else of the intake
 * runs (auth, body limits, envelope and payload validation, planning, ids, log line, metrics).
 * bench:intake runs it beside the real service: the difference is what holding every job in
 * memory costs (allocation, and the garbage collector walking a heap that grows with each job).
 * Never a way to run the service: nothing it accepts can be read back or published.
 */
import { loadProtocols } from "../../src/config/protocols.ts";
import { loadSettings } from "../../src/config/settings.ts";
import { createLogger } from "../../src/logging/logger.ts";
import { createRuntime } from "../../src/runtime.ts";
import type { JobStore } from "../../src/storage/job-store.ts";
import { createMemoryStore } from "../../src/storage/memory/memory-store.ts";

const settings = loadSettings(Bun.env);
const protocols = loadProtocols(settings);
// As main.ts writes its log lines: Bun's buffered stdout writer.
const stdout = Bun.stdout.writer({ highWaterMark: 64 * 1024 });
const logger = createLogger({ level: settings.logLevel, destination: { write: (line: string) => void stdout.write(line) } });
setInterval(() => void stdout.flush(), 1000).unref();

const memory = createMemoryStore();
const store: JobStore = { ...memory, createJob: async (aggregate) => ({ outcome: "stored", aggregate }) };
const runtime = await createRuntime({ settings, protocols, logger, store });
Bun.serve({ hostname: settings.host, port: settings.port, fetch: runtime.fetch });
runtime.start();
