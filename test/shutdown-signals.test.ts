import { describe, expect, test } from "bun:test";
import { silentLogger } from "../src/logging/logger.ts";
import { createSignalJudge, createStopOnSignal } from "../src/shutdown-signals.ts";

describe("stop signals", () => {
  test("the first signal stops gracefully; the same signal again at once is the same delivery", () => {
    let now = 0;
    const judge = createSignalJudge({ repeatWindowMs: 1000, now: () => now });
    expect(judge("SIGTERM")).toBe("stop");
    now = 5;
    expect(judge("SIGTERM")).toBe("repeat");
    now = 999;
    expect(judge("SIGTERM")).toBe("repeat");
  });

  test("the same signal after the moment, or the other signal at any time, exits now", () => {
    let now = 0;
    const later = createSignalJudge({ repeatWindowMs: 1000, now: () => now });
    expect(later("SIGINT")).toBe("stop");
    now = 1000;
    expect(later("SIGINT")).toBe("now");
    const other = createSignalJudge({ repeatWindowMs: 1000, now: () => 0 });
    expect(other("SIGTERM")).toBe("stop");
    expect(other("SIGINT")).toBe("now");
  });
});

describe("stop on signal", () => {
  /** exit() ends the process; here it records the code and ends the handler the same way. */
  function harness(judge = createSignalJudge({ repeatWindowMs: 1000, now: () => 0 })) {
    const exits: number[] = [];
    let stops = 0;
    let release!: () => void;
    const stopping = new Promise<void>((resolve) => (release = resolve));
    const onSignal = createStopOnSignal({
      logger: silentLogger,
      judge,
      stop: async () => {
        stops++;
        await stopping;
      },
      exit: (code) => {
        exits.push(code);
        throw new Error(`exit ${code}`);
      },
    });
    return { onSignal, exits, stops: () => stops, release };
  }

  test("a copy of the signal during the drain changes nothing; the drain ends with exit 0", async () => {
    const { onSignal, exits, stops, release } = harness();
    const draining = onSignal("SIGTERM").catch(() => {});
    await onSignal("SIGTERM");
    expect(exits).toEqual([]);
    release();
    await draining;
    expect(stops()).toBe(1);
    expect(exits).toEqual([0]);
  });

  test("the other signal during the drain exits at once with 1", async () => {
    const { onSignal, exits } = harness();
    void onSignal("SIGTERM").catch(() => {});
    await expect(onSignal("SIGINT")).rejects.toThrow("exit 1");
    expect(exits).toEqual([1]);
  });
});
