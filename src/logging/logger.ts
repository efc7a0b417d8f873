/**
 * Structured JSON logs with pino: one line per event, levels from LUCIUS_LOG_LEVEL. Services
 * take the `Logger` type, never pino itself.
 */
import pino from "pino";
import { logTraceFields } from "../telemetry/tracing.ts";

export type Logger = pino.Logger;

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerOptions {
  level: LogLevel;
  /** Where lines go; stdout, synchronously, when absent (main.ts passes a buffered one). */
  destination?: pino.DestinationStream;
  /** Tracing is on (settings.tracing): each line names the span it was written in. Off, lines cost nothing more. */
  traceFields?: boolean;
}

export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { service: "lucius" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      ...(options.traceFields ? { mixin: logTraceFields } : {}),
    },
    options.destination ?? pino.destination({ sync: true }),
  );
}

export const silentLogger: Logger = pino({ level: "silent" });
