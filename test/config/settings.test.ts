import { describe, expect, test } from "bun:test";
import { loadSettings, SettingsError } from "../../src/config/settings.ts";

const SB = "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=k3y";
function problemsOf(env: Record<string, string>): string[] {
  try {
    loadSettings(env);
  } catch (error) {
    if (error instanceof SettingsError) return error.problems;
    throw error;
  }
  throw new Error("expected a SettingsError");
}

describe("loadSettings", () => {
  test("an empty environment gives the contract's defaults", () => {
    const settings = loadSettings({});
    expect(settings).toMatchObject({
      storageBackend: "memory",
      tableConnection: null,
      admin: { enabled: false, apiKey: null },
      serviceBusConnection: null,
      outbox: { publishTimeoutSeconds: 2, retryEnabled: true, retryIntervalSeconds: 5, retryBatchSize: 100, retryDelaySeconds: 30, maxAttempts: 3 },
      host: "0.0.0.0",
      port: 8000,
      protocolsFile: null,
      stepTimeoutSeconds: 3600,
      maxBodyBytes: 262144,
      logLevel: "info",
    });
    expect(Object.values(settings.tables).every((name) => /^Lucius[A-Za-z]+$/.test(name))).toBe(true);
  });

  test("reads every variable", () => {
    const settings = loadSettings({
      LUCIUS_STORAGE_BACKEND: "LEDGER",
      LUCIUS_TABLE_CONNECTION: "UseDevelopmentStorage=true",
      LUCIUS_LEDGER_TABLE: "ledger2",
      LUCIUS_ADMIN_ENABLED: "true",
      LUCIUS_ADMIN_API_KEY: "0123456789abcdef",
      LUCIUS_OUTBOX_PUBLISH_TIMEOUT: "0.5",
      LUCIUS_OUTBOX_RETRY_ENABLED: "false",
      LUCIUS_OUTBOX_MAX_ATTEMPTS: "7",
      LUCIUS_PORT: "9000",
      LUCIUS_LOG_LEVEL: "debug",
      LUCIUS_PROTOCOLS_FILE: "/etc/lucius/protocols.json",
      LUCIUS_STEP_TIMEOUT: "0",
    });
    expect(settings).toMatchObject({
      stepTimeoutSeconds: 0,
      storageBackend: "ledger",
      tables: { ledger: "ledger2" },
      admin: { enabled: true, apiKey: "0123456789abcdef" },
      outbox: { publishTimeoutSeconds: 0.5, retryEnabled: false, maxAttempts: 7 },
      port: 9000,
      logLevel: "debug",
      protocolsFile: "/etc/lucius/protocols.json",
    });
  });

  test("an empty variable counts as unset", () => {
    expect(loadSettings({ LUCIUS_PORT: "", LUCIUS_SERVICEBUS_CONNECTION: " " })).toMatchObject({ port: 8000, serviceBusConnection: null });
  });

  test("reports every wrong variable together, each by name", () => {
    const problems = problemsOf({
      LUCIUS_PORT: "eighty",
      LUCIUS_OUTBOX_MAX_ATTEMPTS: "2.5",
      LUCIUS_OUTBOX_RETRY_ENABLED: "sometimes",
      LUCIUS_LOG_LEVEL: "loud",
      LUCIUS_JOBS_TABLE: "bad-name",
      LUCIUS_MAX_BODY_BYTES: "-1",
      LUCIUS_STEP_TIMEOUT: "8d",
    });
    for (const name of [
      "LUCIUS_PORT",
      "LUCIUS_OUTBOX_MAX_ATTEMPTS",
      "LUCIUS_OUTBOX_RETRY_ENABLED",
      "LUCIUS_LOG_LEVEL",
      "LUCIUS_JOBS_TABLE",
      "LUCIUS_MAX_BODY_BYTES",
      "LUCIUS_STEP_TIMEOUT",
    ]) {
      expect(problems.some((p) => p.startsWith(name))).toBe(true);
    }
    expect(problems).toHaveLength(7);
  });

  test("a table backend without a connection names both variables", () => {
    const [problem] = problemsOf({ LUCIUS_STORAGE_BACKEND: "table" });
    expect(problem).toContain("LUCIUS_STORAGE_BACKEND=table");
    expect(problem).toContain("LUCIUS_TABLE_CONNECTION");
  });

  test("admin enabled without a key, or with a short one, is refused", () => {
    expect(problemsOf({ LUCIUS_ADMIN_ENABLED: "true" })[0]).toContain("LUCIUS_ADMIN_API_KEY");
    expect(problemsOf({ LUCIUS_ADMIN_ENABLED: "1", LUCIUS_ADMIN_API_KEY: "short" })[0]).toContain("LUCIUS_ADMIN_API_KEY");
  });

  test("LUCIUS_EVENTS_ENTITY needs a Service Bus connection and a valid entity", () => {
    expect(problemsOf({ LUCIUS_EVENTS_ENTITY: "step-events" })[0]).toContain("LUCIUS_SERVICEBUS_CONNECTION");
    expect(problemsOf({ LUCIUS_EVENTS_ENTITY: "bad entity!", LUCIUS_SERVICEBUS_CONNECTION: SB })[0]).toStartWith("LUCIUS_EVENTS_ENTITY");
    expect(loadSettings({ LUCIUS_EVENTS_ENTITY: "events/Subscriptions/lucius", LUCIUS_SERVICEBUS_CONNECTION: SB }).eventsEntity).toBe(
      "events/Subscriptions/lucius",
    );
  });

  test("each authentication mode names every variable it still needs", () => {
    const jwt = problemsOf({ LUCIUS_AUTH_MODE: "jwt", LUCIUS_AUTH_JWKS_URL: "ftp://keys" });
    expect(jwt.some((p) => p.startsWith("LUCIUS_AUTH_JWKS_URL="))).toBe(true);
    expect(jwt.some((p) => p.includes("LUCIUS_AUTH_ISSUER"))).toBe(true);
    expect(jwt.some((p) => p.includes("LUCIUS_AUTH_AUDIENCE"))).toBe(true);
    expect(problemsOf({ LUCIUS_AUTH_MODE: "apikey" }).some((p) => p.includes("LUCIUS_AUTH_KEYS_FILE"))).toBe(true);
    expect(problemsOf({ LUCIUS_AUTH_MODE: "oauth" }).some((p) => p.startsWith("LUCIUS_AUTH_MODE="))).toBe(true);
    expect(problemsOf({ LUCIUS_TENANT_RATE_LIMIT: "-1" }).some((p) => p.startsWith("LUCIUS_TENANT_RATE_LIMIT="))).toBe(true);
  });

  test("with authentication on, the admin routes may go without LUCIUS_ADMIN_API_KEY (the outbox.admin permission opens them)", () => {
    const settings = loadSettings({ LUCIUS_AUTH_MODE: "apikey", LUCIUS_AUTH_KEYS_FILE: "/etc/lucius/keys.json", LUCIUS_ADMIN_ENABLED: "true" });
    expect(settings.admin).toEqual({ enabled: true, apiKey: null });
    expect(settings.auth).toMatchObject({ mode: "apikey", keysFile: "/etc/lucius/keys.json", tenantClaim: "tenants", clockSkewSeconds: 60 });
    expect(problemsOf({ LUCIUS_ADMIN_ENABLED: "true" }).some((p) => p.includes("LUCIUS_ADMIN_API_KEY"))).toBe(true);
  });

  test("an unknown backend is refused", () => {
    expect(problemsOf({ LUCIUS_STORAGE_BACKEND: "cosmos" })[0]).toStartWith("LUCIUS_STORAGE_BACKEND");
  });
});

