/**
 * Azure Table Storage limits, checked before the network call: Azurite lets some of them through
 * (entity size, property count, the 100-operation limit answers only after the round trip), Azure
 * does not. docs/STORAGE.md lists them.
 */
import { Buffer } from "node:buffer";

export const MAX_STRING_CHARS = 32 * 1024;
const MAX_ENTITY_BYTES = 1024 * 1024;
/** Azure's limit of operations in one entity-group transaction. */
export const MAX_TRANSACTION_OPERATIONS = 100;
const MAX_TRANSACTION_BYTES = 4 * 1024 * 1024;
const MAX_PROPERTIES = 252;
/** Multipart headers around each operation of a batch request, generously counted. */
const TRANSACTION_OVERHEAD_PER_OPERATION = 1024;

export class StorageLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StorageLimitError";
  }
}

export type EntityValue = string | number | boolean | null | undefined;
export type Entity = { partitionKey: string; rowKey: string } & Record<string, EntityValue>;

/**
 * Azure's own sizing: 4 bytes, plus keys in UTF-16, plus per property 8 bytes, the name in
 * UTF-16 and the value (strings 4 + 2 per UTF-16 unit; numbers 8; booleans 1).
 */
export function entitySizeBytes(entity: Entity): number {
  let size = 4 + (entity.partitionKey.length + entity.rowKey.length) * 2;
  for (const [name, value] of Object.entries(entity)) {
    if (name === "partitionKey" || name === "rowKey" || value === null || value === undefined) continue;
    size += 8 + name.length * 2;
    size += typeof value === "string" ? 4 + value.length * 2 : typeof value === "boolean" ? 1 : 8;
  }
  return size;
}

export function checkEntity(entity: Entity): void {
  const properties = Object.keys(entity).filter((k) => k !== "partitionKey" && k !== "rowKey");
  if (properties.length > MAX_PROPERTIES)
    throw new StorageLimitError(`entity ${entity.rowKey} has ${properties.length} properties; the limit is ${MAX_PROPERTIES}`);
  for (const name of properties) {
    const value = entity[name];
    if (typeof value === "string" && value.length > MAX_STRING_CHARS) {
      throw new StorageLimitError(`property ${name} of entity ${entity.rowKey} has ${value.length} characters; the limit is ${MAX_STRING_CHARS}`);
    }
  }
  const size = entitySizeBytes(entity);
  if (size > MAX_ENTITY_BYTES) throw new StorageLimitError(`entity ${entity.rowKey} is ${size} bytes as stored; the limit is ${MAX_ENTITY_BYTES}`);
}

/** One partition, 1–100 operations, under 4 MiB: what an entity-group transaction allows. */
export function checkTransaction(entities: Entity[]): void {
  if (entities.length === 0) throw new StorageLimitError("a transaction needs at least one operation");
  if (entities.length > MAX_TRANSACTION_OPERATIONS) {
    throw new StorageLimitError(`a transaction of ${entities.length} operations exceeds the limit of ${MAX_TRANSACTION_OPERATIONS}`);
  }
  const partition = entities[0]!.partitionKey;
  if (entities.some((e) => e.partitionKey !== partition)) throw new StorageLimitError("a transaction must stay within one partition");
  let bytes = 0;
  for (const entity of entities) {
    checkEntity(entity);
    bytes += Buffer.byteLength(JSON.stringify(entity), "utf8") + TRANSACTION_OVERHEAD_PER_OPERATION;
  }
  if (bytes >= MAX_TRANSACTION_BYTES) throw new StorageLimitError(`a transaction of ~${bytes} bytes reaches the limit of ${MAX_TRANSACTION_BYTES}`);
}

/**
 * A string of any length as properties `name`, `name__1`, `name__2`… of at most 32 K characters
 * each, with the count in `name__parts` when there is more than one.
 */
export function chunkString(name: string, value: string): Record<string, string | number> {
  if (value.length <= MAX_STRING_CHARS) return { [name]: value };
  const properties: Record<string, string | number> = {};
  let part = 0;
  let offset = 0;
  while (offset < value.length) {
    let end = Math.min(offset + MAX_STRING_CHARS, value.length);
    // Never split a surrogate pair: each part must be valid UTF-16 on its own.
    const last = value.charCodeAt(end - 1);
    if (end < value.length && last >= 0xd800 && last <= 0xdbff) end--;
    properties[part === 0 ? name : `${name}__${part}`] = value.slice(offset, end);
    offset = end;
    part++;
  }
  properties[`${name}__parts`] = part;
  return properties;
}

export function joinChunks(entity: Record<string, unknown>, name: string): string | undefined {
  const first = entity[name];
  if (typeof first !== "string") return undefined;
  const parts = Number(entity[`${name}__parts`] ?? 1);
  let value = first;
  for (let part = 1; part < parts; part++) {
    const chunk = entity[`${name}__${part}`];
    if (typeof chunk !== "string") throw new Error(`entity lacks part ${part} of ${name}`);
    value += chunk;
  }
  return value;
}
