import { type Document, LineCounter, isNode, isScalar, parseAllDocuments } from "yaml";
import { parseDurationValue } from "../../sdk/ts/src/core/duration.js";
import { MeshError, invalidArgument } from "../../sdk/ts/src/core/mesh-error.js";
import {
  type Deployment,
  type ProcessSpec,
  type RestartPolicy,
  RestartPolicy_Mode,
  type UpdateStrategy,
} from "../../sdk/ts/src/gen/agentmesh/v1/orchestrator.js";
import type { AgentManifest, Capability, HealthPolicy, Resources } from "../../sdk/ts/src/gen/agentmesh/v1/types.js";
import { deploymentDefaults } from "./domain/deployment-spec.js";
import { validateDeployment } from "./domain/validate-deployment.js";

/**
 * A YAML path from the document root: field names, sequence indexes, and
 * `{ key }` for keys of free-form maps (env, labels), shown in brackets.
 */
type Path = readonly (string | number | { key: string })[];

const MAX_YAML_BYTES = 1024 * 1024;

/**
 * Parses deployment YAML (docs/deployments.md), one deployment per document
 * (`---` between them), into validated Deployments. Friendly forms are compiled
 * once here: durations (`30s`, `500ms`, `1m30s`) become `*Ms` numbers, sizes
 * (`256Mi`) bytes, `name@version` capabilities full Capability messages.
 * Throws MeshError("invalidArgument") naming the YAML path and line.
 */
export function parseDeploymentYaml(text: string): Deployment[] {
  if (Buffer.byteLength(text) > MAX_YAML_BYTES) throw invalidArgument("file: larger than 1 MiB");
  const lineCounter = new LineCounter();
  const documents = parseAllDocuments(text, { lineCounter, prettyErrors: true, strict: true });
  const nonEmpty = [...documents].filter((document) => document.errors.length > 0 || !isEmpty(document.contents));
  if (nonEmpty.length === 0) throw invalidArgument("file: no deployment found");
  const names = new Set<string>();
  return nonEmpty.map((document, index) => {
    const source = new YamlSource(document, lineCounter, nonEmpty.length > 1 ? `document ${index + 1}: ` : "");
    const deployment = source.read();
    if (names.has(deployment.name)) source.fail(["name"], `duplicate deployment ${deployment.name}`);
    names.add(deployment.name);
    return deployment;
  });
}

/** A document holding only comments, or nothing (a trailing `---`). */
function isEmpty(contents: unknown): boolean {
  return contents == null || (isScalar(contents) && contents.value == null);
}

/** One YAML document and what is needed to point at a place in it. */
class YamlSource {
  constructor(
    private readonly document: Document,
    private readonly lineCounter: LineCounter,
    private readonly prefix: string,
  ) {}

  read(): Deployment {
    const syntax = this.document.errors[0];
    if (syntax) {
      const line = syntax.linePos?.[0].line;
      const summary = syntax.message.split(" at line ")[0] ?? syntax.code;
      throw invalidArgument(`${this.prefix}yaml: ${summary}${line === undefined ? "" : ` (line ${line})`}`);
    }
    const deployment = readDeployment(this, this.document.toJS({ maxAliasCount: 100 }) as unknown);
    try {
      validateDeployment(deployment);
    } catch (error) {
      if (!(error instanceof MeshError)) throw error;
      const { field, detail } = toYamlMessage(error.message);
      this.fail(parsePath(field), detail, field);
    }
    return deployment;
  }

  fail(path: Path, problem: string, shownPath = formatPath(path)): never {
    const line = this.lineOf(path);
    throw invalidArgument(`${this.prefix}${shownPath || "document"}: ${problem}${line === undefined ? "" : ` (line ${line})`}`);
  }

