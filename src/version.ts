import manifest from "../package.json" with { type: "json" };

/** The service's version, from package.json (bundled into the binary). */
export const VERSION: string = manifest.version;
