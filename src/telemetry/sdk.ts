/**
 * Starts the OpenTelemetry trace SDK, imported by the runtime only when an OTLP endpoint is set
 * (settings.ts decides, from the standard OTEL_* variables). Everything else is read by the SDK
 * itself from the same variables: the endpoint and headers (OTEL_EXPORTER_OTLP_*), the sampler
 * (OTEL_TRACES_SAMPLER, _ARG), the batch processor (OTEL_BSP_*), the span limits, and the
 * resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
 *
 * Context travels in AsyncLocalStorage (`node:async_hooks`), which Bun and Deno both provide.
 */
import { context, diag, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter as JsonExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as ProtobufExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { markTracingEnabled, type OtlpProtocol } from "./tracing.ts";

/** What the SDK's start writes to the service's log (a pino logger fits). */
export interface TracingLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

export interface TracingOptions {
  /** The service's version, on every span's resource. */
  version: string;
  /** OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, checked by the settings. */
  protocol: OtlpProtocol;
  logger: TracingLog;
}

export interface Tracing {
  /** Exports what is still buffered and stops; spans made afterwards are dropped. */
  shutdown(): Promise<void>;
}

/**
 * The export buffer's defaults, where OTEL_BSP_* do not say: small batches often (200 ms, 1,024
 * spans) instead of the SDK's 512 every 5 s behind a queue of 2,048, which drops spans past about
 * 400 a second and, raised, holds seconds of spans on the heap (bench:intake: 0.77 of tracing off
 * with 1 s batches of 4,096; 0.80–0.82 over five rounds with these). The queue stays bounded:
 * 16,384 spans.
 */
function batchDefaults() {
  const unset = (name: string) => !process.env[name]?.trim();
  return {
    ...(unset("OTEL_BSP_SCHEDULE_DELAY") ? { scheduledDelayMillis: 200 } : {}),
    ...(unset("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") ? { maxExportBatchSize: 1024 } : {}),
    ...(unset("OTEL_BSP_MAX_QUEUE_SIZE") ? { maxQueueSize: 16_384 } : {}),
  };
}

export function startTracing(options: TracingOptions): Tracing {
  // The SDK reports its own trouble (an unreachable collector) through `diag`: into our logs, once per problem.
  const reported = new Set<string>();
  const report = (message: string) => {
    if (reported.size > 100 || reported.has(message)) return;
    reported.add(message);
    options.logger.warn({ component: "opentelemetry" }, message);
  };
  diag.setLogger({ error: report, warn: report, info: () => {}, debug: () => {}, verbose: () => {} });

  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over our defaults.
  // (merge: the argument's attributes win).
  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: "lucius", [ATTR_SERVICE_VERSION]: options.version }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(options.protocol === "http/json" ? new JsonExporter() : new ProtobufExporter(), batchDefaults())],
  });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  // Trace context only: nothing here reads baggage.
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  markTracingEnabled(true);
  options.logger.info({ sampler: process.env.OTEL_TRACES_SAMPLER ?? "parentbased_always_on" }, "OpenTelemetry tracing on: spans go to the OTLP endpoint");

  return {
    async shutdown() {
      markTracingEnabled(false);
      await provider.shutdown().catch((error: unknown) => options.logger.warn({ err: error }, "OpenTelemetry: the last spans could not be exported"));
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}
