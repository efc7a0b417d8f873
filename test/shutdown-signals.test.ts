import { describe, expect, test } from "bun:test";
import { createSignalJudge } from "../src/shutdown-signals.ts";

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
