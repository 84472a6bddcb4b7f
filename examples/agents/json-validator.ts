/**
 * A JSON validator written WITHOUT the SDK: it serves plain agentmesh.v1.AgentService
 * and grpc.health.v1 on AGENTMESH_AGENT_ADDR, as an agent in any language would.
 * Capability: json.validate. Payload: {"schema": {...}, "document": ...}; answers
 * {"valid": bool, "errors": [...]} for a JSON-Schema subset (type, required,
 * properties, items, enum, minimum, maximum, minLength, maxLength).
 */
import { Server, ServerCredentials, status } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { AgentServiceService, type AgentServiceServer } from "../../sdk/ts/src/gen/agentmesh/v1/agent.js";

type Schema = {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
};

export function validate(schema: Schema, value: unknown, path = "$"): string[] {
  const errors: string[] = [];
  const actual = Array.isArray(value) ? "array" : value === null ? "null" : Number.isInteger(value) ? "integer" : typeof value;
  if (schema.type && schema.type !== actual && !(schema.type === "number" && actual === "integer")) {
    return [`${path}: expected ${schema.type}, got ${actual}`];
  }
  if (schema.enum && !schema.enum.some((candidate) => JSON.stringify(candidate) === JSON.stringify(value))) errors.push(`${path}: not one of the allowed values`);
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${path}: below ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${path}: above ${schema.maximum}`);
  }
  if (typeof value === "string") {
    if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${path}: shorter than ${schema.minLength}`);
    if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${path}: longer than ${schema.maxLength}`);
  }
  if (actual === "object") {
    const record = value as Record<string, unknown>;
    for (const key of schema.required ?? []) if (!(key in record)) errors.push(`${path}.${key}: required`);
    for (const [key, child] of Object.entries(schema.properties ?? {})) if (key in record) errors.push(...validate(child, record[key], `${path}.${key}`));
  }
  if (actual === "array" && schema.items) (value as unknown[]).forEach((item, index) => errors.push(...validate(schema.items as Schema, item, `${path}[${index}]`)));
  return errors;
}

const implementation: AgentServiceServer = {
  invoke: (call, callback) => {
    try {
      const { schema, document } = JSON.parse(Buffer.from(call.request.invocation?.payload ?? []).toString("utf8")) as { schema: Schema; document: unknown };
      const errors = validate(schema ?? {}, document);
      callback(null, { payload: Buffer.from(JSON.stringify({ valid: errors.length === 0, errors })), contentType: "application/json" });
    } catch {
      callback({ code: status.INVALID_ARGUMENT, details: "payload must be JSON {schema, document}" });
    }
  },
  invokeStream: (call) => {
    call.emit("error", { code: status.UNIMPLEMENTED, details: "json.validate has no streaming form" });
  },
};

const address = process.env.AGENTMESH_AGENT_ADDR;
if (!address) throw new Error("AGENTMESH_AGENT_ADDR is not set: run under an agentmesh sidecar");
const server = new Server();
server.addService(AgentServiceService, implementation);
const health = new HealthImplementation({ "": "NOT_SERVING" });
health.addToServer(server);
server.bindAsync(address, ServerCredentials.createInsecure(), (error) => {
  if (error) throw error;
  health.setStatus("", "SERVING");
});
process.once("SIGTERM", () => {
  health.setStatus("", "NOT_SERVING");
  server.tryShutdown(() => process.exit(0));
});
