// Azurite ships JavaScript without declarations; these are the parts dev/azurite.ts uses.
declare module "azurite/dist/src/table/TableServer.js" {
  export default class TableServer {
    constructor(configuration: unknown);
    start(): Promise<void>;
    close(): Promise<void>;
    getHttpServerAddress(): string;
  }
}
declare module "azurite/dist/src/table/TableConfiguration.js" {
  export default class TableConfiguration {
    constructor(...args: unknown[]);
  }
}