describe("connection strings", () => {
  const cases: [string, Record<string, string>, string][] = [
    ["Service Bus: not pairs", { LUCIUS_SERVICEBUS_CONNECTION: "garbage" }, "LUCIUS_SERVICEBUS_CONNECTION: is not a connection string"],
    ["Service Bus: no endpoint", { LUCIUS_SERVICEBUS_CONNECTION: "SharedAccessKeyName=a;SharedAccessKey=b" }, "LUCIUS_SERVICEBUS_CONNECTION: has no Endpoint"],
    [
      "Service Bus: not sb://",
      { LUCIUS_SERVICEBUS_CONNECTION: "Endpoint=https://x/;SharedAccessKeyName=a;SharedAccessKey=b" },
      "Endpoint must start with sb://",
    ],
    ["Service Bus: no key", { LUCIUS_SERVICEBUS_CONNECTION: "Endpoint=sb://x/;SharedAccessKeyName=a" }, "needs SharedAccessKeyName and SharedAccessKey"],
    ["Table: not pairs", { LUCIUS_STORAGE_BACKEND: "ledger", LUCIUS_TABLE_CONNECTION: "garbage" }, "LUCIUS_TABLE_CONNECTION: is not a connection string"],
    [
      "Table: key not base64",
      {
        LUCIUS_STORAGE_BACKEND: "ledger",
        LUCIUS_TABLE_CONNECTION: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=s3cr3t!!;EndpointSuffix=core.windows.net",
      },
      "AccountKey is not base64",
    ],
    [
      "Table: no account",
      { LUCIUS_STORAGE_BACKEND: "table", LUCIUS_TABLE_CONNECTION: "DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net" },
      "needs AccountName and AccountKey",
    ],
    [
      "Table: no endpoint",
      { LUCIUS_STORAGE_BACKEND: "table", LUCIUS_TABLE_CONNECTION: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=YWJj" },
      "needs TableEndpoint or EndpointSuffix",
    ],
    [
      "Table: bad endpoint",
      { LUCIUS_STORAGE_BACKEND: "table", LUCIUS_TABLE_CONNECTION: "TableEndpoint=ftp://x;SharedAccessSignature=sv=1&sig=abc" },
      "TableEndpoint must start with http:// or https://",
    ],
  ];
  for (const [name, env, expected] of cases) {
    test(`${name}: named, with what is wrong, never the secret`, () => {
      const problems = problemsOf(env);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toContain(expected);
      expect(problems[0]).not.toMatch(/s3cr3t|sig=abc|SharedAccessKey=b/);
    });
  }

  test("both wrong at once: both named", () => {
    expect(
      problemsOf({ LUCIUS_STORAGE_BACKEND: "ledger", LUCIUS_TABLE_CONNECTION: "x", LUCIUS_SERVICEBUS_CONNECTION: "y" }).map((p) => p.split(":")[0]),
    ).toEqual(["LUCIUS_TABLE_CONNECTION", "LUCIUS_SERVICEBUS_CONNECTION"]);
  });

  test("Azurite's, the dev broker's and Azure's usual forms pass", () => {
    expect(() =>
      loadSettings({
        LUCIUS_STORAGE_BACKEND: "ledger",
        LUCIUS_TABLE_CONNECTION:
          "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=YWJj;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;",
        LUCIUS_SERVICEBUS_CONNECTION: "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=dev;SharedAccessKey=dev;UseDevelopmentEmulator=true;",
      }),
    ).not.toThrow();
    for (const connection of [
      "UseDevelopmentStorage=true",
      "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=YWJj;EndpointSuffix=core.windows.net",
      "TableEndpoint=https://a.table.core.windows.net;SharedAccessSignature=sv=1&sig=x",
    ]) {
      expect(() => loadSettings({ LUCIUS_STORAGE_BACKEND: "table", LUCIUS_TABLE_CONNECTION: connection })).not.toThrow();
    }
  });
});

describe("OpenTelemetry variables", () => {
  test("tracing is off without an endpoint, and off when disabled", () => {
    expect(loadSettings({}).tracing).toBeNull();
    expect(loadSettings({ OTEL_TRACES_SAMPLER: "always_on", OTEL_SERVICE_NAME: "x" }).tracing).toBeNull();
    expect(loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SDK_DISABLED: "true" }).tracing).toBeNull();
    expect(loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "none" }).tracing).toBeNull();
    // Without an endpoint, variables meant for other SDKs on the same host stop nothing.
    expect(loadSettings({ OTEL_TRACES_EXPORTER: "console", OTEL_TRACES_SAMPLER: "sometimes" }).tracing).toBeNull();
    expect(loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_TRACES_EXPORTER: "otlp,console" }).tracing).toEqual({
      protocol: "http/protobuf",
    });
  });

  test("an endpoint turns it on, protobuf unless JSON is asked for (the signal's own variable wins)", () => {
    expect(loadSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).tracing).toEqual({ protocol: "http/protobuf" });
    expect(loadSettings({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://collector/v1/traces", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }).tracing).toEqual({
      protocol: "http/json",
    });
    expect(
      loadSettings({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf",
      }).tracing,
    ).toEqual({ protocol: "http/protobuf" });
  });

  test("what the SDK would quietly ignore stops the start, every problem named", () => {
    const found = problemsOf({
      OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318",
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_TRACES_SAMPLER: "sometimes",
      OTEL_TRACES_EXPORTER: "zipkin",
    });
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringContaining("OTEL_EXPORTER_OTLP_ENDPOINT"),
        expect.stringContaining("OTEL_EXPORTER_OTLP_PROTOCOL"),
        expect.stringContaining("OTEL_TRACES_SAMPLER"),
        expect.stringContaining("OTEL_TRACES_EXPORTER"),
      ]),
    );
    expect(problemsOf({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" })).toEqual([
      expect.stringContaining("OTEL_TRACES_SAMPLER_ARG"),
    ]);
  });
});

describe("LUCIUS_JOB_INDEX_BUCKETS", () => {
  test("unset: what the index table recorded (null here); set: 1 to 64", () => {
    expect(loadSettings({}).jobIndexBuckets).toBeNull();
    expect(loadSettings({ LUCIUS_JOB_INDEX_BUCKETS: "8" }).jobIndexBuckets).toBe(8);
    expect(problemsOf({ LUCIUS_JOB_INDEX_BUCKETS: "0" })).toEqual([expect.stringContaining("LUCIUS_JOB_INDEX_BUCKETS")]);
  });
});
