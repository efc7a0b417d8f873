/** The one step-event schema: the HTTP body and the Service Bus message accept and refuse alike. */
import { describe, expect, test } from "bun:test";
import { Value } from "@sinclair/typebox/value";
import { StepEventBody, StepEventMessage } from "../../src/validation/step-event.ts";

const ids = { jobId: "j-1", stepId: "j-1.s0" };
const failed = (message: string) => ({ eventId: "e1", status: "failed", error: { code: "busy", message, retryable: true } });

describe("step event schema", () => {
  test("an error message of 4,000 characters passes both ways; one more is refused both ways", () => {
    for (const [body, message] of [
      [failed("m".repeat(4000)), { ...ids, ...failed("m".repeat(4000)) }],
      [failed("m".repeat(4001)), { ...ids, ...failed("m".repeat(4001)) }],
    ]) {
      expect(Value.Check(StepEventBody, body)).toBe(Value.Check(StepEventMessage, message));
    }
    expect(Value.Check(StepEventMessage, { ...ids, ...failed("m".repeat(4001)) })).toBe(false);
    expect(Value.Check(StepEventBody, failed("m".repeat(4000)))).toBe(true);
  });

  test("a message must name its job and step; a body may leave them to the path", () => {
    const event = { eventId: "e1", status: "succeeded", result: { pages: 2 } };
    expect(Value.Check(StepEventBody, event)).toBe(true);
    expect(Value.Check(StepEventMessage, event)).toBe(false);
    expect(Value.Check(StepEventMessage, { ...ids, ...event })).toBe(true);
  });

  test("unknown fields, statuses and error members are refused both ways", () => {
    for (const bad of [
      { eventId: "e1", status: "done" },
      { eventId: "e1", status: "progress", extra: 1 },
      { eventId: "e1", status: "failed", error: { code: "x", message: "", detail: "no" } },
      { eventId: "", status: "progress" },
    ]) {
      expect(Value.Check(StepEventBody, bad)).toBe(false);
      expect(Value.Check(StepEventMessage, { ...ids, ...bad })).toBe(false);
    }
  });

  test("an attempt is a whole number from 1, both ways", () => {
    const event = { eventId: "e1", status: "succeeded" };
    expect(Value.Check(StepEventBody, { ...event, attempt: 2 })).toBe(true);
    expect(Value.Check(StepEventMessage, { ...ids, ...event, attempt: 2 })).toBe(true);
    for (const attempt of [0, 1.5, "2", -1]) {
      expect(Value.Check(StepEventBody, { ...event, attempt })).toBe(false);
      expect(Value.Check(StepEventMessage, { ...ids, ...event, attempt })).toBe(false);
    }
  });
});
