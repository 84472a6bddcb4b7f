import type { PackageDefinition } from "@grpc/proto-loader";
import descriptor from "protobufjs/ext/descriptor/index.js";

interface FieldProto {
  name: string;
  jsonName?: string;
  label?: number;
  type?: number;
  typeName?: string;
}
interface MessageProto {
  name: string;
  field: FieldProto[];
  nestedType: MessageProto[];
  options?: { mapEntry?: boolean };
}
interface FileProto {
  package?: string;
  messageType: MessageProto[];
}

const fileDescriptorProto = (descriptor as unknown as { FileDescriptorProto: { decode(bytes: Uint8Array): unknown; encode(message: unknown): { finish(): Uint8Array }; toObject(message: unknown): unknown; fromObject(object: unknown): unknown } }).FileDescriptorProto;

/**
 * protobufjs names a map field's entry type after the field ("Attributes")
 * where protoc and the Go runtime require "AttributesEntry"; grpcurl then refuses
 * every service whose messages hold a map (fullstorydev/grpcurl#519). It also
 * leaves `json_name` unset, which protoc always fills in, so grpcurl printed
 * `instance_id` where proto3 JSON says `instanceId`. This rewrites the
 * descriptors @grpc/reflection serves to protoc's naming.
 */
export function fixMapEntryNames(definition: PackageDefinition): PackageDefinition {
  const fixed = new Map<Buffer, Buffer>();
  for (const value of Object.values(definition)) {
    const protos = (value as { fileDescriptorProtos?: Buffer[] }).fileDescriptorProtos;
    if (!protos) continue;
    for (let index = 0; index < protos.length; index += 1) {
      const original = protos[index] as Buffer;
      let replacement = fixed.get(original);
      if (!replacement) {
        replacement = fixFile(original);
        fixed.set(original, replacement);
      }
      protos[index] = replacement;
    }
  }
  return definition;
}

function fixFile(bytes: Buffer): Buffer {
  const file = fileDescriptorProto.toObject(fileDescriptorProto.decode(bytes)) as FileProto;
  const scope = file.package ? `.${file.package}` : "";
  for (const message of file.messageType ?? []) fixMessage(message, scope);
  return Buffer.from(fileDescriptorProto.encode(fileDescriptorProto.fromObject(file)).finish());
}

function fixMessage(message: MessageProto, scope: string): void {
  const fullName = `${scope}.${message.name}`;
  const nested = message.nestedType ?? [];
  for (const field of message.field ?? []) {
    field.jsonName ??= jsonName(field.name);
    const entry = nested.find((candidate) => candidate.options?.mapEntry && candidate.name === field.typeName);
    if (!entry) continue;
    const entryName = `${camelCase(field.name)}Entry`;
    entry.name = entryName;
    field.typeName = `${fullName}.${entryName}`;
  }
  for (const child of nested) fixMessage(child, fullName);
}

/** protoc's json_name: `instance_id` → `instanceId`, `p50_ms` → `p50Ms`. */
function jsonName(fieldName: string): string {
  return fieldName.replace(/_+([a-z0-9])?/g, (_match, next: string | undefined) => (next ?? "").toUpperCase());
}

/** protoc's map entry naming: `match_labels` → `MatchLabels`. */
function camelCase(fieldName: string): string {
  return fieldName
    .split("_")
    .filter((part) => part !== "")
    .map((part) => part[0]?.toUpperCase() + part.slice(1))
    .join("");
}
