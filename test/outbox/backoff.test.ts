import { expect, test } from "bun:test";
import { backoffSeconds } from "../../src/outbox/backoff.ts";

const options = { baseSeconds: 30, capSeconds: 600 };

test("doubles with each failure, between half and all of the ceiling", () => {
  expect([1, 2, 3, 4].map((n) => backoffSeconds(n, { ...options, random: () => 0 }))).toEqual([15, 30, 60, 120]);
  expect([1, 2, 3, 4].map((n) => backoffSeconds(n, { ...options, random: () => 0.999999 }).toFixed(2))).toEqual(["30.00", "60.00", "120.00", "240.00"]);
});

test("never exceeds the cap, even after very many failures", () => {
  expect(backoffSeconds(10, { ...options, random: () => 0.999999 })).toBeLessThanOrEqual(600);
  expect(backoffSeconds(5000, { ...options, random: () => 0.5 })).toBe(450);
});

test("jitter spreads replicas that failed together", () => {
  const delays = new Set(Array.from({ length: 20 }, () => backoffSeconds(3, options)));
  expect(delays.size).toBeGreaterThan(1);
  for (const delay of delays) expect(delay).toBeWithin(60, 120.0001);
});