  /** Line of the node at `path`, or of its nearest ancestor that exists. */
  private lineOf(path: Path): number | undefined {
    for (let length = path.length; length >= 0; length -= 1) {
      const keys = path.slice(0, length).map((segment) => (typeof segment === "object" ? segment.key : segment));
      const node = length === 0 ? this.document.contents : this.document.getIn(keys, true);
      if (isNode(node) && node.range) return this.lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  }
}

const topLevelKeys = [
  "kind",
  "name",
  "version",
  "replicas",
  "minReady",
  "capabilities",
  "labels",
  "resources",
  "health",
  "agentCard",
  "process",
  "restartPolicy",
  "strategy",
] as const;

function readDeployment(source: YamlSource, root: unknown): Deployment {
  const map = readMap(source, root, []);
  checkKeys(source, map, topLevelKeys, []);
  if (map.kind !== undefined && map.kind !== "Deployment") source.fail(["kind"], "must be Deployment");
  const name = readString(source, map.name, ["name"], true);
  const manifest: AgentManifest = {
    name,
    version: readString(source, map.version, ["version"], true),
    capabilities: readCapabilities(source, map.capabilities),
    labels: readStringMap(source, map.labels, ["labels"]),
    resources: map.resources === undefined ? undefined : readResources(source, map.resources),
    healthPolicy: map.health === undefined ? undefined : readHealth(source, map.health),
    agentCardJson: readAgentCard(source, map.agentCard),
  };
  return {
    name,
    manifest,
    process: readProcess(source, map.process),
    replicas: map.replicas === undefined ? 1 : readInteger(source, map.replicas, ["replicas"]),
    restartPolicy: map.restartPolicy === undefined ? undefined : readRestartPolicy(source, map.restartPolicy),
    strategy: map.strategy === undefined ? undefined : readStrategy(source, map.strategy),
    minReady: map.minReady === undefined ? 0 : readInteger(source, map.minReady, ["minReady"]),
    generation: 0,
    status: undefined,
    createdAtMs: 0,
    updatedAtMs: 0,
  };
}

function readCapabilities(source: YamlSource, value: unknown): Capability[] {
  const path = ["capabilities"];
  if (value === undefined) source.fail(path, "at least one required");
  if (!Array.isArray(value)) source.fail(path, "must be a list");
  return value.map((entry: unknown, index): Capability => {
    const entryPath = [...path, index];
    if (typeof entry === "string") {
      const at = entry.lastIndexOf("@");
      if (at <= 0 || at === entry.length - 1) source.fail(entryPath, "write name@version, like text.word-stats@1.0.0");
      return { name: entry.slice(0, at), version: entry.slice(at + 1), attributes: {} };
    }
    const map = readMap(source, entry, entryPath);
    checkKeys(source, map, ["name", "version", "attributes"], entryPath);
    return {
      name: readString(source, map.name, [...entryPath, "name"], true),
      version: readString(source, map.version, [...entryPath, "version"], true),
      attributes: readStringMap(source, map.attributes, [...entryPath, "attributes"]),
    };
  });
}

function readResources(source: YamlSource, value: unknown): Resources {
  const path = ["resources"];
  const map = readMap(source, value, path);
  checkKeys(source, map, ["memoryLimit", "invokeRatePerSecond", "invokeBurst", "maxInFlight", "maxMessageSize"], path);
  return {
    memoryLimitBytes: map.memoryLimit === undefined ? 0 : readBytes(source, map.memoryLimit, [...path, "memoryLimit"]),
    invokeRatePerSecond: map.invokeRatePerSecond === undefined ? 0 : readNumber(source, map.invokeRatePerSecond, [...path, "invokeRatePerSecond"]),
    invokeBurst: map.invokeBurst === undefined ? 0 : readInteger(source, map.invokeBurst, [...path, "invokeBurst"]),
    maxInFlight: map.maxInFlight === undefined ? 0 : readInteger(source, map.maxInFlight, [...path, "maxInFlight"]),
    maxMessageBytes: map.maxMessageSize === undefined ? 0 : readBytes(source, map.maxMessageSize, [...path, "maxMessageSize"]),
  };
}

function readHealth(source: YamlSource, value: unknown): HealthPolicy {
  const path = ["health"];
  const map = readMap(source, value, path);
  checkKeys(source, map, ["heartbeatInterval", "degradedErrorRate", "readinessTimeout", "hungRestartAfter"], path);
  return {
    heartbeatIntervalMs: map.heartbeatInterval === undefined ? 0 : readDuration(source, map.heartbeatInterval, [...path, "heartbeatInterval"]),
    degradedErrorRate: map.degradedErrorRate === undefined ? 0 : readNumber(source, map.degradedErrorRate, [...path, "degradedErrorRate"]),
    readinessTimeoutMs: map.readinessTimeout === undefined ? 0 : readDuration(source, map.readinessTimeout, [...path, "readinessTimeout"]),
    hungRestartAfterMs: map.hungRestartAfter === undefined ? 0 : readDuration(source, map.hungRestartAfter, [...path, "hungRestartAfter"]),
  };
}

function readAgentCard(source: YamlSource, value: unknown): string {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  readMap(source, value, ["agentCard"]);
  return JSON.stringify(value);
}

function readProcess(source: YamlSource, value: unknown): ProcessSpec {
  const path = ["process"];
  if (value === undefined) source.fail(path, "required (command or image)");
  const map = readMap(source, value, path);
  checkKeys(source, map, ["command", "args", "env", "cwd", "image"], path);
  const args = map.args ?? [];
  if (!Array.isArray(args)) source.fail([...path, "args"], "must be a list");
  return {
    command: readString(source, map.command, [...path, "command"], false),
    args: args.map((arg: unknown, index) => readScalarText(source, arg, [...path, "args", index])),
    env: readStringMap(source, map.env, [...path, "env"]),
    cwd: readString(source, map.cwd, [...path, "cwd"], false),
    image: readString(source, map.image, [...path, "image"], false),
  };
}

const restartModes: Record<string, RestartPolicy_Mode> = {
  always: RestartPolicy_Mode.MODE_ALWAYS,
  "on-failure": RestartPolicy_Mode.MODE_ON_FAILURE,
  never: RestartPolicy_Mode.MODE_NEVER,
};

function readRestartPolicy(source: YamlSource, value: unknown): RestartPolicy {
  const path = ["restartPolicy"];
  const map = readMap(source, value, path);
  checkKeys(source, map, ["mode", "maxRestarts", "window", "initialBackoff", "maxBackoff"], path);
  let mode = RestartPolicy_Mode.MODE_UNSPECIFIED;
  if (map.mode !== undefined) {
    const modeName = readString(source, map.mode, [...path, "mode"], true);
    const known = restartModes[modeName];
    if (known === undefined) source.fail([...path, "mode"], "must be always, on-failure or never");
    mode = known;
  }
  // The proto reads 0 as "default", so a written 0 would silently mean something else: refuse it.
  const positive = (key: string, read: (raw: unknown, at: Path) => number): number => {
    if (map[key] === undefined) return 0;
    const parsed = read(map[key], [...path, key]);
    if (parsed === 0) source.fail([...path, key], key === "maxRestarts" ? "must be at least 1 (mode: never means no restarts)" : "must be above 0");
    return parsed;
  };
  return {
    mode,
    maxRestarts: positive("maxRestarts", (raw, at) => readInteger(source, raw, at)),
    windowMs: positive("window", (raw, at) => readDuration(source, raw, at)),
    initialBackoffMs: positive("initialBackoff", (raw, at) => readDuration(source, raw, at)),
    maxBackoffMs: positive("maxBackoff", (raw, at) => readDuration(source, raw, at)),
  };
}

function readStrategy(source: YamlSource, value: unknown): UpdateStrategy {
  const path = ["strategy"];
  const map = readMap(source, value, path);
  checkKeys(source, map, ["maxSurge", "maxUnavailable", "readyTimeout", "maxErrorRate", "canaryWeightPercent"], path);
  const readyTimeoutMs = map.readyTimeout === undefined ? 0 : readDuration(source, map.readyTimeout, [...path, "readyTimeout"]);
  if (map.readyTimeout !== undefined && readyTimeoutMs === 0) source.fail([...path, "readyTimeout"], "must be above 0");
  const maxErrorRate = map.maxErrorRate === undefined ? 0 : readNumber(source, map.maxErrorRate, [...path, "maxErrorRate"]);
  if (map.maxErrorRate !== undefined && !(maxErrorRate > 0 && maxErrorRate <= 1)) {
    source.fail([...path, "maxErrorRate"], "must be above 0 and at most 1");
  }
  return {
    // Written out, so the server never has to guess what an omitted field meant.
    maxSurge: map.maxSurge === undefined ? deploymentDefaults.maxSurge : readInteger(source, map.maxSurge, [...path, "maxSurge"]),
    maxUnavailable:
      map.maxUnavailable === undefined ? deploymentDefaults.maxUnavailable : readInteger(source, map.maxUnavailable, [...path, "maxUnavailable"]),
    readyTimeoutMs,
    maxErrorRate,
    canaryWeightPercent:
      map.canaryWeightPercent === undefined ? 0 : readInteger(source, map.canaryWeightPercent, [...path, "canaryWeightPercent"]),
  };
}

function readMap(source: YamlSource, value: unknown, path: Path): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Map) {
    source.fail(path, "must be a mapping");
  }
  return value as Record<string, unknown>;
}

