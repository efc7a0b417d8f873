/**
 * A publish span per message (PRODUCER, `send <topic>`), child of the trace context its directive
 * was stored with; the message then carries that span as `traceparent`, and as `Diagnostic-Id`
 * (what the Service Bus tooling and Application Insights read). Installed only with tracing on.
 */
import { SpanKind, SpanStatusCode } from "@opentelemetry/api";
import { contextOf, MESSAGING, SERVICE_BUS_SYSTEM, traceparentOf, tracer } from "../telemetry/tracing.ts";
import type { Publisher } from "./publisher.ts";

export function tracePublishes(publisher: Publisher): Publisher {
  return {
    ...publisher,
    async publish(topic, messages, signal) {
      const spans = messages.map((message) =>
        tracer().startSpan(
          `send ${topic}`,
          {
            kind: SpanKind.PRODUCER,
            attributes: {
              [MESSAGING.system]: SERVICE_BUS_SYSTEM,
              [MESSAGING.operationType]: "send",
              [MESSAGING.operationName]: "send",
              [MESSAGING.destination]: topic,
              [MESSAGING.messageId]: message.messageId,
              "lucius.job.id": message.body.jobId,
              "lucius.step.id": message.body.stepId,
              "lucius.step.attempt": message.body.attempt,
            },
          },
          contextOf(message.applicationProperties.traceparent),
        ),
      );
      const traced = messages.map((message, i) => {
        const traceparent = traceparentOf(spans[i]);
        if (traceparent === null) return message;
        return { ...message, applicationProperties: { ...message.applicationProperties, traceparent, "Diagnostic-Id": traceparent } };
      });
      try {
        const outcomes = await publisher.publish(topic, traced, signal);
        outcomes.forEach((outcome, i) => {
          if (!outcome.ok) spans[i]?.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error });
        });
        return outcomes;
      } catch (error) {
        for (const span of spans) span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
        throw error;
      } finally {
        for (const span of spans) span.end();
      }
    },
  };
}
