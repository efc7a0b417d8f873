/**
 * Structured JSON logs with pino: one line per event, levels from LUCIUS_LOG_LEVEL. Services
 * take the `Logger` type, never pino itself.
 */
import pino from "pino";
import type { LogLevel } from "../config/settings.ts";

export type Logger = pino.Logger;

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; stdout when absent. */
  destination?: pino.DestinationStream;
}

const destinations = new WeakMap<Logger, { flushSync(): void }>();

/** Writes out what a buffered logger still holds (before exit; and every second in main.ts). */
export function flushLogs(logger: Logger): void {
  try {
    destinations.get(logger)?.flushSync();
  } catch {
    // Nothing buffered yet, or stdout is gone: nothing to do.
  }
}

export function createLogger(options: LoggerOptions): Logger {
  const destination = options.destination ?? pino.destination({ sync: false, minLength: 4096 });
  const logger = pino(
    {
      level: options.level,
      base: { service: "lucius" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // Buffered: a synchronous write per request line cost a third of the intake's CPU time.
    // main.ts flushes every second and on shutdown; a crash can lose the last second of lines.
    destination,
  );
  if (!options.destination) destinations.set(logger, destination as unknown as { flushSync(): void });
  return logger;
}

export const silentLogger: Logger = pino({ level: "silent" });
