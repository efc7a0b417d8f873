import { describe, expect, test } from "bun:test";
import { createOutageLog, REMIND_EVERY_MS } from "../../src/events/outage-log.ts";
import type { Logger } from "../../src/logging/logger.ts";

function recordingLogger() {
  const lines: { level: string; msg: string; fields: Record<string, unknown> }[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void lines.push({ level, msg, fields });
  return { logger: { warn: at("warn"), info: at("info") } as unknown as Logger, lines };
}

describe("receiver outage log", () => {
  test("a 10 s outage at five errors a second: one warning, one recovery line, fifty errors counted", () => {
    let now = 0;
    let counted = 0;
    const { logger, lines } = recordingLogger();
    const log = createOutageLog({ logger, entity: "step-events", now: () => now, onError: () => counted++ });
    for (; now < 10_000; now += 200) log.error(new Error("connection refused"));
    log.recovered();
    expect(counted).toBe(50);
    expect(lines.filter((line) => line.level === "warn")).toHaveLength(1);
    expect(lines.at(-1)).toMatchObject({ level: "info", msg: "step events: the receiver is back", fields: { outageSeconds: 10, errors: 50 } });
  });

  test("a long outage is recalled at most once a minute, with its length so far", () => {
    let now = 0;
    const { logger, lines } = recordingLogger();
    const log = createOutageLog({ logger, entity: "step-events", now: () => now });
    for (; now <= 10 * 60_000; now += 200) log.error(new Error("connection refused"));
    const warnings = lines.filter((line) => line.level === "warn");
    expect(warnings).toHaveLength(1 + (10 * 60_000) / REMIND_EVERY_MS);
    expect(warnings[1]!.fields.outageSeconds).toBe(60);
  });

  test("recovery without an outage says nothing; a new outage after recovery is told again", () => {
    let now = 0;
    const { logger, lines } = recordingLogger();
    const log = createOutageLog({ logger, entity: "step-events", now: () => now });
    log.recovered();
    expect(lines).toHaveLength(0);
    log.error(new Error("a"));
    log.recovered();
    now = 1000;
    log.error(new Error("b"));
    expect(lines.map((line) => line.level)).toEqual(["warn", "info", "warn"]);
  });
});
