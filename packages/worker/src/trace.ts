/**
 * The message's trace, continued: a CONSUMER span under the message's publish when the
 * application registered an OpenTelemetry SDK, and the events carry it back. Without one the API
 * is a no-op and the events carry the message's own `traceparent`, which keeps the trace whole.
 */
import { context, propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { StepMessage } from "./message.ts";

export interface StepSpan {
  /** What the step's events carry: this span, or the message's trace when nothing records. */
  traceparent: string | null;
  run<T>(work: () => Promise<T>): Promise<T>;
  /** Ends the span; `error` marks it failed. */
  end(error: string | null): void;
}

function traceparentOf(span: Span): string | null {
  const { traceId, spanId, traceFlags } = span.spanContext();
  if (!trace.isSpanContextValid(span.spanContext())) return null;
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

export function startStepSpan(topic: string, message: StepMessage<unknown>): StepSpan {
  const parent = message.traceparent ? propagation.extract(ROOT_CONTEXT, { traceparent: message.traceparent }) : ROOT_CONTEXT;
  const span = trace.getTracer("@lucius/worker").startSpan(
    `process ${topic}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        "messaging.system": "servicebus",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.message.id": message.messageId,
        "lucius.job.id": message.jobId,
        "lucius.step.name": message.stepName,
        "lucius.step.attempt": message.attempt,
      },
    },
    parent,
  );
  // Without an SDK the span is the parent's context again (or invalid): then the message's own trace goes back.
  const traceparent = span.isRecording() ? traceparentOf(span) : message.traceparent;
  let ended = false;
  return {
    traceparent,
    run: (work) => context.with(trace.setSpan(parent, span), work),
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== null) span.setStatus({ code: SpanStatusCode.ERROR, message: error });
      span.end();
    },
  };
}
