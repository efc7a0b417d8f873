/**
 * Traces through the OpenTelemetry API only: without a registered SDK (no OTLP endpoint set,
 * see sdk.ts) every call here is the API's no-op, and the helpers that would cost something
 * (a span per storage call, a decorated publisher) are not installed at all (`tracingEnabled`).
 *
 * How a job's trace hangs together: the HTTP request's server span is the root (or continues the
 * client's `traceparent`); a directive stores the trace context it was made in, and its publish
 * span is that context's child; the message carries the publish span as `traceparent` (and
 * `Diagnostic-Id`); the worker continues it and sends it back with its event; the event's spans
 * continue that, and the directives the event creates store it in turn.
 */
import {
  type Attributes,
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import type { OutboxEntry } from "../domain/model.ts";

export const TRACER_NAME = "lucius-orchestrator";

/** Messaging attribute names (semantic conventions, still "development" there, so copied as advised). */
export const MESSAGING = {
  system: "messaging.system",
  destination: "messaging.destination.name",
  messageId: "messaging.message.id",
  operationType: "messaging.operation.type",
  operationName: "messaging.operation.name",
  batchCount: "messaging.batch.message_count",
} as const;
export const SERVICE_BUS_SYSTEM = "servicebus";

/** OTLP over HTTP, protobuf (the specification's default) or JSON bodies; not gRPC. */
export const OTLP_PROTOCOLS = ["http/protobuf", "http/json"] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

let enabled = false;
let cachedTracer: Tracer | null = null;

/** Set once by the SDK's start: from then on spans are made and exported. */
export function markTracingEnabled(on: boolean): void {
  enabled = on;
  cachedTracer = null;
}

export function tracingEnabled(): boolean {
  return enabled;
}

/** The service's tracer, looked up once: the lookup through the global provider showed in profiles. */
export function tracer(): Tracer {
  cachedTracer ??= trace.getTracer(TRACER_NAME);
  return cachedTracer;
}

/** The trace context a W3C `traceparent` names, as a parent; the root context for none. */
export function contextOf(traceparent: string | null | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}

/** The span a `traceparent` names, as a link; none for a missing or invalid one. */
export function linkTo(traceparent: string | null | undefined, attributes?: Attributes): Link[] {
  const spanContext = trace.getSpanContext(contextOf(traceparent));
  if (!spanContext || !trace.isSpanContextValid(spanContext)) return [];
  return [{ context: spanContext, ...(attributes ? { attributes } : {}) }];
}

/** The `traceparent` of a span (or of the active one): null when tracing is off or there is none. */
export function traceparentOf(span: Span | undefined = trace.getActiveSpan()): string | null {
  if (!span) return null;
  const { traceId, spanId, traceFlags } = span.spanContext();
  // W3C trace context, version 00: what the propagator would write, without building a context for it.
  return trace.isSpanContextValid(span.spanContext()) ? `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, "0")}` : null;
}

function traceIdOf(traceparent: string | null): string | null {
  return traceparent?.split("-")[1] ?? null;
}

/**
 * Directives a change creates continue the trace they were made in: an event's directives hang
 * under the event's span, a redrive's under the operator's request. A directive that already
 * belongs to another trace (a deadline round retrying a step) keeps the job's trace; the round
 * links to it instead.
 */
export function continueTrace(entry: OutboxEntry): OutboxEntry {
  if (!enabled || entry.webhook) return entry;
  const active = traceparentOf();
  if (active === null || active === entry.traceparent) return entry;
  if (entry.traceparent !== null && traceIdOf(entry.traceparent) !== traceIdOf(active)) return entry;
  return { ...entry, traceparent: active };
}

/** Links the active span to another trace's span (an event's to its directive's, when the worker started a trace of its own). */
export function linkActiveSpan(traceparent: string | null | undefined): void {
  if (!enabled || !traceparent) return;
  const span = trace.getActiveSpan();
  if (!span || span.spanContext().traceId === traceIdOf(traceparent)) return;
  // A round works up to a batch of jobs: it keeps as many links as the retry loop's rounds.
  const linked = linksAdded.get(span) ?? 0;
  if (linked >= MAX_ROUND_LINKS) return;
  linksAdded.set(span, linked + 1);
  span.addLinks(linkTo(traceparent));
}

const linksAdded = new WeakMap<Span, number>();

export interface SpanOptions {
  kind?: SpanKind;
  attributes?: Attributes;
  links?: Link[];
  /** The parent; the active context when absent. */
  parent?: Context;
  /** A root of its own (a background round), whatever is active. */
  root?: boolean;
  startTime?: number;
}

/**
 * Runs `work` inside a new active span, ended when it settles; an error is recorded on it and
 * rethrown. Without tracing it only runs `work`.
 */
export async function withSpan<T>(name: string, options: SpanOptions, work: (span: Span | undefined) => Promise<T>): Promise<T> {
  if (!enabled) return work(undefined);
  const span = tracer().startSpan(
    name,
    {
      ...(options.kind !== undefined ? { kind: options.kind } : {}),
      ...(options.attributes ? { attributes: options.attributes } : {}),
      ...(options.links ? { links: options.links } : {}),
      ...(options.root ? { root: true } : {}),
      ...(options.startTime !== undefined ? { startTime: options.startTime } : {}),
    },
    options.parent ?? context.active(),
  );
  try {
    return await context.with(trace.setSpan(options.parent ?? context.active(), span), () => work(span));
  } catch (error) {
    failSpan(span, error);
    throw error;
  } finally {
    span.end();
  }
}

export function failSpan(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  span.setAttribute("error.type", error instanceof Error ? error.name : "Error");
}

/** Links a background round keeps to the traces it worked on, at most (a round takes up to 1,000). */
const MAX_ROUND_LINKS = 32;

export interface RoundSpan {
  /** Runs `work` inside the round's span. */
  run<T>(work: () => Promise<T>): Promise<T>;
  end(): void;
}

const NO_ROUND: RoundSpan = { run: (work) => work(), end: () => {} };

/**
 * A background round that found work (the retry loop's, the deadline sweep's): a root span of its
 * own, started when the round started, linked to the traces of the entries it took. Rounds that
 * find nothing make no span: an idle replica sends none.
 */
export function startRound(name: string, options: { startTime: number; traceparents?: readonly (string | null)[]; attributes?: Attributes }): RoundSpan {
  if (!enabled) return NO_ROUND;
  const links = [...new Set(options.traceparents ?? [])].slice(0, MAX_ROUND_LINKS).flatMap((traceparent) => linkTo(traceparent));
  const span = tracer().startSpan(name, { root: true, startTime: options.startTime, links, ...(options.attributes ? { attributes: options.attributes } : {}) });
  const spanContext = trace.setSpan(ROOT_CONTEXT, span);
  return {
    run: (work) =>
      context.with(spanContext, async () => {
        try {
          return await work();
        } catch (error) {
          failSpan(span, error);
          throw error;
        }
      }),
    end: () => span.end(),
  };
}

/** `trace_id` and `span_id` of the active span for a log line; nothing without one. */
export function logTraceFields(): Record<string, string> {
  // A new object each time: pino merges the line's fields into it.
  if (!enabled) return {};
  // Only spans this service made are ever active, and they are valid: no need to check (a log line is hot).
  const spanContext = trace.getActiveSpan()?.spanContext();
  return spanContext ? { trace_id: spanContext.traceId, span_id: spanContext.spanId } : {};
}
