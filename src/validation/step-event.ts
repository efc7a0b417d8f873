/**
 * A worker's step event, one schema for both ways it arrives: in an HTTP body (the job and step
 * are in the path; the body may repeat them) and in a Service Bus message (which must name them).
 */
import { type Static, Type } from "@sinclair/typebox";

export const JobId = Type.String({ minLength: 1, maxLength: 64 });
export const StepId = Type.String({ minLength: 1, maxLength: 100 });

const eventFields = {
  eventId: Type.String({ minLength: 1, maxLength: 200, description: "the worker's id for this event: a repeat changes nothing" }),
  status: Type.Union([Type.Literal("succeeded"), Type.Literal("failed"), Type.Literal("progress")]),
  result: Type.Optional(Type.Object({}, { additionalProperties: true })),
  /** With `progress`: how far along, and a short note for the operator. */
  percent: Type.Optional(Type.Number({ minimum: 0, maximum: 100 })),
  message: Type.Optional(Type.String({ maxLength: 500 })),
  attempt: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: "the message's attempt: an event of an attempt that is over is ignored" })),
  error: Type.Optional(
    Type.Object(
      {
        code: Type.String({ minLength: 1, maxLength: 200 }),
        message: Type.String({ maxLength: 4000 }),
        retryable: Type.Optional(Type.Boolean()),
      },
      { additionalProperties: false },
    ),
  ),
};

export const StepEventBody = Type.Object({ jobId: Type.Optional(JobId), stepId: Type.Optional(StepId), ...eventFields }, { additionalProperties: false });

export const StepEventMessage = Type.Object({ jobId: JobId, stepId: StepId, ...eventFields }, { additionalProperties: false });

export type StepEventMessage = Static<typeof StepEventMessage>;
