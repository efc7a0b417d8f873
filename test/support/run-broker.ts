/**
 * `bun run broker`: the dev broker standalone, with the bundled protocols' topics (each with a
 * `workers` subscription), for running the service locally without Azure.
 *
 *   bun run broker [--port 5672] [--queue name ...]
 */
import { parseArgs } from "node:util";
import { startDevBroker } from "./dev-broker.ts";
import { BUNDLED_TOPICS } from "./service-bus.ts";

const { values } = parseArgs({ options: { port: { type: "string", default: "5672" }, queue: { type: "string", multiple: true, default: [] } } });
const broker = await startDevBroker({ port: Number(values.port), topics: BUNDLED_TOPICS, queues: values.queue });
console.log(`dev broker listening on 127.0.0.1:${broker.port}`);
console.log(
  `topics: ${Object.entries(BUNDLED_TOPICS)
    .map(([topic, subs]) => `${topic} (subscriptions: ${subs.join(", ")})`)
    .join("; ")}`,
);
console.log(`LUCIUS_SERVICEBUS_CONNECTION='${broker.connectionString}'`);
const stop = async () => {
  await broker.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
