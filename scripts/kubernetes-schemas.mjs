// Kubernetes JSON schemas for kubeconform, built from a Kubernetes OpenAPI v2 document
// (swagger.json), the way the published kubernetes-json-schema sets are made
// (openapi2jsonschema --expanded --kubernetes --stand-alone --strict):
//   node scripts/kubernetes-schemas.mjs <swagger.json> <out-dir>
// One file per kind, named as kubeconform's {{.ResourceKind}}{{.KindSuffix}} template
// expects (deployment-apps-v1.json, service-v1.json), each standalone (the definitions
// it reaches are inside it) and strict (an object rejects fields its schema does not list).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [swaggerPath, outDir] = process.argv.slice(2);
if (!swaggerPath || !outDir) {
  process.stderr.write("usage: node scripts/kubernetes-schemas.mjs <swagger.json> <out-dir>\n");
  process.exit(2);
}
const definitions = JSON.parse(readFileSync(swaggerPath, "utf8")).definitions;
const refPrefix = "#/definitions/";

// OpenAPI marks these as strings; manifests write them as numbers too (port: 7420, cpu: 1).
const numberOrString = {
  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": { oneOf: [{ type: "string" }, { type: "integer" }] },
  "io.k8s.apimachinery.pkg.api.resource.Quantity": { oneOf: [{ type: "string" }, { type: "number" }] },
};

function strict(schema) {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== "object") return schema;
  const copy = Object.fromEntries(Object.entries(schema).map(([key, value]) => [key, key === "properties" ? Object.fromEntries(Object.entries(value).map(([name, property]) => [name, strict(property)])) : strict(value)]));
  if (copy.format === "int-or-string") return numberOrString["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
  if (copy.properties && copy.additionalProperties === undefined && !copy["x-kubernetes-preserve-unknown-fields"]) copy.additionalProperties = false;
  return copy;
}

function reachable(name, seen = new Set()) {
  if (seen.has(name)) return seen;
  seen.add(name);
  const walk = (value) => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (value && typeof value === "object") {
      if (typeof value.$ref === "string" && value.$ref.startsWith(refPrefix)) reachable(value.$ref.slice(refPrefix.length), seen);
      Object.values(value).forEach(walk);
    }
  };
  walk(definitions[name]);
  return seen;
}

mkdirSync(outDir, { recursive: true });
let written = 0;
for (const [name, definition] of Object.entries(definitions)) {
  for (const { group, version, kind } of definition["x-kubernetes-group-version-kind"] ?? []) {
    // kubeconform: "-" + first label of the group (or the version for the core group) + "-" + version.
    const suffix = group === "" ? `-${version}` : `-${group.split(".")[0]}-${version}`;
    const local = {};
    for (const reached of reachable(name)) local[reached] = numberOrString[reached] ?? strict(definitions[reached]);
    const schema = { $schema: "http://json-schema.org/schema#", ...local[name], definitions: local };
    writeFileSync(join(outDir, `${kind.toLowerCase()}${suffix.toLowerCase()}.json`), JSON.stringify(schema));
    written += 1;
  }
}
process.stdout.write(`kubernetes-schemas: ${written} schemas in ${outDir}\n`);
