/**
 * The dev broker in its own process for benchmarks, steered over stdin one command a line:
 * `down` (refuse connections), `up`, `count <entity>` (messages accepted, duplicates excluded).
 * Each command is answered with one line on stdout; the first line is the connection string.
 */
import { startDevBroker } from "../../dev/dev-broker.ts";
import { BUNDLED_TOPICS } from "../../dev/service-bus.ts";

const broker = await startDevBroker({ port: 0, topics: BUNDLED_TOPICS, queues: ["step-events"] });
console.log(broker.connectionString);
const decoder = new TextDecoder();
let buffered = "";
for await (const chunk of Bun.stdin.stream()) {
  buffered += decoder.decode(chunk);
  for (let newline = buffered.indexOf("\n"); newline >= 0; newline = buffered.indexOf("\n")) {
    const [command, argument] = buffered.slice(0, newline).trim().split(" ");
    buffered = buffered.slice(newline + 1);
    if (command === "down") await broker.refuseConnections(true);
    if (command === "up") await broker.refuseConnections(false);
    console.log(command === "count" ? String(broker.accepted(argument ?? "").length) : "ok");
  }
}
await broker.close();