function checkKeys(source: YamlSource, map: Record<string, unknown>, allowed: readonly string[], path: Path): void {
  for (const key of Object.keys(map)) {
    if (!allowed.includes(key)) source.fail([...path, key], `unknown field (expected one of ${allowed.join(", ")})`);
  }
}

function readString(source: YamlSource, value: unknown, path: Path, required: boolean): string {
  if (value === undefined || value === null) {
    if (required) source.fail(path, "required");
    return "";
  }
  if (typeof value !== "string") source.fail(path, "must be a string (quote it, like \"1.0\")");
  return value;
}

/** Env values, args and labels: numbers and booleans are written as they read. */
function readScalarText(source: YamlSource, value: unknown, path: Path): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return source.fail(path, "must be a string, number or boolean");
}

function readStringMap(source: YamlSource, value: unknown, path: Path): Record<string, string> {
  if (value === undefined || value === null) return {};
  const map = readMap(source, value, path);
  return Object.fromEntries(Object.entries(map).map(([key, entry]) => [key, readScalarText(source, entry, [...path, { key }])]));
}

function readNumber(source: YamlSource, value: unknown, path: Path): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) source.fail(path, "must be a number >= 0");
  return value;
}

function readInteger(source: YamlSource, value: unknown, path: Path): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) source.fail(path, "must be a whole number >= 0");
  return value;
}

