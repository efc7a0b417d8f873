/**
 * Azure connection strings checked at start, so that a wrong one is named with what is wrong in
 * it instead of failing inside an SDK with a stack trace. The messages never repeat a key or a
 * signature.
 */

/** `Name=value;` pairs with case-insensitive names; null when the text is not of that shape. */
function pairsOf(text: string): Map<string, string> | null {
  const pairs = new Map<string, string>();
  for (const part of text.split(";")) {
    if (part.trim() === "") continue;
    const equals = part.indexOf("=");
    if (equals <= 0) return null;
    pairs.set(part.slice(0, equals).trim().toLowerCase(), part.slice(equals + 1).trim());
  }
  return pairs.size > 0 ? pairs : null;
}

const SHAPE = "is not a connection string (Name=value pairs separated by ';')";

function urlProblem(value: string, protocols: readonly string[], what: string): string | null {
  if (!URL.canParse(value)) return `${what} is not a URL`;
  const url = new URL(value);
  if (!protocols.includes(url.protocol)) return `${what} must start with ${protocols.map((p) => `${p}//`).join(" or ")}`;
  if (url.hostname === "") return `${what} has no host`;
  return null;
}

/** What is wrong with a Service Bus connection string, or null. */
export function serviceBusConnectionProblem(text: string): string | null {
  const pairs = pairsOf(text);
  if (!pairs) return SHAPE;
  const endpoint = pairs.get("endpoint");
  if (!endpoint) return "has no Endpoint=sb://<namespace>.servicebus.windows.net/";
  const endpointProblem = urlProblem(endpoint, ["sb:"], "Endpoint");
  if (endpointProblem) return endpointProblem;
  const keyName = pairs.get("sharedaccesskeyname");
  const key = pairs.get("sharedaccesskey");
  if (pairs.get("sharedaccesssignature")) return null;
  if (!keyName || !key) return "needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature";
  return null;
}

/** What is wrong with an Azure Storage (Table) connection string, or null. */
export function tableConnectionProblem(text: string): string | null {
  const pairs = pairsOf(text);
  if (!pairs) return SHAPE;
  if (pairs.get("usedevelopmentstorage")?.toLowerCase() === "true") return null;
  const protocol = pairs.get("defaultendpointsprotocol");
  if (protocol !== undefined && !["http", "https"].includes(protocol.toLowerCase())) return "DefaultEndpointsProtocol must be http or https";
  const tableEndpoint = pairs.get("tableendpoint");
  if (tableEndpoint !== undefined) {
    const problem = urlProblem(tableEndpoint, ["http:", "https:"], "TableEndpoint");
    if (problem) return problem;
  }
  if (pairs.get("sharedaccesssignature")) return tableEndpoint ? null : "a SharedAccessSignature needs a TableEndpoint";
  const account = pairs.get("accountname");
  const key = pairs.get("accountkey");
  if (!account || !key) return "needs AccountName and AccountKey, or TableEndpoint and SharedAccessSignature, or UseDevelopmentStorage=true";
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(key)) return "AccountKey is not base64";
  // What the SDK needs to build the table endpoint from an account key.
  if (protocol === undefined) return "an AccountKey needs DefaultEndpointsProtocol=https (or http for an emulator)";
  if (tableEndpoint === undefined && !pairs.get("endpointsuffix")) return "an AccountKey needs TableEndpoint or EndpointSuffix (core.windows.net on Azure)";
  return null;
}
