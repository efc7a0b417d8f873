import { describe, expect, test } from "bun:test";
import { deferred, eventually } from "../../dev/eventually.ts";
import { silentLogger } from "../../src/logging/logger.ts";
import { AGAIN, createLoop, type NextRound, pauseFor } from "../../src/loops/loop.ts";

const HOUR_MS = 3_600_000;

/** A loop whose rounds answer from `plan` (then pause for an hour), counting them. */
function loopOf(plan: (round: number) => Promise<NextRound> | NextRound, logger = silentLogger) {
  let rounds = 0;
  const loop = createLoop({ name: "test", errorPauseMs: HOUR_MS, logger, round: async () => plan(++rounds) });
  return { loop, rounds: () => rounds };
}

describe("background loop", () => {
  test("a round that asks again is followed by the next at once; a pause of an hour ends at stop", async () => {
    const { loop, rounds } = loopOf((n) => (n < 4 ? AGAIN : pauseFor(HOUR_MS)));
    loop.start();
    await eventually(() => rounds() === 4, { timeoutMs: 2000, what: "four rounds" });
    const stopped = Date.now();
    await loop.stop();
    expect(Date.now() - stopped).toBeLessThan(1000);
    expect(rounds()).toBe(4);
  });

  test("a due time announced during an hour's pause ends the pause then", async () => {
    const second = deferred();
    const { loop } = loopOf((n) => {
      if (n === 2) second.resolve();
      return pauseFor(HOUR_MS);
    });
    loop.start();
    loop.wakeBy(Date.now() + 20);
    await second.promise;
    await loop.stop();
  });

  test("stop waits for the running round, and no round starts after it", async () => {
    const gate = deferred();
    const inRound = deferred();
    const { loop, rounds } = loopOf(async () => {
      inRound.resolve();
      await gate.promise;
      return AGAIN;
    });
    loop.start();
    await inRound.promise;
    let stopped = false;
    const stopping = loop.stop().then(() => {
      stopped = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect(rounds()).toBe(1);
  });

  test("a round that throws is logged with the loop's name and followed by the error pause", async () => {
    const warnings: unknown[] = [];
    const logger = { ...silentLogger, warn: (fields: unknown) => void warnings.push(fields) } as unknown as typeof silentLogger;
    const { loop, rounds } = loopOf(() => {
      throw new Error("storage down");
    }, logger);
    loop.start();
    await eventually(() => warnings.length === 1, { timeoutMs: 2000, what: "the warning" });
    expect(warnings[0]).toMatchObject({ loop: "test" });
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(rounds()).toBe(1);
    await loop.stop();
  });

  test("started again while a stop still waits, the new round begins only after the old one ends", async () => {
    const gate = deferred();
    let running = 0;
    let overlapped = false;
    const { loop, rounds } = loopOf(async (n) => {
      running++;
      overlapped ||= running > 1;
      if (n === 1) await gate.promise;
      running--;
      return pauseFor(HOUR_MS);
    });
    loop.start();
    await eventually(() => rounds() === 1, { what: "the first round" });
    const stopping = loop.stop();
    loop.start();
    await new Promise((resolve) => setImmediate(resolve));
    expect(rounds()).toBe(1);
    gate.resolve();
    await stopping;
    await eventually(() => rounds() === 2, { what: "the second run's round" });
    await loop.stop();
    expect(overlapped).toBe(false);
  });
});