/** A duration in the mesh's one grammar (sdk/ts/src/core/duration.ts): `500ms`, `30s`, `1m30s`, `1.5h`, `7d`. */
function readDuration(source: YamlSource, value: unknown, path: Path): number {
  const parsed = parseDurationValue(value);
  if (!parsed.ok) source.fail(path, parsed.problem);
  return parsed.ms;
}

const sizeUnits: Record<string, number> = { "": 1, K: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };
const sizePattern = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$/;

/** `256Mi`, `4M`, `1048576` → bytes. */
function readBytes(source: YamlSource, value: unknown, path: Path): number {
  const match = typeof value === "number" ? [String(value), String(value), ""] : typeof value === "string" ? sizePattern.exec(value.trim()) : null;
  if (!match) return source.fail(path, "must be a size like 256Mi, 64M or a number of bytes");
  const bytes = Number(match[1]) * (sizeUnits[match[2] ?? ""] ?? 1);
  if (!Number.isSafeInteger(bytes)) source.fail(path, "must be a whole number of bytes");
  return bytes;
}

function formatPath(path: Path): string {
  let text = "";
  for (const segment of path) {
    if (typeof segment === "number") text += `[${segment}]`;
    else if (typeof segment === "object") text += `[${segment.key}]`;
    else text += text === "" ? segment : `.${segment}`;
  }
  return text;
}

/** Inverse of formatPath, for paths that come back from validation. */
function parsePath(text: string): Path {
  const path: Path[number][] = [];
  for (const [, field, bracketed] of text.matchAll(/([^.[\]]+)|\[([^\]]*)\]/g)) {
    if (field !== undefined) path.push(field);
    else if (bracketed !== undefined) path.push(/^\d+$/.test(bracketed) ? Number(bracketed) : { key: bracketed });
  }
  return path;
}

/** Proto field names in validation messages → the names this YAML uses; longest first. */
const yamlNames: readonly (readonly [string, string])[] = [
  ["manifest.health_policy.heartbeat_interval_ms", "health.heartbeatInterval"],
  ["manifest.health_policy.degraded_error_rate", "health.degradedErrorRate"],
  ["manifest.health_policy.readiness_timeout_ms", "health.readinessTimeout"],
  ["manifest.health_policy.hung_restart_after_ms", "health.hungRestartAfter"],
  ["manifest.resources.invoke_rate_per_second", "resources.invokeRatePerSecond"],
  ["manifest.agent_card_json", "agentCard"],
  ["manifest.", ""],
  ["restart_policy.max_restarts", "restartPolicy.maxRestarts"],
  ["restart_policy.window_ms", "restartPolicy.window"],
  ["restart_policy.initial_backoff_ms", "restartPolicy.initialBackoff"],
  ["restart_policy.max_backoff_ms", "restartPolicy.maxBackoff"],
  ["restart_policy.mode", "restartPolicy.mode"],
  ["strategy.max_surge", "strategy.maxSurge"],
  ["strategy.max_unavailable", "strategy.maxUnavailable"],
  ["strategy.ready_timeout_ms", "strategy.readyTimeout"],
  ["strategy.max_error_rate", "strategy.maxErrorRate"],
  ["strategy.canary_weight_percent", "strategy.canaryWeightPercent"],
  ["min_ready", "minReady"],
  ["max_surge", "maxSurge"],
  ["max_unavailable", "maxUnavailable"],
  ["initial_backoff_ms", "initialBackoff"],
];

function toYamlMessage(message: string): { field: string; detail: string } {
  const colon = message.indexOf(": ");
  const rename = (text: string) => yamlNames.reduce((renamed, [protoName, yamlName]) => renamed.split(protoName).join(yamlName), text);
  if (colon < 0) return { field: "", detail: rename(message) };
  const field = message.slice(0, colon);
  const mapped = yamlNames.find(([protoName]) => field === protoName || field.startsWith(protoName));
  const yamlField = mapped ? mapped[1] + field.slice(mapped[0].length) : field;
  return { field: yamlField, detail: rename(message.slice(colon + 2)) };
}
